"""Cluster-wide keyring operations (``meshnode keyring -list|-install|-use|-remove``).

Rule: an operation is checked against every local keyring (LAN and WAN, kept in
lock-step) before any of them changes, so it is applied to all or none; then it is
persisted by the caller's ``on_change``. Cluster-wide, the operator's node calls
``KEYRING_METHOD`` on every alive member concurrently and reports per node (as Serf's
key queries do); operations are idempotent, so re-running after a partial failure is safe.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from node.errors import InvalidRequest, NodeError
from node.gossip.keyring import Keyring, encode_key, parse_key
from node.gossip.messages import Address
from node.rpc.client import RPCClient
from node.rpc.server import Handler

__all__ = [
    "KEYRING_METHOD",
    "KeyringOp",
    "KeyringOpReport",
    "apply_keyring_op",
    "keyring_handler",
    "keyring_op_cluster",
]

KEYRING_METHOD = "Keyring.Op"


class KeyringOp(StrEnum):
    """What to do with a key."""

    LIST = "list"
    INSTALL = "install"
    USE = "use"
    REMOVE = "remove"


def _parse_op(args: Any) -> tuple[KeyringOp, bytes | None]:
    if not isinstance(args, dict):
        raise InvalidRequest("keyring operation must be a map with 'op' and 'key'")
    try:
        op = KeyringOp(str(args.get("op")))
    except ValueError:
        raise InvalidRequest(
            f"unknown keyring operation {args.get('op')!r}; expected list, install, use or remove",
            field="op",
        ) from None
    if op is KeyringOp.LIST:
        return op, None
    key = args.get("key")
    if not isinstance(key, str):
        raise InvalidRequest(f"keyring -{op} needs a base64 key", field="key")
    return op, parse_key(key)


def apply_keyring_op(keyrings: Sequence[Keyring], op: KeyringOp, key: bytes | None) -> None:
    """Apply to every keyring or to none (validated first)."""
    if op is KeyringOp.LIST or not keyrings:
        return
    assert key is not None
    if op is KeyringOp.USE and any(key not in k for k in keyrings):
        raise InvalidRequest("requested key is not in the keyring; install it first", field="key")
    if op is KeyringOp.REMOVE and any(key == k.primary for k in keyrings):
        raise InvalidRequest("removing the primary key is not allowed", field="key")
    for ring in keyrings:
        {KeyringOp.INSTALL: ring.install, KeyringOp.USE: ring.use, KeyringOp.REMOVE: ring.remove}[
            op
        ](key)


def keyring_handler(
    keyrings: Callable[[], Sequence[Keyring]], on_change: Callable[[], None]
) -> Handler:
    """The RPC handler for ``KEYRING_METHOD``: ``{"op", "key"}`` → ``{"keys", "primary"}``."""

    async def handle(args: Any) -> Any:
        op, key = _parse_op(args)
        rings = keyrings()
        if not rings:
            raise InvalidRequest("encryption is not enabled on this node (no keyring)")
        apply_keyring_op(rings, op, key)
        if op is not KeyringOp.LIST:
            on_change()
        return {"keys": list(rings[0].keys_base64()), "primary": encode_key(rings[0].primary)}

    return handle


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyringOpReport:
    """Per-node outcome of a cluster-wide operation."""

    #: node name → its keys after the operation (base64, primary first)
    keys: Mapping[str, list[str]] = field(default_factory=dict)
    #: node name → primary key after the operation
    primary: Mapping[str, str] = field(default_factory=dict)
    #: node name → error text for nodes that failed or did not answer
    failures: Mapping[str, str] = field(default_factory=dict)

    @property
    def key_counts(self) -> Mapping[str, int]:
        """How many responding nodes hold each key (``keyring -list`` output)."""
        return dict(collections.Counter(k for keys in self.keys.values() for k in keys))


async def keyring_op_cluster(
    client: RPCClient,
    targets: Mapping[str, Address],
    op: KeyringOp,
    key: str | None,
    *,
    timeout: float,
) -> KeyringOpReport:
    """Run ``op`` on every ``targets`` node concurrently; never raises for one node's failure."""
    args = {"op": str(op), "key": key}
    names = list(targets)
    results = await asyncio.gather(
        *(client.call(targets[n], KEYRING_METHOD, args, timeout=timeout) for n in names),
        return_exceptions=True,
    )
    keys: dict[str, list[str]] = {}
    primary: dict[str, str] = {}
    failures: dict[str, str] = {}
    for name, result in zip(names, results, strict=True):
        if isinstance(result, NodeError):
            failures[name] = f"{type(result).__name__}: {result}"
        elif isinstance(result, BaseException):
            raise result
        elif isinstance(result, dict) and isinstance(result.get("keys"), list):
            keys[name] = [str(k) for k in result["keys"]]
            primary[name] = str(result.get("primary", ""))
        else:
            failures[name] = f"malformed reply: {result!r:.100}"
    return KeyringOpReport(keys=keys, primary=primary, failures=failures)
