"""The DNS listener: UDP and TCP on one port, answering from the catalog.

Rule: a query is answered in the datagram callback when it can be (this datacenter's
catalog is in memory): read (``packet``), look up (``names``), build (``records``),
render. The rendered answer for a name and type is cached with the catalog index it
was built at (the topic index of the service, or of the node list), so a repeated query
costs a dictionary hit, a shuffle and a header. Queries that must wait — another
datacenter's catalog over RPC (``forward_read``), or a recursor for names outside the
domain — run as tasks, at most ``MAX_PENDING`` at once; beyond that they are dropped and
counted, so a flood of slow names never delays local answers. Malformed packets get
FORMERR (or NOTIMP), or are dropped when they cannot carry a reply; every one is
counted in ``DNSMetrics``.

ACLs: ``authorize(resource, name)`` (``"service"`` or ``"node"``) is the agent's seam for
the ``default`` token; a denied name answers NXDOMAIN, as Consul's filtered result does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeVar

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode

from node.catalog.queries import HealthEntry
from node.catalog.store import CatalogStore
from node.config.agent import DNSConfig
from node.dns import records
from node.dns.local import CATALOG_KINDS, answer_local, find_node
from node.dns.names import Kind, Lookup, parse_question
from node.dns.packet import (
    MAX_TCP,
    RCODE_SERVFAIL,
    Malformed,
    Prepared,
    Query,
    error_reply,
    read_query,
    render,
)
from node.errors import NodeError
from node.proxy.metrics import escape_label
from node.rpc.reads import HEALTH_ENTRIES, NODES, READ_HEALTH_SERVICE, ReadRequest, ValueCodec

__all__ = [
    "DNSServer",
    "DNSMetrics",
    "DNSSources",
    "ForwardRead",
    "render_prometheus",
    "MAX_PENDING",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Queries waiting for another datacenter or a recursor, at most.
MAX_PENDING: Final = 256
#: TCP connections served at once, at most; more are closed at once (and counted).
MAX_TCP_CONNECTIONS: Final = 128
#: How long a TCP connection may sit idle between queries, and take to send one.
TCP_IDLE_TIMEOUT: Final = 8.0
TCP_READ_TIMEOUT: Final = 2.0
#: How long a read of another datacenter may take before the answer is SERVFAIL.
REMOTE_TIMEOUT: Final = 5.0
#: Rendered answers kept, at most (the cache is cleared when full and refills).
CACHE_LIMIT: Final = 4096
_READ_NODES: Final = "catalog.nodes"


class ForwardRead(Protocol):
    """Run a catalog read in another datacenter: its answer and index."""

    def __call__(self, dc: str, read: ReadRequest, wire: ValueCodec[T]) -> Awaitable[tuple[T, int]]:
        """The answer rebuilt with ``wire``."""
        ...


def _allow_all(resource: str, name: str) -> bool:
    del resource, name
    return True


@dataclass(frozen=True, slots=True, kw_only=True)
class DNSSources:
    """What the DNS server reads: this datacenter's catalog, other datacenters over RPC,
    the datacenter's servers ``(node, address)`` for NS, and the ACL seam."""

    store: CatalogStore
    forward_read: ForwardRead
    servers: Callable[[], Sequence[tuple[str, str]]]
    authorize: Callable[[str, str], bool] = _allow_all


@dataclass(slots=True)
class DNSMetrics:
    """Counters of the DNS listener (read by ``/v1/agent/metrics``)."""

    queries_udp: int = 0
    queries_tcp: int = 0
    cache_hits: int = 0
    recursed: int = 0
    forwarded: int = 0
    #: Replies by response code name (NOERROR, NXDOMAIN, SERVFAIL, FORMERR, NOTIMP).
    replies: dict[str, int] = field(default_factory=dict)
    #: Queries answered FORMERR/NOTIMP or dropped, by reason.
    rejected: dict[str, int] = field(default_factory=dict)

    def reject(self, reason: str) -> None:
        """Count one bad or dropped query."""
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def replied(self, reply: bytes) -> None:
        """Count one reply by its response code."""
        code = reply[3] & 0x0F
        name = _RCODE_NAMES[code] if code < len(_RCODE_NAMES) else str(code)
        self.replies[name] = self.replies.get(name, 0) + 1


_RCODE_NAMES: Final = ("NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED")


def render_prometheus(metrics: DNSMetrics) -> str:
    """The DNS counters in Prometheus text format 0.0.4 (appended to the proxies')."""
    lines = [
        "# HELP meshnode_dns_queries_total DNS queries received, by transport.",
        "# TYPE meshnode_dns_queries_total counter",
        f'meshnode_dns_queries_total{{transport="udp"}} {metrics.queries_udp}',
        f'meshnode_dns_queries_total{{transport="tcp"}} {metrics.queries_tcp}',
    ]
    for name, value, help_text in (
        ("cache_hits", metrics.cache_hits, "Answers rendered from a cached answer."),
        ("recursed", metrics.recursed, "Queries forwarded to the recursors."),
        ("forwarded", metrics.forwarded, "Queries answered by another datacenter."),
    ):
        metric = f"meshnode_dns_{name}_total"
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter", f"{metric} {value}"]
    for metric, label, counts, help_text in (
        ("meshnode_dns_replies_total", "rcode", metrics.replies, "Replies by response code."),
        ("meshnode_dns_rejected_total", "reason", metrics.rejected,
         "Malformed or dropped queries, by reason."),
    ):  # fmt: skip
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter"]
        lines += [f'{metric}{{{label}="{escape_label(k)}"}} {v}' for k, v in sorted(counts.items())]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class _Cached:
    topic: str | None  # the catalog topic the answer depends on (None: never changes)
    index: int
    prepared: Prepared
    resource: tuple[str, str] | None  # what the ACL seam must allow


Reply = bytes | None | Coroutine[Any, Any, bytes | None]


class DNSServer:
    """Consul's DNS interface on ``host:port`` (UDP and TCP)."""

    def __init__(
        self,
        config: DNSConfig,
        *,
        datacenter: str,
        sources: DNSSources,
        wall: Callable[[], float],
        rng: random.Random,
        metrics: DNSMetrics | None = None,
    ) -> None:
        self._config = config
        self._dc = datacenter
        self._sources = sources
        self._store = sources.store
        self._wall = wall
        self._rng = rng
        self.metrics = metrics or DNSMetrics()
        self._zone = records.Zone(config, datacenter)
        self._domains = tuple(d for d in (config.domain, config.alt_domain) if d)
        self._ra = bool(config.recursors)
        self._cache: dict[tuple[bytes, int], _Cached] = {}
        self._soa: tuple[int, bytes] = (-1, b"")
        self._pending: set[asyncio.Task[None]] = set()
        self._tcp_active = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._closed = asyncio.Event()

    # -------------------------------------------------------------- lifecycle

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)``, shared by UDP and TCP; valid after ``start``."""
        assert self._udp is not None
        host, port = self._udp.get_extra_info("sockname")[:2]
        return host, port

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Bind UDP and TCP on the same port (``0``: any port free for both)."""
        loop = asyncio.get_running_loop()
        for attempt in range(8):
            udp, _ = await loop.create_datagram_endpoint(
                lambda: _UDPProtocol(self), local_addr=(host, port)
            )
            bound = udp.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, host, bound)
            except OSError:
                udp.close()
                if port != 0 or attempt == 7:
                    raise
                continue  # the port was free for UDP only: pick another
            self._udp = udp  # type: ignore[assignment]
            return self.address
        raise AssertionError("unreachable")

    async def serve(self) -> None:
        """Run until ``aclose()`` (the listeners answer from the event loop)."""
        await self._closed.wait()

    async def aclose(self) -> None:
        """Stop listening and cancel queries still waiting."""
        self._closed.set()
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp.wait_closed(), 1.0)
        for task in list(self._pending):
            task.cancel()
        if self._pending:
            await asyncio.wait(self._pending, timeout=1.0)

    # -------------------------------------------------------------- answering

    def respond(self, packet: bytes, *, udp: bool) -> Reply:
        """The reply to one packet: bytes, None (drop), or a coroutine giving either."""
        try:
            query = read_query(packet)
        except Malformed as bad:
            self.metrics.reject(bad.reason)
            return bad.reply
        hit = self._cache.get((query.key, query.qtype))
        if hit is not None and self._fresh(hit):
            self.metrics.cache_hits += 1
            return self._render(query, hit.prepared, udp)
        lookup = parse_question(query.name(), query.qtype, self._domains)
        if lookup is None:
            if not self._config.recursors:
                return error_reply(query, RCODE_SERVFAIL, ra=False)
            self.metrics.recursed += 1
            return self._recurse(packet, query, udp)
        if lookup.dc is not None and lookup.dc != self._dc and lookup.kind in CATALOG_KINDS:
            self.metrics.forwarded += 1
            return self._remote(query, lookup, udp)
        return self._render(query, self._local(query, lookup), udp)

    def _fresh(self, hit: _Cached) -> bool:
        if hit.resource is not None and not self._sources.authorize(*hit.resource):
            return False
        return hit.topic is None or self._store.topic_index(hit.topic) == hit.index

    def _render(self, query: Query, prepared: Prepared, udp: bool) -> bytes:
        return render(
            query, prepared, soa=self._soa_record(), ra=self._ra,
            limit=self._config.udp_answer_limit, udp=udp,
            truncate=self._config.enable_truncate, rng=self._rng,
        )  # fmt: skip

    def _soa_record(self) -> bytes:
        serial = int(self._wall())
        if self._soa[0] != serial:
            self._soa = (serial, records.soa_record(self._zone, serial))
        return self._soa[1]

    def _local(self, query: Query, lookup: Lookup) -> Prepared:
        """Answer from this datacenter's catalog; kept for reuse until its topic changes."""
        resource = _resource(lookup) if lookup.kind in CATALOG_KINDS else None
        if resource is not None and not self._sources.authorize(*resource):
            return records.NXDOMAIN
        servers: list[tuple[str, str]] = []
        if lookup.kind is Kind.NS or lookup.kind is Kind.SOA:
            servers = list(self._sources.servers())
            self._rng.shuffle(servers)
        answer = answer_local(self._zone, self._store, lookup, query.qtype, servers)
        if answer.reusable:
            if len(self._cache) >= CACHE_LIMIT:
                self._cache.clear()
            cached = _Cached(answer.topic, answer.index, answer.prepared, resource)
            self._cache[(query.key, query.qtype)] = cached
        return answer.prepared

    async def _remote(self, query: Query, lookup: Lookup, udp: bool) -> bytes:
        """Answer from another datacenter's catalog, read over RPC by its servers."""
        dc = lookup.dc
        assert dc is not None
        resource = _resource(lookup)
        if not self._sources.authorize(*resource):
            return self._render(query, records.NXDOMAIN, udp)
        try:
            async with asyncio.timeout(REMOTE_TIMEOUT):
                prepared = await self._read_remote(query.qtype, lookup, dc)
        except (NodeError, OSError, TimeoutError) as exc:
            log.debug("dns: read of datacenter %s failed: %s", dc, exc)
            return error_reply(query, RCODE_SERVFAIL, ra=self._ra)
        return self._render(query, prepared, udp)

    async def _read_remote(self, qtype: int, lookup: Lookup, dc: str) -> Prepared:
        forward = self._sources.forward_read
        if lookup.kind is Kind.NODE:
            nodes, _ = await forward(dc, ReadRequest(name=_READ_NODES), NODES)
            return records.node_answer(self._zone, qtype, find_node(nodes, lookup.name))
        args = {"name": lookup.name, "tag": lookup.tag, "passing": False,
                "connect": lookup.kind is Kind.CONNECT}  # fmt: skip
        entries: tuple[HealthEntry, ...]
        entries, _ = await forward(dc, ReadRequest(name=READ_HEALTH_SERVICE, args=args),
                                   HEALTH_ENTRIES)  # fmt: skip
        return records.service_answer(self._zone, qtype, lookup.name, entries, dc)

    async def _recurse(self, packet: bytes, query: Query, udp: bool) -> bytes:
        """Forward a name outside the domain to the recursors, in order (or shuffled with
        ``recursor_strategy = "random"``); the first NOERROR/NXDOMAIN reply is relayed."""
        config = self._config
        order = list(config.recursors)
        if config.recursor_strategy == "random":
            self._rng.shuffle(order)
        request = dns.message.from_wire(packet)
        for host, port in order:
            try:
                if udp:
                    reply = await dns.asyncquery.udp(request, host, timeout=config.recursor_timeout,
                                                     port=port, ignore_unexpected=True)  # fmt: skip
                else:
                    reply = await dns.asyncquery.tcp(request, host,
                                                     timeout=config.recursor_timeout, port=port)  # fmt: skip
            except (dns.exception.DNSException, OSError, EOFError, ValueError) as exc:
                log.debug("dns: recursor %s:%d failed: %r", host, port, exc)
                continue
            if reply.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                reply.id = query.ident
                return reply.to_wire()
        self.metrics.reject("recursors failed")
        return error_reply(query, RCODE_SERVFAIL, ra=True)

    # -------------------------------------------------------------- transports

    def spawn(
        self, reply: Coroutine[Any, Any, bytes | None], send: Callable[[bytes], None]
    ) -> None:
        """Run a waiting query as a task (bounded by ``MAX_PENDING``); ``send`` its reply."""
        if len(self._pending) >= MAX_PENDING:
            reply.close()
            self.metrics.reject("too many pending queries")
            return
        task = asyncio.get_running_loop().create_task(self._finish(reply, send))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _finish(
        self, reply: Coroutine[Any, Any, bytes | None], send: Callable[[bytes], None]
    ) -> None:
        try:
            out = await reply
        except Exception:  # a bug must cost one answer, never the listener
            log.exception("dns: query failed")
            return
        if out is not None:
            self.metrics.replied(out)
            send(out)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._tcp_active >= MAX_TCP_CONNECTIONS:
            self.metrics.reject("too many TCP connections")
            writer.close()
            return
        self._tcp_active += 1
        try:
            await self._tcp_queries(reader, writer)
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError, OSError):
            pass  # the client went away or stalled: nothing to answer
        finally:
            self._tcp_active -= 1
            writer.close()

    async def _tcp_queries(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            async with asyncio.timeout(TCP_IDLE_TIMEOUT):
                head = await reader.readexactly(2)
            async with asyncio.timeout(TCP_READ_TIMEOUT):
                packet = await reader.readexactly(int.from_bytes(head, "big"))
            self.metrics.queries_tcp += 1
            reply = self.respond(packet, udp=False)
            out = await reply if isinstance(reply, Coroutine) else reply
            if out is None:
                return  # nothing to say to a sender of junk: hang up
            if len(out) > MAX_TCP + 12:
                out = error_reply(read_query(packet), RCODE_SERVFAIL, ra=self._ra)
            self.metrics.replied(out)
            writer.write(len(out).to_bytes(2, "big") + out)
            await writer.drain()


def _resource(lookup: Lookup) -> tuple[str, str]:
    return ("node", lookup.name) if lookup.kind is Kind.NODE else ("service", lookup.name)


class _UDPProtocol(asyncio.DatagramProtocol):
    __slots__ = ("_server", "_transport")

    def __init__(self, server: DNSServer) -> None:
        self._server = server
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        server, transport = self._server, self._transport
        assert transport is not None
        server.metrics.queries_udp += 1
        try:
            reply = server.respond(data, udp=True)
        except Exception:  # a bug must cost one answer, never the listener
            log.exception("dns: query failed")
            return
        if reply is None:
            return
        if isinstance(reply, bytes):
            server.metrics.replied(reply)
            transport.sendto(reply, addr)
        else:
            server.spawn(reply, lambda out: transport.sendto(out, addr))

    def error_received(self, exc: Exception) -> None:
        del exc  # ICMP errors about earlier replies: nothing to do
