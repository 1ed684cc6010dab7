"""Reads of another datacenter travel typed (``node.rpc.reads``), and render as local ones.

Every forwardable read is run through the serving side (``ReadServer``), over msgpack,
rebuilt with its codec and encoded by the API: the JSON must be byte for byte what the
same read gives locally. Blocking arguments travel along and behave as a local
blocking query's.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from node.agent.agent import Agent, build_served_reads
from node.agent.forward import ReadServer
from node.api.app import FORWARDABLE_READS
from node.api.read import dump_json
from node.errors import InvalidRequest, RemoteProtocolError
from node.rpc.reads import (
    HEALTH_ENTRIES,
    READ_SERVICE_KIND,
    ReadReply,
    ReadRequest,
)
from node.wire import pack, unpack

Client = TestClient[Any, Any]

SERVICES: list[dict[str, Any]] = [
    {
        "Name": "web",
        "ID": "web1",
        "Port": 80,
        "Tags": ["v1", "blue"],
        "Meta": {"team": "a"},
        "Weights": {"Passing": 3, "Warning": 2},
        "TaggedAddresses": {"wan": {"Address": "198.51.100.1", "Port": 8080}},
        "Check": {"CheckID": "w1", "TTL": "60s", "Notes": "ttl"},
    },
    {"Name": "web", "ID": "web2", "Port": 81, "Tags": ["v2"], "Check": {"TTL": "60s"}},
    {
        "Name": "api",
        "Port": 90,
        "Connect": {
            "SidecarService": {
                "Proxy": {"Upstreams": [{"DestinationName": "db", "LocalBindPort": 9191}]}
            }
        },
    },
    {"Name": "db", "Port": 5432, "Address": "10.0.0.5", "Connect": {"Native": True}},
    {"Name": "mesh-gateway", "Kind": "mesh-gateway", "Port": 8443},
]

#: Arguments of each forwardable read, as the HTTP handlers build them.
ARGS: dict[str, list[dict[str, Any]]] = {
    "catalog.services": [{}],
    "catalog.service": [{"name": "web", "tag": None}, {"name": "web", "tag": "blue"}],
    "catalog.connect": [{"name": "api", "tag": None}, {"name": "db", "tag": None}],
    "catalog.nodes": [{}],
    "catalog.node": [{"node": "n1"}],
    "catalog.datacenters": [{}],
    "health.service": [
        {"name": "web", "tag": None, "passing": False, "connect": False},
        {"name": "web", "tag": None, "passing": True, "connect": False},
        {"name": "api", "tag": None, "passing": False, "connect": True},
    ],
    "health.service_kind": [{"kind": "mesh-gateway"}],
    "health.checks": [{"name": "web"}],
    "health.node": [{"node": "n1"}],
    "health.state": [{"state": "any"}, {"state": "critical"}],
}


def _server(agent: Agent) -> ReadServer:
    served = build_served_reads(agent, FORWARDABLE_READS)
    return ReadServer(served, agent.notifier, monotonic=time.monotonic, rng=random.Random(1))


async def _remote(server: ReadServer, read: ReadRequest) -> ReadReply:
    """One read as the RPC carries it: msgpack both ways."""
    raw = await server.handle(unpack(pack(read.to_wire())))
    return ReadReply.from_wire(unpack(pack(raw)))


async def _register(client: Client) -> None:
    for body in SERVICES:
        resp = await client.put("/v1/agent/service/register", json=body)
        assert resp.status == 200, await resp.text()
    assert (await client.put("/v1/agent/check/pass/w1")).status == 200


def test_every_forwardable_read_is_covered() -> None:
    assert set(ARGS) == set(FORWARDABLE_READS)


async def test_forwarded_answers_encode_to_the_same_json_as_local_ones(
    client: Client, agent: Agent
) -> None:
    await _register(client)
    server = _server(agent)
    for name, cases in ARGS.items():
        spec = FORWARDABLE_READS[name]
        assert spec.wire is not None
        for args in cases:
            value, index = spec.query(agent, **args)
            reply = await _remote(server, ReadRequest(name=name, args=args))
            remote = spec.wire.from_wire(reply.value)
            assert dump_json(spec.encode(agent, remote)) == dump_json(spec.encode(agent, value))
            assert reply.index == max(index, 1), name


async def test_http_forwarding_returns_the_remote_json(client: Client, agent: Agent) -> None:
    await _register(client)
    server = _server(agent)

    async def forward_read(dc: str, read: ReadRequest, wire: Any) -> tuple[Any, int]:
        assert dc == "dc2"
        reply = await _remote(server, read)
        return wire.from_wire(reply.value), reply.index

    agent.forward_read = forward_read  # type: ignore[method-assign]
    for path in ("/v1/health/service/web", "/v1/catalog/node/n1", "/v1/health/state/any"):
        local = await client.get(path)
        remote = await client.get(path, params={"dc": "dc2"})
        assert remote.status == local.status == 200
        assert await remote.read() == await local.read()
        assert remote.headers["X-Consul-Index"] == local.headers["X-Consul-Index"]


async def test_a_forwarded_read_blocks_until_its_index_moves(client: Client, agent: Agent) -> None:
    await _register(client)
    server = _server(agent)
    args = {"name": "web", "tag": None, "passing": False, "connect": False}
    first = await _remote(server, ReadRequest(name="health.service", args=args))

    start = time.monotonic()
    timed_out = await _remote(
        server, ReadRequest(name="health.service", args=args, index=first.index, wait=0.2)
    )
    assert timed_out.index == first.index and 0.2 <= time.monotonic() - start < 2

    waiting = asyncio.ensure_future(
        _remote(server, ReadRequest(name="health.service", args=args, index=first.index, wait=30))
    )
    await asyncio.sleep(0.05)
    assert not waiting.done()
    body = {"Name": "web", "ID": "web3", "Port": 82}
    assert (await client.put("/v1/agent/service/register", json=body)).status == 200
    woken = await asyncio.wait_for(waiting, 5)
    assert woken.index > first.index
    assert len(HEALTH_ENTRIES.from_wire(woken.value)) == 3


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        ({"name": "agent.self", "args": {}}, "non-forwardable"),
        ({"name": "nope", "args": {}}, "unknown"),
        ({"args": {}}, "needs"),
        ({"name": "catalog.nodes", "args": ["x"]}, "args must be a map"),
        ({"name": "catalog.nodes", "args": {}, "wait": "x"}, "wait"),
        ({"name": "catalog.nodes", "args": {}, "wait": -1}, "wait"),
        ({"name": "catalog.nodes", "args": {}, "index": -1}, "index"),
        ({"name": "catalog.nodes", "args": {}, "index": True}, "index"),
    ],
)
async def test_the_read_server_rejects_bad_requests_by_name(
    agent: Agent, raw: dict[str, Any], text: str
) -> None:
    with pytest.raises(InvalidRequest, match=text):
        await _server(agent).handle(raw)


async def test_an_unknown_service_kind_is_a_clear_error(agent: Agent) -> None:
    read = ReadRequest(name=READ_SERVICE_KIND, args={"kind": "spaceship"})
    with pytest.raises(InvalidRequest, match="unknown service kind"):
        await _server(agent).handle(read.to_wire())


@pytest.mark.parametrize(
    "raw", [None, [], {"index": 1}, {"value": [], "index": -1}, {"value": [], "index": "1"}]
)
def test_a_malformed_reply_is_a_protocol_error(raw: Any) -> None:
    with pytest.raises(RemoteProtocolError):
        ReadReply.from_wire(raw)
