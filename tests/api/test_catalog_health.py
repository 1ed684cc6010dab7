"""/v1/catalog/*, /v1/health/*, /v1/status/*, ?dc= and blocking queries over HTTP."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from node.agent.agent import Agent
from node.api.errors import STATUS_BY_ERROR, error_middleware, status_for
from node.errors import (
    Conflict,
    DatacenterUnavailable,
    InvalidRequest,
    NotFound,
    RemoteProtocolError,
    TrustError,
    UpstreamUnavailable,
)
from tests.helpers.poll import wait_for

Client = TestClient[Any, Any]


async def _setup(client: Client) -> None:
    services = [
        {
            "Name": "web",
            "ID": "web1",
            "Port": 80,
            "Tags": ["v1", "blue"],
            "Check": {"CheckID": "w1", "TTL": "60s"},
        },
        {
            "Name": "web",
            "ID": "web2",
            "Port": 81,
            "Tags": ["v2"],
            "Check": {"CheckID": "w2", "TTL": "60s"},
        },
        {"Name": "api", "Port": 90, "Connect": {"SidecarService": {}}},
        {"Name": "db", "Port": 5432, "Connect": {"Native": True}},
    ]
    for body in services:
        resp = await client.put("/v1/agent/service/register", json=body)
        assert resp.status == 200, await resp.text()
    assert (await client.put("/v1/agent/check/pass/w1")).status == 200


async def _json(client: Client, path: str, **params: str) -> Any:
    resp = await client.get(path, params=params)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_catalog_services_nodes_and_datacenters(client: Client, agent: Agent) -> None:
    await _setup(client)
    services = await _json(client, "/v1/catalog/services")
    assert services == {
        "api": [],
        "api-sidecar-proxy": [],
        "db": [],
        "web": ["blue", "v1", "v2"],
    }
    nodes = await _json(client, "/v1/catalog/nodes")
    assert [(n["Node"], n["ID"], n["Datacenter"]) for n in nodes] == [("n1", agent.node_id, "dc1")]
    assert await _json(client, "/v1/catalog/datacenters") == ["dc1"]


async def test_catalog_service_with_tag_filter(client: Client) -> None:
    await _setup(client)
    entries = await _json(client, "/v1/catalog/service/web")
    assert [(e["ServiceID"], e["ServicePort"], e["Node"]) for e in entries] == [
        ("web1", 80, "n1"),
        ("web2", 81, "n1"),
    ]
    first = entries[0]
    for key in ("ID", "Address", "Datacenter", "TaggedAddresses", "NodeMeta", "ServiceKind", "ServiceName",
                "ServiceTags", "ServiceAddress", "ServiceMeta", "ServiceWeights", "ServiceProxy",
                "ServiceConnect", "CreateIndex", "ModifyIndex"):  # fmt: skip
        assert key in first
    tagged = await _json(client, "/v1/catalog/service/web", tag="v2")
    assert [e["ServiceID"] for e in tagged] == ["web2"]
    assert await _json(client, "/v1/catalog/service/nothing") == []


async def test_catalog_connect_lists_proxies_and_native(client: Client) -> None:
    await _setup(client)
    api = await _json(client, "/v1/catalog/connect/api")
    assert [(e["ServiceID"], e["ServiceKind"]) for e in api] == [
        ("api-sidecar-proxy", "connect-proxy")
    ]
    assert api[0]["ServiceProxy"]["DestinationServiceName"] == "api"
    db = await _json(client, "/v1/catalog/connect/db")
    assert [(e["ServiceID"], e["ServiceConnect"]) for e in db] == [("db", {"Native": True})]


async def test_catalog_node(client: Client) -> None:
    await _setup(client)
    node = await _json(client, "/v1/catalog/node/n1")
    assert node["Node"]["Node"] == "n1"
    assert set(node["Services"]) == {"web1", "web2", "api", "api-sidecar-proxy", "db"}
    assert node["Services"]["web1"]["Service"] == "web"
    resp = await client.get("/v1/catalog/node/ghost")
    assert resp.status == 404
    assert "ghost" in await resp.text()


async def test_health_service_passing_and_tag(client: Client) -> None:
    await _setup(client)
    entries = await _json(client, "/v1/health/service/web")
    assert [e["Service"]["ID"] for e in entries] == ["web1", "web2"]
    checks = {c["CheckID"]: c["Status"] for c in entries[0]["Checks"]}
    assert checks == {"serfHealth": "passing", "w1": "passing"}
    assert entries[0]["Node"]["Node"] == "n1"
    passing = await _json(client, "/v1/health/service/web", passing="")
    assert [e["Service"]["ID"] for e in passing] == ["web1"]
    assert [
        e["Service"]["ID"]
        for e in await _json(client, "/v1/health/service/web", passing="1", tag="v2")
    ] == []
    not_filtered = await _json(client, "/v1/health/service/web", passing="false")
    assert len(not_filtered) == 2


async def test_health_connect_checks_node_and_state(client: Client) -> None:
    await _setup(client)
    connect = await _json(client, "/v1/health/connect/api")
    assert [e["Service"]["ID"] for e in connect] == ["api-sidecar-proxy"]
    web_checks = await _json(client, "/v1/health/checks/web")
    assert sorted((c["CheckID"], c["Status"]) for c in web_checks) == [
        ("w1", "passing"),
        ("w2", "critical"),
    ]
    node_checks = await _json(client, "/v1/health/node/n1")
    assert node_checks[0]["CheckID"] == "serfHealth"
    critical = await _json(client, "/v1/health/state/critical")
    assert "w2" in {c["CheckID"] for c in critical}
    assert "w1" not in {c["CheckID"] for c in critical}
    everything = await _json(client, "/v1/health/state/any")
    assert {"serfHealth", "w1", "w2"} <= {c["CheckID"] for c in everything}
    resp = await client.get("/v1/health/state/bogus")
    assert resp.status == 400
    assert "bogus" in await resp.text()


async def test_status_leader_and_peers(client: Client) -> None:
    assert await _json(client, "/v1/status/leader") == "127.0.0.1:8300"
    assert await _json(client, "/v1/status/peers") == ["127.0.0.1:8300"]


async def test_every_read_carries_consul_headers(client: Client) -> None:
    await _setup(client)
    paths = [
        "/v1/agent/self", "/v1/agent/services", "/v1/agent/service/web1", "/v1/agent/checks",
        "/v1/agent/members", "/v1/catalog/services", "/v1/catalog/service/web", "/v1/catalog/connect/api",
        "/v1/catalog/nodes", "/v1/catalog/node/n1", "/v1/catalog/datacenters", "/v1/health/service/web",
        "/v1/health/connect/api", "/v1/health/checks/web", "/v1/health/node/n1", "/v1/health/state/any",
        "/v1/status/leader", "/v1/status/peers",
    ]  # fmt: skip
    for path in paths:
        resp = await client.get(path)
        assert resp.status == 200, path
        assert int(resp.headers["X-Consul-Index"]) >= 1, path
        assert resp.headers["X-Consul-KnownLeader"] == "true"
        assert resp.headers["X-Consul-LastContact"] == "0"
        assert resp.headers["Content-Type"].startswith("application/json")


async def test_dc_parameter_local_is_served_other_is_no_path(client: Client) -> None:
    await _setup(client)
    assert "web" in await _json(client, "/v1/catalog/services", dc="dc1")
    resp = await client.get("/v1/catalog/services", params={"dc": "dc2"})
    assert resp.status == 500
    assert (await resp.text()).startswith("No path to datacenter")


async def test_bad_blocking_parameters_are_400(client: Client) -> None:
    for params in ({"index": "abc"}, {"wait": "10"}, {"index": "1", "wait": "forever"}):
        resp = await client.get("/v1/catalog/services", params=params)
        assert resp.status == 400, params
        assert "Invalid" in await resp.text()


async def test_blocking_query_wakes_on_change(client: Client, agent: Agent) -> None:
    await _setup(client)
    first = await client.get("/v1/health/service/web")
    index = first.headers["X-Consul-Index"]
    waiter = asyncio.create_task(
        client.get("/v1/health/service/web", params={"index": index, "wait": "30s"})
    )
    await wait_for(lambda: agent.notifier.has_waiters, "the query parked")
    assert not waiter.done()
    # A TTL update of one of web's checks is a change of this query's answer.
    assert (await client.put("/v1/agent/check/pass/w2", params={"note": "x"})).status == 200
    resp = await asyncio.wait_for(waiter, 10)
    assert int(resp.headers["X-Consul-Index"]) > int(index)
    statuses = {c["CheckID"]: c["Status"] for e in await resp.json() for c in e["Checks"]}
    assert statuses["w2"] == "passing"


async def test_blocking_query_ignores_unrelated_changes(client: Client, agent: Agent) -> None:
    await _setup(client)
    index = (await client.get("/v1/catalog/service/web")).headers["X-Consul-Index"]
    waiter = asyncio.create_task(
        client.get("/v1/catalog/service/web", params={"index": index, "wait": "30s"})
    )
    await wait_for(lambda: agent.notifier.has_waiters, "the query parked")
    assert (await client.put("/v1/agent/service/register", json={"Name": "other"})).status == 200
    # The change woke the query; it looked again and parked anew instead of answering.
    await wait_for(lambda: agent.notifier.has_waiters, "the query parked again")
    assert not waiter.done()
    assert (
        await client.put("/v1/agent/service/register", json={"Name": "web", "ID": "web3"})
    ).status == 200
    resp = await asyncio.wait_for(waiter, 10)
    assert [e["ServiceID"] for e in await resp.json()] == ["web1", "web2", "web3"]


async def test_blocking_query_times_out_with_same_index(client: Client) -> None:
    index = (await client.get("/v1/catalog/services")).headers["X-Consul-Index"]
    loop = asyncio.get_running_loop()
    start = loop.time()
    resp = await client.get("/v1/catalog/services", params={"index": index, "wait": "100ms"})
    elapsed = loop.time() - start
    assert resp.status == 200
    assert resp.headers["X-Consul-Index"] == index
    assert 0.1 <= elapsed < 5  # wait plus at most wait/16 jitter, plus overhead


async def test_reads_are_served_from_cache_until_a_change(client: Client, agent: Agent) -> None:
    await _setup(client)
    first = await (await client.get("/v1/catalog/services")).read()
    hits = agent.response_cache.hits
    assert await (await client.get("/v1/catalog/services")).read() == first
    assert agent.response_cache.hits == hits + 1
    assert (await client.put("/v1/agent/service/register", json={"Name": "new"})).status == 200
    assert b'"new"' in await (await client.get("/v1/catalog/services")).read()


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (NotFound("x"), 404),
        (Conflict("x"), 409),
        (InvalidRequest("x"), 400),
        (TrustError("x"), 403),
        (UpstreamUnavailable("x"), 503),
        (DatacenterUnavailable("No path to datacenter"), 500),
        (RemoteProtocolError("x"), None),
    ],
)
def test_error_table(exc: Exception, status: int | None) -> None:
    assert status_for(exc) == status
    assert set(STATUS_BY_ERROR.values()) == {400, 403, 404, 409, 500, 503}


async def test_unmapped_error_is_500_with_traceback_logged(
    aiohttp_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async def boom(request: web.Request) -> web.Response:
        raise KeyError("surprise")

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/boom", boom)
    client = await aiohttp_client(app)
    with caplog.at_level(logging.ERROR, logger="node.api.errors"):
        resp = await client.get("/boom")
    assert resp.status == 500
    assert "KeyError" in await resp.text()
    record = next(r for r in caplog.records if "unhandled error" in r.getMessage())
    assert record.exc_info is not None
    assert "path=/boom" in record.getMessage()


async def test_many_blocking_queries_all_wake_on_one_change(client: Client, agent: Agent) -> None:
    await _setup(client)
    index = (await client.get("/v1/health/service/web")).headers["X-Consul-Index"]
    params = {"index": index, "wait": "30s"}
    # 90: the test client's pool holds 100 connections and the PUT below needs one.
    waiters = [
        asyncio.create_task(client.get("/v1/health/service/web", params=params)) for _ in range(90)
    ]
    await wait_for(lambda: agent.notifier.has_waiters, "requests parked on the shared future")
    assert (
        await client.put("/v1/agent/service/register", json={"Name": "web", "ID": "web9"})
    ).status == 200
    responses = await asyncio.wait_for(asyncio.gather(*waiters), 10)  # far below the 30 s wait
    assert {r.headers["X-Consul-Index"] for r in responses} != {index}
    bodies = {await r.read() for r in responses}
    assert len(bodies) == 1  # encoded once, served from the cache to everyone
