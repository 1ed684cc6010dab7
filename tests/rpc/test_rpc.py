"""Node RPC over real sockets on 127.0.0.1: round-trips, errors, sealing, timeouts (pooling
and multiplexing: test_pool.py)."""

from __future__ import annotations

import asyncio
import random
import struct
from collections.abc import AsyncIterator, Mapping
from types import MappingProxyType
from typing import Any

import pytest

from node.errors import (
    ConfigError,
    DatacenterUnavailable,
    InvalidRequest,
    NotFound,
    RemoteProtocolError,
    RPCError,
)
from node.gossip.keyring import Keyring
from node.gossip.messages import MemberStatus
from node.gossip.state import Member
from node.rpc.client import RPCClient, call_datacenter
from node.rpc.codec import RPCUnreachable
from node.rpc.server import Handler, RPCServer
from tests.helpers.poll import wait_for

pytestmark = pytest.mark.timeout(30)

K1, K2 = bytes(range(32)), bytes(range(32, 64))


async def echo(args: Any) -> Any:
    return {"echo": args}


async def not_found(args: Any) -> Any:
    raise NotFound(f"service {args!r} not found")


async def invalid(args: Any) -> Any:
    raise InvalidRequest("bad port", field="port")


async def no_dc(args: Any) -> Any:
    raise DatacenterUnavailable("no live server in dc9")


async def config_error(args: Any) -> Any:
    raise ConfigError("bad", file="a.hcl", key="ports.http")


async def bug(args: Any) -> Any:
    raise ZeroDivisionError("oops")


async def unencodable(args: Any) -> Any:
    return object()


HANDLERS: dict[str, Handler] = {
    "Echo": echo,
    "NotFound": not_found,
    "Invalid": invalid,
    "NoDC": no_dc,
    "Config": config_error,
    "Bug": bug,
    "Unencodable": unencodable,
}


async def start(
    handlers: Mapping[str, Handler] = HANDLERS, keyring: Keyring | None = None, **kw: Any
) -> RPCServer:
    server = RPCServer(handlers, lambda: keyring, **kw)
    await server.start("127.0.0.1", 0)
    return server


@pytest.fixture
async def server() -> AsyncIterator[RPCServer]:
    srv = await start()
    yield srv
    await srv.close()


async def test_roundtrip(server: RPCServer) -> None:
    client = RPCClient()
    assert server.addr[1] != 0
    result = await client.call(server.addr, "Echo", {"a": [1, b"x", None]}, timeout=5)
    assert result == {"echo": {"a": [1, b"x", None]}}
    assert server.stats["calls"] == 1


@pytest.mark.parametrize(
    ("method", "cls", "text"),
    [
        ("NotFound", NotFound, "service 'web' not found"),
        ("Invalid", InvalidRequest, "bad port"),
        ("NoDC", DatacenterUnavailable, "no live server in dc9"),
        ("Config", ConfigError, "a.hcl: ports.http: bad"),
        ("Bug", RPCError, "internal error: ZeroDivisionError: oops"),
        ("Unencodable", RPCError, "result of Unencodable cannot be encoded"),
        ("Nope", InvalidRequest, "unknown RPC method 'Nope'"),
    ],
)
async def test_errors_round_trip_by_class(
    server: RPCServer, method: str, cls: type, text: str
) -> None:
    with pytest.raises(cls, match=text) as info:
        await RPCClient().call(server.addr, method, "web", timeout=5)
    assert type(info.value) is cls
    if method == "Invalid":
        assert info.value.field == "port"
    # the server keeps serving after every kind of error
    assert await RPCClient().call(server.addr, "Echo", 1, timeout=5) == {"echo": 1}


async def test_sequential_calls_on_one_connection(server: RPCServer) -> None:
    from node.rpc.codec import Request, decode_reply, encode_request
    from node.wire import frame

    reader, writer = await asyncio.open_connection(*server.addr)
    try:
        for i in range(3):
            writer.write(frame(encode_request(Request(id=i, method="Echo", args=i))))
            await writer.drain()
            async with asyncio.timeout(5):
                length = struct.unpack(">I", await reader.readexactly(4))[0]
                reply = decode_reply(await reader.readexactly(length))
            assert reply.id == i and reply.result == {"echo": i}
    finally:
        writer.close()
    assert server.stats.get("internal_errors", 0) == 0


async def test_unreachable_server() -> None:
    srv = await start()
    addr = srv.addr
    await srv.close()
    with pytest.raises(RPCUnreachable, match=f"rpc Echo to 127.0.0.1:{addr[1]} failed"):
        await RPCClient().call(addr, "Echo", 1, timeout=5)


async def test_timeout_cancels_the_remote_handler() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def forever(args: Any) -> Any:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    srv = await start({"Forever": forever})
    try:
        with pytest.raises(RPCUnreachable, match="timed out after 0.2s"):
            await RPCClient().call(srv.addr, "Forever", None, timeout=0.2)
        assert started.is_set()
        async with asyncio.timeout(5):
            await cancelled.wait()
        await wait_for(lambda: srv.stats.get("cancelled_by_caller") == 1, "the cancel counted", 5)
    finally:
        await srv.close()


async def test_long_running_call_completes_within_caller_timeout() -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def blocking_query(args: Any) -> Any:
        started.set()
        await release.wait()
        return {"index": args["index"] + 1}

    srv = await start({"Block": blocking_query}, idle_timeout=0.1)
    try:
        call = asyncio.ensure_future(RPCClient().call(srv.addr, "Block", {"index": 7}, timeout=600))
        async with asyncio.timeout(5):
            await started.wait()
        # well past the server's idle timeout: an in-flight call is not idle
        await asyncio.sleep(0.3)
        release.set()
        async with asyncio.timeout(5):
            assert await call == {"index": 8}
    finally:
        await srv.close()


async def test_sealed_roundtrip_and_wrong_key_refused() -> None:
    srv = await start(keyring=Keyring(K1))
    try:
        assert await RPCClient(lambda: Keyring(K1)).call(srv.addr, "Echo", 5, timeout=5) == {
            "echo": 5
        }
        with pytest.raises(RPCUnreachable, match="connection closed before a reply"):
            await RPCClient(lambda: Keyring(K2)).call(srv.addr, "Echo", 5, timeout=5)
        with pytest.raises(RPCUnreachable):
            await RPCClient().call(srv.addr, "Echo", 5, timeout=5)  # plaintext refused
        assert srv.stats["dropped_RemoteProtocolError"] == 2
        assert srv.stats["calls"] == 1
    finally:
        await srv.close()


async def test_verify_incoming_false_accepts_plaintext_and_replies_in_kind() -> None:
    srv = await start(keyring=Keyring(K1), verify_incoming=False)
    try:
        assert await RPCClient().call(srv.addr, "Echo", 1, timeout=5) == {"echo": 1}
        assert await RPCClient(lambda: Keyring(K1)).call(srv.addr, "Echo", 2, timeout=5) == {
            "echo": 2
        }
        # verify_outgoing=False sends plaintext even with a keyring
        client = RPCClient(lambda: Keyring(K2), verify_outgoing=False)
        assert await client.call(srv.addr, "Echo", 3, timeout=5) == {"echo": 3}
    finally:
        await srv.close()


async def test_sealed_client_refuses_plaintext_reply() -> None:
    plain = await start()  # no keyring: answers in plaintext
    try:
        # A sealed request is garbage to a plaintext server: it drops the connection.
        with pytest.raises(RPCUnreachable):
            await RPCClient(lambda: Keyring(K1)).call(plain.addr, "Echo", 1, timeout=5)
    finally:
        await plain.close()


async def _raw(addr: tuple[str, int], data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(*addr)
    writer.write(data)
    await writer.drain()
    writer.write_eof()
    try:
        async with asyncio.timeout(5):
            return await reader.read()
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("data", "counter"),
    [
        (struct.pack(">I", 1 << 30), "dropped_RemoteProtocolError"),  # oversized frame
        (struct.pack(">I", 3) + b"\xc1\xc1\xc1", "dropped_RemoteProtocolError"),  # not msgpack
        (struct.pack(">I", 1) + b"\x01", "dropped_RemoteProtocolError"),  # not a map
        (struct.pack(">I", 100) + b"short", "dropped_IncompleteReadError"),  # truncated
    ],
)
async def test_garbage_closes_connection_and_is_counted(
    server: RPCServer, data: bytes, counter: str
) -> None:
    assert await _raw(server.addr, data) == b""
    await wait_for(lambda: server.stats.get(counter) == 1, f"{counter} counted", 5)
    assert await RPCClient().call(server.addr, "Echo", 1, timeout=5) == {"echo": 1}


async def test_idle_connection_closed() -> None:
    srv = await start(idle_timeout=0.1)
    try:
        reader, writer = await asyncio.open_connection(*srv.addr)
        async with asyncio.timeout(5):
            assert await reader.read() == b""
        writer.close()
        assert srv.stats["dropped_TimeoutError"] == 1
    finally:
        await srv.close()


async def test_reply_id_mismatch_is_a_protocol_error() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(struct.unpack(">I", await reader.readexactly(4))[0])
        from node.wire import frame, pack

        writer.write(frame(pack({"id": 999, "result": 1})))
        await writer.drain()
        writer.close()

    fake = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        with pytest.raises(RemoteProtocolError, match="reply id 999"):
            await RPCClient().call(fake.sockets[0].getsockname()[:2], "Echo", 1, timeout=5)
    finally:
        fake.close()


async def test_too_many_connections_are_refused() -> None:
    srv = await start(max_connections=1)
    try:
        reader, writer = await asyncio.open_connection(*srv.addr)
        await wait_for(lambda: srv._connections, "the connection accepted", 5)
        with pytest.raises(RPCUnreachable):
            await RPCClient().call(srv.addr, "Echo", 1, timeout=5)
        assert srv.stats["dropped_too_many_connections"] == 1
        writer.close()
    finally:
        await srv.close()


def _server_member(name: str, dc: str, port: int, status: str = "alive") -> Member:
    return Member(
        name=name,
        addr=("127.0.0.1", 8302),
        tags=MappingProxyType({"dc": dc, "role": "server", "port": str(port)}),
        incarnation=1,
        status=MemberStatus(status),
        status_since=0.0,
    )


async def test_call_datacenter_skips_dead_servers_and_bounds_the_wait() -> None:
    hung = asyncio.Event()

    async def hang(args: Any) -> Any:
        hung.set()
        await asyncio.Event().wait()

    live = await start()
    slow = await start({"Echo": hang, "NotFound": hang})
    gone = await start()
    gone_port = gone.addr[1]
    await gone.close()
    members = [
        _server_member("a.dc2", "dc2", gone_port),
        _server_member("b.dc2", "dc2", live.addr[1]),
        _server_member("c.dc3", "dc3", slow.addr[1]),
        _server_member("d.dc4", "dc4", live.addr[1], status="dead"),
    ]
    client = RPCClient()
    try:
        for seed in range(4):  # whatever the order, the dead one is skipped
            result = await call_datacenter(
                client, members, "dc2", "Echo", seed, timeout=5, rng=random.Random(seed)
            )
            assert result == {"echo": seed}
        with pytest.raises(NotFound, match="service 'x' not found"):
            await call_datacenter(
                client, members, "dc2", "NotFound", "x", timeout=5, rng=random.Random(0)
            )
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(
            DatacenterUnavailable, match="no server of datacenter 'dc3' answered within 0.3s"
        ):
            await call_datacenter(
                client, members, "dc3", "Echo", 1, timeout=0.3, rng=random.Random(0)
            )
        assert loop.time() - began < 2 and hung.is_set()
        with pytest.raises(DatacenterUnavailable, match="no live server in datacenter 'dc4'"):
            await call_datacenter(
                client, members, "dc4", "Echo", 1, timeout=1, rng=random.Random(0)
            )
        with pytest.raises(DatacenterUnavailable, match="no path to datacenter 'dc9'"):
            await call_datacenter(
                client, members, "dc9", "Echo", 1, timeout=1, rng=random.Random(0)
            )
    finally:
        await live.close()
        await slow.close()
