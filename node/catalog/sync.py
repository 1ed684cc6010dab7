"""Catalog replication over LAN gossip: the gossip ``Delegate`` of the catalog.

Rule: a node's record travels only as a whole record at a version, or as a delta that
applies to exactly the version it names; a replica keeps the highest version and never
mixes two (DESIGN §4). Three broadcast kinds, the largest that fits one packet is used:
``RECORD`` (whole record), ``DELTA`` (base version → version: changed/removed services
and checks; the common case, a check status flip, is a few dozen bytes) and ``DIGEST``
(node, version) when even the delta is too big. A receiver that learns of a version it
cannot build records it in ``missing()`` for the agent to fetch by RPC; push-pull
(``local_state``/``merge_remote_state``) carries every record and repairs anything lost.
A broadcast that advanced our state is re-queued once (keyed by node name, so newer news
replaces older) to spread epidemically. Records about this node from others are never
stored; if one claims a version at or above ours, ``on_own_version(v)`` asks LocalState
to republish above it. Untrusted bytes are dropped and counted, never raised. Pure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from enum import IntEnum
from types import MappingProxyType
from typing import Any

from node.catalog.store import CatalogStore
from node.catalog.values import CheckState, NodeRecord, ServiceInstance
from node.errors import LocalProtocolError, RemoteProtocolError
from node.gossip.delegate import MAX_USER_MSG_BYTES, UserBroadcastQueue
from node.gossip.messages import MemberStatus
from node.wire import pack, unpack

__all__ = ["CatalogSync", "SyncMessage", "PUSH_STATE_BUDGET", "encode_update"]

#: Bytes of records one push-pull carries at most (own record always goes first).
PUSH_STATE_BUDGET = 8 * 1024 * 1024
#: Largest number of records accepted from one push-pull.
MAX_PUSH_RECORDS = 100_000


class SyncMessage(IntEnum):
    """Type byte of a catalog broadcast. Append-only: never renumber."""

    RECORD = 1
    DELTA = 2
    DIGEST = 3


def encode_update(old: NodeRecord | None, new: NodeRecord) -> bytes:
    """The smallest-kind broadcast announcing ``new`` that fits one user message."""
    whole = bytes([SyncMessage.RECORD]) + pack(new.to_wire())
    if len(whole) <= MAX_USER_MSG_BYTES:
        return whole
    if old is not None and _same_node_fields(old, new):
        delta = bytes([SyncMessage.DELTA]) + pack(_delta(old, new))
        if len(delta) <= MAX_USER_MSG_BYTES:
            return delta
    return bytes([SyncMessage.DIGEST]) + pack({"n": new.name, "v": new.version})


def _same_node_fields(a: NodeRecord, b: NodeRecord) -> bool:
    return (a.node_id, a.address, a.datacenter, dict(a.tagged_addresses), dict(a.meta)) == (
        b.node_id, b.address, b.datacenter, dict(b.tagged_addresses), dict(b.meta),
    )  # fmt: skip


def _delta(old: NodeRecord, new: NodeRecord) -> dict[str, Any]:
    return {
        "n": new.name,
        "b": old.version,
        "v": new.version,
        "su": [s.to_wire() for sid, s in new.services.items() if old.services.get(sid) != s],
        "sr": [sid for sid in old.services if sid not in new.services],
        "cu": [c.to_wire() for cid, c in new.checks.items() if old.checks.get(cid) != c],
        "cr": [cid for cid in old.checks if cid not in new.checks],
    }


class CatalogSync:
    """Implements ``node.gossip.delegate.Delegate`` for the catalog store."""

    __slots__ = ("_store", "_local_name", "_queue", "_missing", "_stats", "_on_own_version")

    def __init__(
        self,
        store: CatalogStore,
        *,
        local_name: str,
        queue: UserBroadcastQueue,
        on_own_version: Callable[[int], None] | None = None,
    ) -> None:
        self._store = store
        self._local_name = local_name
        self._queue = queue
        self._missing: dict[str, int] = {}
        self._stats: dict[str, int] = {}
        self._on_own_version = on_own_version

    # ------------------------------------------------------------------ local side

    def local_record_changed(self, old: NodeRecord | None, new: NodeRecord) -> None:
        """LocalState published ``new``: announce it."""
        self._queue.queue(encode_update(old, new), key=new.name)

    def missing(self) -> Mapping[str, int]:
        """Node → version announced by a digest or unappliable delta but not held yet."""
        return MappingProxyType(dict(self._missing))

    def stats(self) -> Mapping[str, int]:
        """Counters: applied, stale, dropped, own_conflict."""
        return MappingProxyType(dict(self._stats))

    def apply_fetched(self, record: NodeRecord) -> bool:
        """A record fetched by RPC after ``missing()`` asked for it."""
        return self._take(record)

    # ------------------------------------------------------------------ membership

    def member_alive(self, name: str) -> None:
        """Gossip says ``name`` is alive: its serfHealth passes."""
        self._store.set_member_health(name, True)

    def member_failed(self, name: str) -> None:
        """Gossip says ``name`` failed: its serfHealth goes critical on all its services."""
        self._store.set_member_health(name, False)

    def member_left(self, name: str) -> None:
        """``name`` left (or was reaped): its entries disappear; stale copies are refused."""
        entry = self._store.entry(name)
        version = entry.record.version if entry is not None else self._missing.get(name)
        self._missing.pop(name, None)
        self._store.remove_node(name, version=version)

    def on_member_change(self, member: Any, old: MemberStatus | None) -> None:
        """``GossipRuntime``'s ``on_member_change`` hook: map a LAN member's status.

        alive/suspect → passing serfHealth (Consul marks a node only once it failed),
        dead → critical serfHealth on all its services, left → its entries disappear.
        """
        status = member.status
        if status in (MemberStatus.ALIVE, MemberStatus.SUSPECT):
            self.member_alive(member.name)
        elif status is MemberStatus.DEAD:
            self.member_failed(member.name)
        elif status is MemberStatus.LEFT:
            self.member_left(member.name)

    # ------------------------------------------------------------------ Delegate

    def notify_msg(self, payload: bytes) -> None:
        """A catalog broadcast from a peer (untrusted)."""
        try:
            advanced = self._receive(payload)
        except RemoteProtocolError:
            self._count("dropped")
            return
        if advanced:
            # Re-gossip news that was new to us; the queue's key keeps only the newest.
            name = self._name_of(payload)
            if name is not None:
                self._requeue(payload, name)

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        """Payloads to piggyback on gossip packets."""
        return self._queue.get_broadcasts(overhead, limit)

    def local_state(self, join: bool) -> bytes:
        """Every record we hold (ours first) within ``PUSH_STATE_BUDGET``, plus tombstones."""
        entries = self._store.entries()
        names = sorted(entries, key=lambda n: (n != self._local_name, n))
        records: list[dict[str, Any]] = []
        used = 0
        for name in names:
            wire = entries[name].record.to_wire()
            size = len(pack(wire))
            if used + size > PUSH_STATE_BUDGET and records:
                break
            records.append(wire)
            used += size
        return pack({"r": records, "t": dict(self._store.tombstones())})

    def merge_remote_state(self, payload: bytes, join: bool) -> None:
        """A peer's ``local_state`` (untrusted): take every newer record and tombstone."""
        try:
            body = unpack(payload)
            if not isinstance(body, dict):
                raise RemoteProtocolError("push-pull state: expected an object")
            tombs = body.get("t", {})
            records = body.get("r", [])
            if not isinstance(tombs, dict) or not isinstance(records, list):
                raise RemoteProtocolError("push-pull state: bad shape")
            if len(records) > MAX_PUSH_RECORDS:
                raise RemoteProtocolError("push-pull state: too many records")
        except RemoteProtocolError:
            self._count("dropped")
            return
        for name, version in tombs.items():
            self._take_tombstone(name, version)
        for raw in records:
            try:
                self._take(NodeRecord.from_wire(raw))
            except RemoteProtocolError:
                self._count("dropped")

    # ------------------------------------------------------------------ internals

    def _receive(self, payload: bytes) -> bool:
        if not payload:
            raise RemoteProtocolError("empty catalog message")
        kind, body = payload[0], unpack(payload[1:])
        if kind == SyncMessage.RECORD:
            return self._take(NodeRecord.from_wire(body))
        if kind == SyncMessage.DELTA:
            return self._take_delta(body)
        if kind == SyncMessage.DIGEST:
            return self._take_digest(body)
        raise RemoteProtocolError(f"unknown catalog message type {kind}")

    def _take(self, record: NodeRecord) -> bool:
        if record.name == self._local_name:
            self._own_claim(record.version, record)
            return False
        if self._store.upsert_node(record):
            if self._missing.get(record.name, -1) <= record.version:
                self._missing.pop(record.name, None)
            self._count("applied")
            return True
        self._count("stale")
        return False

    def _own_claim(self, version: int, record: NodeRecord | None = None) -> None:
        """A peer speaks of this node. Our own echo is fine; anything newer, or different
        at our version, would shadow our updates, so we republish above it."""
        ours = self._store.entry(self._local_name)
        if ours is None or version < ours.record.version:
            return
        if version == ours.record.version and (record is None or record == ours.record):
            return
        self._count("own_conflict")
        if self._on_own_version is not None:
            self._on_own_version(version)

    def _take_delta(self, body: object) -> bool:
        delta = _delta_fields(body)
        name, base, version = delta["n"], delta["b"], delta["v"]
        if name == self._local_name:
            self._own_claim(version)
            return False
        held = self._store.entry(name)
        if held is not None and held.record.version >= version:
            self._count("stale")
            return False
        if held is None or held.record.version != base:
            self._want(name, version)
            return True  # new to us: pass it on even though we cannot apply it
        return self._take(_apply_delta(held.record, delta))

    def _take_digest(self, body: object) -> bool:
        if not isinstance(body, dict):
            raise RemoteProtocolError("digest: expected an object")
        name, version = body.get("n"), body.get("v")
        if not isinstance(name, str) or not isinstance(version, int) or isinstance(version, bool):
            raise RemoteProtocolError("digest: bad fields")
        if name == self._local_name:
            self._own_claim(version)
            return False
        held = self._store.entry(name)
        if held is not None and held.record.version >= version:
            return False
        if self._missing.get(name, -1) >= version:
            return False
        self._want(name, version)
        return True

    def _take_tombstone(self, name: object, version: object) -> None:
        if not isinstance(name, str) or not isinstance(version, int) or name == self._local_name:
            self._count("dropped")
            return
        held = self._store.entry(name)
        if held is None or held.record.version <= version:
            self._store.remove_node(name, version=version)

    def _want(self, name: str, version: int) -> None:
        self._missing[name] = max(version, self._missing.get(name, -1))

    def _requeue(self, payload: bytes, name: str) -> None:
        try:
            self._queue.queue(payload, key=name)
        except LocalProtocolError:
            self._count("dropped")

    @staticmethod
    def _name_of(payload: bytes) -> str | None:
        try:
            body = unpack(payload[1:])
        except RemoteProtocolError:
            return None
        name = body.get("n", body.get("name")) if isinstance(body, dict) else None
        return name if isinstance(name, str) else None

    def _count(self, key: str) -> None:
        self._stats[key] = self._stats.get(key, 0) + 1


def _delta_fields(body: object) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise RemoteProtocolError("delta: expected an object")
    for key in ("n", "b", "v"):
        value = body.get(key)
        if key == "n" and not isinstance(value, str):
            raise RemoteProtocolError("delta: bad node name")
        if key != "n" and (not isinstance(value, int) or isinstance(value, bool)):
            raise RemoteProtocolError(f"delta: bad {key}")
    for key in ("su", "sr", "cu", "cr"):
        if not isinstance(body.get(key, []), list):
            raise RemoteProtocolError(f"delta: {key} must be a list")
    if body["v"] <= body["b"]:
        raise RemoteProtocolError("delta: version must grow")
    return body


def _apply_delta(base: NodeRecord, delta: Mapping[str, Any]) -> NodeRecord:
    services: dict[str, ServiceInstance] = dict(base.services)
    checks: dict[str, CheckState] = dict(base.checks)
    for sid in delta.get("sr", []):
        services.pop(str(sid), None)
    for cid in delta.get("cr", []):
        checks.pop(str(cid), None)
    for raw in delta.get("su", []):
        svc = ServiceInstance.from_wire(raw)
        services[svc.id] = svc
    for raw in delta.get("cu", []):
        chk = CheckState.from_wire(raw)
        checks[chk.id] = chk
    return replace(
        base,
        services=MappingProxyType(services),
        checks=MappingProxyType(checks),
        version=int(delta["v"]),
    )
