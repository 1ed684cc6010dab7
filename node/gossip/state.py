"""Members and the rules that merge news about them.

Rule: whether a piece of news (alive / suspect / dead) changes what we believe is decided
*only* by the ``judge_*`` functions here — pure functions of (what we hold, what arrived),
one per message kind, returning a ``Verdict``. ``protocol.py`` carries out verdicts; it
never compares incarnations itself. The precedence (memberlist ``state.go``):

- Only a node raises its own incarnation. About others, ``alive`` wins only with a
  *higher* incarnation; ``suspect``/``dead`` win with an equal or higher one.
- News that contradicts *us* is refuted (new incarnation), except our own leave.
- ``alive`` from a known name at a different address is a conflict unless the old
  holder left, or has been dead longer than ``dead_node_reclaim_time``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from node.gossip.messages import Address, Alive, Dead, MemberStatus, PushNodeState, Suspect

__all__ = [
    "Member",
    "MemberStatus",
    "Verdict",
    "judge_alive",
    "judge_suspect",
    "judge_dead",
    "is_redundant_alive",
]

# Enum members bound once: attribute lookups on the class are slow in hot paths.
_ALIVE, _SUSPECT, _DEAD, _LEFT = (
    MemberStatus.ALIVE,
    MemberStatus.SUSPECT,
    MemberStatus.DEAD,
    MemberStatus.LEFT,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Member:
    """A point-in-time view of one member; ``tags`` is read-only."""

    name: str
    addr: Address
    tags: Mapping[str, str]
    incarnation: int
    status: MemberStatus
    status_since: float
    #: The encoded tags exactly as gossiped (``messages.encode_tags``).
    meta: bytes = b""


class Verdict(Enum):
    """What to do with a piece of news."""

    IGNORE = "ignore"  # stale or redundant
    APPLY = "apply"  # update our view and re-broadcast
    REFUTE = "refute"  # it contradicts us: announce a higher incarnation
    CONFLICT = "conflict"  # a different address claims a live name
    STALE_ALIVE = "stale-alive"  # an old alive for a node we hold suspect/dead: re-accuse it
    CONFIRM = "confirm"  # an extra accusation for a suspicion already running


def is_redundant_alive(held: Member, msg: Alive | PushNodeState) -> bool:
    """Shortcut for the commonest case, an echo of what we already hold.

    True only where ``judge_alive`` would return ``IGNORE`` (same address and meta, not
    newer, and we hold the member alive); the hot receive loop and push-pull merges call
    this first. A push-pull entry must also say "alive" for this to apply.
    """
    if type(msg) is PushNodeState and msg.status is not _ALIVE:
        return False
    return (
        msg.incarnation <= held.incarnation
        and held.status is _ALIVE
        and msg.addr == held.addr
        and msg.meta == held.meta
    )


def judge_alive(
    held: Member | None, msg: Alive, *, is_self: bool, now: float, reclaim_time: float
) -> Verdict:
    """Decide what an ``alive`` message means given what we hold about ``msg.node``."""
    if held is None:
        return Verdict.REFUTE if is_self else Verdict.APPLY
    if is_self:
        same = msg.incarnation == held.incarnation and msg.meta == held.meta
        if msg.incarnation < held.incarnation or (same and msg.addr == held.addr):
            return Verdict.IGNORE
        # Someone speaks for us with different data or a newer incarnation (e.g. what the
        # cluster remembers of our previous process): out-bid it.
        return Verdict.REFUTE
    if msg.addr != held.addr:
        if not _may_reclaim(held, now, reclaim_time):
            return Verdict.CONFLICT
        return Verdict.APPLY
    if msg.incarnation > held.incarnation:
        return Verdict.APPLY
    if held.status in (_SUSPECT, _DEAD, _LEFT):
        return Verdict.STALE_ALIVE
    return Verdict.IGNORE


def _may_reclaim(held: Member, now: float, reclaim_time: float) -> bool:
    if held.status is _LEFT:
        return True
    dead_long = reclaim_time > 0 and now - held.status_since > reclaim_time
    return held.status is _DEAD and dead_long


def judge_suspect(held: Member | None, msg: Suspect, *, is_self: bool) -> Verdict:
    """Decide what a ``suspect`` message means."""
    if held is None or msg.incarnation < held.incarnation:
        return Verdict.IGNORE
    if is_self:
        return Verdict.REFUTE
    if held.status is _SUSPECT:
        return Verdict.CONFIRM if msg.incarnation == held.incarnation else Verdict.APPLY
    if held.status is not _ALIVE:
        return Verdict.IGNORE
    return Verdict.APPLY


def judge_dead(held: Member | None, msg: Dead, *, is_self: bool, leaving: bool) -> Verdict:
    """Decide what a ``dead`` message (or a leave, ``accuser == node``) means."""
    if held is None or msg.incarnation < held.incarnation:
        return Verdict.IGNORE
    if is_self:
        return Verdict.APPLY if leaving else Verdict.REFUTE
    if held.status is _LEFT:
        return Verdict.IGNORE
    if held.status is _DEAD:
        # A leave (force-leave) may still turn a failed member into a left one.
        return Verdict.APPLY if msg.accuser == msg.node else Verdict.IGNORE
    return Verdict.APPLY
