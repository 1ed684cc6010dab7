"""The read pipeline every GET endpoint uses.

Rule: a read is ``(name, args) → query(store, **args) → (value, index) → codec → bytes``.
``serve_read`` is the only place that decides local vs. forwarded (``?dc=``), runs the
blocking wait and builds the response with Consul's headers. Encoded bodies are cached
per ``(name, args)`` and the notifier's index at encoding time: while nothing in the
catalog has changed, the same request costs one dict lookup, and when one change wakes
a thousand blocked watchers of the same query, the body is encoded once.

Forwarding (``?dc=``): the reads another datacenter may run are listed once
(``read_table``, ``node.api.app.FORWARDABLE_READS``), each with the ``ValueCodec`` of its
answer. The serving datacenter runs the query and ships the typed answer over RPC
(``node.rpc.reads``); here it is encoded like a local answer, so the JSON is the same and
its datacenter fields are those of the datacenter that served it. Only ``catalog.*`` and
``health.*`` reads are forwardable (``FORWARDABLE_PREFIXES``).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

from aiohttp import web

from node.api.blocking import QueryOptions, consul_headers, parse_query_options, run_blocking
from node.api.state import AGENT, RNG, AgentAPI
from node.errors import RemoteProtocolError
from node.rpc.reads import ReadRequest, ValueCodec

__all__ = [
    "ReadSpec",
    "Refine",
    "ResponseCache",
    "serve_read",
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
Encoder = Callable[[AgentAPI, Any], Any]


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
    #: How the answer travels between datacenters; only forwardable reads have one.
    wire: ValueCodec[Any] | None = None


class Refine(Protocol):
    """Narrows an encoded answer (``?filter=``, ``?node-meta=``) after any read, local or
    forwarded; ``key`` tells its answers apart from the unrefined ones in the cache."""

    @property
    def key(self) -> Hashable: ...

    def __call__(self, encoded: Any) -> Any: ...


def _encoder(spec: ReadSpec, refine: Refine | None) -> Encoder:
    if refine is None:
        return spec.encode
    encode = spec.encode
    return lambda agent, value: refine(encode(agent, value))


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
    request: web.Request, spec: ReadSpec, args: Mapping[str, Any], refine: Refine | None
) -> Callable[[], tuple[bytes, int]]:
    agent = request.app[AGENT]
    cache = agent.response_cache
    key = (spec.name, tuple(sorted(args.items())), None if refine is None else refine.key)
    encode = _encoder(spec, refine)

    def run() -> tuple[bytes, int]:
        if not spec.cacheable:
            value, index = spec.query(agent, **args)
            return dump_json(encode(agent, value)), index
        store_index = agent.notifier.index
        hit = cache.get(key, store_index)
        if hit is not None:
            return hit[1], hit[0]
        value, index = spec.query(agent, **args)
        body = dump_json(encode(agent, value))
        cache.put(key, store_index, index, body)
        return body, index

    return run


async def serve_read(
    request: web.Request, spec: ReadSpec, args: Mapping[str, Any], refine: Refine | None = None
) -> web.Response:
    """Answer a GET: forward other datacenters, else a (blocking) local query; ``refine``
    narrows the encoded answer."""
    agent = request.app[AGENT]
    # Most reads carry no query string: skip parsing it (this is the hot path).
    opts = parse_query_options(request.query) if request.query_string else _NO_OPTIONS
    if opts.dc is not None and opts.dc != agent.config.datacenter:
        body, index = await _forwarded(agent, opts.dc, opts, spec, args, refine)
    elif not opts.blocking:
        body, index = _local_query(request, spec, args, refine)()
        index = max(index, 1)
    else:
        body, index = await run_blocking(
            _local_query(request, spec, args, refine),
            opts,
            agent.notifier,
            rng=request.app[RNG],
            monotonic=agent.clock.monotonic,
        )
    if "pretty" in request.query:
        body = _pretty(body)
    return web.Response(body=body, headers=consul_headers(index, known_leader=bool(agent.leader())))


def _pretty(body: bytes) -> bytes:
    """``?pretty``: Consul's ``json.MarshalIndent`` layout (four spaces, a final newline)."""
    return json.dumps(json.loads(body), indent=4, ensure_ascii=False).encode() + b"\n"


async def _forwarded(
    agent: AgentAPI,
    dc: str,
    opts: QueryOptions,
    spec: ReadSpec,
    args: Mapping[str, Any],
    refine: Refine | None,
) -> tuple[bytes, int]:
    """Run the read in datacenter ``dc``; its typed answer encoded here.

    A read with no ``wire`` codec is sent all the same: the serving datacenter refuses
    it by name, as it refuses any read it does not serve.
    """
    # Blocking arguments travel along: the serving datacenter waits.
    wait = opts.wait if opts.blocking else 0.0
    read = ReadRequest(name=spec.name, args=dict(args), index=opts.index, wait=wait)
    value, index = await agent.forward_read(dc, read, spec.wire or _UNSERVED)
    return dump_json(_encoder(spec, refine)(agent, value)), index


def _never_answered(raw: Any) -> Any:
    raise RemoteProtocolError("a read that is not forwardable was answered")


_UNSERVED: ValueCodec[Any] = ValueCodec("unforwardable read", lambda v: v, _never_answered)


def read_table(*specs: ReadSpec) -> Mapping[str, ReadSpec]:
    """The reads other datacenters may ask for, by name.

    Built once, so what can be forwarded is listed in one place rather than by whichever
    modules happen to be imported. Each needs a ``wire`` codec for its answer.
    """
    table = {spec.name: spec for spec in specs}
    for name, spec in table.items():
        if not name.startswith(FORWARDABLE_PREFIXES):
            raise ValueError(f"read {name!r} is not forwardable (not {FORWARDABLE_PREFIXES})")
        if spec.wire is None:
            raise ValueError(f"read {name!r} has no wire codec: it cannot be forwarded")
    return MappingProxyType(table)
