"""Time source seam.

Rule: pure code never reads the clock; it receives ``now`` (monotonic seconds, float)
and, for certificates, ``datetime`` in UTC. Drivers hold a ``Clock``; tests and
simulations pass ``node.testing.FakeClock`` instead of ``MonotonicClock``.
"""

from __future__ import annotations

import datetime as _dt
import time as _time
from typing import Protocol

__all__ = ["Clock", "MonotonicClock"]


class Clock(Protocol):
    """What drivers need from time: a monotonic reading and a UTC wall reading."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; never goes backwards."""
        ...

    def utcnow(self) -> _dt.datetime:
        """Wall time, timezone-aware UTC (for certificates and HLC stamps)."""
        ...


class MonotonicClock:
    """The real clock."""

    __slots__ = ()

    def monotonic(self) -> float:
        """Seconds from ``time.monotonic``."""
        return _time.monotonic()

    def utcnow(self) -> _dt.datetime:
        """The current UTC time, timezone-aware."""
        return _dt.datetime.now(_dt.UTC)
