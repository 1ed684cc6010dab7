"""Merge-rule tables: incarnation precedence, refutation, conflicts, stale alives."""

from __future__ import annotations

from types import MappingProxyType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.gossip.messages import Alive, Dead, MemberStatus, Suspect
from node.gossip.state import (
    Member,
    Verdict,
    is_redundant_alive,
    judge_alive,
    judge_dead,
    judge_suspect,
)

A, S, D, L = MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.DEAD, MemberStatus.LEFT
ADDR = ("10.0.0.1", 7946)
OTHER = ("10.0.0.9", 7946)


def held(status: MemberStatus, inc: int, *, since: float = 0.0, addr=ADDR, meta=b"") -> Member:  # type: ignore[no-untyped-def]
    return Member(name="x", addr=addr, tags=MappingProxyType({}), incarnation=inc,
                  status=status, status_since=since, meta=meta)  # fmt: skip


@pytest.mark.parametrize(
    ("status", "held_inc", "msg_inc", "is_self", "expected"),
    [
        (None, 0, 0, False, Verdict.APPLY),  # unknown member: learn it
        (A, 5, 6, False, Verdict.APPLY),  # newer incarnation wins
        (A, 5, 5, False, Verdict.IGNORE),  # same: an echo
        (A, 5, 4, False, Verdict.IGNORE),  # older: stale
        (S, 5, 6, False, Verdict.APPLY),  # refutation of a suspicion
        (S, 5, 5, False, Verdict.STALE_ALIVE),  # alive must out-bid a suspicion
        (D, 5, 6, False, Verdict.APPLY),  # a dead node came back with a higher incarnation
        (D, 5, 1, False, Verdict.STALE_ALIVE),  # memberlist#311: re-accuse the restarted node
        (L, 5, 5, False, Verdict.STALE_ALIVE),
        (L, 5, 6, False, Verdict.APPLY),
        (A, 5, 4, True, Verdict.IGNORE),  # old news about us
        (A, 5, 5, True, Verdict.IGNORE),  # our own alive echoed back
        (A, 5, 9, True, Verdict.REFUTE),  # someone (our previous process?) claims more
        (None, 0, 3, True, Verdict.REFUTE),
    ],
)
def test_judge_alive_table(status, held_inc, msg_inc, is_self, expected) -> None:  # type: ignore[no-untyped-def]
    h = None if status is None else held(status, held_inc)
    msg = Alive(incarnation=msg_inc, node="x", addr=ADDR)
    assert judge_alive(h, msg, is_self=is_self, now=100.0, reclaim_time=0.0) is expected


def test_judge_alive_refutes_same_incarnation_with_different_meta_about_self() -> None:
    msg = Alive(incarnation=5, node="x", addr=ADDR, meta=b"\xff\x80")
    assert judge_alive(held(A, 5), msg, is_self=True, now=0.0, reclaim_time=0.0) is Verdict.REFUTE


@pytest.mark.parametrize(
    ("status", "since", "reclaim", "expected"),
    [
        (A, 0.0, 0.0, Verdict.CONFLICT),
        (S, 0.0, 0.0, Verdict.CONFLICT),
        (D, 0.0, 0.0, Verdict.CONFLICT),  # reclaim 0 = never
        (D, 0.0, 30.0, Verdict.APPLY),  # dead for 100 s > 30 s
        (D, 90.0, 30.0, Verdict.CONFLICT),  # dead for 10 s only
        (L, 99.0, 0.0, Verdict.APPLY),  # a left name is free at once
    ],
)
def test_judge_alive_address_conflicts(status, since, reclaim, expected) -> None:  # type: ignore[no-untyped-def]
    msg = Alive(incarnation=9, node="x", addr=OTHER)
    h = held(status, 1, since=since)
    assert judge_alive(h, msg, is_self=False, now=100.0, reclaim_time=reclaim) is expected


@pytest.mark.parametrize(
    ("status", "held_inc", "msg_inc", "is_self", "expected"),
    [
        (None, 0, 0, False, Verdict.IGNORE),
        (A, 5, 4, False, Verdict.IGNORE),  # older accusation
        (A, 5, 5, False, Verdict.APPLY),
        (A, 5, 6, False, Verdict.APPLY),
        (S, 5, 5, False, Verdict.CONFIRM),  # another accuser: Lifeguard confirmation
        (S, 5, 6, False, Verdict.APPLY),
        (D, 5, 5, False, Verdict.IGNORE),  # dead outranks suspect (push-pull dead→suspect)
        (L, 5, 5, False, Verdict.IGNORE),
        (A, 5, 5, True, Verdict.REFUTE),
        (A, 5, 4, True, Verdict.IGNORE),
    ],
)
def test_judge_suspect_table(status, held_inc, msg_inc, is_self, expected) -> None:  # type: ignore[no-untyped-def]
    h = None if status is None else held(status, held_inc)
    msg = Suspect(incarnation=msg_inc, node="x", accuser="y")
    assert judge_suspect(h, msg, is_self=is_self) is expected


@pytest.mark.parametrize(
    ("status", "held_inc", "msg_inc", "accuser", "is_self", "leaving", "expected"),
    [
        (None, 0, 0, "y", False, False, Verdict.IGNORE),
        (A, 5, 4, "y", False, False, Verdict.IGNORE),
        (A, 5, 5, "y", False, False, Verdict.APPLY),
        (S, 5, 5, "y", False, False, Verdict.APPLY),
        (D, 5, 6, "y", False, False, Verdict.IGNORE),  # already dead
        (D, 5, 5, "x", False, False, Verdict.APPLY),  # force-leave turns failed into left
        (L, 5, 5, "x", False, False, Verdict.IGNORE),
        (A, 5, 5, "y", True, False, Verdict.REFUTE),  # we are not dead
        (A, 5, 5, "x", True, False, Verdict.REFUTE),  # a leave we did not ask for
        (A, 5, 5, "x", True, True, Verdict.APPLY),  # our own leave
    ],
)
def test_judge_dead_table(status, held_inc, msg_inc, accuser, is_self, leaving, expected) -> None:  # type: ignore[no-untyped-def]
    h = None if status is None else held(status, held_inc)
    msg = Dead(incarnation=msg_inc, node="x", accuser=accuser)
    assert judge_dead(h, msg, is_self=is_self, leaving=leaving) is expected


@given(
    status=st.sampled_from(list(MemberStatus)),
    held_inc=st.integers(0, 5),
    msg_inc=st.integers(0, 5),
    same_addr=st.booleans(),
    same_meta=st.booleans(),
    is_self=st.booleans(),
)
def test_is_redundant_alive_implies_judge_alive_ignores(
    status: MemberStatus,
    held_inc: int,
    msg_inc: int,
    same_addr: bool,
    same_meta: bool,
    is_self: bool,
) -> None:
    h = held(status, held_inc)
    msg = Alive(incarnation=msg_inc, node="x", addr=ADDR if same_addr else OTHER,
                meta=b"" if same_meta else b"\xff\x80")  # fmt: skip
    if is_redundant_alive(h, msg):
        verdict = judge_alive(h, msg, is_self=is_self, now=0.0, reclaim_time=0.0)
        assert verdict is Verdict.IGNORE
