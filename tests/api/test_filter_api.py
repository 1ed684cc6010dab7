"""?filter= and ?node-meta= over HTTP: every list endpoint, bad filters, py-consul."""

from __future__ import annotations

import asyncio
from typing import Any

import consul
import pytest
from aiohttp.test_utils import TestClient

from node.api.filtering import Refinement, Shape, compiled_filter

Client = TestClient[Any, Any]

SERVICES = [
    {
        "Name": "web",
        "ID": "web1",
        "Port": 80,
        "Tags": ["v1", "blue"],
        "Meta": {"version": "v1"},
        "Check": {"CheckID": "w1", "TTL": "60s"},
    },
    {
        "Name": "web",
        "ID": "web2",
        "Port": 81,
        "Tags": ["v2", "canary"],
        "Meta": {"version": "v2"},
        "Check": {"CheckID": "w2", "TTL": "60s"},
    },
    {"Name": "db", "Port": 5432},
]


@pytest.fixture
async def setup(client: Client) -> Client:
    for body in SERVICES:
        resp = await client.put("/v1/agent/service/register", json=body)
        assert resp.status == 200, await resp.text()
    assert (await client.put("/v1/agent/check/pass/w2")).status == 200
    return client


async def get(client: Client, path: str, **params: str) -> Any:
    resp = await client.get(path, params=params)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_agent_services_and_checks(setup: Client) -> None:
    assert set(await get(setup, "/v1/agent/services", filter='Service == "nomatch"')) == set()
    assert set(await get(setup, "/v1/agent/services", filter="Service == web")) == {"web1", "web2"}
    assert set(await get(setup, "/v1/agent/services", filter="Meta.version == v2")) == {"web2"}
    assert set(await get(setup, "/v1/agent/services", filter="Tags contains blue")) == {"web1"}
    assert set(await get(setup, "/v1/agent/services", filter="Port == 5432")) == {"db"}
    assert set(await get(setup, "/v1/agent/services")) == {"web1", "web2", "db"}
    assert set(await get(setup, "/v1/agent/checks", filter="Status == passing")) == {"w2"}
    assert set(await get(setup, "/v1/agent/checks", filter="Status != passing")) == {"w1"}


async def test_health_and_catalog(setup: Client) -> None:
    expr = (
        "Service.Meta.version == v2 and Service.Tags contains canary and Checks.Status == passing"
    )
    entries = await get(setup, "/v1/health/service/web", filter=expr)
    assert [e["Service"]["ID"] for e in entries] == ["web2"]
    entries = await get(setup, "/v1/health/service/web", filter="Checks.Status == critical")
    assert [e["Service"]["ID"] for e in entries] == ["web1"]
    checks = await get(setup, "/v1/health/checks/web", filter="Status == critical")
    assert [c["CheckID"] for c in checks] == ["w1"]
    checks = await get(setup, "/v1/health/node/n1", filter='ServiceName != ""')
    assert {c["CheckID"] for c in checks} == {"w1", "w2"}
    checks = await get(
        setup, "/v1/health/state/any", filter="ServiceName == web and Status == passing"
    )
    assert [c["CheckID"] for c in checks] == ["w2"]
    rows = await get(setup, "/v1/catalog/service/web", filter="ServiceMeta.version != v1")
    assert [r["ServiceID"] for r in rows] == ["web2"]
    nodes = await get(setup, "/v1/catalog/nodes", filter="Node == n1")
    assert [n["Node"] for n in nodes] == ["n1"]
    assert await get(setup, "/v1/catalog/nodes", filter="Node == other") == []
    node = await get(setup, "/v1/catalog/node/n1", filter="Service == db")
    assert set(node["Services"]) == {"db"} and node["Node"]["Node"] == "n1"
    # An empty filter is no filter.
    assert len(await get(setup, "/v1/health/service/web", filter="")) == 2


async def test_node_meta(setup: Client) -> None:
    assert len(await get(setup, "/v1/catalog/nodes")) == 1
    assert await get(setup, "/v1/catalog/nodes", **{"node-meta": "nosuch:key"}) == []
    assert await get(setup, "/v1/catalog/service/web", **{"node-meta": "rack:r9"}) == []
    assert await get(setup, "/v1/health/service/web", **{"node-meta": "rack:r9"}) == []
    resp = await setup.get("/v1/health/checks/web", params={"node-meta": "rack:r9"})
    assert resp.status == 400 and "node-meta" in await resp.text()


def test_node_meta_on_each_shape() -> None:
    rows = [
        {"Node": "a", "NodeMeta": {"rack": "r1", "os": "linux"}, "ServiceMeta": {"v": "1"}},
        {"Node": "b", "NodeMeta": {"rack": "r2", "os": "linux"}, "ServiceMeta": {"v": "2"}},
        {"Node": "c", "NodeMeta": {}, "ServiceMeta": {}},
    ]
    one = Refinement(Shape.SERVICE_NODES, None, (("os", "linux"), ("rack", "r1")))
    assert [r["Node"] for r in one(rows)] == ["a"]
    both = Refinement(
        Shape.SERVICE_NODES,
        compiled_filter("ServiceMeta.v == 2", Shape.SERVICE_NODES),
        (("os", "linux"),),
    )
    assert [r["Node"] for r in both(rows)] == ["b"]
    entries = [{"Node": {"Node": "a", "Meta": {"rack": "r1"}}}, {"Node": {"Node": "b", "Meta": {}}}]
    assert Refinement(Shape.HEALTH_ENTRIES, None, (("rack", "r1"),))(entries) == entries[:1]
    nodes = [{"Node": "a", "Meta": {"k": "x:y"}}, {"Node": "b", "Meta": {"k": ""}}]
    assert Refinement(Shape.NODES, None, (("k", "x:y"),))(nodes) == nodes[:1]
    assert Refinement(Shape.NODES, None, (("k", ""),))(nodes) == nodes[1:]


@pytest.mark.parametrize(
    ("path", "expr", "detail"),
    [
        ("/v1/agent/services", "foo", '1:4 (3): no match found, expected: "!=", ".", "==", "["'),
        ("/v1/agent/services", "Nope == 1", 'Selector "Nope" is not valid'),
        (
            "/v1/agent/checks",
            "Status is empty",
            'Invalid match operator "Is Empty" for selector "Status"',
        ),
        (
            "/v1/catalog/nodes",
            "Address == 10.10.10.10",
            '1:17 (16): rule "number": Invalid number literal',
        ),
        ("/v1/catalog/service/web", "ServicePort == abc", 'Failed to coerce value "abc"'),
        ("/v1/health/service/web", "Checks.Status == (", "no match found"),
        ("/v1/health/state/any", "Service == web", 'Selector "Service" is not valid'),
        ("/v1/catalog/node/n1", "Node == x", 'Selector "Node" is not valid'),
    ],
)
async def test_bad_filters_are_400(setup: Client, path: str, expr: str, detail: str) -> None:
    resp = await setup.get(path, params={"filter": expr})
    assert resp.status == 400
    text = await resp.text()
    assert text.startswith("Failed to create boolean expression evaluator: "), text
    assert detail in text


async def test_filter_where_it_cannot_apply_is_refused(setup: Client) -> None:
    resp = await setup.get("/v1/catalog/services", params={"filter": "ServiceName == web"})
    assert resp.status == 400


async def test_blocking_and_cache_keep_filters_apart(setup: Client) -> None:
    everything = await get(setup, "/v1/health/service/web")
    only = await get(setup, "/v1/health/service/web", filter="Service.ID == web1")
    again = await get(setup, "/v1/health/service/web")
    assert len(everything) == len(again) == 2 and len(only) == 1
    resp = await setup.get(
        "/v1/health/service/web", params={"filter": "Service.ID == web1", "index": "1"}
    )
    assert resp.status == 200 and len(await resp.json()) == 1


async def test_py_consul_filters(setup: Client) -> None:
    c = consul.Consul(host=setup.host, port=setup.port)
    services = await asyncio.to_thread(c.agent.services, filter_expr="Meta.version == v1")
    assert set(services) == {"web1"}
    _, nodes = await asyncio.to_thread(c.catalog.nodes, filter_expr="Node == n1")
    assert [n["Node"] for n in nodes] == ["n1"]
    _, nodes = await asyncio.to_thread(c.catalog.nodes, node_meta={"rack": "none"})
    assert nodes == []
    with pytest.raises(
        consul.ConsulException, match="Failed to create boolean expression evaluator"
    ):
        await asyncio.to_thread(c.agent.services, filter_expr="Service ==")


async def test_pretty(setup: Client) -> None:
    compact = await setup.get("/v1/agent/services", params={"filter": "Service == db"})
    pretty = await setup.get("/v1/agent/services", params={"filter": "Service == db", "pretty": ""})
    text = await pretty.text()
    assert "\n    " in text and text.endswith("}\n")
    assert "\n" not in await compact.text()
    assert await pretty.json() == await compact.json()
