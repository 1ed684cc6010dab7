"""/v1/event/fire and /v1/event/list through HTTP, py-consul, the CLI and gossip."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import consul
import pytest
from aiohttp.test_utils import TestClient

from node.agent.agent import Agent
from node.cli import main as cli
from tests.helpers.cluster import Cluster, converged
from tests.helpers.poll import wait_for

Client = TestClient[Any, Any]


async def test_fire_answers_consuls_event_and_list_shows_it(client: Client) -> None:
    resp = await client.put("/v1/event/fire/deploy", data=b"v1.2")
    assert resp.status == 200
    sent = await resp.json()
    assert set(sent) == {
        "ID", "Name", "Payload", "NodeFilter", "ServiceFilter", "TagFilter", "Version", "LTime",
    }  # fmt: skip
    assert sent["Name"] == "deploy" and sent["Version"] == 1
    assert base64.b64decode(sent["Payload"]) == b"v1.2"
    resp = await client.put("/v1/event/fire/restart", params={"node": "m.*"})
    assert (await resp.json())["Payload"] is None
    resp = await client.get("/v1/event/list")
    listed = await resp.json()
    assert [e["Name"] for e in listed] == ["deploy", "restart"]
    assert listed[0]["ID"] == sent["ID"] and listed[1]["NodeFilter"] == "m.*"
    assert int(resp.headers["X-Consul-Index"]) > 1
    named = await (await client.get("/v1/event/list", params={"name": "restart"})).json()
    assert [e["Name"] for e in named] == ["restart"]
    empty = await client.get("/v1/event/list", params={"name": "nothing"})
    assert await empty.json() == [] and empty.headers["X-Consul-Index"] == "1"


@pytest.mark.parametrize(
    ("path", "params", "message"),
    [
        ("/v1/event/fire/", {}, "Missing name"),
        ("/v1/event/fire/x", {"tag": "v1"}, "Cannot provide tag filter without service filter"),
        ("/v1/event/fire/x", {"node": "("}, "Invalid node filter"),
    ],
)
async def test_bad_events_are_refused(
    client: Client, path: str, params: dict[str, str], message: str
) -> None:
    resp = await client.put(path, params=params)
    assert resp.status == 400
    assert message in await resp.text()
    big = await client.put("/v1/event/fire/x", data=b"y" * 600)
    assert big.status == 400 and "512 bytes" in await big.text()


async def test_list_blocks_until_a_new_event(client: Client) -> None:
    await client.put("/v1/event/fire/one")
    first = await client.get("/v1/event/list")
    index = first.headers["X-Consul-Index"]

    async def later() -> None:
        await asyncio.sleep(0.2)
        await client.put("/v1/event/fire/two")

    task = asyncio.create_task(later())
    resp = await client.get("/v1/event/list", params={"index": index, "wait": "10s"})
    await task
    assert [e["Name"] for e in await resp.json()] == ["one", "two"]
    assert resp.headers["X-Consul-Index"] != index
    # No new event: the wait runs out and the same index comes back.
    timed = await client.get(
        "/v1/event/list", params={"index": resp.headers["X-Consul-Index"], "wait": "100ms"}
    )
    assert timed.headers["X-Consul-Index"] == resp.headers["X-Consul-Index"]


async def _names(agent: Agent) -> list[str]:
    return [e.name for e in agent.events.events()]


async def test_events_travel_by_gossip_with_filters_and_to_other_datacenters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with Cluster(tmp_path) as cluster:
        s1 = await cluster.start("s1", server=True)
        web = await cluster.start("web1", join=[s1])
        db = await cluster.start("db1", join=[s1])
        s2 = await cluster.start("s2", dc="dc2", server=True, join_wan=[s1])
        status, _ = await cluster.put(
            web, "/v1/agent/service/register", json={"Name": "web", "Tags": ["v2"]}
        )
        assert status == 200
        await wait_for(lambda: converged([s1, web, db], 3), "the LAN pool converged", 10.0)
        host, port = db.bound["http"]
        c = consul.Consul(host=host, port=port)
        assert await asyncio.to_thread(c.event.fire, "everyone", "hello")
        assert await asyncio.to_thread(c.event.fire, "web-v2", "", None, "web", "v2")
        nodes = (s1, web, db)
        await wait_for(
            lambda: all("everyone" in [e.name for e in n.events.events()] for n in nodes),
            "an unfiltered event reaches every node",
            10.0,
        )
        await wait_for(
            lambda: "web-v2" in [e.name for e in web.events.events()], "web keeps its event", 10.0
        )
        assert "web-v2" not in [e.name for e in db.events.events()]
        assert "web-v2" not in [e.name for e in s1.events.events()]
        index, events = await asyncio.to_thread(c.event.list, "everyone")
        assert [e["Payload"] for e in events] == [b"hello"]  # py-consul decodes the base64

        # ?dc= hands the event to a server of dc2, which gossips it there.
        env = {"MESHNODE_HTTP_ADDR": f"{host}:{port}"}
        argv = ["event", "-name", "dc2-only", "-datacenter", "dc2", "payload"]
        assert await asyncio.to_thread(cli.main, argv, env) == 0
        assert capsys.readouterr().out.startswith("Event ID: ")
        await wait_for(
            lambda: "dc2-only" in [e.name for e in s2.events.events()], "dc2 gets it", 10.0
        )
        assert "dc2-only" not in [e.name for e in s1.events.events()]
        assert await asyncio.to_thread(cli.main, ["event", "payload"], env) == 1
        assert "Event name must be specified" in capsys.readouterr().err
