"""Hybrid logical clock stamps for the global state.

Rule: every write to the global state carries a ``Stamp`` = (wall ms, counter, writer node
id), compared in that order, so any two stamps are ordered and the merge "larger stamp
wins" is deterministic on every node. The clock never goes backwards even if the wall
clock does, and it moves past every stamp it has seen (Kulkarni et al., "Logical Physical
Clocks", 2014). Wall time is an input (milliseconds), never read here.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["Stamp", "HybridClock", "MAX_DRIFT_MS"]

#: A remote stamp further than this ahead of our wall clock means some node's clock is off;
#: it is still adopted (refusing it would lose that node's writes forever) but reported.
MAX_DRIFT_MS: Final = 60_000


@dataclass(frozen=True, slots=True, order=True)
class Stamp:
    """A totally ordered write stamp."""

    wall_ms: int
    counter: int
    node: str

    def to_wire(self) -> list[object]:
        """``[wall_ms, counter, node]``."""
        return [self.wall_ms, self.counter, self.node]

    @classmethod
    def from_wire(cls, raw: object) -> Stamp:
        """Inverse of ``to_wire``; ``ValueError`` on anything else."""
        if not isinstance(raw, list | tuple) or len(raw) != 3:
            raise ValueError(f"stamp must be [wall_ms, counter, node], got {raw!r}")
        wall, counter, node = raw
        if not (isinstance(wall, int) and isinstance(counter, int) and isinstance(node, str)):
            raise ValueError(f"stamp has wrong types: {raw!r}")
        if wall < 0 or counter < 0:
            raise ValueError(f"stamp has negative parts: {raw!r}")
        return cls(wall, counter, node)


class HybridClock:
    """The HLC of one node."""

    __slots__ = ("_node", "_wall", "_counter")

    def __init__(self, node: str, *, wall_ms: int = 0, counter: int = 0) -> None:
        self._node = node
        self._wall = wall_ms
        self._counter = counter

    @property
    def node(self) -> str:
        """The node id stamped on every write."""
        return self._node

    @property
    def last(self) -> tuple[int, int]:
        """(wall ms, counter) of the latest stamp issued or observed (for persistence)."""
        return self._wall, self._counter

    def tick(self, wall_ms: int) -> Stamp:
        """Stamp a local write at physical time ``wall_ms``."""
        if wall_ms > self._wall:
            self._wall, self._counter = wall_ms, 0
        else:
            self._counter += 1
        return Stamp(self._wall, self._counter, self._node)

    def observe(self, remote: Stamp, wall_ms: int) -> bool:
        """Move past a received stamp; returns False if it was suspiciously far ahead."""
        if (remote.wall_ms, remote.counter) > (self._wall, self._counter):
            self._wall, self._counter = remote.wall_ms, remote.counter
        return remote.wall_ms <= wall_ms + MAX_DRIFT_MS
