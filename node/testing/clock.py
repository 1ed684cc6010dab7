"""A fake clock for drivers under test (modelled on ``trio.testing.MockClock``).

Rule: fake time starts at 0 and moves only when told — ``jump(seconds)`` or
``advance_to(t)`` — or, with ``autojump_threshold`` set, when every coroutine waiting on
this clock has been idle that long (real seconds; 0 = as soon as the event loop has run
the ready callbacks). It satisfies ``node.clock.Clock`` and adds awaitable
``sleep``/``sleep_until`` so an asyncio driver can wait on fake time.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import heapq
import math

__all__ = ["FakeClock"]

_EPOCH = _dt.datetime(2026, 1, 1, tzinfo=_dt.UTC)
#: Event-loop passes to let ready work run before an autojump with threshold 0.
_IDLE_PASSES = 8


class FakeClock:
    """Monotonic + UTC time under test control."""

    def __init__(
        self,
        *,
        start: float = 0.0,
        wall_start: _dt.datetime = _EPOCH,
        autojump_threshold: float = math.inf,
    ) -> None:
        if wall_start.tzinfo is None:
            raise ValueError("wall_start must be timezone-aware (UTC)")
        self._now = float(start)
        self._start = float(start)
        self._wall = wall_start
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._counter = 0
        self._autojump_threshold = autojump_threshold
        self._autojump_armed = False

    # -- node.clock.Clock
    def monotonic(self) -> float:
        """Current fake monotonic time."""
        return self._now

    def utcnow(self) -> _dt.datetime:
        """Wall time: ``wall_start`` plus the fake seconds elapsed."""
        return self._wall + _dt.timedelta(seconds=self._now - self._start)

    # -- moving time
    def jump(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (>= 0) and wake every sleeper now due."""
        if seconds < 0:
            raise ValueError(f"time cannot go backwards (jump of {seconds})")
        self.advance_to(self._now + seconds)

    def advance_to(self, t: float) -> None:
        """Move time forward to ``t`` (no-op if ``t`` is in the past)."""
        self._now = max(self._now, float(t))
        while self._waiters and self._waiters[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)

    @property
    def autojump_threshold(self) -> float:
        """Real seconds of idleness after which time jumps to the next sleeper (inf = never)."""
        return self._autojump_threshold

    @autojump_threshold.setter
    def autojump_threshold(self, value: float) -> None:
        self._autojump_threshold = value
        self._arm_autojump()

    def next_wakeup(self) -> float | None:
        """Earliest pending ``sleep_until`` deadline."""
        while self._waiters and self._waiters[0][2].done():
            heapq.heappop(self._waiters)
        return self._waiters[0][0] if self._waiters else None

    # -- waiting on fake time
    async def sleep_until(self, deadline: float) -> None:
        """Return once fake time reaches ``deadline``."""
        if deadline <= self._now:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._counter += 1
        heapq.heappush(self._waiters, (deadline, self._counter, fut))
        self._arm_autojump()
        await fut

    async def sleep(self, seconds: float) -> None:
        """Return after ``seconds`` of fake time."""
        await self.sleep_until(self._now + max(0.0, seconds))

    def _arm_autojump(self) -> None:
        if self._autojump_armed or math.isinf(self._autojump_threshold) or not self._waiters:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._autojump_armed = True
        if self._autojump_threshold > 0:
            loop.call_later(self._autojump_threshold, self._autojump, loop, 0)
        else:
            loop.call_soon(self._autojump, loop, _IDLE_PASSES)

    def _autojump(self, loop: asyncio.AbstractEventLoop, passes: int) -> None:
        if passes > 0:
            # Yield a few loop iterations so tasks made ready by the last wakeup can run
            # (and possibly register earlier sleepers) before time moves.
            loop.call_soon(self._autojump, loop, passes - 1)
            return
        self._autojump_armed = False
        nxt = self.next_wakeup()
        if nxt is not None:
            self.advance_to(nxt)
        self._arm_autojump()
