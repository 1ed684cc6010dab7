"""Lifeguard's local health multiplier.

Rule: evidence that *we* are slow (missed nacks, having to refute) raises a score in
``[0, max - 1]``, a successful probe lowers it; timeouts we own are scaled by
``score + 1`` so an unhealthy node probes — and so accuses — less often.
"""

from __future__ import annotations

__all__ = ["Awareness"]


class Awareness:
    """A bounded health score (0 = healthy)."""

    __slots__ = ("_max", "_score")

    def __init__(self, max_multiplier: int) -> None:
        self._max = max_multiplier
        self._score = 0

    @property
    def score(self) -> int:
        """Current score, 0 .. max_multiplier - 1."""
        return self._score

    def apply_delta(self, delta: int) -> None:
        """Move the score, clamped to its range."""
        self._score = min(self._max - 1, max(0, self._score + delta))

    def scale(self, timeout: float) -> float:
        """``timeout`` stretched by the current multiplier."""
        return timeout * (self._score + 1)
