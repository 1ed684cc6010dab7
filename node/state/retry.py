"""Retry delays of the state's loops: exponential, capped, jittered.

Rule: the n-th consecutive failure waits ``min(max, min * 2**(n-1))``, scaled by a draw
in [0.5, 1) so that nodes which failed together do not retry together.

Pure: the caller passes its random source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["Retry", "Uniform"]


class Uniform(Protocol):
    """A random source (``random.Random``)."""

    def uniform(self, a: float, b: float) -> float:
        """A float in [a, b]."""
        ...


@dataclass(frozen=True, slots=True)
class Retry:
    """Bounds of the delay between attempts, in seconds."""

    min: float
    max: float

    def delay(self, failures: int, rng: Uniform) -> float:
        """How long to wait after ``failures`` consecutive failures."""
        base = min(self.max, self.min * 2.0 ** max(0, failures - 1))
        return float(base * rng.uniform(0.5, 1.0))
