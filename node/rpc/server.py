"""Node-to-node RPC server: one TCP connection carries sequential framed calls.

Rule: a connection is served one request at a time; a handler may run as long as the
caller allows (blocking queries up to 10 minutes), and is cancelled if the caller hangs
up. Malformed, oversized or undecryptable frames close that connection and are counted;
nothing a peer sends stops the server. Idle connections are closed after
``idle_timeout``; at most ``max_connections`` are served at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from node.errors import InvalidRequest, LocalProtocolError, NodeError, RemoteProtocolError, RPCError
from node.gossip.keyring import Keyring
from node.gossip.transport import Address
from node.rpc.codec import (
    MAX_RPC_BYTES,
    Request,
    decode_request,
    encode_reply,
    open_sealed,
    seal,
)
from node.wire import FRAME_HEADER, frame, parse_frame_header

__all__ = ["Handler", "KeyringProvider", "RPCServer"]

log = logging.getLogger(__name__)

Handler = Callable[[Any], Awaitable[Any]]
KeyringProvider = Callable[[], Keyring | None]

#: Concurrent connections served; more are closed at once (memberlist caps push-pulls at 128).
MAX_CONNECTIONS = 512


class RPCServer:
    """Serves ``handlers[method](args)`` over framed, optionally sealed, msgpack."""

    def __init__(
        self,
        handlers: Mapping[str, Handler],
        keyring_provider: KeyringProvider = lambda: None,
        *,
        verify_incoming: bool = True,
        idle_timeout: float = 60.0,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self._handlers = dict(handlers)
        self._keyring = keyring_provider
        self._accept_plaintext = not verify_incoming
        self._idle_timeout = idle_timeout
        self._max_connections = max_connections
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._stats: collections.Counter[str] = collections.Counter()

    @property
    def addr(self) -> Address:
        """The bound ``(host, port)`` (real port when started on port 0)."""
        if self._server is None:
            raise LocalProtocolError("RPC server is not started")
        host, port = self._server.sockets[0].getsockname()[:2]
        return (host, port)

    @property
    def stats(self) -> Mapping[str, int]:
        """Counters: calls, errors, dropped_* per reason."""
        return dict(self._stats)

    def add_handler(self, method: str, handler: Handler) -> None:
        """Register (or replace) a method before or while serving."""
        self._handlers[method] = handler

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port`` (0 picks a free port)."""
        self._server = await asyncio.start_server(self._on_connection, host, port)

    async def close(self) -> None:
        """Stop listening and cancel every in-flight call."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(self._connections, timeout=5.0)
        self._server = None

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= self._max_connections:
            self._stats["dropped_too_many_connections"] += 1
            writer.close()
            return
        self._connections.add(task)
        peer = writer.get_extra_info("peername") or ("?", 0)
        try:
            await self._serve(reader, writer)
        except (RemoteProtocolError, TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
            self._stats[f"dropped_{type(exc).__name__}"] += 1
            log.debug("rpc connection from %s:%s closed: %s", peer[0], peer[1], exc)
        except asyncio.CancelledError:
            # close() cancels us; ending quietly keeps asyncio's stream callback from
            # logging the cancellation as an error. Nothing awaits this task's result.
            pass
        except Exception:
            self._stats["internal_errors"] += 1
            log.exception("rpc connection from %s:%s failed", peer[0], peer[1])
        finally:
            self._connections.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            async with asyncio.timeout(self._idle_timeout):
                try:
                    header = await reader.readexactly(FRAME_HEADER)
                except asyncio.IncompleteReadError as exc:
                    if not exc.partial:
                        return  # the caller hung up between calls: normal
                    raise
                data = await reader.readexactly(parse_frame_header(header, max_bytes=MAX_RPC_BYTES))
            keyring = self._keyring()
            body, sealed = open_sealed(data, keyring, accept_plaintext=self._accept_plaintext)
            request = decode_request(body)
            reply = await self._call_watching_hangup(request, reader)
            if reply is None:
                return
            writer.write(frame(seal(reply, keyring if sealed else None)))
            await writer.drain()

    async def _call_watching_hangup(
        self, request: Request, reader: asyncio.StreamReader
    ) -> bytes | None:
        # A caller sends nothing while waiting, so any read completing means it hung up
        # (or broke protocol): cancel the handler instead of running a 10-minute query for nobody.
        call = asyncio.ensure_future(self._dispatch(request))
        hangup = asyncio.ensure_future(reader.read(1))
        try:
            await asyncio.wait((call, hangup), return_when=asyncio.FIRST_COMPLETED)
        finally:
            hangup.cancel()
            # Let the cancelled read unregister from the reader before anyone reads again
            # (``wait`` does not re-raise the read's cancellation, only our own).
            await asyncio.wait((hangup,))
        if not call.done():
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await call
            self._stats["cancelled_by_caller"] += 1
            return None
        return call.result()

    async def _dispatch(self, request: Request) -> bytes:
        self._stats["calls"] += 1
        handler = self._handlers.get(request.method)
        try:
            if handler is None:
                raise InvalidRequest(f"unknown RPC method {request.method!r}", field="method")
            result = await handler(request.args)
        except NodeError as exc:  # an expected outcome: it travels back by class name
            self._stats["errors"] += 1
            return encode_reply(request.id, error=exc)
        except Exception as exc:  # a bug in a handler: keep serving, tell the caller
            self._stats["errors"] += 1
            log.exception("rpc %s raised", request.method)
            return encode_reply(request.id, error=exc)
        try:
            return encode_reply(request.id, result=result)
        except LocalProtocolError as exc:
            self._stats["errors"] += 1
            log.error("rpc %s returned an unencodable result: %s", request.method, exc)
            return encode_reply(
                request.id, error=RPCError(f"result of {request.method} cannot be encoded: {exc}")
            )
