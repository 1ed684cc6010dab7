"""The catalog of a datacenter: one replicated ``NodeRecord`` per node, plus modify indexes.

Rule: a node's record is authoritative only from its owner; replicas keep the record with
the highest ``version`` (DESIGN §4) and never merge parts of two versions. Everything a
read can depend on carries a modify index: each node, service and check has
``(create_index, modify_index)``, and every *topic* a query reads (a service name, a
Connect target, a service kind, a node, the service list, the node list, all checks) has
the index of its last change, so a blocking query wakes only when its own result
changed. ``store.index`` grows by one per effective mutation and ``on_change(index)`` is
called after each one. The ``serfHealth`` node check is synthesised here from gossip
membership (``set_member_health``), never replicated. Pure: no asyncio, no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar

from node.catalog.values import (
    SERF_CHECK_ID,
    CheckKind,
    CheckState,
    Health,
    NodeRecord,
    ServiceInstance,
)

__all__ = [
    "CatalogStore",
    "ItemIndex",
    "NodeEntry",
    "NodeRecord",
    "SERF_ALIVE_OUTPUT",
    "SERF_FAILED_OUTPUT",
    "topic_service",
    "topic_connect",
    "topic_kind",
    "topic_node",
    "TOPIC_SERVICES",
    "TOPIC_NODES",
    "TOPIC_CHECKS",
]

T = TypeVar("T")

#: Most query results kept by ``CatalogStore.memoized``.
MEMO_LIMIT = 8192
SERF_ALIVE_OUTPUT = "Agent alive and reachable"
SERF_FAILED_OUTPUT = "Agent not live or unreachable"
TOPIC_SERVICES = "services"
TOPIC_NODES = "nodes"
TOPIC_CHECKS = "checks"


def topic_service(name: str) -> str:
    """Topic of every instance named ``name`` (case-insensitive, like Consul's index)."""
    return f"service:{name.lower()}"


def topic_connect(target: str) -> str:
    """Topic of the Connect-capable instances for service ``target``."""
    return f"connect:{target.lower()}"


def topic_kind(kind: str) -> str:
    """Topic of every instance of a service kind (e.g. all mesh gateways)."""
    return f"kind:{kind}"


def topic_node(name: str) -> str:
    """Topic of one node: its fields, services and checks."""
    return f"node:{name}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ItemIndex:
    """When an item was created and last modified, in store indexes."""

    create_index: int
    modify_index: int


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeEntry:
    """A node as the store holds it: its record, its gossip health and item indexes."""

    record: NodeRecord
    alive: bool = True
    node_index: ItemIndex
    service_indexes: Mapping[str, ItemIndex] = field(default_factory=dict)
    #: Every check of the node, ``serfHealth`` first, then the record's checks.
    checks: Mapping[str, CheckState] = field(default_factory=dict)
    check_indexes: Mapping[str, ItemIndex] = field(default_factory=dict)


def _serf_check(alive: bool, output: str) -> CheckState:
    return CheckState(
        id=SERF_CHECK_ID,
        name="Serf Health Status",
        kind=CheckKind.SERF,
        status=Health.PASSING if alive else Health.CRITICAL,
        output=output or (SERF_ALIVE_OUTPUT if alive else SERF_FAILED_OUTPUT),
    )


def _node_fields(record: NodeRecord) -> tuple[object, ...]:
    return (
        record.node_id,
        record.address,
        record.datacenter,
        dict(record.tagged_addresses),
        dict(record.meta),
    )


def _service_topics(svc: ServiceInstance) -> Iterable[str]:
    yield topic_service(svc.name)
    yield topic_kind(str(svc.kind))
    target = svc.connect_target()
    if target is not None:
        yield topic_connect(target)


class CatalogStore:
    """All node records of the datacenter, with indexes for blocking queries."""

    __slots__ = ("_entries", "_index", "_topics", "_health", "_tombstones", "_on_change",
                 "_by_service", "_by_connect", "_by_kind", "_memo")  # fmt: skip

    def __init__(self, *, on_change: Callable[[int], None] | None = None) -> None:
        self._entries: dict[str, NodeEntry] = {}
        self._index = 1  # Consul clients treat 0 as "no index"; start from 1.
        self._topics: dict[str, int] = {}
        self._health: dict[str, tuple[bool, str]] = {}
        self._tombstones: dict[str, int] = {}
        self._on_change = on_change
        self._by_service: dict[str, set[tuple[str, str]]] = {}
        self._by_connect: dict[str, set[tuple[str, str]]] = {}
        self._by_kind: dict[str, set[tuple[str, str]]] = {}
        self._memo: dict[Hashable, tuple[int, object]] = {}

    # -------------------------------------------------------------- reads

    @property
    def index(self) -> int:
        """The store's modify index: grows by one per effective change."""
        return self._index

    def set_on_change(self, callback: Callable[[int], None] | None) -> None:
        """Install the callback told about every new index (the agent's notifier)."""
        self._on_change = callback

    def entry(self, name: str) -> NodeEntry | None:
        """The node named ``name``, or None."""
        return self._entries.get(name)

    def entries(self) -> Mapping[str, NodeEntry]:
        """All nodes, read-only (a live view: do not hold it across changes)."""
        return MappingProxyType(self._entries)

    def versions(self) -> Mapping[str, int]:
        """Node name → record version, for anti-entropy digests."""
        return {name: entry.record.version for name, entry in self._entries.items()}

    def topic_index(self, topic: str) -> int:
        """Index of the last change to ``topic`` (at least 1)."""
        return max(self._topics.get(topic, 1), 1)

    def locate_service(self, name: str) -> frozenset[tuple[str, str]]:
        """(node, service id) of every instance named ``name``, case-insensitively."""
        return frozenset(self._by_service.get(name.lower(), ()))

    def locate_connect(self, target: str) -> frozenset[tuple[str, str]]:
        """(node, service id) of every Connect-capable instance for ``target``."""
        return frozenset(self._by_connect.get(target.lower(), ()))

    def locate_kind(self, kind: str) -> frozenset[tuple[str, str]]:
        """(node, service id) of every instance of ``kind``."""
        return frozenset(self._by_kind.get(kind, ()))

    def memoized(self, key: Hashable, index: int, compute: Callable[[], T]) -> T:
        """``compute()``, reused while ``index`` (the topic index it depends on) is unchanged.

        Query results are frozen, so one value can be handed to every reader; blocking
        queries that wake together then build their answer once.
        """
        hit = self._memo.get(key)
        if hit is not None and hit[0] == index:
            return hit[1]  # type: ignore[return-value]
        value = compute()
        if len(self._memo) >= MEMO_LIMIT:
            self._memo.clear()  # crude but bounded; refilled by the next reads
        self._memo[key] = (index, value)
        return value

    # -------------------------------------------------------------- writes

    def upsert_node(self, record: NodeRecord) -> bool:
        """Store ``record`` if it is newer than what is held; True when it was taken."""
        old = self._entries.get(record.name)
        if old is not None and record.version <= old.record.version:
            return False
        if record.version <= self._tombstones.get(record.name, -1):
            return False
        self._tombstones.pop(record.name, None)
        self._apply(record.name, old, record)
        return True

    def remove_node(self, name: str, *, version: int | None = None) -> bool:
        """Forget node ``name``; with ``version``, also refuse records up to that version.

        The tombstone stops a stale copy (from a slow push-pull) from resurrecting a node
        that left; ``reap_tombstones`` drops it once the removal has spread.
        """
        if version is not None:
            self._tombstones[name] = max(version, self._tombstones.get(name, -1))
        self._health.pop(name, None)
        old = self._entries.get(name)
        if old is None:
            return False
        self._apply(name, old, None)
        return True

    def reap_tombstones(self, names: Iterable[str]) -> None:
        """Drop the tombstones of ``names``."""
        for name in names:
            self._tombstones.pop(name, None)

    def tombstones(self) -> Mapping[str, int]:
        """Node name → highest removed version still refused."""
        return MappingProxyType(dict(self._tombstones))

    def set_member_health(self, name: str, alive: bool, output: str = "") -> bool:
        """Gossip says node ``name`` is alive or failed; drives its ``serfHealth`` check."""
        if self._health.get(name) == (alive, output):
            return False
        self._health[name] = (alive, output)
        old = self._entries.get(name)
        if old is None:
            return False  # applied when the node's record arrives
        self._apply(name, old, old.record)
        return True

    # -------------------------------------------------------------- merge

    def _apply(self, name: str, old: NodeEntry | None, record: NodeRecord | None) -> None:
        nxt = self._index + 1
        topics: set[str] = set()
        if record is None:
            assert old is not None
            self._unindex(name, old)
            del self._entries[name]
            topics |= {TOPIC_NODES, TOPIC_SERVICES, TOPIC_CHECKS, topic_node(name)}
            topics |= self._all_service_topics(old.record)
        else:
            entry = self._build_entry(name, old, record, nxt, topics)
            old_services = old.record.services if old is not None else {}
            self._entries[name] = entry
            self._reindex(name, old_services, record.services)
        if topics:
            self._index = nxt
            for topic in topics:
                self._topics[topic] = nxt
            if self._on_change is not None:
                self._on_change(nxt)

    def _build_entry(
        self, name: str, old: NodeEntry | None, record: NodeRecord, nxt: int, topics: set[str]
    ) -> NodeEntry:
        alive, output = self._health.get(name, (True, ""))
        checks = {SERF_CHECK_ID: _serf_check(alive, output), **record.checks}
        node_index = ItemIndex(create_index=nxt, modify_index=nxt)
        if old is None or _node_fields(old.record) != _node_fields(record):
            topics |= {TOPIC_NODES, topic_node(name)}
            topics |= self._all_service_topics(record)
            if old is not None:
                topics |= self._all_service_topics(old.record)
                node_index = ItemIndex(create_index=old.node_index.create_index, modify_index=nxt)
        else:
            node_index = old.node_index
        old_services = old.record.services if old else {}
        old_svc_idx = old.service_indexes if old else {}
        svc_idx = self._diff_services(name, old_services, record.services, old_svc_idx, nxt, topics)
        old_checks = old.checks if old else {}
        old_chk_idx = old.check_indexes if old else {}
        services = (old_services, record.services)
        chk_idx = self._diff_checks(name, old_checks, checks, old_chk_idx, nxt, topics, services)
        return NodeEntry(
            record=record,
            alive=alive,
            node_index=node_index,
            service_indexes=MappingProxyType(svc_idx),
            checks=MappingProxyType(checks),
            check_indexes=MappingProxyType(chk_idx),
        )

    def _diff_services(
        self,
        node: str,
        old: Mapping[str, ServiceInstance],
        new: Mapping[str, ServiceInstance],
        old_idx: Mapping[str, ItemIndex],
        nxt: int,
        topics: set[str],
    ) -> dict[str, ItemIndex]:
        result: dict[str, ItemIndex] = {}
        for sid in old.keys() | new.keys():
            before, after = old.get(sid), new.get(sid)
            if (before is after or before == after) and sid in old_idx:
                result[sid] = old_idx[sid]
                continue
            topics |= {TOPIC_SERVICES, topic_node(node)}
            for svc in (before, after):
                if svc is not None:
                    topics.update(_service_topics(svc))
            if after is not None:
                created = old_idx[sid].create_index if sid in old_idx and before else nxt
                result[sid] = ItemIndex(create_index=created, modify_index=nxt)
        return result

    def _diff_checks(
        self,
        node: str,
        old: Mapping[str, CheckState],
        new: Mapping[str, CheckState],
        old_idx: Mapping[str, ItemIndex],
        nxt: int,
        topics: set[str],
        services: tuple[Mapping[str, ServiceInstance], Mapping[str, ServiceInstance]],
    ) -> dict[str, ItemIndex]:
        result: dict[str, ItemIndex] = {}
        for cid in old.keys() | new.keys():
            before, after = old.get(cid), new.get(cid)
            if (before is after or before == after) and cid in old_idx:
                result[cid] = old_idx[cid]
                continue
            topics |= {TOPIC_CHECKS, topic_node(node)}
            for chk in (before, after):
                if chk is not None:
                    topics |= _check_topics(chk, services)
            if after is not None:
                created = old_idx[cid].create_index if cid in old_idx and before else nxt
                result[cid] = ItemIndex(create_index=created, modify_index=nxt)
        return result

    @staticmethod
    def _all_service_topics(record: NodeRecord) -> set[str]:
        topics: set[str] = set()
        for svc in record.services.values():
            topics.update(_service_topics(svc))
        return topics

    def _reindex(
        self,
        node: str,
        old: Mapping[str, ServiceInstance],
        new: Mapping[str, ServiceInstance],
    ) -> None:
        """Update the name/connect/kind indexes for the services that changed."""
        for sid in old.keys() | new.keys():
            before, after = old.get(sid), new.get(sid)
            if before is after:
                continue
            if before is not None:
                self._index_service(node, sid, before, add=False)
            if after is not None:
                self._index_service(node, sid, after, add=True)

    def _unindex(self, node: str, entry: NodeEntry) -> None:
        for sid, svc in entry.record.services.items():
            self._index_service(node, sid, svc, add=False)

    def _index_service(self, node: str, sid: str, svc: ServiceInstance, *, add: bool) -> None:
        keys = [(self._by_service, svc.name.lower()), (self._by_kind, str(svc.kind))]
        target = svc.connect_target()
        if target is not None:
            keys.append((self._by_connect, target))
        for index, key in keys:
            if add:
                index.setdefault(key, set()).add((node, sid))
            else:
                _discard(index, key, (node, sid))


def _check_topics(
    chk: CheckState,
    services: tuple[Mapping[str, ServiceInstance], Mapping[str, ServiceInstance]],
) -> set[str]:
    """Topics whose health results include ``chk``: its service's, or all for a node check."""
    topics: set[str] = set()
    for svcs in services:
        if chk.service_id:
            svc = svcs.get(chk.service_id)
            if svc is not None:
                topics.update(_service_topics(svc))
        else:
            for svc in svcs.values():
                topics.update(_service_topics(svc))
    return topics


def _discard(index: dict[str, set[tuple[str, str]]], key: str, item: tuple[str, str]) -> None:
    bucket = index.get(key)
    if bucket is not None:
        bucket.discard(item)
        if not bucket:
            del index[key]
