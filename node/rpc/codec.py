"""RPC message bodies, sealing, and the error-class mapping.

Rule: a request is ``{"id", "method", "args"}``, a reply ``{"id", "result"}`` or
``{"id", "error": {"type", "message", "field"?}}``, and a caller that gives up on a call
still in flight sends ``{"id", "cancel": true}`` (no reply follows). Ids are chosen by the
caller and unique per connection, so several calls can share one. Each is
msgpack-encoded and — when a keyring
is set — sealed with the same AES-GCM envelope as gossip, authenticated with the
``RPC_LABEL`` so a gossip packet can never be replayed as an RPC (or back). An error
raised by a handler travels by class name and is rebuilt as the same ``node.errors``
class on the caller; anything else becomes ``RPCError``. Pure: no sockets, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import node.errors as errors_module
from node.errors import InvalidRequest, NodeError, RemoteProtocolError, RPCError, RPCUnreachable
from node.gossip.keyring import Keyring
from node.wire import MAX_FRAME_BYTES, pack
from node.wire import unpack as wire_unpack

__all__ = [
    "RPC_LABEL",
    "MAX_RPC_BYTES",
    "RPCUnreachable",
    "Request",
    "Cancel",
    "Reply",
    "seal",
    "open_sealed",
    "encode_request",
    "decode_request",
    "encode_cancel",
    "decode_call_frame",
    "encode_reply",
    "decode_reply",
    "error_to_wire",
    "error_from_wire",
]

#: GCM additional data for RPC frames (gossip packets use other labels).
RPC_LABEL = b"meshnode-rpc"
#: Largest RPC frame either side accepts.
MAX_RPC_BYTES = MAX_FRAME_BYTES


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """One call."""

    id: int
    method: str
    args: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class Cancel:
    """The caller gave up on call ``id``: stop its handler, send nothing back."""

    id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    """The answer to ``Request(id)``: a result, or an error already rebuilt as an exception."""

    id: int
    result: Any = None
    error: NodeError | None = None


def _unpack(body: bytes) -> Any:
    return wire_unpack(body, max_bytes=MAX_RPC_BYTES)


def seal(body: bytes, keyring: Keyring | None) -> bytes:
    """Encrypt ``body`` with the keyring's primary key, or pass it through without one."""
    return body if keyring is None else keyring.encrypt(body, RPC_LABEL)


def open_sealed(
    data: bytes, keyring: Keyring | None, *, accept_plaintext: bool
) -> tuple[bytes, bool]:
    """Return ``(body, was_sealed)``; ``RemoteProtocolError`` if it may not be accepted.

    With a keyring, a frame that does not decrypt is refused unless
    ``accept_plaintext`` (Consul's ``verify_incoming = false`` during a rollout).
    """
    if keyring is None:
        return data, False
    try:
        return keyring.decrypt(data, RPC_LABEL), True
    except RemoteProtocolError:
        if accept_plaintext:
            return data, False
        raise


def encode_request(request: Request) -> bytes:
    """msgpack body of a request."""
    return pack({"id": request.id, "method": request.method, "args": request.args})


def encode_cancel(rid: int) -> bytes:
    """msgpack body of a cancel frame for call ``rid``."""
    return pack({"id": rid, "cancel": True})


def decode_request(body: bytes) -> Request:
    """Parse a request body or raise ``RemoteProtocolError`` naming what is wrong."""
    frame = decode_call_frame(body)
    if isinstance(frame, Cancel):
        raise RemoteProtocolError("RPC request must have a 'method', got a cancel frame")
    return frame


def decode_call_frame(body: bytes) -> Request | Cancel:
    """Parse what a caller sends (a request or a cancel) or raise ``RemoteProtocolError``."""
    obj = _unpack(body)
    if not isinstance(obj, dict):
        raise RemoteProtocolError(f"RPC request must be a map, got {type(obj).__name__}")
    rid, method = obj.get("id"), obj.get("method")
    if not isinstance(rid, int) or isinstance(rid, bool):
        raise RemoteProtocolError("RPC request 'id' must be an integer")
    if "cancel" in obj:
        if obj["cancel"] is not True or "method" in obj:
            raise RemoteProtocolError("RPC cancel frame must be exactly {'id', 'cancel': true}")
        return Cancel(id=rid)
    if not isinstance(method, str) or not method:
        raise RemoteProtocolError("RPC request 'method' must be a non-empty string")
    return Request(id=rid, method=method, args=obj.get("args"))


def encode_reply(rid: int, *, result: Any = None, error: BaseException | None = None) -> bytes:
    """msgpack body of a reply (an unencodable result becomes an error reply)."""
    if error is not None:
        return pack({"id": rid, "error": error_to_wire(error)})
    return pack({"id": rid, "result": result})


def decode_reply(body: bytes) -> Reply:
    """Parse a reply body; remote errors come back as exception instances."""
    obj = _unpack(body)
    if not isinstance(obj, dict) or not isinstance(obj.get("id"), int):
        raise RemoteProtocolError("RPC reply must be a map with an integer 'id'")
    if "error" in obj:
        return Reply(id=obj["id"], error=error_from_wire(obj["error"]))
    if "result" not in obj:
        raise RemoteProtocolError("RPC reply has neither 'result' nor 'error'")
    return Reply(id=obj["id"], result=obj["result"])


def error_to_wire(exc: BaseException) -> dict[str, Any]:
    """The wire form of an exception: our own classes by name, anything else as RPCError."""
    if isinstance(exc, NodeError):
        wire: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
        field = getattr(exc, "field", None)
        if isinstance(field, str):
            wire["field"] = field
        return wire
    return {"type": "RPCError", "message": f"internal error: {type(exc).__name__}: {exc}"}


def _error_classes() -> Mapping[str, type[NodeError]]:
    classes: dict[str, type[NodeError]] = {}
    for name in errors_module.__all__:
        cls = getattr(errors_module, name)
        if isinstance(cls, type) and issubclass(cls, NodeError):
            classes[name] = cls
    return classes


_ERROR_CLASSES = _error_classes()


def error_from_wire(wire: Any) -> NodeError:
    """Rebuild a remote error as the same ``node.errors`` class (unknown → ``RPCError``)."""
    if not isinstance(wire, dict):
        return RPCError(f"malformed remote error: {wire!r:.200}")
    message = str(wire.get("message", ""))
    cls = _ERROR_CLASSES.get(str(wire.get("type")), RPCError)
    if issubclass(cls, InvalidRequest):
        field = wire.get("field")
        return cls(message, field=field if isinstance(field, str) else None)
    # Every other class in the tree takes the message as its only positional argument.
    return cls(message)
