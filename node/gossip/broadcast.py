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
    __slots__ = ("key", "payload", "live")

    def __init__(self, key: object, payload: bytes) -> None:
        self.key = key
        self.payload = payload
        self.live = True  # False once invalidated; dropped lazily when reached


class TransmitLimitedQueue:
    """Broadcasts waiting to be piggybacked, bucketed by how often they were sent.

    ``_levels[t]`` is a stack (newest last) of entries sent ``t`` times; taking from the
    top of the lowest non-empty level gives "fewest transmits, then newest" in O(1).
    """

    __slots__ = ("_mult", "_levels", "_by_key", "_count")

    def __init__(self, retransmit_mult: int) -> None:
        self._mult = retransmit_mult
        self._levels: list[list[_Entry]] = [[]]
        self._by_key: dict[object, _Entry] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def queue(self, payload: bytes, key: object | None = None) -> None:
        """Add a broadcast; one with the same non-None ``key`` is invalidated."""
        if key is not None:
            old = self._by_key.get(key)
            if old is not None and old.live:
                old.live = False
                self._count -= 1
        entry = _Entry(key, payload)
        self._levels[0].append(entry)
        if key is not None:
            self._by_key[key] = entry
        self._count += 1
        if self._count > MAX_QUEUE_DEPTH:
            # Prune with headroom so a full queue is not rescanned on every insert.
            self._prune(MAX_QUEUE_DEPTH - MAX_QUEUE_DEPTH // 8)

    def _prune(self, keep: int) -> None:
        # Drop the most-transmitted, oldest first: they have done most of their work.
        for level in reversed(self._levels):
            for e in level:
                if self._count <= keep:
                    return
                if e.live:
                    self._retire(e)

    def _retire(self, e: _Entry) -> None:
        e.live = False
        self._count -= 1
        if e.key is not None and self._by_key.get(e.key) is e:
            del self._by_key[e.key]

    def get_broadcasts(self, overhead: int, limit: int, n: int) -> list[bytes]:
        """Take broadcasts whose sizes plus ``overhead`` each fit in ``limit`` bytes."""
        out: list[bytes] = []
        if not self._count:
            return out
        max_tx = retransmit_limit(self._mult, n)
        free = limit
        levels = self._levels
        promote: list[tuple[int, list[_Entry]]] = []
        for t in range(len(levels)):
            taken, free = self._take(levels[t], overhead, free, out)
            if taken:
                promote.append((t + 1, taken))
            if free <= overhead:
                break
        # Promote only after the scan, or an entry would be taken again from its new level.
        for t, taken in promote:
            self._promote(taken, t, max_tx)
        return out

    @staticmethod
    def _take(
        level: list[_Entry], overhead: int, free: int, out: list[bytes]
    ) -> tuple[list[_Entry], int]:
        """Pop the newest entries of one level that fit (payloads appended to ``out``);
        skip, and keep, up to a few that do not. Returns (taken, free bytes left)."""
        taken: list[_Entry] = []
        pop = level.pop
        # Fast path: the top of the stack usually fits entry after entry.
        while level and free > overhead:
            e = level[-1]
            if not e.live:
                pop()
                continue
            size = len(e.payload) + overhead
            if size > free:
                break
            free -= size
            pop()
            taken.append(e)
            out.append(e.payload)
        i = len(level) - 2  # level[-1] did not fit (or the level is empty)
        misses = 1
        while i >= 0 and free > overhead and misses < _MISSES_BEFORE_STOP:
            e = level[i]
            if not e.live:
                del level[i]
            elif len(e.payload) + overhead <= free:
                free -= len(e.payload) + overhead
                del level[i]
                taken.append(e)
                out.append(e.payload)
            else:
                misses += 1
            i -= 1
        return taken, free

    def _promote(self, taken: list[_Entry], t: int, max_tx: int) -> None:
        if t >= max_tx:
            for e in taken:
                self._retire(e)
            return
        if len(self._levels) <= t:
            self._levels.append([])
        # taken is newest-first; append oldest-first so the stack order keeps age order.
        self._levels[t].extend(reversed(taken))

    def reset(self) -> None:
        """Forget everything queued."""
        self._levels = [[]]
        self._by_key.clear()
        self._count = 0
