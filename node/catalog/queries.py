"""The catalog and health reads behind the HTTP API, as frozen domain values.

Rule: every query reads the store once and returns ``QueryResult(value, index)``, where
``index`` is the last change of the topics it read (never 0), so a blocking query can
compare it with the client's ``?index=``. No Consul JSON is built here; ``api/codec``
does that. Service names match case-insensitively, as in Consul. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Generic, TypeVar

from node.catalog.store import (
    TOPIC_CHECKS,
    TOPIC_NODES,
    TOPIC_SERVICES,
    CatalogStore,
    NodeEntry,
    topic_connect,
    topic_kind,
    topic_node,
    topic_service,
)
from node.catalog.values import CheckState, Health, ServiceInstance, ServiceKind, aggregate_health
from node.errors import InvalidRequest

__all__ = [
    "QueryResult",
    "NodeInfo",
    "ServiceNode",
    "CheckEntry",
    "HealthEntry",
    "NodeServices",
    "services",
    "service_nodes",
    "health_service",
    "services_of_kind",
    "checks_for_service",
    "node_services",
    "node_checks",
    "checks_in_state",
    "nodes",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryResult(Generic[T]):
    """A query's answer and the modify index it reflects."""

    value: T
    index: int


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeInfo:
    """A node's own fields (Consul ``Node``)."""

    name: str
    node_id: str
    address: str
    datacenter: str
    tagged_addresses: Mapping[str, str]
    meta: Mapping[str, str]
    create_index: int
    modify_index: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceNode:
    """One service instance with its node (``/v1/catalog/service/:name``)."""

    node: NodeInfo
    service: ServiceInstance
    create_index: int
    modify_index: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckEntry:
    """One check with the node it runs on."""

    node: str
    check: CheckState
    create_index: int
    modify_index: int


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthEntry:
    """One instance with its node and every check that applies (``/v1/health/service``)."""

    node: NodeInfo
    service: ServiceInstance
    checks: tuple[CheckEntry, ...]
    status: Health
    create_index: int
    modify_index: int


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeServices:
    """A node and its services (``/v1/catalog/node/:node``)."""

    node: NodeInfo
    services: tuple[ServiceNode, ...]


def _node_info(entry: NodeEntry) -> NodeInfo:
    rec = entry.record
    return NodeInfo(
        name=rec.name,
        node_id=rec.node_id,
        address=rec.address,
        datacenter=rec.datacenter,
        tagged_addresses=rec.tagged_addresses,
        meta=rec.meta,
        create_index=entry.node_index.create_index,
        modify_index=entry.node_index.modify_index,
    )


def _service_node(entry: NodeEntry, sid: str, info: NodeInfo | None = None) -> ServiceNode:
    idx = entry.service_indexes[sid]
    return ServiceNode(
        node=info or _node_info(entry),
        service=entry.record.services[sid],
        create_index=idx.create_index,
        modify_index=idx.modify_index,
    )


def _check_entry(entry: NodeEntry, cid: str) -> CheckEntry:
    idx = entry.check_indexes[cid]
    return CheckEntry(
        node=entry.record.name,
        check=entry.checks[cid],
        create_index=idx.create_index,
        modify_index=idx.modify_index,
    )


def _instances(
    store: CatalogStore, locations: Iterable[tuple[str, str]], tag: str | None
) -> list[tuple[NodeEntry, str]]:
    """Resolve (node, id) pairs, filter by tag (case-insensitive, like Consul), sort."""
    found = []
    for node, sid in sorted(locations):
        entry = store.entry(node)
        if entry is None or sid not in entry.record.services:
            continue
        svc = entry.record.services[sid]
        if tag is not None and tag.lower() not in (t.lower() for t in svc.tags):
            continue
        found.append((entry, sid))
    return found


def _locate(
    store: CatalogStore, name: str, connect: bool
) -> tuple[frozenset[tuple[str, str]], int]:
    if connect:
        return store.locate_connect(name), store.topic_index(topic_connect(name))
    return store.locate_service(name), store.topic_index(topic_service(name))


def services(store: CatalogStore) -> QueryResult[Mapping[str, tuple[str, ...]]]:
    """Every service name with the union of its instances' tags (sorted)."""
    index = store.topic_index(TOPIC_SERVICES)
    return store.memoized(("services",), index, lambda: _services(store, index))


def _services(store: CatalogStore, index: int) -> QueryResult[Mapping[str, tuple[str, ...]]]:
    names: dict[str, str] = {}
    tags: dict[str, set[str]] = {}
    for entry in store.entries().values():
        for svc in entry.record.services.values():
            key = names.setdefault(svc.name.lower(), svc.name)
            tags.setdefault(key, set()).update(svc.tags)
    value = {name: tuple(sorted(tags[name])) for name in sorted(tags)}
    return QueryResult(value=MappingProxyType(value), index=index)


def service_nodes(
    store: CatalogStore, name: str, *, tag: str | None = None, connect: bool = False
) -> QueryResult[tuple[ServiceNode, ...]]:
    """Instances of ``name`` (or, with ``connect``, the Connect-capable ones for it)."""
    locations, index = _locate(store, name, connect)

    def compute() -> QueryResult[tuple[ServiceNode, ...]]:
        found = tuple(_service_node(e, sid) for e, sid in _instances(store, locations, tag))
        return QueryResult(value=found, index=index)

    return store.memoized(("service_nodes", name.lower(), tag, connect), index, compute)


def _health_entry(entry: NodeEntry, sid: str) -> HealthEntry:
    info = _node_info(entry)
    node_checks = [cid for cid, chk in entry.checks.items() if not chk.service_id]
    svc_checks = sorted(cid for cid, chk in entry.checks.items() if chk.service_id == sid)
    checks = tuple(_check_entry(entry, cid) for cid in (*node_checks, *svc_checks))
    svc_node = _service_node(entry, sid, info)
    return HealthEntry(
        node=info,
        service=svc_node.service,
        checks=checks,
        status=aggregate_health(c.check.status for c in checks),
        create_index=svc_node.create_index,
        modify_index=svc_node.modify_index,
    )


def health_service(
    store: CatalogStore,
    name: str,
    *,
    passing: bool = False,
    tag: str | None = None,
    connect: bool = False,
) -> QueryResult[tuple[HealthEntry, ...]]:
    """Instances of ``name`` with node and checks; ``passing`` keeps all-passing ones only."""
    locations, index = _locate(store, name, connect)

    def compute() -> QueryResult[tuple[HealthEntry, ...]]:
        found = [_health_entry(e, sid) for e, sid in _instances(store, locations, tag)]
        if passing:
            found = [h for h in found if h.status is Health.PASSING]
        return QueryResult(value=tuple(found), index=index)

    key = ("health_service", name.lower(), passing, tag, connect)
    return store.memoized(key, index, compute)


def services_of_kind(
    store: CatalogStore, kind: ServiceKind, *, passing: bool = False
) -> QueryResult[tuple[HealthEntry, ...]]:
    """Every instance of ``kind`` with health (Consul ``Internal.ServiceDump`` by kind)."""
    locations = store.locate_kind(str(kind))
    found = [_health_entry(entry, sid) for entry, sid in _instances(store, locations, None)]
    if passing:
        found = [h for h in found if h.status is Health.PASSING]
    return QueryResult(value=tuple(found), index=store.topic_index(topic_kind(str(kind))))


def checks_for_service(store: CatalogStore, name: str) -> QueryResult[tuple[CheckEntry, ...]]:
    """The checks attached to instances of ``name`` (node checks excluded, as in Consul)."""
    found: list[CheckEntry] = []
    for entry, sid in _instances(store, store.locate_service(name), None):
        cids = sorted(cid for cid, chk in entry.checks.items() if chk.service_id == sid)
        found.extend(_check_entry(entry, cid) for cid in cids)
    return QueryResult(value=tuple(found), index=store.topic_index(topic_service(name)))


def node_services(store: CatalogStore, node: str) -> QueryResult[NodeServices | None]:
    """A node and its services, or None when the node is unknown."""
    index = store.topic_index(topic_node(node))
    entry = store.entry(node)
    if entry is None:
        return QueryResult(value=None, index=index)
    info = _node_info(entry)
    found = tuple(_service_node(entry, sid, info) for sid in sorted(entry.record.services))
    return QueryResult(value=NodeServices(node=info, services=found), index=index)


def node_checks(store: CatalogStore, node: str) -> QueryResult[tuple[CheckEntry, ...]]:
    """Every check of ``node`` (``serfHealth`` first), empty when the node is unknown."""
    entry = store.entry(node)
    found: tuple[CheckEntry, ...] = ()
    if entry is not None:
        found = tuple(_check_entry(entry, cid) for cid in _ordered_checks(entry))
    return QueryResult(value=found, index=store.topic_index(topic_node(node)))


def _ordered_checks(entry: NodeEntry) -> list[str]:
    return sorted(entry.checks, key=lambda cid: (cid != "serfHealth", cid))


def checks_in_state(store: CatalogStore, state: str) -> QueryResult[tuple[CheckEntry, ...]]:
    """Checks in ``state`` ("passing", "warning", "critical" or "any") across the DC.

    Raises ``InvalidRequest`` for any other state.
    """
    if state not in ("any", Health.PASSING, Health.WARNING, Health.CRITICAL):
        raise InvalidRequest(
            f'Invalid check state "{state}" (expected any, passing, warning or critical)',
            field="state",
        )
    found = []
    for name in sorted(store.entries()):
        entry = store.entries()[name]
        for cid in _ordered_checks(entry):
            if state == "any" or entry.checks[cid].status == state:
                found.append(_check_entry(entry, cid))
    return QueryResult(value=tuple(found), index=store.topic_index(TOPIC_CHECKS))


def nodes(store: CatalogStore) -> QueryResult[tuple[NodeInfo, ...]]:
    """Every node of the datacenter, sorted by name."""
    entries = store.entries()
    found = tuple(_node_info(entries[name]) for name in sorted(entries))
    return QueryResult(value=found, index=store.topic_index(TOPIC_NODES))
