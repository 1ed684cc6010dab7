"""IndexNotifier: immediate return, wake-up on change, timeout, 1,000 concurrent waiters."""

from __future__ import annotations

import asyncio
import time

from node.catalog.watch import IndexNotifier


async def test_IndexNotifier_returns_at_once_when_index_is_already_higher() -> None:
    notifier = IndexNotifier(5)
    assert await notifier.wait(4, timeout=10) == 5


async def test_IndexNotifier_times_out_with_current_index() -> None:
    notifier = IndexNotifier(5)
    start = time.monotonic()
    assert await notifier.wait(5, timeout=0.05) == 5
    assert time.monotonic() - start >= 0.04


async def test_IndexNotifier_ignores_lower_or_equal_index() -> None:
    notifier = IndexNotifier(5)
    waiter = asyncio.create_task(notifier.wait(5, timeout=1))
    await asyncio.sleep(0)
    notifier.notify(5)
    notifier.notify(3)
    assert notifier.has_waiters  # neither resolved the shared future
    await asyncio.sleep(0)
    assert not waiter.done()
    notifier.notify(6)
    assert await waiter == 6


async def test_IndexNotifier_wakes_1000_waiters_quickly() -> None:
    notifier = IndexNotifier(1)
    waiters = [asyncio.create_task(notifier.wait(1, timeout=30)) for _ in range(1000)]
    await asyncio.sleep(0)  # one loop pass runs every new task up to its wait
    assert notifier.has_waiters
    start = time.monotonic()
    notifier.notify(2)
    results = await asyncio.gather(*waiters)
    elapsed = time.monotonic() - start
    assert results == [2] * 1000
    assert elapsed < 0.5, f"waking 1000 waiters took {elapsed:.3f}s"
    # A timed-out waiter does not disturb the others sharing the future.
    short = asyncio.create_task(notifier.wait(2, timeout=0.01))
    long = asyncio.create_task(notifier.wait(2, timeout=5))
    assert await short == 2
    notifier.notify(3)
    assert await long == 3
