"""HTTP API of Connect and config entries, served by nodes of a fake two-DC network."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from node.api.app import make_app
from node.connect import parse_config_entry
from node.connect.ca import generate_root, private_key_to_pem
from tests.connect.service_fakes import TRANSIENT, FakeNet
from tests.helpers.poll import wait_for

pytestmark = pytest.mark.timeout(60)

Client = TestClient[Any, Any]
MakeClient = Callable[[Any], Awaitable[Client]]

SIDECAR = {
    "Name": "web",
    "Port": 8080,
    "Connect": {
        "SidecarService": {
            "Proxy": {
                "Upstreams": [
                    {"DestinationName": "api", "Datacenter": "dc2", "LocalBindPort": 10000},
                    {
                        "DestinationName": "db",
                        "Datacenter": "dc2",
                        "LocalBindPort": 10001,
                        "MeshGateway": {"Mode": "remote"},
                    },
                ]
            }
        }
    },
}


@pytest.fixture
async def net() -> AsyncIterator[FakeNet]:
    network = FakeNet()
    network.add("s1", "dc1", server=True)
    network.add("c1", "dc1", enable_central_service_config=True)
    network.add("s2", "dc2", server=True)
    network.add("c2", "dc2")
    network.agents["c1"].register(SIDECAR)
    network.start()
    for name in ("s1", "c1", "s2", "c2"):
        svc = network.services[name]
        await wait_for(lambda svc=svc: svc.roots(), f"roots on {name}", ignoring=TRANSIENT)
    await wait_for(
        lambda: network.services["s2"].authority.signer, "dc2 intermediate", ignoring=TRANSIENT
    )
    yield network
    await network.stop()


@pytest.fixture
async def c1(net: FakeNet, aiohttp_client: MakeClient) -> Client:
    return await aiohttp_client(make_app(net.agents["c1"]))


@pytest.fixture
async def c2(net: FakeNet, aiohttp_client: MakeClient) -> Client:
    return await aiohttp_client(make_app(net.agents["c2"]))


# --------------------------------------------------------------------------- CA


async def test_roots_shape_and_no_key(c1: Client, c2: Client) -> None:
    for path in ("/v1/connect/ca/roots", "/v1/agent/connect/ca/roots"):
        resp = await c1.get(path)
        assert resp.status == 200 and int(resp.headers["X-Consul-Index"]) >= 1
        body = await resp.json()
        assert body["TrustDomain"].endswith(".consul")
        (root,) = body["Roots"]
        assert root["ID"] == body["ActiveRootID"] and root["Active"] is True
        assert len(root["ID"].split(":")) == 20 and len(root["SigningKeyID"].split(":")) == 32
        assert root["Name"] == "Consul CA Root Cert" and root["RootCert"].startswith("-----BEGIN")
        assert "PRIVATE" not in await resp.text()
    # Every node of both DCs answers the same bundle.
    other = await (await c2.get("/v1/connect/ca/roots")).json()
    assert other["ActiveRootID"] == body["ActiveRootID"]


async def test_ca_configuration_get_put_and_rotation(net: FakeNet, c2: Client) -> None:
    resp = await c2.get("/v1/connect/ca/configuration")
    body = await resp.json()
    assert body["Provider"] == "consul" and body["Config"]["LeafCertTTL"] == "72h0m0s"
    assert "PrivateKey" not in body["Config"]
    bad = await c2.put("/v1/connect/ca/configuration", json={"Config": {"LeafCertTTL": "5m"}})
    assert bad.status == 400 and "LeafCertTTL" in await bad.text()
    bad = await c2.put("/v1/connect/ca/configuration", json={"Config": {"Bogus": 1}})
    assert bad.status == 400 and "Bogus" in await bad.text()
    roots = net.services["c2"].roots()
    root = generate_root(trust_domain=roots.trust_domain, now=net.agents["c2"].clock.utcnow())
    new = {"Provider": "consul", "Config": {"LeafCertTTL": "24h",
           "PrivateKey": private_key_to_pem(root.key), "RootCert": root.info.root_cert}}  # fmt: skip
    resp = await c2.put("/v1/connect/ca/configuration", json=new)
    assert resp.status == 200 and await resp.json() is True
    after = await (await c2.get("/v1/connect/ca/roots")).json()
    assert after["ActiveRootID"] == root.info.id and len(after["Roots"]) == 2
    config = await (await c2.get("/v1/connect/ca/configuration")).json()
    assert config["Config"]["LeafCertTTL"] == "24h0m0s"
    assert "PRIVATE" not in await (await c2.get("/v1/connect/ca/configuration")).text()


async def test_leaf_endpoint(net: FakeNet, c1: Client) -> None:
    resp = await c1.get("/v1/agent/connect/ca/leaf/web")
    assert resp.status == 200
    leaf = await resp.json()
    assert leaf["Service"] == "web" and leaf["ServiceURI"].endswith("/dc/dc1/svc/web")
    assert leaf["PrivateKeyPEM"].startswith("-----BEGIN EC PRIVATE KEY-----")
    assert resp.headers["X-Consul-Index"] == str(leaf["ModifyIndex"])
    # Blocking on the current index with a short wait returns the same leaf.
    again = await c1.get(f"/v1/agent/connect/ca/leaf/web?index={leaf['ModifyIndex']}&wait=100ms")
    assert (await again.json())["SerialNumber"] == leaf["SerialNumber"]
    missing = await c1.get("/v1/agent/connect/ca/leaf/nothere")
    assert missing.status == 404 and "not registered on this node" in await missing.text()


# --------------------------------------------------------------------------- intentions


async def test_intentions_crud_check_match_authorize(net: FakeNet, c1: Client, c2: Client) -> None:
    created = await c2.post(
        "/v1/connect/intentions",
        json={"SourceName": "web", "DestinationName": "api", "Action": "deny"},
    )
    assert created.status == 200
    ixn_id = (await created.json())["ID"]
    got = await (await c2.get(f"/v1/connect/intentions/{ixn_id}")).json()
    assert got["Precedence"] == 9 and got["Action"] == "deny" and got["SourceNS"] == "default"
    await wait_for(
        lambda: net.services["c1"].intentions(), "intention reached dc1", ignoring=TRANSIENT
    )
    listed = await (await c1.get("/v1/connect/intentions")).json()
    assert [i["ID"] for i in listed] == [ixn_id]
    check = await c1.get("/v1/connect/intentions/check?source=web&destination=api")
    assert await check.json() == {"Allowed": False}
    other = await c1.get("/v1/connect/intentions/check?source=db&destination=api")
    assert await other.json() == {"Allowed": True}
    match = await (await c1.get("/v1/connect/intentions/match?by=destination&name=api")).json()
    assert [i["ID"] for i in match["api"]] == [ixn_id]
    td = net.services["c1"].trust_domain
    auth = await c1.post(
        "/v1/agent/connect/authorize",
        json={"Target": "api", "ClientCertURI": f"spiffe://{td}/ns/default/dc/dc1/svc/web"},
    )
    body = await auth.json()
    assert body["Authorized"] is False and body["Reason"].startswith("Matched intention: DENY")
    upd = await c1.put(
        f"/v1/connect/intentions/{ixn_id}",
        json={"SourceName": "web", "DestinationName": "api", "Action": "allow"},
    )
    assert upd.status == 200
    assert (await (await c1.get(f"/v1/connect/intentions/{ixn_id}")).json())["Action"] == "allow"
    assert (await c1.delete(f"/v1/connect/intentions/{ixn_id}")).status == 200
    gone = await c1.get(f"/v1/connect/intentions/{ixn_id}")
    assert gone.status == 404


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"SourceName": "web", "DestinationName": "api", "Action": "maybe"}, 400, "Action"),
        ({"SourceName": "we*", "DestinationName": "api", "Action": "allow"}, 400, "partial"),
        ({"SourceName": "web", "Action": "allow"}, 400, "DestinationName"),
        ({"SourceName": "web", "DestinationName": "api", "Bogus": 1}, 400, "Bogus"),
        ("not an object", 400, "expected a JSON object"),
    ],
)
async def test_bad_intentions_are_400_and_change_nothing(
    net: FakeNet, c1: Client, body: object, status: int, message: str
) -> None:
    resp = await c1.post("/v1/connect/intentions", json=body)
    assert resp.status == status and message in await resp.text()
    assert net.services["c1"].intentions() == ()


async def test_duplicate_intention_is_409_and_authorize_bad_uri_is_400(c1: Client) -> None:
    body = {"SourceName": "web", "DestinationName": "api", "Action": "allow"}
    assert (await c1.post("/v1/connect/intentions", json=body)).status == 200
    dup = await c1.post("/v1/connect/intentions", json=body)
    assert dup.status == 409 and "duplicate intention" in await dup.text()
    bad = await c1.post("/v1/agent/connect/authorize", json={"Target": "api", "ClientCertURI": "x"})
    assert bad.status == 400
    nothing = await c1.post("/v1/agent/connect/authorize", json={"ClientCertURI": "x"})
    assert nothing.status == 400 and "Target" in await nothing.text()


async def test_exact_intention_endpoints(c1: Client) -> None:
    q = "?source=web&destination=db"
    assert await (await c1.put(f"/v1/connect/intentions/exact{q}", json={"Action": "deny"})).json()
    got = await (await c1.get(f"/v1/connect/intentions/exact{q}")).json()
    assert got["Action"] == "deny"
    assert await (await c1.put(f"/v1/connect/intentions/exact{q}", json={"Action": "allow"})).json()
    again = await (await c1.get(f"/v1/connect/intentions/exact{q}")).json()
    assert again["ID"] == got["ID"] and again["Action"] == "allow"
    assert (await c1.delete(f"/v1/connect/intentions/exact{q}")).status == 200
    assert (await c1.get(f"/v1/connect/intentions/exact{q}")).status == 404


# --------------------------------------------------------------------------- config entries

SEED_PROXY_DEFAULTS = {"Kind": "proxy-defaults", "Name": "global", "MeshGateway": {"Mode": "local"}}
SEED_SERVICE_DEFAULTS = {
    "Kind": "service-defaults",
    "Name": "web",
    "MeshGateway": {"Mode": "local"},
}


async def test_config_entries_crud_cas_and_replication(
    net: FakeNet, c1: Client, c2: Client
) -> None:
    resp = await c2.put("/v1/config", json=SEED_SERVICE_DEFAULTS)
    assert resp.status == 200 and await resp.json() is True
    assert await (await c2.put("/v1/config?cas=0", json=SEED_SERVICE_DEFAULTS)).json() is False
    got = await (await c2.get("/v1/config/service-defaults/web")).json()
    assert got["Kind"] == "service-defaults" and got["MeshGateway"] == {"Mode": "local"}
    stale = await c2.put(f"/v1/config?cas={got['ModifyIndex'] + 7}", json=SEED_SERVICE_DEFAULTS)
    assert await stale.json() is False
    fresh = await c2.put(f"/v1/config?cas={got['ModifyIndex']}", json=SEED_SERVICE_DEFAULTS)
    assert await fresh.json() is True
    await wait_for(
        lambda: net.services["c1"].config_entries(), "entry reached dc1", ignoring=TRANSIENT
    )
    listed = await (await c1.get("/v1/config/service-defaults")).json()
    assert [e["Name"] for e in listed] == ["web"]
    assert (await c1.delete("/v1/config/service-defaults/web")).status == 200
    gone = await c1.get("/v1/config/service-defaults/web")
    assert gone.status == 404
    assert 'Config entry not found for "service-defaults" / "web"' in await gone.text()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"Kind": "service-defaults", "Name": "web", "MeshGateway": {"Mode": "x"}},
         'Invalid Mesh Gateway Mode: "x"'),
        ({"Kind": "proxy-defaults", "Name": "other"}, "only \"global\""),
        ({"Kind": "service-splitter", "Name": "web"}, "no splits configured"),
        ({"Kind": "ingress-gateway", "Name": "web"}, "invalid config entry kind"),
        ({"Name": "web"}, "Kind"),
        ({"Kind": "service-defaults", "Name": "web", "Protokol": "http"}, "Protokol"),
    ],
)  # fmt: skip
async def test_bad_config_entries_are_400_and_change_nothing(
    net: FakeNet, c1: Client, body: dict[str, Any], message: str
) -> None:
    resp = await c1.put("/v1/config", json=body)
    assert resp.status == 400 and message in await resp.text()
    assert net.services["c1"].config_entries() == {}


async def test_config_get_blocks_until_a_change(net: FakeNet, c1: Client) -> None:
    assert await (await c1.put("/v1/config", json=SEED_PROXY_DEFAULTS)).json() is True
    first = await c1.get("/v1/config/proxy-defaults/global")
    index = int(first.headers["X-Consul-Index"])
    notifier = net.agents["c1"].notifier
    assert not notifier.has_waiters  # so the wait below sees the query itself
    waiter = asyncio.ensure_future(
        c1.get(f"/v1/config/proxy-defaults/global?index={index}&wait=5s")
    )
    await wait_for(lambda: notifier.has_waiters, "the query parked on c1")
    assert not waiter.done()
    changed = dict(SEED_PROXY_DEFAULTS, MeshGateway={"Mode": "remote"})
    await net.services["c2"].put_config_entry(parse_config_entry(changed))
    resp = await asyncio.wait_for(waiter, 5)
    assert int(resp.headers["X-Consul-Index"]) > index
    assert (await resp.json())["MeshGateway"] == {"Mode": "remote"}


async def test_proxy_config_reports_mode_and_deciding_level(c1: Client) -> None:
    assert await (await c1.put("/v1/config", json=SEED_PROXY_DEFAULTS)).json() is True
    resp = await c1.get("/v1/agent/connect/proxy-config/web-sidecar-proxy")
    assert resp.status == 200
    body = await resp.json()
    ups = {u["DestinationName"]: u for u in body["Upstreams"]}
    assert ups["api"]["MeshGatewayMode"] == "local" and ups["api"]["DecidedBy"] == "proxy-defaults"
    assert ups["db"]["MeshGatewayMode"] == "remote" and ups["db"]["DecidedBy"] == "upstream"
    assert ups["api"]["UsesGateway"] is True
    assert (await c1.get("/v1/agent/connect/proxy-config/nope")).status == 404
    assert (await c1.get("/v1/agent/connect/proxy-config/web")).status == 400


async def test_missing_entry_is_404_with_an_index_and_can_be_waited_for(
    net: FakeNet, c1: Client
) -> None:
    first = await c1.get("/v1/config/service-defaults/later")
    assert first.status == 404 and "X-Consul-Index" in first.headers
    index = first.headers["X-Consul-Index"]
    notifier = net.agents["c1"].notifier
    assert not notifier.has_waiters  # so the wait below sees the query itself
    waiter = asyncio.ensure_future(
        c1.get(f"/v1/config/service-defaults/later?index={index}&wait=5s")
    )
    await wait_for(lambda: notifier.has_waiters, "the query parked on c1")
    assert not waiter.done()
    await net.services["c2"].put_config_entry(
        parse_config_entry({"Kind": "service-defaults", "Name": "later"})
    )
    resp = await asyncio.wait_for(waiter, 5)
    assert resp.status == 200 and (await resp.json())["Name"] == "later"
