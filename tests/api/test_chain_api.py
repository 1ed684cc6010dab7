"""``/v1/config`` with the discovery-chain kinds and ``/v1/discovery-chain``, on a fake two-DC network."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from node.api.app import make_app
from tests.connect.service_fakes import TRANSIENT, FakeNet
from tests.helpers.poll import wait_for

pytestmark = pytest.mark.timeout(60)

Client = TestClient[Any, Any]
MakeClient = Callable[[Any], Awaitable[Client]]

RESOLVER = {
    "Kind": "service-resolver",
    "Name": "api",
    "ConnectTimeout": "3s",
    "Subsets": {"v1": {"Filter": "Service.Meta.version == v1", "OnlyPassing": True}},
    "Failover": {"*": {"Datacenters": ["dc2"]}},
}


@pytest.fixture
async def net() -> AsyncIterator[FakeNet]:
    network = FakeNet()
    network.add("s1", "dc1", server=True)
    network.add("s2", "dc2", server=True)
    network.start()
    for name in ("s1", "s2"):
        svc = network.services[name]
        await wait_for(lambda svc=svc: svc.roots(), f"roots on {name}", ignoring=TRANSIENT)
    yield network
    await network.stop()


@pytest.fixture
async def s1(net: FakeNet, aiohttp_client: MakeClient) -> Client:
    return await aiohttp_client(make_app(net.agents["s1"]))


@pytest.fixture
async def s2(net: FakeNet, aiohttp_client: MakeClient) -> Client:
    return await aiohttp_client(make_app(net.agents["s2"]))


async def _put(client: Client, body: dict[str, Any]) -> tuple[int, str]:
    resp = await client.put("/v1/config", json=body)
    return resp.status, await resp.text()


async def test_resolver_round_trip_and_replicated(s1: Client, s2: Client) -> None:
    assert await _put(s1, RESOLVER) == (200, "true")
    got = await (await s1.get("/v1/config/service-resolver/api")).json()
    assert {k: v for k, v in got.items() if not k.endswith("Index")} == RESOLVER

    async def replicated() -> bool:
        resp = await s2.get("/v1/config/service-resolver/api")
        return resp.status == 200

    await wait_for(replicated, "resolver replicated to dc2")
    listed = await (await s2.get("/v1/config/service-resolver")).json()
    assert [e["Name"] for e in listed] == ["api"]


async def test_router_on_tcp_service_is_refused_with_consul_message(s1: Client) -> None:
    status, text = await _put(
        s1,
        {"Kind": "service-router", "Name": "web",
         "Routes": [{"Match": {"HTTP": {"PathPrefix": "/admin"}},
                     "Destination": {"Service": "admin"}}]},
    )  # fmt: skip
    assert status == 400
    assert 'discovery chain "web" uses a protocol "tcp" that does not permit advanced' in text
    assert (await s1.get("/v1/config/service-router/web")).status == 404

    http = {"Kind": "service-defaults", "Name": "web", "Protocol": "http"}
    assert await _put(s1, http) == (200, "true")
    admin = {"Kind": "service-defaults", "Name": "admin", "Protocol": "http"}
    assert await _put(s1, admin) == (200, "true")
    status, _ = await _put(
        s1,
        {"Kind": "service-router", "Name": "web",
         "Routes": [{"Match": {"HTTP": {"PathPrefix": "/admin"}},
                     "Destination": {"Service": "admin"}}]},
    )  # fmt: skip
    assert status == 200
    # Making web tcp again would break the router's chain: refused.
    status, text = await _put(s1, {"Kind": "service-defaults", "Name": "web", "Protocol": "tcp"})
    assert status == 400 and "uses inconsistent protocols" in text


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"Kind": "service-resolver", "Name": "a", "DefaultSubset": "v9"},
         'DefaultSubset "v9" is not a valid subset'),
        ({"Kind": "service-resolver", "Name": "a", "Subsets": {"V1": {}}}, 'Subset "V1" is invalid'),
        ({"Kind": "service-resolver", "Name": "a", "Redirect": {"Service": "b"},
          "Failover": {"*": {"Service": "c"}}}, "Redirect and Failover cannot both be set"),
        ({"Kind": "service-resolver", "Name": "a", "Failover": {"*": {}}},
         'Bad Failover\\["\\*"\\] one of Service, ServiceSubset, Namespace, or Datacenters'),
        ({"Kind": "service-resolver", "Name": "a", "Failover": {"*": {"Datacenters": [""]}}},
         "found empty datacenter"),
        ({"Kind": "service-resolver", "Name": "a", "ConnectTimeout": "-1s"},
         "Bad ConnectTimeout '-1s', must be >= 0"),
        ({"Kind": "service-resolver", "Name": "a", "Redirect": {"Sevrice": "b"}}, "Sevrice"),
        ({"Kind": "service-splitter", "Name": "a", "Splits": [{"Weight": 90}]},
         "the sum of all split weights must be 100, not 90.000000"),
        ({"Kind": "service-router", "Name": "a",
          "Routes": [{"Match": {"HTTP": {"PathPrefix": "admin"}}}]},
         "Route\\[0\\] PathPrefix doesn't start with '/': \"admin\""),
        ({"Kind": "service-resolver", "Name": "a",
          "Subsets": {"v1": {"Filter": "Service.Meta.version = v1"}}}, "Subsets.v1.Filter: "),
    ],
)  # fmt: skip
async def test_bad_entries_are_400_naming_the_field(
    s1: Client, body: dict[str, Any], message: str
) -> None:
    status, text = await _put(s1, body)
    assert status == 400, text
    assert re.search(message, text), text


async def test_redirect_loop_is_refused(s1: Client) -> None:
    assert await _put(
        s1, {"Kind": "service-resolver", "Name": "a", "Redirect": {"Service": "b"}}
    ) == (200, "true")
    status, text = await _put(
        s1, {"Kind": "service-resolver", "Name": "b", "Redirect": {"Service": "a"}}
    )
    assert status == 400
    assert (
        "detected circular resolver redirect: [a.default.dc1 -> b.default.dc1 -> a.default.dc1]"
        in text
    )


async def test_discovery_chain_get_and_post(s1: Client) -> None:
    assert await _put(s1, RESOLVER) == (200, "true")
    resp = await s1.get("/v1/discovery-chain/api")
    assert resp.status == 200 and int(resp.headers["X-Consul-Index"]) >= 1
    chain = (await resp.json())["Chain"]
    assert chain["StartNode"] == "resolver:api.default.dc1"
    node = chain["Nodes"]["resolver:api.default.dc1"]["Resolver"]
    assert node == {
        "ConnectTimeout": "3s",
        "Target": "api.default.dc1",
        "Failover": {"Targets": ["api.default.dc2"]},
    }
    td = chain["Targets"]["api.default.dc1"]["SNI"].split(".internal.")[1]
    assert td.endswith(".consul")

    other = await (await s1.get("/v1/discovery-chain/web?compile-dc=dc2")).json()
    assert other["Chain"]["StartNode"] == "resolver:web.default.dc2"
    assert other["Chain"]["Datacenter"] == "dc2"

    resp = await s1.post(
        "/v1/discovery-chain/api",
        json={"OverrideMeshGateway": {"Mode": "local"}, "OverrideConnectTimeout": "22s",
              "OverrideProtocol": "tcp"},
    )  # fmt: skip
    body = (await resp.json())["Chain"]
    assert body["Targets"]["api.default.dc2"]["MeshGateway"] == {"Mode": "local"}
    assert body["Nodes"]["resolver:api.default.dc1"]["Resolver"]["ConnectTimeout"] == "22s"
    assert len(body["CustomizationHash"]) == 8

    snake = await s1.post("/v1/discovery-chain/api", json={"override_connect_timeout": 2e9})
    resolver = (await snake.json())["Chain"]["Nodes"]["resolver:api.default.dc1"]["Resolver"]
    assert resolver["ConnectTimeout"] == "2s"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"OverrideMeshGateway": {"Mode": "sideways"}}, 400,
         "Invalid OverrideMeshGateway.Mode parameter"),
        ({"OverrideConnectTimeout": "soon"}, 400, "OverrideConnectTimeout"),
        ({"OverideProtocol": "http"}, 400, "OverideProtocol"),
    ],
)  # fmt: skip
async def test_discovery_chain_bad_overrides(
    s1: Client, body: dict[str, Any], status: int, message: str
) -> None:
    resp = await s1.post("/v1/discovery-chain/api", json=body)
    assert resp.status == status
    assert message in await resp.text()


async def test_discovery_chain_other_methods_405(s1: Client) -> None:
    resp = await s1.put("/v1/discovery-chain/api", json={})
    assert resp.status == 405
