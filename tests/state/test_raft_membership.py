"""A PySyncObj group's operator side: barrier, leadership transfer, membership changes,
last contact; three (then four) voters in one process on loopback ports."""

from __future__ import annotations

import pytest

from node.errors import InvalidRequest, NoClusterLeader
from node.state.raft import CONTACT_BOUND
from tests.helpers.poll import wait_for
from tests.state.test_raft import Voter, _free_port, _put, voters

__all__ = ["voters"]  # the fixture, used by name


def _leader(group: list[Voter]) -> Voter:
    address = group[0].group.leader()
    return next(v for v in group if v.group.address == address)


async def _settled(group: list[Voter]) -> Voter:
    await wait_for(
        lambda: len({v.group.leader() for v in group}) == 1 and group[0].group.leader(),
        "every voter agreeing on one leader", 15,
    )  # fmt: skip
    return _leader(group)


async def test_a_barrier_on_a_follower_returns_once_every_earlier_write_is_applied_there(
    voters: list[Voter],
) -> None:
    leader = await _settled(voters)
    follower = next(v for v in voters if v is not leader)
    for i in range(5):
        await leader.group.submit(_put(f"n{i}", f"x{i}"))
    index = await follower.group.barrier()
    assert index >= leader.machine.commit_index - 1
    assert all(follower.machine.state.get("note", f"n{i}") for i in range(5))


async def test_last_contact_is_zero_on_the_leader_and_recent_on_a_follower(
    voters: list[Voter],
) -> None:
    leader = await _settled(voters)
    follower = next(v for v in voters if v is not leader)
    assert leader.group.last_contact() == 0.0
    await wait_for(lambda: follower.group.last_contact() is not None, "a heartbeat", 5)
    contact = follower.group.last_contact()
    assert contact is not None and 0.0 <= contact <= CONTACT_BOUND


async def test_leadership_moves_to_the_chosen_voter(voters: list[Voter]) -> None:
    leader = await _settled(voters)
    target = next(v for v in voters if v is not leader)
    assert await leader.group.transfer_leadership(target.group.address) == target.group.address
    assert await _settled(voters) is target
    (record,) = await target.group.submit(_put("after", "transfer"))
    assert record.name == "after"


async def test_transfer_is_refused_by_a_follower_and_for_an_unknown_target(
    voters: list[Voter],
) -> None:
    leader = await _settled(voters)
    follower = next(v for v in voters if v is not leader)
    with pytest.raises(InvalidRequest, match="not the leader"):
        await follower.group.transfer_leadership()
    with pytest.raises(InvalidRequest, match="cannot find peer"):
        await leader.group.transfer_leadership("127.0.0.1:1")


async def test_a_removed_voter_no_longer_counts_and_two_voters_still_commit(
    voters: list[Voter],
) -> None:
    leader = await _settled(voters)
    gone = next(v for v in voters if v is not leader)
    with pytest.raises(InvalidRequest, match="not by itself"):
        await gone.group.remove_voter(gone.group.address)
    await leader.group.remove_voter(gone.group.address)
    gone.group.close()
    rest = [v for v in voters if v is not gone]
    await wait_for(
        lambda: all(len(v.group.voters()) == 2 for v in rest), "two voters left on both", 10
    )
    assert gone.group.address not in leader.group.voters()
    (record,) = await rest[1].group.submit(_put("two", "voters"))
    await wait_for(lambda: all(v.machine.state.get("note", "two") for v in rest), "both", 10)
    assert record.name == "two"


async def test_a_server_added_later_gets_the_state_and_counts_in_the_quorum(
    voters: list[Voter],
) -> None:
    leader = await _settled(voters)
    await leader.group.submit(_put("before", "join"))
    newcomer_address = f"127.0.0.1:{_free_port()}"
    peers = [v.group.address for v in voters] + [newcomer_address]
    newcomer = Voter(newcomer_address, peers)
    try:
        await leader.group.add_voter(newcomer_address)
        await wait_for(
            lambda: newcomer.machine.state.get("note", "before") is not None,
            "the newcomer catching up", 15,
        )  # fmt: skip
        assert newcomer_address in leader.group.voters()
        # The newcomer counts: with it and one old voter down, 2 of 4 is no quorum (of
        # the three voters before it joined, 2 would have been one).
        newcomer.group.close()
        next(v for v in voters if v is not leader).group.close()
        with pytest.raises(NoClusterLeader):
            await leader.group.submit(_put("after", "two-down"))
    finally:
        newcomer.group.close()
