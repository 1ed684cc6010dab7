"""RPC connection reuse and multiplexing on 127.0.0.1: pooling, per-call cancel, bounds."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest

from node.errors import RemoteProtocolError, RPCError
from node.gossip.keyring import Keyring
from node.rpc.client import RPCClient
from node.rpc.codec import (
    Cancel,
    Request,
    RPCUnreachable,
    decode_call_frame,
    encode_cancel,
    encode_request,
)
from node.rpc.server import Handler, RPCServer
from node.wire import frame, pack
from tests.helpers.poll import wait_for

pytestmark = pytest.mark.timeout(30)

KEY = bytes(range(32))


class Gate:
    """Handlers that block until released, recording starts and cancellations."""

    def __init__(self) -> None:
        self.started: list[Any] = []
        self.cancelled: list[Any] = []
        self.release = asyncio.Event()

    async def block(self, args: Any) -> Any:
        self.started.append(args)
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.append(args)
            raise
        return {"done": args}


async def echo(args: Any) -> Any:
    return {"echo": args}


async def start(handlers: dict[str, Handler], **kw: Any) -> RPCServer:
    keyring = kw.pop("keyring", None)
    srv = RPCServer(handlers, lambda: keyring, **kw)
    await srv.start("127.0.0.1", 0)
    return srv


async def test_sequential_calls_reuse_one_connection() -> None:
    srv = await start({"Echo": echo}, keyring=Keyring(KEY))
    client = RPCClient(lambda: Keyring(KEY))
    try:
        for i in range(20):
            assert await client.call(srv.addr, "Echo", i, timeout=5) == {"echo": i}
        assert srv.stats["connections"] == 1 and srv.stats["calls"] == 20
        assert client.open_connections == 1
    finally:
        await client.close()
        await srv.close()
    assert client.open_connections == 0


async def test_short_call_is_not_held_up_by_a_blocking_one() -> None:
    gate = Gate()
    srv = await start({"Block": gate.block, "Echo": echo})
    client = RPCClient()
    try:
        blocking = asyncio.ensure_future(client.call(srv.addr, "Block", 1, timeout=600))
        await wait_for(lambda: gate.started, "the blocking call to start")
        assert await client.call(srv.addr, "Echo", 2, timeout=5) == {"echo": 2}
        assert srv.stats["connections"] == 1  # both on one connection
        gate.release.set()
        assert await blocking == {"done": 1}
    finally:
        await client.close()
        await srv.close()


@pytest.mark.parametrize("sealed", [False, True])
async def test_timeout_cancels_only_that_call(sealed: bool) -> None:
    gate = Gate()
    keyring = Keyring(KEY) if sealed else None
    srv = await start({"Block": gate.block, "Echo": echo}, keyring=keyring)
    client = RPCClient(lambda: keyring)
    try:
        survivor = asyncio.ensure_future(client.call(srv.addr, "Block", "long", timeout=600))
        await wait_for(lambda: gate.started, "the first call to start")
        with pytest.raises(RPCUnreachable, match="timed out after 0.2s"):
            await client.call(srv.addr, "Block", "short", timeout=0.2)
        await wait_for(lambda: srv.stats.get("cancelled_by_caller") == 1, "the cancel frame")
        assert gate.cancelled == ["short"] and not survivor.done()
        gate.release.set()
        assert await survivor == {"done": "long"}
        assert srv.stats["connections"] == 1
        assert srv.stats.get("dropped_RemoteProtocolError", 0) == 0
    finally:
        await client.close()
        await srv.close()


async def test_cancelling_the_caller_task_cancels_the_remote_handler() -> None:
    gate = Gate()
    srv = await start({"Block": gate.block, "Echo": echo})
    client = RPCClient()
    try:
        call = asyncio.ensure_future(client.call(srv.addr, "Block", 1, timeout=600))
        await wait_for(lambda: gate.started, "the call to start")
        call.cancel()
        await wait_for(lambda: gate.cancelled == [1], "the remote handler to be cancelled")
        assert srv.stats["cancelled_by_caller"] == 1
        assert await client.call(srv.addr, "Echo", 2, timeout=5) == {"echo": 2}
        assert srv.stats["connections"] == 1
    finally:
        await client.close()
        await srv.close()


async def test_closing_the_client_hangs_up_and_cancels_every_call() -> None:
    gate = Gate()
    srv = await start({"Block": gate.block})
    client = RPCClient()
    try:
        calls = [
            asyncio.ensure_future(client.call(srv.addr, "Block", i, timeout=600)) for i in range(3)
        ]
        await wait_for(lambda: len(gate.started) == 3, "three calls to start")
        await client.close()
        for call in calls:
            with pytest.raises(RPCUnreachable, match="RPC client closed"):
                await call
        await wait_for(lambda: sorted(gate.cancelled) == [0, 1, 2], "remote handlers cancelled")
        await wait_for(lambda: srv.stats.get("cancelled_by_caller") == 3, "counted")
    finally:
        await srv.close()


async def test_late_reply_to_a_given_up_call_is_dropped() -> None:
    frames: asyncio.Queue[Any] = asyncio.Queue()
    connections = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Answers the given-up call after its cancel frame came in, as a racing reply would.
        connections.append(writer)
        while True:
            length = struct.unpack(">I", await reader.readexactly(4))[0]
            msg = decode_call_frame(await reader.readexactly(length))
            await frames.put(msg)
            if isinstance(msg, Cancel):
                writer.write(frame(pack({"id": msg.id, "result": "late"})))
            elif msg.method == "Echo":
                writer.write(frame(pack({"id": msg.id, "result": msg.args})))

    fake = await asyncio.start_server(serve, "127.0.0.1", 0)
    addr = fake.sockets[0].getsockname()[:2]
    client = RPCClient()
    try:
        with pytest.raises(RPCUnreachable, match="timed out"):
            await client.call(addr, "Hang", None, timeout=0.2)
        assert await client.call(addr, "Echo", 1, timeout=5) == 1
        kinds = [type(await frames.get()).__name__ for _ in range(3)]
        assert kinds == ["Request", "Cancel", "Request"]
        assert client.open_connections == 1 and len(connections) == 1
    finally:
        await client.close()
        fake.close()


async def test_server_sends_nothing_for_a_cancelled_call() -> None:
    gate = Gate()
    srv = await start({"Block": gate.block})
    try:
        reader, writer = await asyncio.open_connection(*srv.addr)
        writer.write(frame(encode_request(Request(id=1, method="Block", args=1))))
        await wait_for(lambda: gate.started, "the call to start")
        writer.write(frame(encode_cancel(1)))
        await wait_for(lambda: gate.cancelled, "the handler to be cancelled")
        gate.release.set()
        writer.write_eof()
        async with asyncio.timeout(5):
            assert await reader.read() == b""
        writer.close()
        assert srv.stats["cancelled_by_caller"] == 1
    finally:
        await srv.close()


async def test_pool_opens_more_connections_only_when_busy_and_is_bounded() -> None:
    gate = Gate()
    srv = await start({"Block": gate.block})
    client = RPCClient(calls_per_connection=2, max_connections_per_addr=3)
    try:
        calls = [
            asyncio.ensure_future(client.call(srv.addr, "Block", i, timeout=600)) for i in range(10)
        ]
        await wait_for(lambda: len(gate.started) == 10, "ten calls to start")
        assert client.open_connections == 3 and srv.stats["connections"] == 3
        gate.release.set()
        assert [await c for c in calls] == [{"done": i} for i in range(10)]
    finally:
        await client.close()
        await srv.close()


async def test_server_answers_busy_past_its_per_connection_bound() -> None:
    gate = Gate()
    srv = await start({"Block": gate.block}, max_calls_per_connection=2)
    client = RPCClient(calls_per_connection=10)
    try:
        calls = [
            asyncio.ensure_future(client.call(srv.addr, "Block", i, timeout=600)) for i in range(2)
        ]
        await wait_for(lambda: len(gate.started) == 2, "two calls to start")
        with pytest.raises(RPCError, match="more than 2 calls in flight on one connection"):
            await client.call(srv.addr, "Block", 3, timeout=5)
        assert srv.stats["rejected_busy"] == 1
        gate.release.set()
        assert [await c for c in calls] == [{"done": 0}, {"done": 1}]
    finally:
        await client.close()
        await srv.close()


async def test_failed_connection_is_discarded_and_the_next_call_dials_again() -> None:
    srv = await start({"Echo": echo})
    client = RPCClient()
    addr = srv.addr
    try:
        assert await client.call(addr, "Echo", 1, timeout=5) == {"echo": 1}
        await srv.close()
        await wait_for(lambda: client.open_connections == 0, "the closed connection to go")
        with pytest.raises(RPCUnreachable, match="failed"):
            await client.call(addr, "Echo", 2, timeout=5)
        srv = RPCServer({"Echo": echo})
        await srv.start(*addr)  # same port, new server
        assert await client.call(addr, "Echo", 3, timeout=5) == {"echo": 3}
    finally:
        await client.close()
        await srv.close()


async def test_idle_client_connection_is_closed() -> None:
    srv = await start({"Echo": echo})
    client = RPCClient(idle_timeout=0.1)
    try:
        assert await client.call(srv.addr, "Echo", 1, timeout=5) == {"echo": 1}
        assert client.open_connections == 1
        await wait_for(lambda: client.open_connections == 0, "the idle close")
        assert await client.call(srv.addr, "Echo", 2, timeout=5) == {"echo": 2}
        assert srv.stats["connections"] == 2
    finally:
        await client.close()
        await srv.close()


async def test_unexpected_reply_fails_the_calls_and_drops_the_connection() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(struct.unpack(">I", await reader.readexactly(4))[0])
        writer.write(frame(pack({"id": 999, "result": 1})))
        await writer.drain()
        await reader.read()  # hold the connection open: the client must drop it

    fake = await asyncio.start_server(serve, "127.0.0.1", 0)
    client = RPCClient()
    try:
        with pytest.raises(RemoteProtocolError, match="reply id 999 matches no call in flight"):
            await client.call(fake.sockets[0].getsockname()[:2], "Echo", 1, timeout=5)
        assert client.open_connections == 0
    finally:
        await client.close()
        fake.close()


async def _raw_frames(addr: tuple[str, int], *bodies: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(*addr)
    for body in bodies:
        writer.write(frame(body))
    await writer.drain()
    try:
        async with asyncio.timeout(5):
            return await reader.read()
    finally:
        writer.close()


@pytest.mark.parametrize(
    "bodies",
    [
        (pack({"id": 1, "cancel": 1}),),  # cancel must be exactly true
        (pack({"id": 1, "cancel": True, "method": "Block"}),),  # not both
        (encode_request(Request(id=7, method="Block", args=0)),) * 2,  # id already in flight
    ],
)
async def test_malformed_multiplexing_frames_drop_the_connection(bodies: tuple[bytes]) -> None:
    gate = Gate()
    srv = await start({"Block": gate.block})
    try:
        assert await _raw_frames(srv.addr, *bodies) == b""
        await wait_for(lambda: srv.stats.get("dropped_RemoteProtocolError") == 1, "counted")
        await wait_for(lambda: len(gate.cancelled) == len(gate.started), "in-flight call cancelled")
    finally:
        await srv.close()


async def test_frame_stuck_halfway_is_dropped_even_with_a_call_in_flight() -> None:
    gate = Gate()
    srv = await start({"Block": gate.block}, idle_timeout=0.1)
    try:
        reader, writer = await asyncio.open_connection(*srv.addr)
        writer.write(frame(encode_request(Request(id=1, method="Block", args=1))))
        await wait_for(lambda: gate.started, "the call to start")
        writer.write(struct.pack(">I", 100) + b"half")  # and then nothing
        async with asyncio.timeout(5):
            assert await reader.read() == b""
        writer.close()
        assert srv.stats["dropped_TimeoutError"] == 1 and gate.cancelled == [1]
    finally:
        await srv.close()


async def test_connection_outlives_idle_timeout_while_a_call_runs_then_closes() -> None:
    gate = Gate()
    srv = await start({"Block": gate.block}, idle_timeout=0.1)
    client = RPCClient()
    try:
        call = asyncio.ensure_future(client.call(srv.addr, "Block", 1, timeout=600))
        await wait_for(lambda: gate.started, "the call to start")
        await asyncio.sleep(0.5)  # five idle periods with a call in flight
        assert client.open_connections == 1
        gate.release.set()
        assert await call == {"done": 1}
        await wait_for(lambda: client.open_connections == 0, "the server's idle close")
        assert srv.stats["dropped_TimeoutError"] == 1
    finally:
        await client.close()
        await srv.close()


async def test_cancel_for_an_unknown_id_is_ignored() -> None:
    srv = await start({"Echo": echo})
    try:
        reply = await _raw_frames_then_eof(
            srv.addr, encode_cancel(42), encode_request(Request(id=1, method="Echo", args=5))
        )
        assert b"echo" in reply
        assert srv.stats.get("cancelled_by_caller", 0) == 0
    finally:
        await srv.close()


async def _raw_frames_then_eof(addr: tuple[str, int], *bodies: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(*addr)
    for body in bodies:
        writer.write(frame(body))
    await writer.drain()
    try:
        async with asyncio.timeout(5):
            length = struct.unpack(">I", await reader.readexactly(4))[0]
            return await reader.readexactly(length)
    finally:
        writer.close()


def test_cancel_frame_round_trips_and_requests_still_decode() -> None:
    assert decode_call_frame(encode_cancel(9)) == Cancel(id=9)
    request = Request(id=3, method="Echo", args=[1])
    assert decode_call_frame(encode_request(request)) == request
    with pytest.raises(RemoteProtocolError, match="'id' must be an integer"):
        decode_call_frame(pack({"id": "x", "cancel": True}))


async def test_deadline_holds_when_the_peer_stops_reading() -> None:
    async def deaf(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.Event().wait()  # accepts, never reads: our send buffer fills up

    fake = await asyncio.start_server(deaf, "127.0.0.1", 0)
    client = RPCClient()
    loop = asyncio.get_running_loop()
    try:
        began = loop.time()
        with pytest.raises(RPCUnreachable, match="timed out after 0.3s"):
            await client.call(
                fake.sockets[0].getsockname()[:2], "Echo", b"x" * (8 << 20), timeout=0.3
            )
        assert loop.time() - began < 2
    finally:
        await client.close()
        fake.close()
