"""The read pipeline every GET endpoint uses.

Rule: a read is ``(name, args) → query(store, **args) → (value, index) → codec → bytes``.
``serve_read`` is the only place that decides local vs. forwarded (``?dc=``), runs the
blocking wait and builds the response with Consul's headers. Encoded bodies are cached
per ``(name, args)`` and the notifier's index at encoding time: while nothing in the
catalog has changed, the same request costs one dict lookup, and when one change wakes
a thousand blocked watchers of the same query, the body is encoded once.

Forwarding (``?dc=``): the composition root lists the forwardable reads once
(``read_table``, ``node.api.app.FORWARDABLE_READS``); the serving datacenter looks the
name up there and runs ``answer_read`` (the same local/blocking pipeline) and ships back the
encoded JSON body, so the answer's datacenter fields are those of the datacenter that
served it. ``agent.forward_read`` returns it as a ``ForwardedBody``, sent as is.
Only ``catalog.*`` and ``health.*`` reads are forwardable (``FORWARDABLE_PREFIXES``).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from aiohttp import web

from node.api.blocking import QueryOptions, consul_headers, parse_query_options, run_blocking
from node.api.state import AGENT, RNG
from node.errors import InvalidRequest

__all__ = [
    "ReadSpec",
    "ResponseCache",
    "ForwardedBody",
    "serve_read",
    "answer_read",
    "read_table",
    "dump_json",
    "CACHE_ENTRIES",
    "FORWARDABLE_PREFIXES",
]

CACHE_ENTRIES = 4096  # distinct (query, args) bodies kept; LRU beyond that
_NO_OPTIONS = QueryOptions()
#: Reads another datacenter may ask us to run (Consul forwards catalog and health reads).
FORWARDABLE_PREFIXES = ("catalog.", "health.")

Query = Callable[..., tuple[Any, int]]
Encoder = Callable[[Any, Any], Any]


def dump_json(value: Any) -> bytes:
    """Compact JSON bytes (what Consul sends, minus its pretty-printing option)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadSpec:
    """One read endpoint: a name (also used to forward it), the query and the encoder.

    ``query(agent, **args) -> (value, index)`` and ``encode(agent, value) -> JSON-able``.
    """

    name: str
    query: Query
    encode: Encoder
    #: Whether the answer depends only on the catalog store (so its index can key a
    #: cache). Answers from gossip membership or config (members, leader) are not.
    cacheable: bool = True


@dataclass(frozen=True, slots=True)
class ForwardedBody:
    """A read answered by another datacenter: its Consul JSON, already encoded."""

    body: bytes


class ResponseCache:
    """Encoded bodies keyed by ``(name, args)``, valid while the catalog index is unchanged."""

    __slots__ = ("_entries", "_limit", "hits", "misses")

    def __init__(self, limit: int = CACHE_ENTRIES) -> None:
        self._entries: OrderedDict[Hashable, tuple[int, int, bytes]] = OrderedDict()
        self._limit = limit
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, store_index: int) -> tuple[int, bytes] | None:
        """The cached ``(query index, body)`` if it was built at ``store_index``."""
        entry = self._entries.get(key)
        if entry is None or entry[0] != store_index:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return entry[1], entry[2]

    def put(self, key: Hashable, store_index: int, index: int, body: bytes) -> None:
        """Remember a body encoded when the catalog was at ``store_index``."""
        self._entries[key] = (store_index, index, body)
        self._entries.move_to_end(key)
        while len(self._entries) > self._limit:
            self._entries.popitem(last=False)


def _local_query(
    request: web.Request, spec: ReadSpec, args: Mapping[str, Any]
) -> Callable[[], tuple[bytes, int]]:
    return _local_query_of(request.app[AGENT], spec, args)


def _local_query_of(
    agent: Any, spec: ReadSpec, args: Mapping[str, Any]
) -> Callable[[], tuple[bytes, int]]:
    cache: ResponseCache = agent.response_cache
    key = (spec.name, tuple(sorted(args.items())))

    def run() -> tuple[bytes, int]:
        if not spec.cacheable:
            value, index = spec.query(agent, **args)
            return dump_json(spec.encode(agent, value)), index
        store_index = agent.notifier.index
        hit = cache.get(key, store_index)
        if hit is not None:
            return hit[1], hit[0]
        value, index = spec.query(agent, **args)
        body = dump_json(spec.encode(agent, value))
        cache.put(key, store_index, index, body)
        return body, index

    return run


async def serve_read(request: web.Request, spec: ReadSpec, args: Mapping[str, Any]) -> web.Response:
    """Answer a GET: forward other datacenters, else a (blocking) local query."""
    agent = request.app[AGENT]
    # Most reads carry no query string: skip parsing it (this is the hot path).
    opts = parse_query_options(request.query) if request.query_string else _NO_OPTIONS
    if opts.dc is not None and opts.dc != agent.config.datacenter:
        value, index = await agent.forward_read(opts.dc, spec.name, dict(args), opts)
        if isinstance(value, ForwardedBody):
            body = value.body
        else:
            body = dump_json(spec.encode(agent, value))
    elif not opts.blocking:
        body, index = _local_query(request, spec, args)()
        index = max(index, 1)
    else:
        body, index = await run_blocking(
            _local_query(request, spec, args),
            opts,
            agent.notifier,
            rng=request.app[RNG],
            monotonic=agent.clock.monotonic,
        )
    return web.Response(body=body, headers=consul_headers(index, known_leader=bool(agent.leader())))


def read_table(*specs: ReadSpec) -> Mapping[str, ReadSpec]:
    """The reads other datacenters may ask for, by name (for ``answer_read``).

    Built once by the composition root, so what can be forwarded is listed in one place
    rather than by whichever modules happen to be imported.
    """
    table = {spec.name: spec for spec in specs}
    for name in table:
        if not name.startswith(FORWARDABLE_PREFIXES):
            raise ValueError(f"read {name!r} is not forwardable (not {FORWARDABLE_PREFIXES})")
    return MappingProxyType(table)


async def answer_read(
    agent: Any,
    name: str,
    args: Mapping[str, Any],
    opts: QueryOptions,
    rng: Any,
    *,
    reads: Mapping[str, ReadSpec],
) -> tuple[bytes, int]:
    """Run the read ``name`` (one of ``reads``) here for another datacenter:
    ``(JSON body, index)``.

    Raises ``InvalidRequest`` for a name that is unknown or not forwardable.
    """
    spec = reads.get(name)
    if spec is None or not name.startswith(FORWARDABLE_PREFIXES):
        raise InvalidRequest(f"unknown or non-forwardable read {name!r}", field="name")
    query = _local_query_of(agent, spec, args)
    if not opts.blocking:
        body, index = query()
        return body, max(index, 1)
    return await run_blocking(query, opts, agent.notifier, rng=rng, monotonic=agent.clock.monotonic)
