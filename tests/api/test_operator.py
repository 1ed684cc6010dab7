"""``/v1/operator/raft/*`` on a server that is a group of one (``-dev``), and the CLI's table."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from node.agent.agent import Agent
from node.cli.operator import peer_rows


async def test_a_group_of_one_lists_this_server_as_leader_and_voter(
    client: TestClient[Any, Any], agent: Agent
) -> None:
    for query in ("", "?stale", "?stale=true"):
        resp = await client.get(f"/v1/operator/raft/configuration{query}")
        assert resp.status == 200
        body = await resp.json()
        (server,) = body["Servers"]
        assert body["Index"] == 0
        assert server["ID"] == agent.node_id and server["Node"] == "n1"
        assert server["Address"].endswith(f":{agent.config.ports.server}")
        assert (server["Leader"], server["Voter"], server["ProtocolVersion"]) == (True, True, "3")


async def test_remove_peer_needs_exactly_one_of_id_or_address(
    client: TestClient[Any, Any],
) -> None:
    resp = await client.delete("/v1/operator/raft/peer")
    assert resp.status == 400
    assert (await resp.text()).strip() == (
        "Must specify either ?id with the server's ID or ?address with IP:port of peer to remove"
    )
    resp = await client.delete("/v1/operator/raft/peer?id=a&address=1.2.3.4:8300")
    assert resp.status == 400
    assert (await resp.text()).strip() == "Must specify only one of ?id or ?address"


async def test_an_unknown_peer_is_consuls_500_naming_it(client: TestClient[Any, Any]) -> None:
    resp = await client.delete("/v1/operator/raft/peer?address=10.9.9.9:8300")
    assert resp.status == 500
    assert (await resp.text()).strip() == (
        'address "10.9.9.9:8300" was not found in the Raft configuration'
    )
    resp = await client.delete("/v1/operator/raft/peer?id=nope")
    assert (resp.status, (await resp.text()).strip()) == (
        500, 'id "nope" was not found in the Raft configuration',
    )  # fmt: skip


async def test_the_only_voter_is_not_removed_and_has_no_one_to_hand_over_to(
    client: TestClient[Any, Any], agent: Agent
) -> None:
    resp = await client.delete(f"/v1/operator/raft/peer?id={agent.node_id}")
    assert resp.status == 500
    assert "its only voter cannot be removed" in await resp.text()
    resp = await client.post("/v1/operator/raft/transfer-leader")
    assert (resp.status, (await resp.text()).strip()) == (500, "cannot find peer")


def test_list_peers_rows_are_consuls_columns() -> None:
    configuration = {
        "Servers": [
            {"ID": "a1", "Node": "s1", "Address": "10.0.0.1:8300", "Leader": True, "Voter": True,
             "ProtocolVersion": "3"},
            {"ID": "b2", "Node": "s2", "Address": "10.0.0.2:8300", "Leader": False,
             "Voter": True, "ProtocolVersion": ""},
        ],
        "Index": 0,
    }  # fmt: skip
    assert peer_rows(configuration) == [
        ["s1", "a1", "10.0.0.1:8300", "leader", "true", "3"],
        ["s2", "b2", "10.0.0.2:8300", "follower", "true", "<=1"],
    ]
