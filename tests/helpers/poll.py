"""Wait for a condition: the one poll-until loop of the test suite.

Rule: every wait has a deadline and names what it waited for, so a failure says what
never happened and the last value seen. ``wait_for`` serves coroutines (on the real
clock or any clock with ``monotonic()`` and ``async sleep()``, e.g. ``FakeClock``);
``wait_for_blocking`` serves threads and child processes. Exceptions listed in
``ignoring`` count as "not yet"; any other exception fails at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["PollClock", "wait_for", "wait_for_blocking"]

Ignored = tuple[type[BaseException], ...]
What = str | Callable[[], str]


class PollClock(Protocol):
    """The time a poll needs: a monotonic reading and a way to let it pass."""

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class _RealClock:
    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


REAL_CLOCK: PollClock = _RealClock()


async def wait_for(
    cond: Callable[[], Any],
    what: What,
    timeout: float = 10.0,
    *,
    interval: float = 0.01,
    ignoring: Ignored = (),
    clock: PollClock = REAL_CLOCK,
) -> Any:
    """Poll ``cond()`` (sync or async) until it returns something truthy, and return that.

    Fails with an ``AssertionError`` naming ``what`` once ``timeout`` seconds of
    ``clock`` time have passed without it.
    """
    deadline = clock.monotonic() + timeout
    while True:
        last = await _attempt(cond, ignoring)
        if last and not isinstance(last, BaseException):
            return last
        if clock.monotonic() > deadline:
            raise _timed_out(what, timeout, last)
        await clock.sleep(interval)


def wait_for_blocking(
    cond: Callable[[], Any],
    what: What,
    timeout: float = 10.0,
    *,
    interval: float = 0.2,
    ignoring: Ignored = (),
) -> Any:
    """``wait_for`` for code without an event loop: blocks the calling thread between polls
    (by default a fifth of a second: what it waits for is usually another process)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            last = cond()
        except ignoring as exc:
            last = exc
        if last and not isinstance(last, BaseException):
            return last
        if time.monotonic() > deadline:
            raise _timed_out(what, timeout, last)
        time.sleep(interval)


async def _attempt(cond: Callable[[], Any], ignoring: Ignored) -> Any:
    try:
        value = cond()
        if asyncio.iscoroutine(value):
            value = await value
    except ignoring as exc:
        return exc
    return value


def _timed_out(what: What, timeout: float, last: Any) -> AssertionError:
    text = what() if callable(what) else what
    return AssertionError(f"timed out after {timeout}s waiting for: {text} (last: {last!r})")
