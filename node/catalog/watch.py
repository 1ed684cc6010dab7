"""Index notifier behind blocking queries.

Rule: one shared future per "generation": ``notify`` resolves it and drops it, every
waiter parked on it wakes at once, and the next waiter makes a new one. Waiting costs one
done-callback and one timer per waiter, no task and no polling, so 1,000 concurrent
blocking queries are cheap. Call it from the event loop's thread only.
"""

from __future__ import annotations

import asyncio

__all__ = ["IndexNotifier"]


class IndexNotifier:
    """Tracks the highest index seen and wakes waiters when it grows."""

    __slots__ = ("_index", "_future")

    def __init__(self, index: int = 0) -> None:
        self._index = index
        self._future: asyncio.Future[int] | None = None

    @property
    def index(self) -> int:
        """The highest index notified so far."""
        return self._index

    def notify(self, index: int) -> None:
        """Record ``index``; wake every waiter if it is higher than before."""
        if index <= self._index:
            return
        self._index = index
        future, self._future = self._future, None
        if future is not None and not future.done():
            future.set_result(index)

    async def wait(self, index_above: int, timeout: float) -> int:
        """Return the current index once it exceeds ``index_above``, or after ``timeout`` s.

        Returns at once when the index is already higher. A timeout is not an error:
        the caller answers with whatever is current, as Consul does.
        """
        if self._index > index_above or timeout <= 0:
            return self._index
        if self._future is None or self._future.done():
            self._future = asyncio.get_running_loop().create_future()
        # asyncio.wait never cancels the shared future, so other waiters are unaffected.
        await asyncio.wait((self._future,), timeout=timeout)
        return self._index

    @property
    def has_waiters(self) -> bool:
        """Whether any waiter may be parked right now (for statistics and tests)."""
        return self._future is not None and not self._future.done()
