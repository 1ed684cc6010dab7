"""Lifeguard's dynamic suspicion timeout.

Rule: the timeout is a pure function of the number of independent confirmations; the
``Suspicion`` record only remembers who confirmed and when it started. A suspicion starts
at ``max`` and shrinks logarithmically towards ``min`` as *distinct* other members
(never the original accuser, never twice the same) confirm it (memberlist ``suspicion.go``).
"""

from __future__ import annotations

import math

__all__ = ["remaining_suspicion_time", "suspicion_timeouts", "Suspicion"]


def remaining_suspicion_time(n: int, k: int, elapsed: float, lo: float, hi: float) -> float:
    """Seconds left on a suspicion with ``n`` of ``k`` expected confirmations after ``elapsed``.

    May be negative (already due). With ``k < 1`` no confirmations are expected and the
    timeout is simply ``lo``.
    """
    if k < 1:
        return lo - elapsed
    frac = math.log(n + 1.0) / math.log(k + 1.0)
    timeout = max(lo, hi - frac * (hi - lo))
    return timeout - elapsed


def suspicion_timeouts(
    *, suspicion_mult: int, max_timeout_mult: int, n: int, probe_interval: float
) -> tuple[float, float]:
    """(min, max) suspicion timeout for a cluster of ``n`` members (memberlist suspicionTimeout)."""
    scale = max(1.0, math.log10(max(1.0, float(n))))
    lo = suspicion_mult * scale * probe_interval
    return lo, lo * max_timeout_mult


class Suspicion:
    """A running suspicion of one member at one incarnation."""

    __slots__ = ("incarnation", "start", "k", "lo", "hi", "_confirmed", "deadline")

    def __init__(
        self, *, incarnation: int, accuser: str, start: float, k: int, lo: float, hi: float
    ) -> None:
        self.incarnation = incarnation
        self.start = start
        self.k = k
        self.lo = lo
        self.hi = hi
        self._confirmed: set[str] = {accuser}
        self.deadline = start + remaining_suspicion_time(0, k, 0.0, lo, hi)

    @property
    def confirmations(self) -> int:
        """Distinct confirmations beyond the original accusation."""
        return len(self._confirmed) - 1

    def confirm(self, accuser: str) -> bool:
        """Record an accusation; True if it was new (then the deadline moved earlier)."""
        if self.confirmations >= self.k or accuser in self._confirmed:
            return False
        self._confirmed.add(accuser)
        self.deadline = self.start + remaining_suspicion_time(
            self.confirmations, self.k, 0.0, self.lo, self.hi
        )
        return True
