"""The Raft configuration as an operator sees it, and the leader's membership changes."""

from __future__ import annotations

import pytest

from node.errors import NotFound
from node.state.membership import ServerInfo, describe, find_voter, reconcile


def _info(n: int, *, alive: bool = True, left: bool = False) -> ServerInfo:
    return ServerInfo(
        node=f"s{n}", node_id=f"id-{n}", rpc=f"10.0.0.{n}:8300", raft=f"10.0.0.{n}:18300",
        alive=alive, left=left,
    )  # fmt: skip


def _known(*infos: ServerInfo) -> dict[str, ServerInfo]:
    return {i.raft: i for i in infos}


def test_describe_joins_voters_with_the_pool_and_marks_the_leader() -> None:
    rows = describe(["10.0.0.2:18300", "10.0.0.1:18300"], "10.0.0.2:18300",
                    _known(_info(1), _info(2)))  # fmt: skip
    assert [(r.node, r.id, r.address, r.leader, r.voter, r.protocol) for r in rows] == [
        ("s1", "id-1", "10.0.0.1:8300", False, True, "3"),
        ("s2", "id-2", "10.0.0.2:8300", True, True, "3"),
    ]


def test_a_voter_the_pool_does_not_know_is_shown_as_consul_shows_it() -> None:
    (row,) = describe(["10.0.0.9:18300"], None, {})
    assert (row.node, row.id, row.address, row.protocol) == (
        "(unknown)", "10.0.0.9:18300", "10.0.0.9:18300", "unknown",
    )  # fmt: skip


def test_find_voter_by_id_by_rpc_address_or_by_raft_address() -> None:
    rows = describe(["10.0.0.1:18300", "10.0.0.2:18300"], None, _known(_info(1), _info(2)))
    assert find_voter(rows, server_id="id-2") == "10.0.0.2:18300"
    assert find_voter(rows, address="10.0.0.1:8300") == "10.0.0.1:18300"
    assert find_voter(rows, address="10.0.0.2:18300") == "10.0.0.2:18300"


def test_an_unknown_peer_is_refused_with_consuls_words() -> None:
    rows = describe(["10.0.0.1:18300"], None, _known(_info(1)))
    with pytest.raises(NotFound, match=r'^address "10.9.9.9:8300" was not found in the Raft'):
        find_voter(rows, address="10.9.9.9:8300")
    with pytest.raises(NotFound, match=r'^id "nope" was not found in the Raft configuration$'):
        find_voter(rows, server_id="nope")


def test_reconcile_adds_a_server_that_joined_one_at_a_time() -> None:
    voters = {"10.0.0.1:18300"}
    assert reconcile(voters, [_info(1), _info(3), _info(2)]) == ("add", "10.0.0.2:18300")


def test_reconcile_removes_a_voter_that_left_but_keeps_a_failed_one() -> None:
    voters = {"10.0.0.1:18300", "10.0.0.2:18300", "10.0.0.3:18300"}
    failed = _info(2, alive=False)
    left = _info(3, alive=False, left=True)
    assert reconcile(voters, [_info(1), failed, left]) == ("remove", "10.0.0.3:18300")
    assert reconcile(voters - {"10.0.0.3:18300"}, [_info(1), failed, left]) == ()


def test_reconcile_first_adds_then_removes() -> None:
    voters = {"10.0.0.1:18300", "10.0.0.3:18300"}
    changes = reconcile(voters, [_info(1), _info(2), _info(3, alive=False, left=True)])
    assert changes == ("add", "10.0.0.2:18300")
