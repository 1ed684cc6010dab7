"""Maintenance mode through the HTTP API, py-consul, the CLI and a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import consul
import pytest
from aiohttp.test_utils import TestClient

from node.catalog.local import LocalState, NodeIdentity
from node.catalog.maintenance import DEFAULT_NODE_REASON, DEFAULT_SERVICE_REASON
from node.catalog.parse import parse_service
from node.catalog.store import CatalogStore
from node.cli import main as cli
from tests.helpers.cluster import Cluster

Client = TestClient[Any, Any]


async def _register_web(client: Client) -> None:
    resp = await client.put("/v1/agent/service/register", json={"Name": "web", "Port": 80})
    assert resp.status == 200


async def _passing(client: Client, service: str) -> list[Any]:
    resp = await client.get(f"/v1/health/service/{service}", params={"passing": "1"})
    assert resp.status == 200
    body: list[Any] = await resp.json()
    return body


async def test_service_maintenance_adds_consuls_critical_check_and_drops_the_instance(
    client: Client,
) -> None:
    await _register_web(client)
    assert len(await _passing(client, "web")) == 1
    resp = await client.put(
        "/v1/agent/service/maintenance/web", params={"enable": "true", "reason": "upgrade"}
    )
    assert resp.status == 200
    checks = await (await client.get("/v1/agent/checks")).json()
    check = checks["_service_maintenance:web"]
    keys = ("Name", "Status", "Notes", "ServiceID", "ServiceName", "Type")
    assert {k: check[k] for k in keys} == {
        "Name": "Service Maintenance Mode",
        "Status": "critical",
        "Notes": "upgrade",
        "ServiceID": "web",
        "ServiceName": "web",
        "Type": "maintenance",
    }
    assert await _passing(client, "web") == []
    # Enabling again keeps the first reason (Consul's behaviour).
    await client.put("/v1/agent/service/maintenance/web", params={"enable": "1", "reason": "x"})
    checks = await (await client.get("/v1/agent/checks")).json()
    assert checks["_service_maintenance:web"]["Notes"] == "upgrade"
    resp = await client.put("/v1/agent/service/maintenance/web", params={"enable": "false"})
    assert resp.status == 200
    assert "_service_maintenance:web" not in await (await client.get("/v1/agent/checks")).json()
    assert len(await _passing(client, "web")) == 1


async def test_node_maintenance_default_reason_takes_every_service_out(client: Client) -> None:
    await _register_web(client)
    assert (await client.put("/v1/agent/maintenance", params={"enable": "True"})).status == 200
    checks = await (await client.get("/v1/agent/checks")).json()
    check = checks["_node_maintenance"]
    assert check["Name"] == "Node Maintenance Mode"
    assert check["Notes"] == DEFAULT_NODE_REASON
    assert check["ServiceID"] == "" and check["Status"] == "critical"
    assert await _passing(client, "web") == []
    assert (await client.put("/v1/agent/maintenance", params={"enable": "f"})).status == 200
    assert "_node_maintenance" not in await (await client.get("/v1/agent/checks")).json()
    assert len(await _passing(client, "web")) == 1


@pytest.mark.parametrize(
    ("path", "params", "status", "message"),
    [
        ("/v1/agent/maintenance", {}, 400, "Missing value for enable"),
        ("/v1/agent/maintenance", {"enable": "yes"}, 400, 'Invalid value for enable: "yes"'),
        ("/v1/agent/service/maintenance/web", {}, 400, "Missing value for enable"),
        ("/v1/agent/service/maintenance/", {"enable": "true"}, 400, "Missing service ID"),
        (
            "/v1/agent/service/maintenance/ghost",
            {"enable": "true"},
            404,
            'No service registered with ID "ghost"',
        ),
        (
            "/v1/agent/service/maintenance/ghost",
            {"enable": "false"},
            404,
            'No service registered with ID "ghost"',
        ),
    ],
)
async def test_bad_requests_get_consuls_answers(
    client: Client, path: str, params: dict[str, str], status: int, message: str
) -> None:
    await _register_web(client)
    resp = await client.put(path, params=params)
    assert resp.status == status
    assert (await resp.text()).strip() == message


def test_maintenance_survives_a_restart_and_goes_with_its_service(tmp_path: Path) -> None:
    def local() -> LocalState:
        ident = NodeIdentity(name="m1", datacenter="dc1", address="127.0.0.1")
        return LocalState(identity=ident, store=CatalogStore(), data_dir=tmp_path)

    first = local()
    first.register_service(parse_service({"name": "web", "port": 80}))
    first.register_service(parse_service({"name": "db", "port": 81}))
    assert first.enable_maintenance("", "rack move")
    assert first.enable_maintenance("web", "")
    assert first.enable_maintenance("db", "disk")
    first.deregister_service("db")
    second = local()
    assert dict(second.maintenance()) == {"": "rack move", "web": DEFAULT_SERVICE_REASON}
    assert second.check_state("_node_maintenance").status == "critical"
    # Replacing a service's checks does not end its maintenance.
    second.register_service(
        parse_service({"name": "web", "port": 80}), replace_existing_checks=True
    )
    assert "web" in second.maintenance()
    assert second.disable_maintenance("web") and not second.disable_maintenance("web")
    assert dict(local().maintenance()) == {"": "rack move"}


async def test_py_consul_and_the_cli_drive_maintenance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with Cluster(tmp_path) as cluster:
        agent = await cluster.start("m1", server=True)
        host, port = agent.bound["http"]
        c = consul.Consul(host=host, port=port)
        await asyncio.to_thread(c.agent.service.register, "web", service_id="web1", port=80)
        assert await asyncio.to_thread(c.agent.service.maintenance, "web1", True, "deploy")
        assert await asyncio.to_thread(c.agent.maintenance, True)
        checks = await asyncio.to_thread(c.agent.checks)
        assert checks["_service_maintenance:web1"]["Notes"] == "deploy"
        assert checks["_node_maintenance"]["Notes"] == DEFAULT_NODE_REASON

        env = {"MESHNODE_HTTP_ADDR": f"{host}:{port}"}
        assert await asyncio.to_thread(cli.main, ["maint"], env) == 0
        out = capsys.readouterr().out.splitlines()
        assert out == [
            "Node:",
            "  Name:   m1",
            f"  Reason: {DEFAULT_NODE_REASON}",
            "",
            "Service:",
            "  ID:     web1",
            "  Reason: deploy",
            "",
        ]
        assert await asyncio.to_thread(cli.main, ["maint", "-disable"], env) == 0
        assert capsys.readouterr().out.strip() == "Node left maintenance mode"
        argv = ["maint", "-disable", "-service", "web1"]
        assert await asyncio.to_thread(cli.main, argv, env) == 0
        assert capsys.readouterr().out.strip() == "Service left maintenance mode: web1"
        argv = ["maint", "-enable", "-service", "web1", "-reason", "again"]
        assert await asyncio.to_thread(cli.main, argv, env) == 0
        assert capsys.readouterr().out.strip() == "Service entered maintenance mode: web1"
        assert agent.local.maintenance() == {"web1": "again"}
        assert await asyncio.to_thread(cli.main, ["maint", "-enable", "-disable"], env) == 1
        assert "Only one of -enable or -disable" in capsys.readouterr().err
        assert await asyncio.to_thread(cli.main, ["maint", "-reason", "x"], env) == 1
        assert "-enable" in capsys.readouterr().err
