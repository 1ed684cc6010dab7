"""Packet and stream transports for the gossip driver (memberlist's Transport seam).

Rule: a transport moves opaque bytes and never interprets them. Packets are
best-effort datagrams of at most ``max_packet`` bytes; streams are reliable
connections carrying ``node.wire`` frames, every read bounded in size and time.
Every queue is bounded: when one is full the newest item is dropped and counted,
never buffered without limit.

Outbound priority: ``write_to(..., priority=True)`` packets (the driver marks acks,
nacks and alive/refutations) bypass normal packets whenever the socket pushes back
(asyncio's ``pause_writing``); while the socket accepts data everything is sent at
once, so priority only matters under congestion — which is when it must.

Two implementations: ``NetTransport`` (asyncio UDP + TCP on one host:port) and
``MemoryTransport`` on a ``MemoryNetwork`` (in-process, for driver tests).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import ipaddress
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from node.errors import LocalProtocolError, RemoteProtocolError
from node.wire import FRAME_HEADER, MAX_FRAME_BYTES, frame, parse_frame_header

__all__ = [
    "Address",
    "MAX_PACKET_BYTES",
    "MAX_INBOUND_PACKET_BYTES",
    "PACKET_QUEUE_LIMIT",
    "SEND_QUEUE_LIMIT",
    "ACCEPT_QUEUE_LIMIT",
    "Packet",
    "Stream",
    "Transport",
    "NetTransport",
    "NetStream",
    "MemoryNetwork",
    "MemoryTransport",
    "MemoryStream",
]

log = logging.getLogger(__name__)

Address = tuple[str, int]

#: Largest datagram we send (memberlist UDPBufferSize: fits a 1,500-byte MTU).
MAX_PACKET_BYTES = 1400
#: Largest datagram we accept; bigger ones are truncated by the kernel and dropped here.
MAX_INBOUND_PACKET_BYTES = 65536
#: Inbound packets waiting for the driver before new ones are dropped.
PACKET_QUEUE_LIMIT = 4096
#: Outbound packets held while the socket pushes back, per priority class.
SEND_QUEUE_LIMIT = 1024
#: Accepted streams waiting for the driver before new connections are refused.
ACCEPT_QUEUE_LIMIT = 128
#: Attempts to find a port free for both UDP and TCP when binding port 0.
_BIND_ATTEMPTS = 10


@dataclass(frozen=True, slots=True, kw_only=True)
class Packet:
    """One datagram as received."""

    payload: bytes
    source: Address


class Stream(Protocol):
    """A reliable connection carrying length-prefixed frames."""

    @property
    def remote(self) -> Address:
        """The peer's address."""
        ...

    async def read_frame(self, *, timeout: float, max_bytes: int = MAX_FRAME_BYTES) -> bytes:
        """One frame; ``TimeoutError``, ``RemoteProtocolError`` (bad/short), ``OSError`` (I/O)."""
        ...

    async def write_frame(self, payload: bytes) -> None:
        """Send one frame (raises ``OSError`` if the peer is gone)."""
        ...

    def close(self) -> None:
        """Close; idempotent."""
        ...


class Transport(Protocol):
    """What the driver needs: send/receive packets, dial/accept streams."""

    @property
    def local_addr(self) -> Address:
        """The bound address (the real port when bound to port 0)."""
        ...

    @property
    def stats(self) -> Mapping[str, int]:
        """Counters (drops, errors)."""
        ...

    def write_to(self, payload: bytes, addr: Address, *, priority: bool = False) -> bool:
        """Send a datagram best-effort; ``False`` if it was dropped."""
        ...

    async def recv_packet(self) -> Packet:
        """The next inbound datagram."""
        ...

    async def dial(self, addr: Address, timeout: float) -> Stream:
        """Open a stream (``TimeoutError`` / ``OSError`` on failure)."""
        ...

    async def accept(self) -> Stream:
        """The next inbound stream."""
        ...

    async def close(self) -> None:
        """Stop sending and receiving; idempotent."""
        ...


@functools.lru_cache(maxsize=4096)
def _is_ip(host: str) -> bool:
    # sendto() with a host name would resolve it synchronously and stall the event loop;
    # member addresses come off the wire, so anything but an IP literal is refused.
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class _Counters:
    """A small named-counter bag shared by the transports."""

    __slots__ = ("_c",)

    def __init__(self) -> None:
        self._c: collections.Counter[str] = collections.Counter()

    def incr(self, name: str) -> None:
        self._c[name] += 1

    def view(self) -> Mapping[str, int]:
        return dict(self._c)


class _SendQueue:
    """Two bounded FIFO classes; priority items always leave first."""

    __slots__ = ("_high", "_low")

    def __init__(self) -> None:
        self._high: collections.deque[tuple[bytes, Address]] = collections.deque()
        self._low: collections.deque[tuple[bytes, Address]] = collections.deque()

    def __bool__(self) -> bool:
        return bool(self._high or self._low)

    def push(self, item: tuple[bytes, Address], priority: bool) -> bool:
        queue = self._high if priority else self._low
        if len(queue) >= SEND_QUEUE_LIMIT:
            return False
        queue.append(item)
        return True

    def pop(self) -> tuple[bytes, Address]:
        return self._high.popleft() if self._high else self._low.popleft()


# --------------------------------------------------------------------------- real sockets


class _UDPProtocol(asyncio.DatagramProtocol):
    """Feeds datagrams into the transport's bounded queue; tracks write pressure."""

    def __init__(self, owner: NetTransport) -> None:
        self._owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._owner._on_datagram(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable etc. on loopback: expected when a peer dies.
        self._owner._counters.incr("udp_errors")

    def pause_writing(self) -> None:
        self._owner._paused = True

    def resume_writing(self) -> None:
        self._owner._paused = False
        self._owner._flush()


class NetTransport:
    """UDP packets and TCP streams on the same ``host:port`` (port 0 picks a free one)."""

    def __init__(self, *, max_packet: int = MAX_PACKET_BYTES) -> None:
        self.max_packet = max_packet
        self._counters = _Counters()
        self._packets: asyncio.Queue[Packet] = asyncio.Queue(PACKET_QUEUE_LIMIT)
        self._streams: asyncio.Queue[NetStream] = asyncio.Queue(ACCEPT_QUEUE_LIMIT)
        self._backlog = _SendQueue()
        self._paused = False
        self._udp: asyncio.DatagramTransport | None = None
        self._server: asyncio.Server | None = None
        self._addr: Address = ("", 0)
        self._closed = False

    @classmethod
    async def bind(
        cls, host: str, port: int, *, max_packet: int = MAX_PACKET_BYTES
    ) -> NetTransport:
        """Create and bind; with ``port=0`` retries until UDP and TCP share a free port."""
        transport = cls(max_packet=max_packet)
        attempts = _BIND_ATTEMPTS if port == 0 else 1
        for attempt in range(attempts):
            try:
                await transport._bind_once(host, port)
                return transport
            except OSError:
                await transport.close()
                transport = cls(max_packet=max_packet)
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    async def _bind_once(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._on_connection, host, port)
        bound = self._server.sockets[0].getsockname()
        loop = asyncio.get_running_loop()
        udp, _ = await loop.create_datagram_endpoint(
            lambda: _UDPProtocol(self), local_addr=(host, bound[1])
        )
        self._udp = udp
        self._addr = (bound[0], bound[1])

    def _udp_protocol_for_test(self) -> asyncio.BaseProtocol:
        # Tests simulate socket back-pressure through the protocol's own callbacks.
        assert self._udp is not None
        return self._udp.get_protocol()

    @property
    def local_addr(self) -> Address:
        """The bound ``(host, port)``."""
        return self._addr

    @property
    def stats(self) -> Mapping[str, int]:
        """Counters: packets_dropped_*, streams_refused, udp_errors."""
        return self._counters.view()

    def write_to(self, payload: bytes, addr: Address, *, priority: bool = False) -> bool:
        """Send now, or queue while the socket pushes back (priority first)."""
        if self._udp is None or self._closed:
            return False
        if len(payload) > self.max_packet:
            self._counters.incr("packets_dropped_oversize_out")
            log.warning(
                "dropping oversize packet",
                extra={"to": str(addr), "bytes": len(payload), "limit": self.max_packet},
            )
            return False
        if not _is_ip(addr[0]):
            self._counters.incr("packets_dropped_bad_address")
            return False
        if self._paused or self._backlog:
            if not self._backlog.push((payload, addr), priority):
                self._counters.incr("packets_dropped_queue_full")
                return False
            return True
        self._sendto(payload, addr)
        return True

    def _sendto(self, payload: bytes, addr: Address) -> None:
        assert self._udp is not None
        try:
            self._udp.sendto(payload, addr)
        except (OSError, ValueError) as exc:
            self._counters.incr("udp_errors")
            log.debug("sendto failed", extra={"to": str(addr), "error": str(exc)})

    def _flush(self) -> None:
        while self._backlog and not self._paused and not self._closed:
            self._sendto(*self._backlog.pop())

    def _on_datagram(self, data: bytes, source: Address) -> None:
        if len(data) >= MAX_INBOUND_PACKET_BYTES:
            self._counters.incr("packets_dropped_oversize_in")
            return
        try:
            self._packets.put_nowait(Packet(payload=data, source=source))
        except asyncio.QueueFull:
            self._counters.incr("packets_dropped_queue_full_in")

    async def recv_packet(self) -> Packet:
        """The next datagram received."""
        return await self._packets.get()

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peer = writer.get_extra_info("peername") or ("", 0)
        stream = NetStream(reader, writer, (peer[0], peer[1]))
        if self._closed:
            stream.close()
            return
        try:
            self._streams.put_nowait(stream)
        except asyncio.QueueFull:
            self._counters.incr("streams_refused")
            stream.close()

    async def dial(self, addr: Address, timeout: float) -> NetStream:
        """Connect to ``addr`` within ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(addr[0], addr[1])
        return NetStream(reader, writer, addr)

    async def accept(self) -> NetStream:
        """The next inbound connection."""
        return await self._streams.get()

    async def close(self) -> None:
        """Close both sockets and refuse queued streams."""
        if self._closed:
            return
        self._closed = True
        if self._udp is not None:
            self._udp.close()
        if self._server is not None:
            self._server.close()
        while not self._streams.empty():
            self._streams.get_nowait().close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await self._server.wait_closed()


class NetStream:
    """A TCP connection speaking ``node.wire`` frames."""

    __slots__ = ("_reader", "_writer", "_remote")

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, remote: Address
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._remote = remote

    @property
    def remote(self) -> Address:
        """The peer's address."""
        return self._remote

    async def read_frame(self, *, timeout: float, max_bytes: int = MAX_FRAME_BYTES) -> bytes:
        """One whole frame within ``timeout`` seconds, at most ``max_bytes`` long."""
        try:
            async with asyncio.timeout(timeout):
                length = parse_frame_header(
                    await self._reader.readexactly(FRAME_HEADER), max_bytes=max_bytes
                )
                return await self._reader.readexactly(length)
        except asyncio.IncompleteReadError as exc:
            raise RemoteProtocolError(
                f"stream from {self._remote[0]}:{self._remote[1]} closed mid-frame "
                f"({len(exc.partial)} bytes read)"
            ) from exc
        except asyncio.LimitOverrunError as exc:  # pragma: no cover - readexactly does not raise it
            raise RemoteProtocolError(str(exc)) from exc

    async def write_frame(self, payload: bytes) -> None:
        """Write one frame and wait for the kernel to take it."""
        self._writer.write(frame(payload))
        await self._writer.drain()

    def close(self) -> None:
        """Close the connection (no wait)."""
        self._writer.close()


# --------------------------------------------------------------------------- in memory


class MemoryNetwork:
    """A set of ``MemoryTransport``s that reach each other by address, in one loop.

    ``partition`` / ``heal`` cut and restore links; a closed transport behaves like a
    dead host (packets vanish, dials are refused).
    """

    def __init__(self) -> None:
        self._nodes: dict[Address, MemoryTransport] = {}
        self._cut: set[frozenset[Address]] = set()
        self._next_port = 10000

    def transport(self, host: str = "127.0.0.1", port: int = 0) -> MemoryTransport:
        """A new transport on ``host:port`` (port 0 picks an unused one)."""
        if port == 0:
            self._next_port += 1
            port = self._next_port
        addr = (host, port)
        if addr in self._nodes and not self._nodes[addr].closed:
            raise LocalProtocolError(f"address {host}:{port} already in use")
        node = MemoryTransport(self, addr)
        self._nodes[addr] = node
        return node

    def partition(self, a: Address, b: Address) -> None:
        """Drop everything between ``a`` and ``b`` (both directions)."""
        self._cut.add(frozenset((a, b)))

    def heal(self, a: Address, b: Address) -> None:
        """Undo ``partition(a, b)``."""
        self._cut.discard(frozenset((a, b)))

    def _route(self, source: Address, dest: Address) -> MemoryTransport | None:
        node = self._nodes.get(dest)
        if node is None or node.closed or frozenset((source, dest)) in self._cut:
            return None
        return node


class MemoryTransport:
    """In-memory ``Transport``: delivery is an enqueue on the receiver, woken by the loop."""

    def __init__(
        self, network: MemoryNetwork, addr: Address, *, max_packet: int = MAX_PACKET_BYTES
    ) -> None:
        self._network = network
        self._addr = addr
        self.max_packet = max_packet
        self.closed = False
        self._counters = _Counters()
        self._packets: asyncio.Queue[Packet] = asyncio.Queue(PACKET_QUEUE_LIMIT)
        self._streams: asyncio.Queue[MemoryStream] = asyncio.Queue(ACCEPT_QUEUE_LIMIT)

    @property
    def local_addr(self) -> Address:
        """This transport's address."""
        return self._addr

    @property
    def stats(self) -> Mapping[str, int]:
        """Counters, as ``NetTransport``."""
        return self._counters.view()

    def write_to(self, payload: bytes, addr: Address, *, priority: bool = False) -> bool:
        """Deliver to ``addr``'s queue (lost silently if unreachable, like UDP)."""
        if self.closed:
            return False
        if len(payload) > self.max_packet:
            self._counters.incr("packets_dropped_oversize_out")
            return False
        dest = self._network._route(self._addr, addr)
        if dest is not None:
            try:
                dest._packets.put_nowait(Packet(payload=bytes(payload), source=self._addr))
            except asyncio.QueueFull:
                dest._counters.incr("packets_dropped_queue_full_in")
        return True

    async def recv_packet(self) -> Packet:
        """The next delivered packet."""
        return await self._packets.get()

    async def dial(self, addr: Address, timeout: float) -> MemoryStream:
        """Connect to ``addr``; ``ConnectionRefusedError`` if unreachable."""
        if self.closed:
            raise ConnectionRefusedError("transport closed")
        dest = self._network._route(self._addr, addr)
        if dest is None:
            raise ConnectionRefusedError(f"{addr[0]}:{addr[1]} unreachable")
        ours, theirs = MemoryStream.pair(self._addr, addr)
        try:
            dest._streams.put_nowait(theirs)
        except asyncio.QueueFull:
            dest._counters.incr("streams_refused")
            raise ConnectionRefusedError(f"{addr[0]}:{addr[1]} accept queue full") from None
        return ours

    async def accept(self) -> MemoryStream:
        """The next inbound stream."""
        return await self._streams.get()

    async def close(self) -> None:
        """Become unreachable."""
        self.closed = True
        while not self._streams.empty():
            self._streams.get_nowait().close()


class MemoryStream:
    """One end of an in-memory connection: a queue of whole frames each way."""

    __slots__ = ("_inbox", "_outbox", "_remote", "_closed")

    def __init__(
        self,
        inbox: asyncio.Queue[bytes | None],
        outbox: asyncio.Queue[bytes | None],
        remote: Address,
    ) -> None:
        self._inbox = inbox
        self._outbox = outbox
        self._remote = remote
        self._closed = False

    @classmethod
    def pair(cls, a: Address, b: Address) -> tuple[MemoryStream, MemoryStream]:
        """Two connected ends: the first is ``a``'s (remote ``b``), the second ``b``'s."""
        ab: asyncio.Queue[bytes | None] = asyncio.Queue()
        ba: asyncio.Queue[bytes | None] = asyncio.Queue()
        return cls(ba, ab, b), cls(ab, ba, a)

    @property
    def remote(self) -> Address:
        """The peer's address."""
        return self._remote

    async def read_frame(self, *, timeout: float, max_bytes: int = MAX_FRAME_BYTES) -> bytes:
        """The next frame the peer wrote."""
        async with asyncio.timeout(timeout):
            data = await self._inbox.get()
        if data is None:
            self._inbox.put_nowait(None)  # stay at EOF for later reads
            raise RemoteProtocolError(f"stream from {self._remote[0]}:{self._remote[1]} closed")
        if len(data) > max_bytes:
            raise RemoteProtocolError(f"frame of {len(data)} bytes exceeds {max_bytes}")
        return data

    async def write_frame(self, payload: bytes) -> None:
        """Hand one frame to the peer."""
        if self._closed:
            raise ConnectionResetError("stream closed")
        frame(payload)  # same size rule as the real framing
        self._outbox.put_nowait(bytes(payload))

    def close(self) -> None:
        """Signal EOF to the peer."""
        if not self._closed:
            self._closed = True
            self._outbox.put_nowait(None)
