"""Node-to-node RPC server: one TCP connection carries many framed calls at once.

Rule: every request on a connection runs as its own task (at most
``max_calls_per_connection`` at once; beyond that the request is answered with an
``RPCError`` at once) and its reply goes back, tagged with the request's id, as soon as it
is ready, so a blocking query (up to 10 minutes) never holds up a short call. A handler
is cancelled when its caller sends a cancel frame for its id, or hangs up the connection
(then every call of that connection is). Malformed, oversized or undecryptable frames
close that connection and are counted; nothing a peer sends stops the server. A
connection with no frame and no call in flight (or stuck inside a frame) for
``idle_timeout`` is closed (checked once per ``idle_timeout``, so within twice that);
at most ``max_connections`` are served at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from node.errors import InvalidRequest, LocalProtocolError, NodeError, RemoteProtocolError, RPCError
from node.gossip.keyring import Keyring
from node.gossip.transport import Address
from node.rpc.codec import (
    MAX_RPC_BYTES,
    Cancel,
    Request,
    decode_call_frame,
    encode_reply,
    open_sealed,
    seal,
)
from node.wire import FRAME_HEADER, frame, parse_frame_header

__all__ = ["Handler", "KeyringProvider", "RPCServer"]

log = logging.getLogger(__name__)

Handler = Callable[[Any], Awaitable[Any]]
KeyringProvider = Callable[[], Keyring | None]

#: Concurrent connections served; more are closed at once (memberlist caps push-pulls at 128).
MAX_CONNECTIONS = 512
#: Calls in flight on one connection; more are answered at once with an ``RPCError``
#: (``RPCClient`` spreads its calls over several connections long before this).
MAX_CALLS_PER_CONNECTION = 256


class RPCServer:
    """Serves ``handlers[method](args)`` over framed, optionally sealed, msgpack."""

    def __init__(
        self,
        handlers: Mapping[str, Handler],
        keyring_provider: KeyringProvider = lambda: None,
        *,
        verify_incoming: bool = True,
        idle_timeout: float = 60.0,
        max_connections: int = MAX_CONNECTIONS,
        max_calls_per_connection: int = MAX_CALLS_PER_CONNECTION,
    ) -> None:
        self._handlers = dict(handlers)
        self._keyring = keyring_provider
        self._accept_plaintext = not verify_incoming
        self._idle_timeout = idle_timeout
        self._max_connections = max_connections
        self._max_calls = max_calls_per_connection
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._stats: collections.Counter[str] = collections.Counter()

    @property
    def addr(self) -> Address:
        """The bound ``(host, port)`` (real port when started on port 0)."""
        if self._server is None:
            raise LocalProtocolError("RPC server is not started")
        host, port = self._server.sockets[0].getsockname()[:2]
        return (host, port)

    @property
    def stats(self) -> Mapping[str, int]:
        """Counters: connections (accepted), calls, errors, cancelled_by_caller,
        rejected_busy, dropped_* per reason."""
        return dict(self._stats)

    def add_handler(self, method: str, handler: Handler) -> None:
        """Register (or replace) a method before or while serving."""
        self._handlers[method] = handler

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port`` (0 picks a free port)."""
        self._server = await asyncio.start_server(self._on_connection, host, port)

    async def close(self) -> None:
        """Stop listening and cancel every in-flight call."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(self._connections, timeout=5.0)
        self._server = None

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= self._max_connections:
            self._stats["dropped_too_many_connections"] += 1
            writer.close()
            return
        self._connections.add(task)
        self._stats["connections"] += 1
        peer = writer.get_extra_info("peername") or ("?", 0)
        watch = _IdleWatch(self._idle_timeout, task)
        try:
            await self._serve(reader, writer, watch)
        except (RemoteProtocolError, TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
            self._stats[f"dropped_{type(exc).__name__}"] += 1
            log.debug("rpc connection from %s:%s closed: %s", peer[0], peer[1], exc)
        except asyncio.CancelledError:
            # close() or the idle watch cancels us; ending quietly keeps asyncio's stream
            # callback from logging the cancellation. Nothing awaits this task's result.
            if watch.fired:
                self._stats["dropped_TimeoutError"] += 1
        except Exception:
            self._stats["internal_errors"] += 1
            log.exception("rpc connection from %s:%s failed", peer[0], peer[1])
        finally:
            watch.stop()
            self._connections.discard(task)
            writer.close()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, watch: _IdleWatch
    ) -> None:
        calls: dict[int, asyncio.Task[None]] = watch.calls
        try:
            while (data := await _next_frame(reader, watch)) is not None:
                keyring = self._keyring()
                body, sealed = open_sealed(data, keyring, accept_plaintext=self._accept_plaintext)
                msg = decode_call_frame(body)
                if isinstance(msg, Cancel):
                    self._cancel(calls, msg.id)
                    continue
                if msg.id in calls:
                    raise RemoteProtocolError(f"RPC request id {msg.id} is already in flight")
                reply_key = keyring if sealed else None
                if len(calls) >= self._max_calls:
                    self._stats["rejected_busy"] += 1
                    busy = RPCError(
                        f"more than {self._max_calls} calls in flight on one connection"
                    )
                    _send(writer, encode_reply(msg.id, error=busy), reply_key)
                    continue
                calls[msg.id] = asyncio.ensure_future(self._run(msg, writer, reply_key, calls))
        finally:
            # The caller hung up (or broke protocol): nobody is waiting for these answers.
            running = list(calls.values())
            by_caller = not _current().cancelling()  # else close() is shutting us down
            for rid in list(calls):
                self._cancel(calls, rid, count=by_caller)
            if running:
                await asyncio.wait(running)

    def _cancel(
        self, calls: dict[int, asyncio.Task[None]], rid: int, *, count: bool = True
    ) -> None:
        task = calls.pop(rid, None)
        if task is not None and not task.done():  # else it finished first: nothing to stop
            task.cancel()
            self._stats["cancelled_by_caller"] += count

    async def _run(
        self,
        request: Request,
        writer: asyncio.StreamWriter,
        keyring: Keyring | None,
        calls: dict[int, asyncio.Task[None]],
    ) -> None:
        try:
            reply = await self._dispatch(request)
        finally:
            wanted = calls.get(request.id) is asyncio.current_task()
            if wanted:
                del calls[request.id]
        # Not wanted: the caller cancelled it, but the handler finished anyway.
        if wanted and not writer.is_closing():
            _send(writer, reply, keyring)
            with contextlib.suppress(ConnectionError):
                await writer.drain()  # the reader side notices a dead peer and cleans up

    async def _dispatch(self, request: Request) -> bytes:
        self._stats["calls"] += 1
        handler = self._handlers.get(request.method)
        try:
            if handler is None:
                raise InvalidRequest(f"unknown RPC method {request.method!r}", field="method")
            result = await handler(request.args)
        except NodeError as exc:  # an expected outcome: it travels back by class name
            self._stats["errors"] += 1
            return encode_reply(request.id, error=exc)
        except Exception as exc:  # a bug in a handler: keep serving, tell the caller
            self._stats["errors"] += 1
            log.exception("rpc %s raised", request.method)
            return encode_reply(request.id, error=exc)
        try:
            return encode_reply(request.id, result=result)
        except LocalProtocolError as exc:
            self._stats["errors"] += 1
            log.error("rpc %s returned an unencodable result: %s", request.method, exc)
            return encode_reply(
                request.id, error=RPCError(f"result of {request.method} cannot be encoded: {exc}")
            )


def _send(writer: asyncio.StreamWriter, body: bytes, keyring: Keyring | None) -> None:
    # One write per frame: frames of concurrent calls never interleave.
    writer.write(frame(seal(body, keyring)))


def _current() -> asyncio.Task[Any]:
    task = asyncio.current_task()
    assert task is not None  # only called from connection tasks
    return task


async def _next_frame(reader: asyncio.StreamReader, watch: _IdleWatch) -> bytes | None:
    try:
        header = await reader.readexactly(FRAME_HEADER)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None  # the caller hung up between frames: normal
        raise
    watch.activity += 1
    watch.mid_frame = True
    data = await reader.readexactly(parse_frame_header(header, max_bytes=MAX_RPC_BYTES))
    watch.mid_frame = False
    watch.activity += 1
    return data


class _IdleWatch:
    """Cancels a connection's task once a whole period passed with no frame read and no
    call in flight (or stuck inside one frame): one timer per period instead of a
    timeout per read, which cost a sixth of a small call's CPU.

    A call starts only with a frame, so "same ``activity`` and no calls at two checks in
    a row" means no call ran in between: an answered blocking query is never cut off
    right after its reply. The connection closes between one and two periods idle.
    """

    __slots__ = ("calls", "activity", "mid_frame", "fired", "_period", "_task", "_seen", "_handle")

    def __init__(self, period: float, task: asyncio.Task[Any]) -> None:
        self.calls: dict[int, asyncio.Task[None]] = {}
        self.activity = 0
        self.mid_frame = False
        self.fired = False
        self._period = period
        self._task = task
        self._seen: int | None = None  # activity at the last check, if it was idle then
        self._handle = asyncio.get_running_loop().call_later(period, self._check)

    def _check(self) -> None:
        stalled = self.mid_frame or not self.calls
        if stalled and self._seen == self.activity:
            self.fired = True
            self._task.cancel()
            return
        self._seen = self.activity if stalled else None
        self._handle = asyncio.get_running_loop().call_later(self._period, self._check)

    def stop(self) -> None:
        """Stop watching (the connection ended)."""
        self._handle.cancel()
