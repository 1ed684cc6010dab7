"""A seeded in-memory network model: what happens to each packet and stream.

Rule: this module only *decides fate* — lost, delayed (how long), duplicated, reordered,
blocked by a partition — from a seeded ``random.Random``; the simulator (or an in-memory
transport) schedules the deliveries. Same seed, same sends ⇒ same fates.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

from node.gossip.messages import Address

__all__ = ["LinkConditions", "MemoryNetwork"]

#: Modelled TCP retransmission timeout and retry cap for lossy streams.
_RTO = 0.2
_MAX_RETRANSMITS = 10


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkConditions:
    """Per-packet behaviour of every link (seconds, probabilities in [0, 1])."""

    loss: float = 0.0
    min_delay: float = 0.0005
    max_delay: float = 0.002
    duplicate: float = 0.0
    # Probability a packet is held back by ``reorder_delay`` extra (arrives after later ones).
    reorder: float = 0.0
    reorder_delay: float = 0.02
    # A stream to an unreachable peer fails after this long (connect timeout / refused).
    stream_fail_delay: float = 0.5

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {v}")
        if not 0.0 <= self.min_delay <= self.max_delay:
            raise ValueError("need 0 <= min_delay <= max_delay")


class MemoryNetwork:
    """Fate of packets and streams between addresses, with partitions and counters."""

    def __init__(self, *, rng: random.Random, conditions: LinkConditions | None = None) -> None:
        self._rng = rng
        self.conditions = conditions or LinkConditions()
        self._group: dict[Address, int] = {}
        self.bytes_sent = 0
        self.packets_sent = 0
        self.packets_lost = 0
        self.streams_opened = 0
        self.stream_bytes = 0

    def partition(self, *groups: Iterable[Address]) -> None:
        """Split the network: addresses in different groups cannot reach each other.

        Addresses in no group stay reachable only from other ungrouped addresses.
        """
        self._group = {a: i + 1 for i, g in enumerate(groups) for a in g}

    def heal(self) -> None:
        """Remove every partition."""
        self._group = {}

    def can_reach(self, src: Address, dst: Address) -> bool:
        """Whether a partition separates ``src`` from ``dst``."""
        g = self._group
        return not g or g.get(src, 0) == g.get(dst, 0)

    def packet_delays(self, src: Address, dst: Address, size: int) -> tuple[float, ...]:
        """Delivery delays for one datagram: () if lost, two entries if duplicated."""
        self.packets_sent += 1
        self.bytes_sent += size
        c = self.conditions
        rnd = self._rng.random
        if not self.can_reach(src, dst) or (c.loss and rnd() < c.loss):
            self.packets_lost += 1
            return ()
        d = c.min_delay + (c.max_delay - c.min_delay) * rnd()
        if c.reorder and rnd() < c.reorder:
            d += c.reorder_delay
        if c.duplicate and rnd() < c.duplicate:
            return (d, d + c.min_delay + (c.max_delay - c.min_delay) * rnd())
        return (d,)

    def stream_delay(self, src: Address, dst: Address, size: int) -> float | None:
        """One-way delay of a stream message, or None if the peer is unreachable.

        Streams are reliable (TCP retransmits): loss only shows up as extra delay.
        """
        self.streams_opened += 1
        self.stream_bytes += size
        if not self.can_reach(src, dst):
            return None
        c = self.conditions
        d = c.min_delay + (c.max_delay - c.min_delay) * self._rng.random()
        if c.loss:
            # Each lost segment costs roughly one retransmission timeout (200 ms).
            for _ in range(_MAX_RETRANSMITS):
                if self._rng.random() >= c.loss:
                    break
                d += _RTO
        return d
