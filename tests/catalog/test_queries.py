"""Catalog and health queries over a store filled with two nodes."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

import pytest

from node.catalog import queries
from node.catalog.parse import parse_service
from node.catalog.store import CatalogStore
from node.catalog.values import CheckKind, CheckState, Health, NodeRecord, ServiceKind
from node.errors import InvalidRequest


def _store() -> CatalogStore:
    web1 = parse_service(
        {"name": "web", "id": "web1", "port": 80, "tags": ["v1", "blue"]}
    ).instance()
    web2 = parse_service({"name": "web", "id": "web2", "port": 80, "tags": ["v2"]}).instance()
    proxy = parse_service({"name": "web-sidecar-proxy", "id": "web1-sidecar-proxy", "kind": "connect-proxy",
                           "port": 21000, "tags": ["p"],
                           "proxy": {"destination_service_name": "web"}}).instance()  # fmt: skip
    native = parse_service(
        {"name": "WEB", "id": "native", "port": 90, "connect": {"native": True}}
    ).instance()
    gw = parse_service({"name": "mesh-gateway", "kind": "mesh-gateway", "port": 443}).instance()
    checks_n1 = {
        "c1": CheckState(id="c1", name="c1", kind=CheckKind.TTL, status=Health.PASSING, service_id="web1",
                         service_name="web"),
        "c2": CheckState(id="c2", name="c2", kind=CheckKind.TTL, status=Health.WARNING, service_id="web1",
                         service_name="web"),
    }  # fmt: skip
    checks_n2 = {
        "c3": CheckState(id="c3", name="c3", kind=CheckKind.TCP, status=Health.CRITICAL, service_id="web2",
                         service_name="web"),
    }  # fmt: skip
    store = CatalogStore()
    store.upsert_node(NodeRecord(name="n1", node_id="i1", address="10.0.0.1", datacenter="dc1",
                                 services=MappingProxyType({s.id: s for s in (web1, proxy, gw)}),
                                 checks=MappingProxyType(checks_n1), version=1))  # fmt: skip
    store.upsert_node(NodeRecord(name="n2", node_id="i2", address="10.0.0.2", datacenter="dc1",
                                 services=MappingProxyType({s.id: s for s in (web2, native)}),
                                 checks=MappingProxyType(checks_n2), version=1))  # fmt: skip
    return store


def test_services_lists_names_with_tag_union() -> None:
    result = queries.services(_store())
    assert dict(result.value) == {
        "mesh-gateway": (),
        "web": ("blue", "v1", "v2"),
        "web-sidecar-proxy": ("p",),
    }
    assert result.index >= 1


def test_service_nodes_by_name_tag_and_connect() -> None:
    store = _store()
    found = queries.service_nodes(store, "web").value
    assert [(s.node.name, s.service.id) for s in found] == [
        ("n1", "web1"),
        ("n2", "native"),
        ("n2", "web2"),
    ]
    assert [s.service.id for s in queries.service_nodes(store, "web", tag="V2").value] == ["web2"]
    connect = queries.service_nodes(store, "web", connect=True).value
    assert [s.service.id for s in connect] == ["web1-sidecar-proxy", "native"]
    assert connect[0].node.address == "10.0.0.1"
    assert queries.service_nodes(store, "nope").value == ()


def test_health_service_aggregates_and_filters_passing() -> None:
    store = _store()
    entries = {h.service.id: h for h in queries.health_service(store, "web").value}
    assert entries["web1"].status is Health.WARNING
    assert [c.check.id for c in entries["web1"].checks] == ["serfHealth", "c1", "c2"]
    assert entries["web2"].status is Health.CRITICAL
    assert entries["native"].status is Health.PASSING
    passing = queries.health_service(store, "web", passing=True).value
    assert [h.service.id for h in passing] == ["native"]
    store.set_member_health("n2", False)
    assert queries.health_service(store, "web", passing=True).value == ()
    connect = queries.health_service(store, "web", connect=True).value
    assert [h.service.kind for h in connect] == [ServiceKind.CONNECT_PROXY, ServiceKind.TYPICAL]


def test_services_of_kind_finds_gateways() -> None:
    (gw,) = queries.services_of_kind(_store(), ServiceKind.MESH_GATEWAY).value
    assert gw.service.name == "mesh-gateway" and gw.node.name == "n1"


def test_checks_node_and_state_queries() -> None:
    store = _store()
    assert [c.check.id for c in queries.checks_for_service(store, "web").value] == [
        "c1",
        "c2",
        "c3",
    ]
    n1 = queries.node_services(store, "n1").value
    assert n1 is not None and [s.service.id for s in n1.services] == [
        "mesh-gateway",
        "web1",
        "web1-sidecar-proxy",
    ]
    assert queries.node_services(store, "zz").value is None
    assert [c.check.id for c in queries.node_checks(store, "n2").value] == ["serfHealth", "c3"]
    assert [c.check.id for c in queries.checks_in_state(store, "critical").value] == ["c3"]
    assert len(queries.checks_in_state(store, "any").value) == 5
    with pytest.raises(InvalidRequest, match='Invalid check state "bad"'):
        queries.checks_in_state(store, "bad")
    assert [n.name for n in queries.nodes(store).value] == ["n1", "n2"]


def test_query_index_reflects_only_what_was_read() -> None:
    store = _store()
    web_index = queries.health_service(store, "web").index
    gw_index = queries.services_of_kind(store, ServiceKind.MESH_GATEWAY).index
    rec = store.entry("n2")
    assert rec is not None
    checks = dict(rec.record.checks)
    checks["c3"] = CheckState(id="c3", name="c3", kind=CheckKind.TCP, status=Health.PASSING,
                              service_id="web2", service_name="web")  # fmt: skip
    store.upsert_node(replace(rec.record, checks=MappingProxyType(checks), version=2))
    assert queries.health_service(store, "web").index == store.index > web_index
    assert queries.services_of_kind(store, ServiceKind.MESH_GATEWAY).index == gw_index


def test_query_results_are_reused_until_their_topic_changes() -> None:
    store = _store()
    first = queries.health_service(store, "web", passing=False)
    assert queries.health_service(store, "web") is first
    assert queries.services(store) is queries.services(store)
    other = queries.health_service(store, "web", passing=True)
    assert other is not first
    store.set_member_health("n1", False)
    again = queries.health_service(store, "web")
    assert again is not first and again.index > first.index
    assert {h.service.id: h.status for h in again.value}["web1"] is Health.CRITICAL
