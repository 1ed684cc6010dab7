"""Mesh gateway on loopback: routing by SNI, rejections by reason, relay behaviour."""

from __future__ import annotations

import asyncio
import contextlib
import random
import select
import socket
import struct
import sys
from types import MappingProxyType

import pytest

from node.connect.names import datacenter_sni, service_sni
from node.proxy.gateway import GatewayListener
from node.proxy.metrics import ListenerStats
from node.proxy.plan import Endpoint, GatewayPlan
from node.proxy.pollers import LoopPoller
from node.proxy.relay import SPLICE_SUPPORTED, PipePool
from tests.helpers.ca import TD
from tests.helpers.poll import wait_for
from tests.proxy.proxy_helpers import Backend, client_hello, read_until_closed


def ep(port: int) -> Endpoint:
    return Endpoint(address="127.0.0.1", port=port)


def free_port() -> int:
    """A port nobody listens on (bound then closed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


def make_plan(
    services: dict[str, tuple[Endpoint, ...]], dcs: dict[str, tuple[Endpoint, ...]]
) -> GatewayPlan:
    return GatewayPlan(
        name="gw:default",
        bind_address="127.0.0.1",
        bind_port=0,
        local_dc="dc1",
        trust_domain=TD,
        services=MappingProxyType(services),
        datacenters=MappingProxyType(dcs),
        connect_timeout=1.0,
    )


async def start_gateway(plan: GatewayPlan, **kw: object) -> GatewayListener:
    gw = GatewayListener(plan, stats=ListenerStats(plan.name, "mesh-gateway"), **kw)  # type: ignore[arg-type]
    gw.start()
    return gw


async def roundtrip(gw: GatewayListener, sni: str | None, payload: bytes = b"ping") -> bytes:
    reader, writer = await asyncio.open_connection(*gw.address)
    try:
        writer.write(client_hello(sni) + payload)
        await writer.drain()
        writer.write_eof()
    except OSError:
        pass  # the gateway may close first; reading shows what happened
    try:
        data = await read_until_closed(reader)
    except ConnectionResetError:
        data = b""
    writer.close()
    return data


@pytest.mark.parametrize("use_splice", [True, False] if SPLICE_SUPPORTED else [False])
@pytest.mark.parametrize("loop_poller", [False, True])
async def test_GatewayListener_routes_local_service(use_splice: bool, loop_poller: bool) -> None:
    backend = await Backend().start()
    poller = LoopPoller(asyncio.get_running_loop()) if loop_poller else None
    plan = make_plan({"api": (ep(backend.port),)}, {})
    gw = await start_gateway(plan, use_splice=use_splice, poller=poller)
    hello = client_hello(service_sni("api", "default", "dc1", TD))
    reader, writer = await asyncio.open_connection(*gw.address)
    writer.write(hello + b"x" * 300_000)
    writer.write_eof()
    data = await read_until_closed(reader)
    # The backend got the hello byte for byte, then the payload; the echo and the
    # backend's reply after our half-close came back.
    assert bytes(backend.received) == hello + b"x" * 300_000
    assert data == hello + b"x" * 300_000 + b"<bye>"
    await wait_for(lambda: gw.stats.closed == 1, what="relay closed")
    s = gw.stats
    assert (s.opened, s.active, s.closed) == (1, 0, 1)
    assert s.bytes_in == len(hello) + 300_000
    assert s.bytes_out == len(data)
    assert not s.rejected
    writer.close()
    gw.close()
    await backend.aclose()


async def test_GatewayListener_routes_remote_dc_to_its_gateway() -> None:
    remote_gw = await Backend().start()
    gw = await start_gateway(make_plan({}, {"dc2": (ep(remote_gw.port),)}))
    for sni in (service_sni("api", "default", "dc2", TD), datacenter_sni("dc2", TD)):
        data = await roundtrip(gw, sni)
        assert data.endswith(b"ping<bye>")
    assert remote_gw.connections == 2
    gw.close()
    await remote_gw.aclose()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (client_hello(service_sni("nope", "default", "dc1", TD)), "unknown_service"),
        (client_hello(service_sni("api", "default", "dc9", TD)), "unknown_dc"),
        (client_hello("api.default.dc1.internal.other.consul"), "foreign_sni"),
        (client_hello(None), "no_sni"),
        (b"GET / HTTP/1.1\r\nHost: example\r\n\r\n", "bad_hello"),
        (b"\x16\x03\x01\x40\x00" + b"\x01" * 100, "bad_hello"),
    ],
)
async def test_GatewayListener_rejects(payload: bytes, reason: str) -> None:
    backend = await Backend().start()
    gw = await start_gateway(make_plan({"api": (ep(backend.port),)}, {"dc2": (ep(backend.port),)}))
    reader, writer = await asyncio.open_connection(*gw.address)
    writer.write(payload)
    assert await read_until_closed(reader) == b""
    await wait_for(lambda: gw.stats.closed == 1, "the relay closed")
    assert dict(gw.stats.rejected) == {reason: 1}
    assert backend.connections == 0
    # The gateway keeps serving afterwards.
    assert (await roundtrip(gw, service_sni("api", "default", "dc1", TD))).endswith(b"ping<bye>")
    writer.close()
    gw.close()
    await backend.aclose()


async def test_GatewayListener_slow_sender_bounded_wait() -> None:
    backend = await Backend().start()
    gw = await start_gateway(make_plan({"api": (ep(backend.port),)}, {}), hello_timeout=0.3)
    hello = client_hello(service_sni("api", "default", "dc1", TD))
    reader, writer = await asyncio.open_connection(*gw.address)
    writer.write(hello[:20])  # never finishes the hello
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert await read_until_closed(reader, timeout=3) == b""
    assert loop.time() - t0 < 2.0
    assert dict(gw.stats.rejected) == {"hello_timeout": 1}
    assert backend.connections == 0
    writer.close()
    gw.close()
    await backend.aclose()


async def test_GatewayListener_never_reads_more_than_the_bound() -> None:
    backend = await Backend().start()
    gw = await start_gateway(make_plan({"api": (ep(backend.port),)}, {}))
    # A record header promising a 16 KiB handshake message, then a flood.
    reader, writer = await asyncio.open_connection(*gw.address)
    writer.write(b"\x16\x03\x01\x3f\xff\x01\x00\x3f\xfb" + b"\x00" * 40_000)
    with _reset_is_close():
        assert await read_until_closed(reader) == b""
    await wait_for(lambda: gw.stats.closed == 1, "the relay closed")
    assert dict(gw.stats.rejected) == {"bad_hello": 1}
    writer.close()
    gw.close()
    await backend.aclose()


class _reset_is_close:
    """A reset instead of a FIN is also a close (we had unread bytes in flight)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: object) -> bool:
        return isinstance(a[1], ConnectionResetError)


async def test_GatewayListener_tries_next_endpoint_on_refusal() -> None:
    backend = await Backend().start()
    dead = free_port()
    plan = make_plan({"api": (ep(dead), ep(backend.port))}, {})
    gw = await start_gateway(plan, rng=random.Random(0))
    for _ in range(4):
        assert (await roundtrip(gw, service_sni("api", "default", "dc1", TD))).endswith(
            b"ping<bye>"
        )
    assert backend.connections == 4
    # With only dead endpoints: closed, counted.
    gw.update(make_plan({"api": (ep(dead),)}, {}))
    assert await roundtrip(gw, service_sni("api", "default", "dc1", TD)) == b""
    await wait_for(lambda: gw.stats.rejected["upstream_unavailable"] == 1, "the refusal counted")
    gw.close()
    await backend.aclose()


async def test_GatewayListener_update_applies_to_new_connections_only() -> None:
    b1, b2 = await Backend().start(), await Backend().start()
    gw = await start_gateway(make_plan({"api": (ep(b1.port),)}, {}))
    sni = service_sni("api", "default", "dc1", TD)
    reader, writer = await asyncio.open_connection(*gw.address)
    writer.write(client_hello(sni))
    await wait_for(lambda: b1.connections == 1, "a connection to b1")
    gw.update(make_plan({"api": (ep(b2.port),)}, {}))
    assert (await roundtrip(gw, sni)).endswith(b"ping<bye>")
    assert (b1.connections, b2.connections) == (1, 1)
    # The connection opened under the old plan still works.
    writer.write(b"still-here")
    writer.write_eof()
    assert (await read_until_closed(reader)).endswith(b"still-here<bye>")
    writer.close()
    gw.close()
    await b1.aclose()
    await b2.aclose()


async def test_GatewayListener_connection_limit_and_idle_timeout() -> None:
    backend = await Backend().start()
    gw = await start_gateway(
        make_plan({"api": (ep(backend.port),)}, {}), max_connections=1, idle_timeout=0.3
    )
    sni = service_sni("api", "default", "dc1", TD)
    r1, w1 = await asyncio.open_connection(*gw.address)
    w1.write(client_hello(sni))
    await wait_for(lambda: backend.connections == 1, "a connection to the backend")
    assert await roundtrip(gw, sni) == b""
    assert gw.stats.rejected["connection_limit"] == 1
    # The idle relay is closed by the sweep.
    await read_until_closed(r1, timeout=3)
    assert gw.stats.rejected["idle_timeout"] == 1
    w1.close()
    gw.close()
    await backend.aclose()


@pytest.mark.skipif(not SPLICE_SUPPORTED, reason="splice is Linux-only")
async def test_PipePool_reuses_pipes() -> None:
    backend = await Backend().start()
    pool = PipePool()
    gw = await start_gateway(make_plan({"api": (ep(backend.port),)}, {}), pool=pool)
    sni = service_sni("api", "default", "dc1", TD)
    # Small exchanges are copied through the shared buffer: no pipe at all.
    await roundtrip(gw, sni, b"small")
    await wait_for(lambda: gw.connections == 0, "every relay closed")
    assert pool.idle == 0
    # Bulk switches both directions (the backend echoes) to splice; pipes are reused.
    for _ in range(3):
        assert (await roundtrip(gw, sni, b"y" * 500_000)).endswith(b"y" * 1000 + b"<bye>")
        await wait_for(lambda: gw.connections == 0, "every relay closed")
        assert pool.idle == 2
    gw.close()
    pool.close()
    await backend.aclose()


@pytest.mark.parametrize("use_splice", [True, False] if SPLICE_SUPPORTED else [False])
async def test_Relay_backpressure_loses_nothing(use_splice: bool) -> None:
    # The backend reads nothing until the client has sent everything it could, so
    # the relay must park its reader, wait for writability and resume.
    release = asyncio.Event()
    got = bytearray()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        while data := await reader.read(1 << 20):
            got.extend(data)
        writer.write(b"done")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(slow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    gw = await start_gateway(make_plan({"api": (ep(port),)}, {}), use_splice=use_splice)
    hello = client_hello(service_sni("api", "default", "dc1", TD))
    payload = bytes(range(256)) * 40_000  # ~10 MB, far beyond the socket buffers
    reader, writer = await asyncio.open_connection(*gw.address)
    writer.write(hello + payload)
    await wait_for(lambda: any(r.down.blocked for r in gw._relays), "the relay to push back")
    release.set()
    writer.write_eof()
    assert await read_until_closed(reader, timeout=20) == b"done"
    assert bytes(got) == hello + payload
    writer.close()
    gw.close()
    server.close()


class _Recorder:
    def __init__(self) -> None:
        self.events: list[int] = []

    def on_event(self, ev: int) -> None:
        self.events.append(ev)


async def test_EdgePoller_reports_edges_and_drops_detached_fds() -> None:
    if sys.platform != "linux":
        pytest.skip("epoll is Linux-only")
    from node.proxy.pollers import EV_READ, EV_WRITE, EdgePoller

    poller = EdgePoller(asyncio.get_running_loop())
    a, b = socket.socketpair()
    rec = _Recorder()
    poller.watch(a.fileno(), rec)
    probe, poke = socket.socketpair()
    probe_rec = _Recorder()
    poller.watch(probe.fileno(), probe_rec)

    async def next_round() -> None:
        # A fresh edge on the probe: the poller has reported whatever was ready before it.
        seen = len(probe_rec.events)
        poke.send(b".")
        await wait_for(lambda: len(probe_rec.events) > seen, "the poller's next round")

    b.send(b"x")
    await wait_for(lambda: len(rec.events) == 1, "one event")
    assert rec.events[0] & EV_READ and not rec.events[0] & EV_WRITE
    # Edge-triggered: unread data is not reported again until more arrives.
    await next_round()
    assert len(rec.events) == 1
    b.send(b"y")
    await wait_for(lambda: len(rec.events) == 2, "two events")
    # Asking for writes reports at once when the socket is already writable.
    poller.want_write(a.fileno())
    await wait_for(lambda: len(rec.events) == 3, "three events")
    assert rec.events[2] & EV_WRITE
    # Detached (its owner is about to close it): nothing more reaches the handler.
    poller.detach(a.fileno())
    b.send(b"z")
    await next_round()
    assert len(rec.events) == 3
    poller.close()
    poller.close()  # idempotent
    for sock in (a, b, probe, poke):
        sock.close()


def _fin_arrived(sock: socket.socket) -> bool:
    poll = select.poll()
    poll.register(sock, select.POLLRDHUP)
    return bool(poll.poll(0))


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    """Two ends of one loopback TCP connection."""
    with socket.create_server(("127.0.0.1", 0)) as lsock:
        a = socket.create_connection(lsock.getsockname())
        b, _ = lsock.accept()
    return a, b


@pytest.mark.parametrize("use_splice", [True, False] if SPLICE_SUPPORTED else [False])
@pytest.mark.parametrize("loop_poller", [False, True])
async def test_Relay_forwards_a_fin_that_arrived_while_blocked(
    use_splice: bool, loop_poller: bool
) -> None:
    # Edge-triggered readiness reports a FIN once: if it arrives while the direction
    # waits for its destination to drain, it must still be forwarded afterwards.
    from node.proxy.pollers import make_poller
    from node.proxy.relay import Relay, make_scratch

    loop = asyncio.get_running_loop()
    poller = LoopPoller(loop) if loop_poller else make_poller(loop)
    client, down = _tcp_pair()
    up, server = _tcp_pair()
    for s in (client, server):
        s.setblocking(False)
    pool = PipePool() if use_splice else None
    stats = ListenerStats("t", "mesh-gateway")
    stats.active = 1
    relay = Relay(poller, down, up, stats=stats, pool=pool, scratch=make_scratch())
    poller.watch(down.fileno(), relay.down)
    poller.watch(up.fileno(), relay.up)
    chunk, sent = b"z" * 65536, 0

    def pushed_back() -> bool:  # the server reads nothing: the relay must push back
        nonlocal sent
        if not relay.down.blocked:
            with contextlib.suppress(BlockingIOError):
                sent += client.send(chunk)
        return relay.down.blocked

    await wait_for(pushed_back, "the relay to block", interval=0)
    sent += client.send(b"tail")
    client.shutdown(socket.SHUT_WR)
    if hasattr(select, "POLLRDHUP"):
        await wait_for(lambda: _fin_arrived(down), what="the FIN at the relay")
    assert relay.down.blocked  # it came while the relay pushed back
    got = 0
    async with asyncio.timeout(10):
        while data := await loop.sock_recv(server, 1 << 20):
            got += len(data)
    assert got == sent  # every byte, then the forwarded EOF
    server.close()
    await wait_for(lambda: relay.closed, what="relay closed after both EOFs")
    relay.report()
    assert stats.bytes_in == sent and stats.closed == 1
    client.close()
    poller.close()
    if pool is not None:
        pool.close()


async def test_Relay_closes_when_a_side_resets_after_its_eof() -> None:
    # After a side's EOF nobody reads it again, so its reset is noticed from the
    # error event alone (edge-triggered poller), not at the next write or idle timeout.
    if sys.platform != "linux":
        pytest.skip("epoll is Linux-only")
    from node.proxy.pollers import make_poller
    from node.proxy.relay import Relay, make_scratch

    poller = make_poller(asyncio.get_running_loop())
    client, down = _tcp_pair()
    up, server = _tcp_pair()
    stats = ListenerStats("t", "mesh-gateway")
    stats.active = 1
    relay = Relay(poller, down, up, stats=stats, pool=None, scratch=make_scratch())
    poller.watch(down.fileno(), relay.down)
    poller.watch(up.fileno(), relay.up)
    client.shutdown(socket.SHUT_WR)
    await wait_for(lambda: relay.down.eof, what="the client's EOF forwarded")
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()  # a reset
    await wait_for(lambda: relay.closed, what="relay closed on the reset")
    assert stats.closed == 1 and not stats.rejected
    server.close()
    poller.close()


@pytest.mark.parametrize("use_splice", [True, False] if SPLICE_SUPPORTED else [False])
@pytest.mark.parametrize("loop_poller", [False, True])
async def test_GatewayListener_many_connections_random_traffic(
    use_splice: bool, loop_poller: bool
) -> None:
    # Concurrent connections with mixed sizes, chunkings and slow readers (so both
    # directions push back now and then): every byte arrives in order, every relay ends.
    rng = random.Random(20261126)
    backend = await Backend().start()
    poller = LoopPoller(asyncio.get_running_loop()) if loop_poller else None
    gw = await start_gateway(
        make_plan({"api": (ep(backend.port),)}, {}), use_splice=use_splice, poller=poller
    )
    hello = client_hello(service_sni("api", "default", "dc1", TD))
    # Two beyond what socket buffers absorb, so both directions of a relay block.
    sizes = [12_000_000] * 2 + [rng.choice([0, 1, 700, 20_000, 70_000, 400_000]) for _ in range(38)]

    async def one(size: int, seed: int) -> None:
        r = random.Random(seed)
        payload = r.randbytes(size)
        sock = socket.socket()
        if seed % 2:  # a small receive window (set before connecting): the echo backs up
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, gw.address)
        reader, writer = await asyncio.open_connection(sock=sock)

        async def send() -> None:
            writer.write(hello)
            pos = 0
            while pos < size:
                step = r.randint(1, 100_000)
                writer.write(payload[pos : pos + step])
                pos += step
                await writer.drain()
            writer.write_eof()

        async def receive() -> bytes:
            out = bytearray()
            while chunk := await reader.read(r.randint(1, 65536)):
                out += chunk
                if r.random() < 0.1:
                    await asyncio.sleep(0.001)  # a slow reader: the relay must hold back
            return bytes(out)

        _, got = await asyncio.gather(send(), receive())
        writer.close()
        assert got == hello + payload + b"<bye>"

    async with asyncio.timeout(60):
        await asyncio.gather(*(one(size, i) for i, size in enumerate(sizes)))
    await wait_for(lambda: gw.connections == 0, what="every relay closed")
    s = gw.stats
    assert (s.opened, s.active, s.closed, dict(s.rejected)) == (40, 0, 40, {})
    assert s.bytes_in == sum(len(hello) + n for n in sizes)
    assert s.bytes_out == sum(len(hello) + n + len(b"<bye>") for n in sizes)
    gw.close()
    await backend.aclose()
