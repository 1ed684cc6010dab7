"""/v1/agent/*: registration, checks, TTL updates, members, self; status codes."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from node.agent.agent import Agent

Client = TestClient[Any, Any]


async def _register(client: Client, body: Any, **params: str) -> Any:
    return await client.put("/v1/agent/service/register", json=body, params=params)


async def test_register_read_and_deregister_service(client: Client) -> None:
    body = {"Name": "web", "ID": "web1", "Port": 8080, "Tags": ["v1"], "Meta": {"team": "a"}}
    assert (await _register(client, body)).status == 200
    services = await (await client.get("/v1/agent/services")).json()
    assert services == {
        "web1": {
            "Kind": "",
            "ID": "web1",
            "Service": "web",
            "Tags": ["v1"],
            "Meta": {"team": "a"},
            "Port": 8080,
            "Address": "",
            "Weights": {"Passing": 1, "Warning": 1},
            "EnableTagOverride": False,
        }
    }
    one = await client.get("/v1/agent/service/web1")
    assert one.status == 200
    assert (await one.json())["Service"] == "web"
    assert int(one.headers["X-Consul-Index"]) >= 1
    assert (await client.put("/v1/agent/service/deregister/web1")).status == 200
    assert await (await client.get("/v1/agent/services")).json() == {}


async def test_lowercase_and_snake_case_bodies_are_accepted(client: Client) -> None:
    # py-consul sends lowercase keys; config-style snake_case works too.
    assert (
        await _register(client, {"name": "a", "id": "a1", "port": 1, "enabletagoverride": True})
    ).status == 200
    body = {"name": "b", "tagged_addresses": {"wan": {"address": "10.0.0.1", "port": 443}}}
    assert (await _register(client, body)).status == 200
    services = await (await client.get("/v1/agent/services")).json()
    assert services["a1"]["EnableTagOverride"] is True
    assert services["b"]["TaggedAddresses"] == {"wan": {"Address": "10.0.0.1", "Port": 443}}


async def test_unknown_service_is_404(client: Client) -> None:
    resp = await client.get("/v1/agent/service/nope")
    assert resp.status == 404
    assert "nope" in await resp.text()
    assert (await client.put("/v1/agent/service/deregister/nope")).status == 404


async def test_malformed_json_is_400_and_changes_nothing(client: Client) -> None:
    resp = await client.put("/v1/agent/service/register", data=b'{"Name": "web",')
    assert resp.status == 400
    assert "Request decode failed" in await resp.text()
    resp = await client.put("/v1/agent/service/register", data=b'["web"]')
    assert resp.status == 400
    assert "expected a JSON object" in await resp.text()
    assert await (await client.get("/v1/agent/services")).json() == {}


async def test_invalid_field_is_400_naming_it(client: Client) -> None:
    resp = await _register(client, {"Name": "web", "Port": "eighty"})
    assert resp.status == 400
    assert "port" in (await resp.text()).lower()
    resp = await _register(client, {"Name": "web", "Bogus": 1})
    assert resp.status == 400
    assert "Bogus" in await resp.text() or "bogus" in await resp.text()
    resp = await _register(client, {"Port": 80})
    assert resp.status == 400
    assert "name" in (await resp.text()).lower()


async def test_rejected_update_keeps_previous_registration(client: Client) -> None:
    assert (await _register(client, {"Name": "web", "Port": 80})).status == 200
    bad = {"Name": "web", "Port": 81, "Kind": "connect-proxy"}  # proxy without destination
    assert (await _register(client, bad)).status == 400
    services = await (await client.get("/v1/agent/services")).json()
    assert services["web"]["Port"] == 80


async def test_wrong_method_is_405(client: Client) -> None:
    assert (await client.get("/v1/agent/service/register")).status == 405
    assert (await client.post("/v1/agent/services")).status == 405
    assert (await client.delete("/v1/agent/check/pass/x")).status == 405


async def test_sidecar_registration_expands_to_two_services(client: Client) -> None:
    body = {
        "Name": "web",
        "Port": 8080,
        "Connect": {
            "SidecarService": {
                "Proxy": {"Upstreams": [{"DestinationName": "api", "LocalBindPort": 10000}]}
            }
        },
    }
    assert (await _register(client, body)).status == 200
    services = await (await client.get("/v1/agent/services")).json()
    sidecar = services["web-sidecar-proxy"]
    assert sidecar["Kind"] == "connect-proxy"
    assert 21000 <= sidecar["Port"] <= 21255
    assert sidecar["Proxy"]["DestinationServiceName"] == "web"
    assert sidecar["Proxy"]["Upstreams"][0]["DestinationName"] == "api"
    assert sidecar["Proxy"]["Upstreams"][0]["LocalBindPort"] == 10000
    checks = await (await client.get("/v1/agent/checks")).json()
    assert {c["Name"] for c in checks.values()} == {
        "Connect Sidecar Listening",
        "Connect Sidecar Aliasing web",
    }


async def test_replace_existing_checks(client: Client) -> None:
    two = {
        "Name": "web",
        "Checks": [{"CheckID": "a", "TTL": "30s"}, {"CheckID": "b", "TTL": "30s"}],
    }
    assert (await _register(client, two)).status == 200
    one = {"Name": "web", "Checks": [{"CheckID": "a", "TTL": "30s"}]}
    assert (await _register(client, one)).status == 200
    assert set(await (await client.get("/v1/agent/checks")).json()) == {"a", "b"}
    assert (await _register(client, one, **{"replace-existing-checks": "1"})).status == 200
    assert set(await (await client.get("/v1/agent/checks")).json()) == {"a"}


async def test_check_register_ttl_updates_and_deregister(client: Client) -> None:
    assert (await _register(client, {"Name": "web"})).status == 200
    body = {"Name": "web ttl", "CheckID": "web-ttl", "ServiceID": "web", "TTL": "30s"}
    assert (await client.put("/v1/agent/check/register", json=body)).status == 200
    checks = await (await client.get("/v1/agent/checks")).json()
    assert checks["web-ttl"]["Status"] == "critical"
    assert checks["web-ttl"]["ServiceName"] == "web"
    for verb, status in (("pass", "passing"), ("warn", "warning"), ("fail", "critical")):
        resp = await client.put(f"/v1/agent/check/{verb}/web-ttl", params={"note": f"via {verb}"})
        assert resp.status == 200
        check = (await (await client.get("/v1/agent/checks")).json())["web-ttl"]
        assert (check["Status"], check["Output"]) == (status, f"via {verb}")
    resp = await client.put(
        "/v1/agent/check/update/web-ttl", json={"Status": "passing", "Output": "fine"}
    )
    assert resp.status == 200
    check = (await (await client.get("/v1/agent/checks")).json())["web-ttl"]
    assert (check["Status"], check["Output"]) == ("passing", "fine")
    assert (await client.put("/v1/agent/check/deregister/web-ttl")).status == 200
    assert await (await client.get("/v1/agent/checks")).json() == {}


async def test_check_errors(client: Client) -> None:
    assert (await client.put("/v1/agent/check/pass/nope")).status == 404
    assert (await client.put("/v1/agent/check/deregister/nope")).status == 404
    body = {"Name": "tcp", "CheckID": "tcp", "TCP": "127.0.0.1:1", "Interval": "10s"}
    assert (await client.put("/v1/agent/check/register", json=body)).status == 200
    resp = await client.put("/v1/agent/check/pass/tcp")
    assert resp.status == 400
    assert "TTL" in await resp.text()
    resp = await client.put(
        "/v1/agent/check/register", json={"Name": "x", "ServiceID": "missing", "TTL": "5s"}
    )
    assert resp.status == 400
    assert "missing" in await resp.text()
    ttl = {"Name": "t", "CheckID": "t", "TTL": "5s"}
    assert (await client.put("/v1/agent/check/register", json=ttl)).status == 200
    resp = await client.put("/v1/agent/check/update/t", json={"Status": "bogus"})
    assert resp.status == 400
    assert "bogus" in await resp.text()
    resp = await client.put("/v1/agent/check/update/t", json={"Status": "passing", "Extra": 1})
    assert resp.status == 400
    assert "Extra" in await resp.text()


async def test_members_and_self(client: Client, agent: Agent) -> None:
    members = await (await client.get("/v1/agent/members")).json()
    assert [m["Name"] for m in members] == ["n1"]
    assert members[0]["Status"] == 1
    assert members[0]["Tags"]["dc"] == "dc1"
    assert members[0]["Tags"]["role"] == "consul"  # -dev is a server
    wan = await (await client.get("/v1/agent/members", params={"wan": "1"})).json()
    assert [m["Name"] for m in wan] == ["n1.dc1"]
    me = await (await client.get("/v1/agent/self")).json()
    assert me["Config"]["NodeName"] == "n1"
    assert me["Config"]["Datacenter"] == "dc1"
    assert me["Config"]["NodeID"] == agent.node_id
    assert me["Member"]["Name"] == "n1"


async def test_client_node_has_no_leader_and_no_wan_membership(
    aiohttp_client: Any, tmp_path: Any
) -> None:
    from node.api.app import make_app
    from node.config.agent import load

    node = Agent(load([], overrides={"node": "c1", "data-dir": str(tmp_path), "http-port": 0}))
    client = await aiohttp_client(make_app(node))
    resp = await client.get("/v1/status/leader")
    assert await resp.json() == ""
    assert resp.headers["X-Consul-KnownLeader"] == "false"
    assert await (await client.get("/v1/status/peers")).json() == []
    members = await (await client.get("/v1/agent/members")).json()
    assert members[0]["Tags"]["role"] == "node"
    assert await (await client.get("/v1/agent/members", params={"wan": "1"})).json() == []
