"""Node-to-node RPC client: pooled, multiplexed connections.

Rule: every call has a deadline the caller chooses (connect + request + reply), so a
dead or partitioned peer costs at most that long. A call that got no answer raises
``RPCUnreachable``; an answer that is an error raises the remote error's own class.
Calls to one address share a few long-lived connections (at most
``max_connections_per_addr``; a new one only when every open one already carries
``calls_per_connection`` calls), each carrying many calls at once matched by request id,
so a blocking query never holds up a short call and the TCP/accept cost is paid once,
not per call. A caller that gives up (timeout or cancellation) sends a cancel frame for
its id, which stops the remote handler; the connection stays. A connection that fails
(closed, unreadable or unexpected reply) fails every call on it and is discarded; one
with no call for ``idle_timeout`` is closed (checked once per period, so within twice
that; the server's check uses 60 s periods, so it practically never closes a connection
a request is about to use).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections import deque
from collections.abc import Iterable
from typing import Any

from node.errors import DatacenterUnavailable, RemoteProtocolError
from node.gossip.keyring import Keyring
from node.gossip.state import Member
from node.gossip.transport import Address
from node.rpc.codec import (
    MAX_RPC_BYTES,
    Reply,
    Request,
    RPCUnreachable,
    decode_reply,
    encode_cancel,
    encode_request,
    open_sealed,
    seal,
)
from node.rpc.routing import TAG_DC, servers
from node.rpc.server import KeyringProvider
from node.wire import FRAME_HEADER, frame, parse_frame_header

__all__ = ["RPCClient", "call_datacenter"]

#: Open connections per address at most (more calls then share the least loaded one).
MAX_CONNECTIONS_PER_ADDR = 4
#: Calls one connection carries before another is opened (the server allows 256).
CALLS_PER_CONNECTION = 32
#: An unused connection is closed after 1-2 such periods (the server: 60-120 s).
IDLE_TIMEOUT = 20.0
#: Ids of given-up calls remembered per connection, so their late replies are dropped.
_CANCELLED_MEMORY = 1024


class RPCClient:
    """Calls methods on other nodes' ``RPCServer``."""

    def __init__(
        self,
        keyring_provider: KeyringProvider = lambda: None,
        *,
        verify_outgoing: bool = True,
        max_connections_per_addr: int = MAX_CONNECTIONS_PER_ADDR,
        calls_per_connection: int = CALLS_PER_CONNECTION,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self._keyring = keyring_provider
        self._verify_outgoing = verify_outgoing
        self._ids = itertools.count(1)
        self._max_conns = max_connections_per_addr
        self._per_conn = calls_per_connection
        self._idle_timeout = idle_timeout
        self._pools: dict[Address, list[_Connection]] = {}
        self._dialing: dict[Address, asyncio.Task[_Connection]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def open_connections(self) -> int:
        """Connections currently open (all addresses)."""
        return sum(1 for pool in self._pools.values() for c in pool if not c.closed)

    async def call(self, addr: Address, method: str, args: Any = None, *, timeout: float) -> Any:
        """Call ``method(args)`` on ``addr`` and return its result.

        Raises the remote error's class (``NotFound``, ``InvalidRequest``, ...),
        ``RPCUnreachable`` when no answer came within ``timeout`` seconds, and
        ``RemoteProtocolError`` when the answer could not be read.
        """
        request = Request(id=next(self._ids), method=method, args=args)
        keyring = self._keyring() if self._verify_outgoing else None
        payload = frame(seal(encode_request(request), keyring))
        where = f"{addr[0]}:{addr[1]}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            conn = self._pooled(addr, loop)
            if conn is None:
                async with asyncio.timeout_at(deadline):
                    conn = await self._connection(addr)
            reply = await conn.exchange(request.id, payload, keyring, deadline)
        except TimeoutError:
            raise RPCUnreachable(f"rpc {method} to {where} timed out after {timeout:g}s") from None
        except (OSError, asyncio.IncompleteReadError) as exc:
            raise RPCUnreachable(f"rpc {method} to {where} failed: {_describe(exc)}") from exc
        except RemoteProtocolError as exc:
            raise RemoteProtocolError(f"rpc {method} to {where}: {exc}") from None
        if reply.error is not None:
            raise reply.error
        return reply.result

    async def close(self) -> None:
        """Close every pooled connection (calls still on them fail as unreachable)."""
        for task in self._dialing.values():
            task.cancel()
        conns = [c for pool in self._pools.values() for c in pool]
        self._pools.clear()
        self._dialing.clear()
        for conn in conns:
            conn.close(ConnectionAbortedError("RPC client closed"))
        for conn in conns:
            await conn.wait_closed()

    def _pooled(self, addr: Address, loop: asyncio.AbstractEventLoop) -> _Connection | None:
        """An open connection to ``addr`` to use now, or None when one should be dialled."""
        if self._loop is not loop:  # connections cannot move between event loops
            self._loop, self._pools, self._dialing = loop, {}, {}
        pool = self._pools.setdefault(addr, [])
        if any(c.closed for c in pool):
            pool[:] = [c for c in pool if not c.closed]
        best = min(pool, key=_load, default=None)
        if best is not None and (_load(best) < self._per_conn or len(pool) >= self._max_conns):
            return best
        return None

    async def _connection(self, addr: Address) -> _Connection:
        loop = asyncio.get_running_loop()
        while True:
            best = self._pooled(addr, loop)
            if best is not None:
                return best
            dial = self._dialing.get(addr)
            if dial is None:
                dial = self._dialing[addr] = asyncio.ensure_future(self._dial(addr))
            # Shielded: one caller giving up must not abort the dial others wait for.
            conn = await asyncio.shield(dial)
            if not conn.closed and _load(conn) < self._per_conn:
                return conn

    async def _dial(self, addr: Address) -> _Connection:
        try:
            reader, writer = await asyncio.open_connection(addr[0], addr[1])
            # Replies come back sealed exactly when requests went out sealed.
            keyring = self._keyring if self._verify_outgoing else _no_keyring
            conn = _Connection(reader, writer, keyring, self._idle_timeout)
            self._pools.setdefault(addr, []).append(conn)
            return conn
        finally:
            del self._dialing[addr]


def _expire(reply: asyncio.Future[Reply]) -> None:
    if not reply.done():
        reply.set_exception(TimeoutError())


def _answered(reply: asyncio.Future[Reply]) -> bool:
    return reply.done() and not reply.cancelled() and reply.exception() is None


def _no_keyring() -> None:
    return None


def _load(conn: _Connection) -> int:
    return len(conn.pending)


class _Connection:
    """One TCP connection: writes sealed request frames, a reader task routes the replies."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        keyring: KeyringProvider,
        idle_timeout: float,
    ) -> None:
        self.pending: dict[int, asyncio.Future[Reply]] = {}
        self.closed = False
        self._writer = writer
        self._keyring = keyring
        self._idle_timeout = idle_timeout
        self._given_up: deque[int] = deque(maxlen=_CANCELLED_MEMORY)
        self._activity = 0  # calls started; the idle check compares it between rounds
        self._seen: int | None = None  # activity at the last check, if idle then
        self._idle: asyncio.TimerHandle | None = None
        self._reader = asyncio.ensure_future(self._read_loop(reader))
        self._arm_idle()

    async def exchange(
        self, rid: int, payload: bytes, keyring: Keyring | None, deadline: float
    ) -> Reply:
        """Send one request frame and wait for its reply until ``deadline`` (loop time;
        ``TimeoutError`` then), sending a cancel frame if we give up."""
        if self.closed:
            raise ConnectionResetError("connection closed")
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Reply] = loop.create_future()
        self.pending[rid] = reply
        self._activity += 1
        # A timer on the future, not asyncio.timeout: half the bookkeeping per call.
        timer = loop.call_at(deadline, _expire, reply)
        try:
            self._writer.write(payload)
            if self._writer.transport.get_write_buffer_size():  # the peer lags: wait, bounded
                async with asyncio.timeout_at(deadline):
                    await self._writer.drain()
            return await reply
        finally:
            timer.cancel()
            # A caller giving up cancels the future (or the timer fails it): tell the server.
            if self.pending.pop(rid, None) is not None and not _answered(reply):
                self._give_up(rid, keyring)

    def _give_up(self, rid: int, keyring: Keyring | None) -> None:
        self._given_up.append(rid)
        if not self.closed:
            self._writer.write(frame(seal(encode_cancel(rid), keyring)))

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                length = parse_frame_header(
                    await reader.readexactly(FRAME_HEADER), max_bytes=MAX_RPC_BYTES
                )
                self._deliver(await reader.readexactly(length))
        except asyncio.CancelledError:
            self.close(ConnectionAbortedError("RPC client closed"))
        except Exception as exc:  # task boundary: every error ends this connection
            self.close(exc)

    def _deliver(self, data: bytes) -> None:
        body, _ = open_sealed(data, self._keyring(), accept_plaintext=False)
        reply = decode_reply(body)
        waiter = self.pending.get(reply.id)
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(reply)
        elif reply.id not in self._given_up:  # a late answer to a cancelled call is normal
            raise RemoteProtocolError(f"reply id {reply.id} matches no call in flight")

    def close(self, exc: BaseException) -> None:
        """Fail every call in flight with ``exc`` and close the socket."""
        if self.closed:
            return
        self.closed = True
        self._disarm_idle()
        self._writer.close()
        for waiter in self.pending.values():
            if not waiter.done():
                waiter.set_exception(exc)
        if self._reader is not asyncio.current_task():
            self._reader.cancel()

    async def wait_closed(self) -> None:
        """Wait until the reader task has ended."""
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    def _arm_idle(self) -> None:
        # One timer per idle period, not one per call: "no call started and none in
        # flight at two checks in a row" means idle for a whole period.
        self._disarm_idle()
        loop = asyncio.get_running_loop()
        self._idle = loop.call_later(self._idle_timeout, self._idle_check)

    def _disarm_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _idle_check(self) -> None:
        idle = not self.pending
        if idle and self._seen == self._activity:
            self.close(ConnectionResetError("idle connection closed"))
            return
        self._seen = self._activity if idle else None
        self._arm_idle()


async def call_datacenter(
    client: RPCClient,
    members: Iterable[Member],
    dc: str,
    method: str,
    args: Any = None,
    *,
    timeout: float,
    rng: random.Random,
    max_servers: int = 3,
) -> Any:
    """Call ``method`` on a live server of ``dc``, trying up to ``max_servers`` of them.

    Only servers that did not answer are skipped (an error *answer* is raised as is).
    Raises ``DatacenterUnavailable`` when ``dc`` is unknown, has no live server, or none
    answered within ``timeout`` seconds in total — never hangs past it.
    """
    members = list(members)
    if not any(m.tags.get(TAG_DC) == dc for m in members):
        raise DatacenterUnavailable(f"no path to datacenter {dc!r}: no member of it is known")
    candidates = servers(members, dc)
    rng.shuffle(candidates)
    if not candidates:
        raise DatacenterUnavailable(f"no live server in datacenter {dc!r}")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    failures: list[str] = []
    for addr in candidates[:max_servers]:
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        try:
            return await client.call(addr, method, args, timeout=remaining)
        except RPCUnreachable as exc:
            failures.append(str(exc))
    raise DatacenterUnavailable(
        f"no server of datacenter {dc!r} answered within {timeout:g}s: " + "; ".join(failures)
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.IncompleteReadError):
        return "connection closed before a reply (wrong key or server error?)"
    return f"{type(exc).__name__}: {exc}"
