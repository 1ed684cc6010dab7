"""Transmit-limited broadcast queue (memberlist ``TransmitLimitedQueue``).

Rule: every queued broadcast is sent at most ``retransmit_limit(mult, n)`` times, the
least-transmitted (and, among equals, newest) first; a new broadcast with the same key
(the member name) replaces the old one, because news about a member supersedes older
news about it. The queue is bounded: past ``MAX_QUEUE_DEPTH`` the most-sent are dropped.
"""

from __future__ import annotations

import math

__all__ = ["retransmit_limit", "TransmitLimitedQueue", "MAX_QUEUE_DEPTH"]

#: Most broadcasts held at once (Serf's MaxQueueDepth).
MAX_QUEUE_DEPTH = 4096
#: Give up filling a packet after this many consecutive broadcasts that did not fit.
_MISSES_BEFORE_STOP = 8


def retransmit_limit(mult: int, n: int) -> int:
    """How many times to send each broadcast in a cluster of ``n``: mult * ceil(log10(n + 1))."""
    return mult * math.ceil(math.log10(n + 1))


class _Entry:
    __slots__ = ("key", "payload", "transmits")

    def __init__(self, key: object, payload: bytes) -> None:
        self.key = key
        self.payload = payload
        self.transmits = 0


class TransmitLimitedQueue:
    """Broadcasts waiting to be piggybacked, bucketed by how often they were sent."""

    __slots__ = ("_mult", "_levels", "_by_key", "_next_id")

    def __init__(self, retransmit_mult: int) -> None:
        self._mult = retransmit_mult
        # _levels[t] holds entries sent t times, insertion-ordered (oldest first).
        self._levels: list[dict[int, _Entry]] = [{}]
        self._by_key: dict[object, int] = {}
        self._next_id = 0

    def __len__(self) -> int:
        return sum(len(level) for level in self._levels)

    def queue(self, payload: bytes, key: object | None = None) -> None:
        """Add a broadcast; one with the same non-None ``key`` is invalidated."""
        if key is not None:
            old = self._by_key.pop(key, None)
            if old is not None:
                self._remove(old)
        ident = self._next_id
        self._next_id += 1
        self._levels[0][ident] = _Entry(key, payload)
        if key is not None:
            self._by_key[key] = ident
        if len(self._by_key) > MAX_QUEUE_DEPTH or len(self) > MAX_QUEUE_DEPTH:
            self._prune(MAX_QUEUE_DEPTH)

    def _remove(self, ident: int) -> None:
        for level in self._levels:
            if level.pop(ident, None) is not None:
                return

    def _prune(self, keep: int) -> None:
        excess = len(self) - keep
        for level in reversed(self._levels):
            for ident in list(level):
                if excess <= 0:
                    return
                self._drop(level, ident)
                excess -= 1

    def _drop(self, level: dict[int, _Entry], ident: int) -> None:
        entry = level.pop(ident)
        if entry.key is not None and self._by_key.get(entry.key) == ident:
            del self._by_key[entry.key]

    def get_broadcasts(self, overhead: int, limit: int, n: int) -> list[bytes]:
        """Take broadcasts whose sizes plus ``overhead`` each fit in ``limit`` bytes."""
        taken: list[tuple[int, int, _Entry]] = []
        free = limit
        misses = 0
        for t, level in enumerate(self._levels):
            # Newest first among equally-sent entries; mutate only after the scan.
            for ident in reversed(level):
                entry = level[ident]
                size = len(entry.payload) + overhead
                if size > free:
                    misses += 1
                    if misses >= _MISSES_BEFORE_STOP:
                        break
                    continue
                free -= size
                taken.append((t, ident, entry))
            if free <= overhead or misses >= _MISSES_BEFORE_STOP:
                break
        max_tx = retransmit_limit(self._mult, n)
        for t, ident, entry in reversed(taken):  # oldest first keeps age order per level
            self._promote(self._levels[t], ident, entry, t, max_tx)
        return [entry.payload for _, _, entry in taken]

    def _promote(
        self, level: dict[int, _Entry], ident: int, e: _Entry, t: int, max_tx: int
    ) -> None:
        del level[ident]
        e.transmits = t + 1
        if e.transmits >= max_tx:
            if e.key is not None and self._by_key.get(e.key) == ident:
                del self._by_key[e.key]
            return
        if len(self._levels) <= t + 1:
            self._levels.append({})
        self._levels[t + 1][ident] = e

    def reset(self) -> None:
        """Forget everything queued."""
        self._levels = [{}]
        self._by_key.clear()
