"""The Raft group over PySyncObj: three voters in one process, on loopback ports."""

from __future__ import annotations

import asyncio
import logging
import pickle
import socket
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from node.clock import MonotonicClock
from node.errors import Conflict, NoClusterLeader
from node.rpc.routing import raft_port
from node.state.consensus import StateMachine
from node.state.globalstate import GlobalState, Record
from node.state.raft import FormingGroup, RaftGroup, _safe_loads
from tests.helpers.poll import wait_for
from tests.state.test_schema import TOY

KEY = b"0123456789abcdef0123456789abcdef"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Voter:
    def __init__(self, address: str, peers: list[str]) -> None:
        self.machine = StateMachine(GlobalState("raft.dc1", TOY), writable=TOY.kinds)
        self.committed: list[Record] = []
        self.group = RaftGroup(
            self.machine, address=address, peers=peers, password=KEY, bind="127.0.0.1",
            clock=MonotonicClock(), on_commit=self.committed.extend, leader_wait=5.0,
            loop=asyncio.get_running_loop(),
        )  # fmt: skip


@pytest.fixture
async def voters() -> AsyncIterator[list[Voter]]:
    peers = [f"127.0.0.1:{_free_port()}" for _ in range(3)]
    group = [Voter(address, peers) for address in peers]
    try:
        yield group
    finally:
        for voter in group:
            voter.group.close()


def _put(name: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"op": "put", "kind": "note", "name": name, "value": f"{name}={text}", **extra}


async def test_a_write_anywhere_commits_on_every_voter_with_the_same_stamp(
    voters: list[Voter],
) -> None:
    await wait_for(lambda: all(v.group.leader() for v in voters), "a leader", 15)
    leader = voters[0].group.leader()
    follower = next(v for v in voters if v.group._address != leader)
    (record,) = await follower.group.submit(_put("a", "x"))
    await wait_for(lambda: all(v.machine.state.get("note", "a") for v in voters), "all", 10)
    assert {v.machine.state.get("note", "a") for v in voters} == {
        voters[0].machine.state.get("note", "a")
    }
    assert record.stamp.node == "raft.dc1"
    await wait_for(lambda: all(v.committed for v in voters), "on_commit everywhere", 10)
    assert voters[0].group.voters() == tuple(sorted(v.group._address for v in voters))


async def test_racing_cas_writes_from_every_voter_have_exactly_one_winner(
    voters: list[Voter],
) -> None:
    await wait_for(lambda: all(v.group.leader() for v in voters), "a leader", 15)
    (first,) = await voters[0].group.submit(_put("a", "start"))
    seen = first.stamp.to_wire()

    async def attempt(i: int) -> bool:
        try:
            await voters[i % 3].group.submit(_put("a", f"w{i}", cas=seen))
        except Conflict:
            return False
        return True

    results = await asyncio.gather(*(attempt(i) for i in range(9)))
    assert results.count(True) == 1


async def test_without_a_quorum_a_write_is_refused_within_the_bound() -> None:
    peers = [f"127.0.0.1:{_free_port()}" for _ in range(3)]
    alone = Voter(peers[0], peers)  # the two others never start
    try:
        with pytest.raises(NoClusterLeader, match="No cluster leader"):
            await alone.group.submit(_put("a", "x"))
        assert alone.machine.state.get("note", "a") is None
    finally:
        alone.group.close()


async def test_a_forming_group_waits_for_bootstrap_expect_servers_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    servers: dict[str, str] = {"s1": "127.0.0.1:1"}
    built: list[tuple[str, list[str]]] = []

    def build(me: str, peers: Sequence[str]) -> Any:
        built.append((me, list(peers)))
        return _Closable()

    forming = FormingGroup(
        expected=3, servers=lambda: servers, me="s1", build=build,
        clock=MonotonicClock(), leader_wait=0.2,
    )  # fmt: skip
    caplog.set_level(logging.INFO, logger="node.state.raft")
    task = asyncio.create_task(forming.run(every=0.01))
    with pytest.raises(NoClusterLeader):
        await forming.submit(_put("a", "x"))
    assert forming.leader() is None and forming.voters() == () and not built
    assert "waiting for 3 servers" in caplog.text and "1 known" in caplog.text
    servers |= {"s2": "127.0.0.1:2", "s3": "127.0.0.1:3"}
    await wait_for(lambda: built, "the group formed")
    assert built == [("127.0.0.1:1", ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"])]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


class _Closable:
    closed = False

    async def import_once(self, items: Sequence[list[Any]]) -> None:
        assert not items

    def close(self) -> None:
        self.closed = True


def test_the_raft_port_is_derived_from_the_rpc_port_and_the_unpickler_builds_only_data() -> None:
    assert raft_port(8300) == 18300 and raft_port(60000) == 50000
    assert _safe_loads(pickle.dumps({"a": [1, (2, b"x")], "s": {3}})) == {
        "a": [1, (2, b"x")], "s": {3},
    }  # fmt: skip
    with pytest.raises(pickle.UnpicklingError, match="refused"):
        _safe_loads(pickle.dumps(Conflict("x")))


async def test_the_first_leader_imports_a_copy_kept_before_the_group_once(
    voters: list[Voter],
) -> None:
    await wait_for(lambda: all(v.group.leader() for v in voters), "a leader", 15)
    kept = [["note", "a", "a=kept"]]
    await asyncio.wait_for(
        asyncio.gather(*(v.group.import_once(kept, every=0.05) for v in voters)), 15
    )
    await wait_for(
        lambda: all(v.machine.state.get("note", "a") for v in voters), "the import everywhere"
    )
    assert len(voters[0].machine.state.all_records()) == 1
    await voters[1].group.import_once([["note", "b", "b=late"]], every=0.05)  # not empty: no-op
    assert voters[1].machine.state.get("note", "b") is None
