"""Blocking queries: ``?index=&wait=`` in, ``X-Consul-*`` headers out.

Rule: every read endpoint goes through ``run_blocking``; nothing else in ``api/`` waits
on the catalog. Semantics follow Consul 1.6 (``website/source/api/features/blocking``):
a request with ``index=N > 0`` returns as soon as the query's own index exceeds N, or
after ``wait`` (default 5 min, capped at 10 min) plus a random jitter of up to wait/16,
with whatever the query answers then. ``index=0`` or no index answers at once. The
returned index is never below 1, as Consul clamps it. One deliberate difference: an
index higher than anything this node has served (the client saw a node before its
restart) answers at once, so the client resyncs instead of waiting out the timeout.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

from node.config.duration import parse_go_duration
from node.errors import InvalidRequest

__all__ = [
    "DEFAULT_WAIT",
    "MAX_WAIT",
    "JITTER_FRACTION",
    "QueryOptions",
    "Notifier",
    "parse_duration",
    "parse_query_options",
    "jittered",
    "run_blocking",
    "consul_headers",
]

DEFAULT_WAIT = 300.0  # seconds; Consul's default blocking wait (5 min)
MAX_WAIT = 600.0  # seconds; Consul caps wait at 10 min
JITTER_FRACTION = 16  # jitter up to wait/16, so many watchers don't return in lockstep

T = TypeVar("T")


class Notifier(Protocol):
    """What blocking needs from the catalog's index notifier."""

    @property
    def index(self) -> int:
        """The current modify index of everything this node serves."""
        ...

    async def wait(self, index_above: int, timeout: float) -> int:
        """Return the index once it exceeds ``index_above`` or ``timeout`` passes."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryOptions:
    """Parsed query-string options common to every read."""

    index: int = 0
    wait: float = DEFAULT_WAIT
    dc: str | None = None

    @property
    def blocking(self) -> bool:
        """Whether the caller asked to wait for a change."""
        return self.index > 0


def parse_duration(text: str) -> float:
    """Parse a ``?wait=`` Go duration (``"10s"``, ``"1m30s"``, ``"250ms"``) into seconds."""
    try:
        return parse_go_duration(text)
    except ValueError:
        raise InvalidRequest(f"Invalid wait time: {text!r}", field="wait") from None


def parse_query_options(query: Mapping[str, str]) -> QueryOptions:
    """Read ``index``, ``wait`` and ``dc`` from a query string; 400 on garbage."""
    index = 0
    raw_index = query.get("index")
    if raw_index:
        if not raw_index.isdigit():
            raise InvalidRequest(f"Invalid index: {raw_index!r}", field="index")
        index = int(raw_index)
    wait = DEFAULT_WAIT
    raw_wait = query.get("wait")
    if raw_wait:
        wait = parse_duration(raw_wait)
        if wait < 0:
            raise InvalidRequest(f"Invalid wait time: {raw_wait!r}", field="wait")
        if wait == 0:
            wait = DEFAULT_WAIT  # Consul treats an explicit zero as "use the default"
    dc = query.get("dc") or None
    return QueryOptions(index=index, wait=min(wait, MAX_WAIT), dc=dc)


def jittered(wait: float, rng: random.Random) -> float:
    """``wait`` plus a uniform random stagger of up to ``wait / JITTER_FRACTION``."""
    return wait + rng.random() * (wait / JITTER_FRACTION)


async def run_blocking(
    query: Callable[[], tuple[T, int]],
    opts: QueryOptions,
    notifier: Notifier,
    *,
    rng: random.Random,
    monotonic: Callable[[], float],
) -> tuple[T, int]:
    """Run ``query`` until its index passes ``opts.index`` or the jittered wait ends.

    ``query`` returns ``(value, index)``; it is re-run after every change the notifier
    reports. We wait on the *notifier's* index, not the caller's, so a change elsewhere
    in the catalog that leaves this query's index alone does not spin.
    """
    value, index = query()
    if not opts.blocking or index > opts.index:
        return value, max(index, 1)
    if opts.index > notifier.index:
        # The client's index is from the future: it saw a previous incarnation of this
        # node (a restart resets indexes). Answer now so it resyncs at once instead of
        # waiting out a full timeout before noticing the index went backwards.
        return value, max(index, 1)
    deadline = monotonic() + jittered(opts.wait, rng)
    while True:
        remaining = deadline - monotonic()
        if remaining <= 0:
            return value, max(index, 1)
        seen = notifier.index
        await notifier.wait(seen, remaining)
        value, index = query()
        if index > opts.index:
            return value, max(index, 1)


def consul_headers(index: int, *, known_leader: bool = True) -> dict[str, str]:
    """The headers Consul puts on every read.

    ``LastContact`` is 0: reads are served from this node's own replica, never by
    asking a leader (gossip-replicated, not raft), so there is no contact to age.
    """
    return {
        "X-Consul-Index": str(index),
        "X-Consul-KnownLeader": "true" if known_leader else "false",
        "X-Consul-LastContact": "0",
        "Content-Type": "application/json",
    }
