"""Transports: NetTransport on 127.0.0.1:0 and the in-memory network."""

from __future__ import annotations

import asyncio
import struct

import pytest

from node.errors import LocalProtocolError, RemoteProtocolError
from node.gossip.transport import (
    ACCEPT_QUEUE_LIMIT,
    MAX_PACKET_BYTES,
    SEND_QUEUE_LIMIT,
    MemoryNetwork,
    NetTransport,
)
from tests.helpers.poll import wait_for

pytestmark = pytest.mark.timeout(30)


async def _pair() -> tuple[NetTransport, NetTransport]:
    return await NetTransport.bind("127.0.0.1", 0), await NetTransport.bind("127.0.0.1", 0)


async def test_net_binds_port_zero_and_exchanges_packets() -> None:
    a, b = await _pair()
    try:
        assert a.local_addr[1] != 0 and a.local_addr != b.local_addr
        assert a.write_to(b"hello", b.local_addr)
        async with asyncio.timeout(5):
            packet = await b.recv_packet()
        assert packet.payload == b"hello" and packet.source == a.local_addr
    finally:
        await a.close()
        await b.close()


async def test_net_refuses_oversized_packets_and_counts_them() -> None:
    a, b = await _pair()
    try:
        assert a.write_to(b"x" * MAX_PACKET_BYTES, b.local_addr)
        assert not a.write_to(b"x" * (MAX_PACKET_BYTES + 1), b.local_addr)
        assert a.stats["packets_dropped_oversize_out"] == 1
        async with asyncio.timeout(5):
            assert len((await b.recv_packet()).payload) == MAX_PACKET_BYTES
    finally:
        await a.close()
        await b.close()


async def test_net_refuses_host_names_as_packet_destinations() -> None:
    a = await NetTransport.bind("127.0.0.1", 0)
    try:
        assert not a.write_to(b"x", ("localhost", 9))
        assert not a.write_to(b"x", ("peer.example", 9))
        assert a.stats["packets_dropped_bad_address"] == 2
        assert a.write_to(b"x", ("127.0.0.1", 9))
    finally:
        await a.close()


async def test_net_priority_packets_leave_first_under_pressure() -> None:
    a, b = await _pair()
    try:
        a._udp_protocol_for_test().pause_writing()  # the socket pushes back
        for i in range(3):
            assert a.write_to(b"normal%d" % i, b.local_addr)
        assert a.write_to(b"alive", b.local_addr, priority=True)
        a._udp_protocol_for_test().resume_writing()
        got = []
        async with asyncio.timeout(5):
            for _ in range(4):
                got.append((await b.recv_packet()).payload)
        assert got == [b"alive", b"normal0", b"normal1", b"normal2"]
    finally:
        await a.close()
        await b.close()


async def test_net_send_queue_is_bounded() -> None:
    a, b = await _pair()
    try:
        a._udp_protocol_for_test().pause_writing()
        accepted = sum(a.write_to(b"n", b.local_addr) for _ in range(SEND_QUEUE_LIMIT + 10))
        assert accepted == SEND_QUEUE_LIMIT
        assert a.stats["packets_dropped_queue_full"] == 10
        # the priority class has its own room
        assert a.write_to(b"p", b.local_addr, priority=True)
    finally:
        await a.close()
        await b.close()


async def test_net_stream_frames_roundtrip() -> None:
    a, b = await _pair()
    try:
        client = await a.dial(b.local_addr, timeout=5)
        async with asyncio.timeout(5):
            server = await b.accept()
        await client.write_frame(b"request")
        assert await server.read_frame(timeout=5) == b"request"
        await server.write_frame(b"reply" * 1000)
        assert await client.read_frame(timeout=5) == b"reply" * 1000
        client.close()
        with pytest.raises(RemoteProtocolError, match="closed mid-frame"):
            await server.read_frame(timeout=5)
        server.close()
    finally:
        await a.close()
        await b.close()


async def test_net_stream_read_timeout_and_size_cap() -> None:
    a, b = await _pair()
    try:
        client = await a.dial(b.local_addr, timeout=5)
        async with asyncio.timeout(5):
            server = await b.accept()
        with pytest.raises(TimeoutError):
            await server.read_frame(timeout=0.05)
        # a header announcing more than the cap is refused before reading the body
        client._writer.write(struct.pack(">I", 10_000))
        with pytest.raises(RemoteProtocolError, match="exceeds 100"):
            await server.read_frame(timeout=5, max_bytes=100)
        client.close()
        server.close()
    finally:
        await a.close()
        await b.close()


async def test_net_accept_queue_is_bounded() -> None:
    a, b = await _pair()
    conns = []
    try:
        for _ in range(ACCEPT_QUEUE_LIMIT + 3):
            conns.append(await asyncio.open_connection(*b.local_addr))
        await wait_for(lambda: b.stats.get("streams_refused", 0) >= 3, "3 streams refused", 5)
        assert b.stats["streams_refused"] == 3
        # exactly the queue's worth is waiting to be accepted
        for _ in range(ACCEPT_QUEUE_LIMIT):
            (await b.accept()).close()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await b.accept()
    finally:
        for _, writer in conns:
            writer.close()
        await a.close()
        await b.close()


async def test_net_dial_refused_and_timeout() -> None:
    a, b = await _pair()
    port = b.local_addr
    await b.close()
    try:
        with pytest.raises(OSError):
            await a.dial(port, timeout=5)
    finally:
        await a.close()


async def test_net_close_is_idempotent_and_stops_sending() -> None:
    a = await NetTransport.bind("127.0.0.1", 0)
    await a.close()
    await a.close()
    assert not a.write_to(b"x", ("127.0.0.1", 9))


async def test_memory_packets_partition_and_dead_host() -> None:
    net = MemoryNetwork()
    a, b = net.transport(), net.transport()
    a.write_to(b"one", b.local_addr)
    async with asyncio.timeout(1):
        assert (await b.recv_packet()).payload == b"one"
    net.partition(a.local_addr, b.local_addr)
    a.write_to(b"lost", b.local_addr)
    with pytest.raises(ConnectionRefusedError):
        await a.dial(b.local_addr, timeout=1)
    net.heal(a.local_addr, b.local_addr)
    a.write_to(b"two", b.local_addr)
    async with asyncio.timeout(1):
        assert (await b.recv_packet()).payload == b"two"
    await b.close()
    with pytest.raises(ConnectionRefusedError, match="unreachable"):
        await a.dial(b.local_addr, timeout=1)
    assert not a.write_to(b"x" * (MAX_PACKET_BYTES + 1), b.local_addr)


async def test_memory_address_in_use() -> None:
    net = MemoryNetwork()
    net.transport("10.0.0.1", 8301)
    with pytest.raises(LocalProtocolError, match="already in use"):
        net.transport("10.0.0.1", 8301)


async def test_memory_streams() -> None:
    net = MemoryNetwork()
    a, b = net.transport(), net.transport()
    client = await a.dial(b.local_addr, timeout=1)
    server = await b.accept()
    assert server.remote == a.local_addr and client.remote == b.local_addr
    await client.write_frame(b"ping")
    assert await server.read_frame(timeout=1) == b"ping"
    with pytest.raises(TimeoutError):
        await client.read_frame(timeout=0.01)
    await server.write_frame(b"x" * 50)
    with pytest.raises(RemoteProtocolError, match="exceeds 10"):
        await client.read_frame(timeout=1, max_bytes=10)
    server.close()
    with pytest.raises(RemoteProtocolError, match="closed"):
        await client.read_frame(timeout=1)
    with pytest.raises(ConnectionResetError):
        await server.write_frame(b"after close")
