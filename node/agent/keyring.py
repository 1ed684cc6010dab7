"""This node's gossip keyrings and cluster-wide keyring operations.

Rule: keyrings (LAN, and WAN on servers) are opened from ``data_dir`` — a saved keyring
beats ``encrypt``, as in Consul — and saved again after every operation that changed
them. An operator's operation goes to a server (``Keyring.Cluster``), which runs it on
every alive member of its datacenter (``Keyring.Op``) and, unless asked for its own
datacenter only, through one server of every other datacenter; one datacenter that
fails is reported, never fatal. The operation is validated before any fan-out, so a
typo is one clear error rather than one failure per node.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

from node.agent.cluster import KeyringPoolReport, Pools, keyring_reports
from node.config.agent import AgentConfig
from node.errors import InvalidRequest, NodeError, RPCUnreachable
from node.gossip.keyring import LAN_KEYRING_FILE, WAN_KEYRING_FILE, Keyring, open_keyring, parse_key
from node.rpc.client import RPCClient
from node.rpc.keyops import KEYRING_METHOD, KeyringOp, keyring_handler
from node.rpc.routing import rpc_targets
from node.rpc.server import Handler

__all__ = [
    "CLUSTER_METHOD",
    "KEYRING_TIMEOUT",
    "KeyringService",
    "build_keyrings",
    "save_keyrings",
    "keyring_saver",
    "check_keyring_op",
]

log = logging.getLogger(__name__)

CLUSTER_METHOD: Final = "Keyring.Cluster"
#: Bound of a whole cluster-wide keyring operation, and of its hop to each other datacenter.
KEYRING_TIMEOUT = 30.0
KEYRING_HOP_TIMEOUT = 10.0
#: Bound of one member's answer inside a datacenter.
MEMBER_TIMEOUT = 5.0

CallServer = Callable[..., Awaitable[Any]]


def build_keyrings(config: AgentConfig) -> tuple[Keyring | None, Keyring | None]:
    """LAN and WAN keyrings: saved files in ``data_dir`` win over ``encrypt`` (as Consul).

    ``-dev`` (no data dir) keeps them in memory. The WAN keyring exists on servers only.
    """
    if config.dev or not config.data_dir:
        if config.encrypt is None:
            return None, None
        key = parse_key(config.encrypt)
        return Keyring(key), (Keyring(key) if config.server else None)
    rings: list[Keyring | None] = []
    for name in (LAN_KEYRING_FILE, WAN_KEYRING_FILE) if config.server else (LAN_KEYRING_FILE,):
        ring, warning = open_keyring(Path(config.data_dir) / name, config.encrypt)
        if warning:
            log.warning("%s", warning)
        rings.append(ring)
    return rings[0], (rings[1] if len(rings) > 1 else None)


def save_keyrings(config: AgentConfig, lan: Keyring | None, wan: Keyring | None) -> None:
    """Persist both keyrings after a keyring operation (nothing to do in ``-dev``)."""
    if config.dev or not config.data_dir:
        return
    for ring, name in ((lan, LAN_KEYRING_FILE), (wan, WAN_KEYRING_FILE)):
        if ring is not None:
            ring.save(Path(config.data_dir) / name)


def keyring_saver(
    config: AgentConfig, keyrings: tuple[Keyring | None, Keyring | None]
) -> Callable[[], None]:
    """What runs after an operation changed the keyrings: save them, say so."""

    def save() -> None:
        save_keyrings(config, *keyrings)
        log.info("keyring changed and saved", extra={"node": config.node_name})

    return save


def check_keyring_op(op: Any, key: Any) -> None:
    """Validate before fanning out, so a typo is one clear error, not N node failures."""
    if op not in {o.value for o in KeyringOp}:
        raise InvalidRequest(f"unknown keyring operation {op!r}", field="op")
    if op != KeyringOp.LIST:
        if not isinstance(key, str) or not key:
            raise InvalidRequest(f"keyring {op} needs a base64 key", field="key")
        parse_key(key)


class KeyringService:
    """Serves ``Keyring.Op`` and ``Keyring.Cluster``; ``op`` starts an operation."""

    __slots__ = ("_dc", "_is_server", "_lan", "_wan", "_save", "_pools", "_client",
                 "_call_server", "_datacenters")  # fmt: skip

    def __init__(
        self,
        *,
        datacenter: str,
        is_server: bool,
        keyrings: tuple[Keyring | None, Keyring | None],
        save: Callable[[], None],
        pools: Pools,
        client: RPCClient,
        call_server: CallServer,
        datacenters: Callable[[], list[str]],
    ) -> None:
        self._dc = datacenter
        self._is_server = is_server
        self._lan, self._wan = keyrings
        self._save = save
        self._pools = pools
        self._client = client
        self._call_server = call_server
        self._datacenters = datacenters

    def handlers(self) -> dict[str, Handler]:
        """The RPC methods this service answers."""
        return {KEYRING_METHOD: self._local_op, CLUSTER_METHOD: self._cluster_op}

    async def op(self, op: str, key: str | None = None) -> list[KeyringPoolReport]:
        """``op`` (list/install/use/remove) on the LAN and WAN keyrings of every node of
        every datacenter; Consul's per-pool reports (WAN first, then one per datacenter)."""
        check_keyring_op(op, key)
        args = {"op": op, "key": key, "local": False}
        wire = await self._call_server(CLUSTER_METHOD, args, timeout=KEYRING_TIMEOUT)
        if not isinstance(wire, list):
            raise RPCUnreachable("malformed Keyring.Cluster reply")
        return [KeyringPoolReport.from_wire(r) for r in wire]

    async def _local_op(self, args: Any) -> Any:
        rings = [r for r in (self._lan, self._wan) if r is not None]
        result = await keyring_handler(lambda: rings, self._save)(args)
        if self._wan is not None:
            result["wan_keys"] = list(self._wan.keys_base64())
        return result

    async def _cluster_op(self, args: Any) -> Any:
        """On a server: the operation on every node of this datacenter (``local``), or of
        every datacenter (each other one through one of its servers)."""
        if not self._is_server or self._pools.lan is None:
            raise InvalidRequest("Keyring.Cluster must be sent to a running server", field="op")
        if not isinstance(args, dict):
            raise InvalidRequest("Keyring.Cluster needs {'op', 'key', 'local'}", field="op")
        op, key = args.get("op"), args.get("key")
        check_keyring_op(op, key)
        here = await self._this_dc({"op": op, "key": key})
        if args.get("local"):
            return here
        remote = {"op": op, "key": key, "local": True}
        others = await asyncio.gather(
            *(self._other_dc(dc, remote) for dc in self._datacenters()[1:])
        )
        return [r.to_wire() for r in keyring_reports([here, *others])]

    async def _other_dc(self, dc: str, args: dict[str, Any]) -> Any:
        try:
            got = await self._call_server(CLUSTER_METHOD, args, dc=dc, timeout=KEYRING_HOP_TIMEOUT)
        except NodeError as exc:
            return {"dc": dc, "replies": {}, "failures": {"(datacenter)": str(exc)}}
        if not isinstance(got, dict) or not isinstance(got.get("replies"), dict):
            return {"dc": dc, "replies": {}, "failures": {"(datacenter)": "malformed reply"}}
        return got

    async def _this_dc(self, args: dict[str, Any]) -> dict[str, Any]:
        lan = self._pools.lan
        assert lan is not None
        targets = rpc_targets(lan.members())
        names = list(targets)
        got = await asyncio.gather(
            *(
                self._client.call(targets[n], KEYRING_METHOD, args, timeout=MEMBER_TIMEOUT)
                for n in names
            ),
            return_exceptions=True,
        )
        replies: dict[str, Any] = {}
        failures: dict[str, str] = {}
        for name, result in zip(names, got, strict=True):
            if isinstance(result, dict) and isinstance(result.get("keys"), list):
                replies[name] = result
            elif isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result
            else:
                failures[name] = str(result) if isinstance(result, Exception) else "malformed reply"
        return {"dc": self._dc, "replies": replies, "failures": failures}
