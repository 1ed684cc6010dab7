"""CatalogStore: merge by version, tombstones, serfHealth, per-item and per-topic indexes."""

from __future__ import annotations

from collections.abc import Iterable
from types import MappingProxyType

from node.catalog import queries
from node.catalog.parse import parse_service
from node.catalog.store import (
    TOPIC_CHECKS,
    TOPIC_NODES,
    TOPIC_SERVICES,
    CatalogStore,
    topic_connect,
    topic_kind,
    topic_node,
    topic_service,
)
from node.catalog.values import (
    SERF_CHECK_ID,
    CheckKind,
    CheckState,
    Health,
    NodeRecord,
    ServiceInstance,
    ServiceKind,
)


def svc(raw: dict[str, object]) -> ServiceInstance:
    return parse_service(raw).instance()


def chk(cid: str, status: Health, service_id: str = "", output: str = "") -> CheckState:
    return CheckState(id=cid, name=cid, kind=CheckKind.TTL, status=status, service_id=service_id,
                      output=output)  # fmt: skip


def record(
    name: str,
    version: int,
    services: Iterable[ServiceInstance] = (),
    checks: Iterable[CheckState] = (),
    address: str = "10.0.0.1",
) -> NodeRecord:
    return NodeRecord(
        name=name,
        node_id=f"id-{name}",
        address=address,
        datacenter="dc1",
        services=MappingProxyType({s.id: s for s in services}),
        checks=MappingProxyType({c.id: c for c in checks}),
        version=version,
    )


WEB = svc({"name": "web", "port": 80})
API = svc({"name": "api", "port": 81})


def test_CatalogStore_higher_version_wins_and_calls_on_change() -> None:
    seen: list[int] = []
    store = CatalogStore(on_change=seen.append)
    assert store.upsert_node(record("n1", 5, [WEB]))
    assert not store.upsert_node(record("n1", 5, [WEB, API]))  # same version: ignored
    assert not store.upsert_node(record("n1", 4, [API]))  # older: ignored
    entry = store.entry("n1")
    assert entry is not None and set(entry.record.services) == {"web"}
    assert store.upsert_node(record("n1", 6, [WEB, API]))
    assert seen == [2, 3] and store.index == 3


def test_CatalogStore_identical_content_new_version_does_not_bump_index() -> None:
    store = CatalogStore()
    store.upsert_node(record("n1", 1, [WEB]))
    before = store.index
    assert store.upsert_node(record("n1", 2, [WEB]))
    assert store.index == before
    assert store.versions() == {"n1": 2}


def test_CatalogStore_per_item_indexes_only_move_for_changed_items() -> None:
    store = CatalogStore()
    store.upsert_node(record("n1", 1, [WEB, API], [chk("c-web", Health.PASSING, "web")]))
    first = store.entry("n1")
    assert first is not None
    api2 = svc({"name": "api", "port": 82})
    store.upsert_node(record("n1", 2, [WEB, api2], [chk("c-web", Health.CRITICAL, "web")]))
    second = store.entry("n1")
    assert second is not None
    assert second.service_indexes["web"] == first.service_indexes["web"]
    assert second.service_indexes["api"].create_index == first.service_indexes["api"].create_index
    assert second.service_indexes["api"].modify_index == store.index
    assert second.check_indexes["c-web"].modify_index == store.index
    assert second.node_index == first.node_index


def test_CatalogStore_topics_move_only_for_affected_queries() -> None:
    store = CatalogStore()
    store.upsert_node(record("n1", 1, [WEB]))
    store.upsert_node(record("n2", 1, [API]))
    web_index = store.topic_index(topic_service("web"))
    store.upsert_node(record("n2", 2, [API], [chk("c-api", Health.WARNING, "api")]))
    assert store.topic_index(topic_service("web")) == web_index
    assert store.topic_index(topic_service("api")) == store.index
    assert store.topic_index(TOPIC_CHECKS) == store.index
    services_index = store.topic_index(TOPIC_SERVICES)
    # A node-level check touches every service on that node.
    store.upsert_node(record("n1", 2, [WEB], [chk("maint", Health.CRITICAL)]))
    assert store.topic_index(topic_service("web")) == store.index
    assert store.topic_index(TOPIC_SERVICES) == services_index  # no service changed
    assert store.topic_index(topic_node("n1")) == store.index
    assert store.topic_index(topic_node("n2")) < store.index


def test_CatalogStore_connect_and_kind_topics() -> None:
    store = CatalogStore()
    proxy = svc({"name": "web-sidecar-proxy", "kind": "connect-proxy", "port": 21000,
                 "proxy": {"destination_service_name": "Web"}})  # fmt: skip
    gw = svc({"name": "mesh-gateway", "kind": "mesh-gateway", "port": 443})
    store.upsert_node(record("n1", 1, [WEB, proxy, gw]))
    assert store.locate_connect("web") == {("n1", "web-sidecar-proxy")}
    assert store.locate_kind(str(ServiceKind.MESH_GATEWAY)) == {("n1", "mesh-gateway")}
    store.upsert_node(record("n1", 2, [WEB, gw]))
    assert store.locate_connect("web") == frozenset()
    assert store.topic_index(topic_connect("web")) == store.index
    assert store.topic_index(topic_kind("mesh-gateway")) < store.index


def test_CatalogStore_member_health_drives_serf_check() -> None:
    store = CatalogStore()
    store.set_member_health("n1", False, "")  # before the record arrives
    store.upsert_node(record("n1", 1, [WEB]))
    entry = store.entry("n1")
    assert entry is not None
    assert entry.checks[SERF_CHECK_ID].status is Health.CRITICAL
    assert entry.checks[SERF_CHECK_ID].output == "Agent not live or unreachable"
    (health,) = queries.health_service(store, "web").value
    assert health.status is Health.CRITICAL
    web_index = store.topic_index(topic_service("web"))
    assert store.set_member_health("n1", True)
    assert store.topic_index(topic_service("web")) > web_index
    (health,) = queries.health_service(store, "web").value
    assert health.status is Health.PASSING
    assert not store.set_member_health("n1", True)  # unchanged: no new index


def test_CatalogStore_remove_node_with_tombstone_refuses_stale_copies() -> None:
    store = CatalogStore()
    store.upsert_node(record("n1", 3, [WEB]))
    assert store.remove_node("n1", version=3)
    assert store.entry("n1") is None and store.locate_service("web") == frozenset()
    assert store.topic_index(TOPIC_NODES) == store.index
    assert not store.upsert_node(record("n1", 3, [WEB]))  # stale push-pull copy
    assert store.upsert_node(record("n1", 4, [WEB]))  # the node came back
    assert store.tombstones() == {}
    store.remove_node("n1")
    assert not store.remove_node("n1")
