"""Move bytes between two connected sockets: copy for small exchanges, splice for bulk.

Rule: per-connection work is as small as we can make it, because the gateway's cost per
connection is what baselines.md shows a Python relay losing on. So:

- sockets are watched by a ``Poller``. On Linux that is a private, edge-triggered epoll
  set (``EdgePoller``) which the event loop watches through one fd: a socket costs one
  ``epoll_ctl`` for its whole life unless a direction pushes back, a closed socket
  leaves the set by itself, and readiness goes to one handler object per socket
  (``on_event``) instead of a callback swap per state change. Elsewhere ``LoopPoller``
  maps the same calls onto the loop's level-triggered add_reader/add_writer;
- edge-triggered means a direction reads until the socket is drained: in copy mode a
  short ``recv_into`` proves it (TCP hands over everything queued), in splice mode only
  EAGAIN does (a pipe can fill by slots before bytes); after EPOLLRDHUP a direction
  reads on to the EOF. A direction whose destination pushes back pauses its reads (one
  MOD each way, so arrivals meanwhile wake nobody), and resuming re-arms the fd, which
  reports what queued. Work per event is bounded; what is left runs from
  ``Poller.later``;
- a direction starts in copy mode through one scratch buffer shared by the listener
  (``recv_into`` then ``send``: two syscalls, no allocation), which is what small
  request/response traffic wants; a large read (``SPLICE_AFTER_READ``) switches that
  direction to zero-copy ``os.splice`` socket → pipe → socket for the rest of its life,
  with pipes from a ``PipePool``;
- half-close is forwarded (EOF on one side → ``shutdown(SHUT_WR)`` on the other; when
  both are done the sockets are simply closed) and any socket error ends both sides,
  a reset of a side already at EOF included;
- byte counts stay on the relay and reach the ``ListenerStats`` through ``report``
  (called by the owner's periodic sweep and at close), not per read.
"""

from __future__ import annotations

import _socket
import asyncio
import errno
import fcntl
import logging
import os
import select
import socket
import sys
from collections.abc import Callable
from typing import Protocol

from node.proxy.metrics import ListenerStats

__all__ = [
    "Handler",
    "Poller",
    "LoopPoller",
    "EdgePoller",
    "make_poller",
    "SPLICE_SUPPORTED",
    "PIPE_SIZE",
    "COPY_CHUNK",
    "PipePool",
    "Relay",
    "make_scratch",
    "EV_READ",
    "EV_WRITE",
    "EV_CLOSING",
]

SPLICE_SUPPORTED = sys.platform == "linux" and hasattr(os, "splice")
# 1 MiB pipes halved router CPU per GiB against 64 KiB ones in baselines.md (e'' vs e);
# pages are only pinned while data sits in the pipe.
PIPE_SIZE = 1 << 20
# The shared copy buffer.
COPY_CHUNK = 64 * 1024
# A direction switches to splice after one read this large: that means a stream, where
# splice's per-call cost is repaid (a full TLS record is 16 KiB + overhead, so a bulk
# TLS sender qualifies at once). Small messages stay copied however many there are:
# measured, splicing 64-byte echoes added millisecond p99 stalls (HAProxy's
# option splice-* shows the same).
SPLICE_AFTER_READ = 16 * 1024
# Reads per readiness event (copy: full buffers; splice: socket → pipe → socket
# rounds), so one stream cannot starve the other connections of this loop.
COPY_ROUNDS = 4
SPLICE_ROUNDS = 4
# Idle pipes kept for reuse; beyond this they are closed (2 fds each).
MAX_IDLE_PIPES = 512
MAX_EVENTS = 256  # per dispatch; the rest stay in epoll's ready list for the next one

# epoll's bits, also used by LoopPoller to describe its events (values from Linux).
_IN = getattr(select, "EPOLLIN", 0x001)
_OUT = getattr(select, "EPOLLOUT", 0x004)
_ERR = getattr(select, "EPOLLERR", 0x008)
_HUP = getattr(select, "EPOLLHUP", 0x010)
_RDHUP = getattr(select, "EPOLLRDHUP", 0x2000)
_ET = getattr(select, "EPOLLET", 1 << 31)
EV_READ = _IN | _RDHUP | _HUP | _ERR  # read now (data, EOF or an error to collect)
EV_WRITE = _OUT | _HUP | _ERR  # try the pending write now
EV_CLOSING = _RDHUP | _HUP  # the peer sent its FIN: read on until EOF
_WATCH = _IN | _RDHUP | _ET
_WATCH_OUT = _WATCH | _OUT

_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
# Every copy-mode recv/send is non-blocking per call, so an accepted socket needs no
# FIONBIO ioctl (Python's accept has no SOCK_NONBLOCK); splice needs O_NONBLOCK on the
# socket itself and sets it when a direction starts splicing.
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)
_AGAIN = (BlockingIOError, InterruptedError)
# Errors that mean "the peer went away": end the relay quietly.
_GONE = (ConnectionError, BrokenPipeError, TimeoutError)
_GONE_ERRNOS = (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN)

log = logging.getLogger(__name__)

Pipe = tuple[int, int, int]  # read fd, write fd, capacity in bytes


def make_scratch(size: int = COPY_CHUNK) -> memoryview:
    """A copy buffer to share among the relays of one event loop (one per listener)."""
    return memoryview(bytearray(size))


class PipePool:
    """Reusable pipes for splice; ``acquire`` → (read fd, write fd, capacity)."""

    __slots__ = ("_idle", "_size", "_max_idle")

    def __init__(self, size: int = PIPE_SIZE, max_idle: int = MAX_IDLE_PIPES) -> None:
        self._idle: list[Pipe] = []
        self._size = size
        self._max_idle = max_idle

    def acquire(self) -> Pipe:
        """An empty pipe, reused when possible."""
        if self._idle:
            return self._idle.pop()
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            capacity = fcntl.fcntl(w, _F_SETPIPE_SZ, self._size)
        except OSError:  # the system limit may be lower: keep (and learn) the default
            capacity = fcntl.fcntl(w, _F_GETPIPE_SZ)
        return r, w, capacity

    def release(self, pipe: Pipe, *, empty: bool) -> None:
        """Return a pipe; one that still holds bytes is closed, never reused."""
        if empty and len(self._idle) < self._max_idle:
            self._idle.append(pipe)
        else:
            os.close(pipe[0])
            os.close(pipe[1])

    def close(self) -> None:
        """Close every idle pipe."""
        while self._idle:
            r, w, _ = self._idle.pop()
            os.close(r)
            os.close(w)

    @property
    def idle(self) -> int:
        """How many pipes wait for reuse."""
        return len(self._idle)


class Handler(Protocol):
    """What a ``Poller`` tells about one fd: ``ev`` holds epoll bits, to be tested
    against EV_READ, EV_WRITE and EV_CLOSING."""

    def on_event(self, ev: int) -> None: ...


class Poller(Protocol):
    """Readiness of sockets, delivered to one ``Handler`` per fd.

    ``watch`` registers an fd (for writes too if ``write``); ``attach`` changes its
    handler; ``detach`` drops it right before the owner closes the fd. The
    stop/resume/done/want calls say what the owner is waiting for: a level-triggered
    poller must not report what nobody wants; an edge-triggered one still pauses reads
    (a paused direction would otherwise be woken by every arrival for nothing) but
    needs nothing after an EOF. ``resume_read`` reports at once what queued meanwhile.
    """

    def watch(self, fd: int, handler: Handler, *, write: bool = False) -> None: ...
    def attach(self, fd: int, handler: Handler) -> None: ...
    def detach(self, fd: int) -> None: ...
    def stop_read(self, fd: int) -> None: ...
    def resume_read(self, fd: int) -> None: ...
    def done_reading(self, fd: int) -> None: ...
    def want_write(self, fd: int) -> None: ...
    def stop_write(self, fd: int) -> None: ...
    def later(self, callback: Callable[[], None]) -> None: ...
    def close(self) -> None: ...


class EdgePoller:
    """A private edge-triggered epoll set, watched by the event loop through one reader.

    Why: under uvloop every add_reader on a new fd costs libuv's pollability check
    (epoll ADD+DEL) on top of the registration, and callback swaps cost more; here a
    socket costs one ``epoll_ctl`` for a request/response exchange (MODs come only with
    backpressure: once to add EPOLLOUT, and to pause and resume reads), and closing it
    removes it from the set for free.
    """

    __slots__ = ("_loop", "_ep", "_fds", "_out", "_paused")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._ep = select.epoll()
        self._fds: dict[int, Handler] = {}
        self._out: set[int] = set()  # fds registered for EPOLLOUT too
        self._paused: set[int] = set()  # fds registered without EPOLLIN for now
        loop.add_reader(self._ep.fileno(), self._dispatch)

    def watch(self, fd: int, handler: Handler, *, write: bool = False) -> None:
        self._fds[fd] = handler
        if write:
            self._out.add(fd)
        self._ep.register(fd, _WATCH_OUT if write else _WATCH)

    def attach(self, fd: int, handler: Handler) -> None:
        self._fds[fd] = handler

    def detach(self, fd: int) -> None:
        self._fds.pop(fd, None)
        self._out.discard(fd)
        self._paused.discard(fd)

    def _modify(self, fd: int) -> None:
        # MOD re-checks readiness: whatever is ready now is reported as a new edge.
        read = 0 if fd in self._paused else _IN | _RDHUP
        self._ep.modify(fd, _ET | read | (_OUT if fd in self._out else 0))

    def stop_read(self, fd: int) -> None:
        if fd not in self._paused:
            self._paused.add(fd)
            self._modify(fd)

    def resume_read(self, fd: int) -> None:
        if fd in self._paused:
            self._paused.discard(fd)
            self._modify(fd)

    # An EOF edge comes once, and an unwanted EPOLLOUT edge is cheap to ignore.
    def done_reading(self, fd: int) -> None:
        pass

    def stop_write(self, fd: int) -> None:
        pass

    def want_write(self, fd: int) -> None:
        if fd not in self._out:
            self._out.add(fd)
            self._modify(fd)

    def later(self, callback: Callable[[], None]) -> None:
        self._loop.call_soon(callback)

    def _dispatch(self) -> None:
        try:
            events = self._ep.poll(0, MAX_EVENTS)
        except InterruptedError:
            return
        fds = self._fds
        for fd, ev in events:
            handler = fds.get(fd)
            if handler is None:  # detached in this batch, its fd closed or about to be
                continue
            try:
                handler.on_event(ev)
            except Exception:  # one connection's bug must not stop the others
                log.exception("relay handler failed", extra={"fd": fd})

    def close(self) -> None:
        """Stop watching (idempotent); the owner closes its sockets itself."""
        if not self._ep.closed:
            self._loop.remove_reader(self._ep.fileno())
            self._ep.close()
        self._fds.clear()
        self._out.clear()
        self._paused.clear()


class LoopPoller:
    """The event loop's own level-triggered fd watching (portable).

    It reports plain EPOLLIN/EPOLLOUT: errors and EOF show up as readability.
    """

    __slots__ = ("_loop", "_fds")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._fds: dict[int, Handler] = {}

    def watch(self, fd: int, handler: Handler, *, write: bool = False) -> None:
        self._fds[fd] = handler
        self._loop.add_reader(fd, self._event, fd, _IN)
        if write:
            self._loop.add_writer(fd, self._event, fd, _OUT)

    def attach(self, fd: int, handler: Handler) -> None:
        self._fds[fd] = handler

    def detach(self, fd: int) -> None:
        if self._fds.pop(fd, None) is not None:
            self._loop.remove_reader(fd)
            self._loop.remove_writer(fd)

    def stop_read(self, fd: int) -> None:
        self._loop.remove_reader(fd)

    def resume_read(self, fd: int) -> None:
        self._loop.add_reader(fd, self._event, fd, _IN)

    def done_reading(self, fd: int) -> None:
        self._loop.remove_reader(fd)  # an fd at EOF stays readable

    def want_write(self, fd: int) -> None:
        self._loop.add_writer(fd, self._event, fd, _OUT)

    def stop_write(self, fd: int) -> None:
        self._loop.remove_writer(fd)

    def later(self, callback: Callable[[], None]) -> None:
        pass  # level-triggered: whatever is left is reported again

    def _event(self, fd: int, ev: int) -> None:
        handler = self._fds.get(fd)
        if handler is not None:
            handler.on_event(ev)

    def close(self) -> None:
        for fd in list(self._fds):
            self.detach(fd)


def make_poller(loop: asyncio.AbstractEventLoop) -> Poller:
    """The cheapest fd watcher on this platform."""
    if sys.platform == "linux":
        return EdgePoller(loop)
    return LoopPoller(loop)


class _Half:
    """One way of a relay: src socket → (scratch buffer | pipe) → dst socket.

    It is the ``Handler`` of its src fd: read readiness moves its own bytes, write
    readiness lets the opposite half (which writes into this socket) flush.
    """

    __slots__ = (
        "relay",
        "src",
        "dst",
        "src_fd",
        "dst_fd",
        "peer",
        "pipe",
        "rest",
        "pending",
        "blocked",
        "eof",
        "hup",
        "moved",
        "reported",
    )

    def __init__(self, relay: Relay, src: _socket.socket, dst: _socket.socket) -> None:
        self.relay = relay
        self.src, self.dst = src, dst
        self.src_fd, self.dst_fd = src.fileno(), dst.fileno()
        self.peer: _Half = self  # set by Relay
        self.pipe: Pipe | None = None  # set once the direction splices
        self.rest = b""  # copy mode: bytes read but not yet sent
        self.pending = 0  # splice mode: bytes in the pipe not yet sent
        self.blocked = False  # dst pushed back: not reading until it drains
        self.eof = False  # src's EOF was read and forwarded
        self.hup = False  # src's FIN has arrived: read on to the EOF
        self.moved = 0  # bytes read from src (all of them reach dst, or the relay dies)
        self.reported = 0  # of which already added to the listener's stats

    def on_event(self, ev: int) -> None:
        if ev & EV_CLOSING:
            self.hup = True  # even while blocked: this edge will not come again
        if ev & EV_WRITE and self.peer.blocked:
            self.peer.flush()
        if ev & EV_READ and not (self.blocked or self.eof or self.relay.closed):
            if self.pipe is None:
                self.pump()
            else:
                self.pump_splice()
        elif ev & _ERR and self.eof:
            # A reset after our EOF: nobody would read this socket again to notice.
            self.relay.close()

    def resume(self) -> None:
        """Read what may have queued while nobody was told (after backpressure, later())."""
        if not (self.blocked or self.eof or self.relay.closed):
            if self.pipe is None:
                self.pump()
            else:
                self.pump_splice()

    # --- copy mode ---------------------------------------------------------------
    def pump(self) -> None:
        relay = self.relay
        view = relay.scratch
        for _ in range(COPY_ROUNDS):
            try:
                n = self.src.recv_into(view, 0, _DONTWAIT)
            except _AGAIN:
                return
            except OSError as exc:
                relay.abort(exc)
                return
            if not n:
                self.finish()
                return
            self.moved += n
            try:
                sent = self.dst.send(view[:n], _DONTWAIT)
            except _AGAIN:
                sent = 0
            except OSError as exc:
                relay.abort(exc)
                return
            if sent < n:
                self.rest = bytes(view[sent:n])  # the scratch buffer is reused by the next read
                self.block()
                return
            if n >= SPLICE_AFTER_READ and relay.pool is not None:
                self.start_splicing()
                self.pump_splice()
                return
            if n < COPY_CHUNK and not self.hup:
                return  # drained; the next arrival is a new edge
        relay.poller.later(self.resume)

    # --- splice mode -------------------------------------------------------------
    def start_splicing(self) -> None:
        pool = self.relay.pool
        assert pool is not None
        self.pipe = pool.acquire()
        for sock in (self.src, self.dst):
            if sock.gettimeout() != 0.0:  # splice honours only the socket's own O_NONBLOCK
                sock.setblocking(False)

    def pump_splice(self) -> None:
        # The read step mirrors pump's, inlined on purpose: a shared helper would cost
        # a Python call per read on the hot path.
        assert self.pipe is not None
        _, w, capacity = self.pipe
        relay = self.relay
        for _ in range(SPLICE_ROUNDS):
            try:
                n = os.splice(self.src_fd, w, capacity, flags=_SPLICE_FLAGS)
            except _AGAIN:
                return  # drained (a short splice proves nothing: slots may have run out)
            except OSError as exc:
                relay.abort(exc)
                return
            if not n:
                self.finish()
                return
            self.moved += n
            self.pending += n
            if not self.drain():
                return
        relay.poller.later(self.resume)

    def drain(self) -> bool:
        """Pipe → dst; False when dst pushed back (now blocked) or the relay died."""
        assert self.pipe is not None
        r = self.pipe[0]
        while self.pending:
            try:
                n = os.splice(r, self.dst_fd, self.pending, flags=_SPLICE_FLAGS)
            except _AGAIN:
                self.block()
                return False
            except OSError as exc:
                self.relay.abort(exc)
                return False
            self.pending -= n
        return True

    # --- backpressure and the end ------------------------------------------------
    def block(self) -> None:
        if not self.blocked:
            self.blocked = True
            poller = self.relay.poller
            poller.stop_read(self.src_fd)
            poller.want_write(self.dst_fd)

    def flush(self) -> None:
        """dst is writable again: send what waits, then read on."""
        if self.pipe is None:
            try:
                sent = self.dst.send(self.rest, _DONTWAIT)
            except _AGAIN:
                return
            except OSError as exc:
                self.relay.abort(exc)
                return
            self.rest = self.rest[sent:]
            if self.rest:
                return
        elif not self.drain():
            return
        self.blocked = False
        poller = self.relay.poller
        poller.stop_write(self.dst_fd)
        poller.resume_read(self.src_fd)  # reports what queued meanwhile

    def finish(self) -> None:
        """src's EOF: forward the half-close, or close both when the other way is done."""
        self.eof = True
        relay = self.relay
        if self.peer.eof:
            relay.close()  # close() sends the FIN; a shutdown first would be a wasted syscall
            return
        relay.poller.done_reading(self.src_fd)
        try:
            self.dst.shutdown(socket.SHUT_WR)
        except OSError as exc:
            relay.abort(exc)


class Relay:
    """Bidirectional relay between ``downstream`` (accepted) and ``upstream`` (dialled).

    The owner registers the sockets (``up`` and ``down`` are their handlers) and calls
    ``report`` from time to time; ``close`` reports the rest and calls ``on_close``.
    """

    __slots__ = (
        "poller",
        "stats",
        "pool",
        "scratch",
        "closed",
        "down",
        "up",
        "seen",
        "since",
        "_on_close",
    )

    def __init__(
        self,
        poller: Poller,
        downstream: _socket.socket,
        upstream: _socket.socket,
        *,
        stats: ListenerStats,
        pool: PipePool | None,
        scratch: memoryview,
        on_close: Callable[[Relay], None] | None = None,
    ) -> None:
        self.poller = poller
        self.stats = stats
        self.pool = pool  # None: never splice (non-Linux, or forced copy)
        self.scratch = scratch
        self.closed = False
        # down reads the accepting side (bytes "in"), up reads the dialled side.
        self.down = _Half(self, downstream, upstream)
        self.up = _Half(self, upstream, downstream)
        self.down.peer, self.up.peer = self.up, self.down
        self.seen = 0  # bytes moved at the owner's last look (idle detection)
        self.since = 0.0  # when the owner last saw bytes move
        self._on_close = on_close

    @property
    def moved(self) -> int:
        """Bytes moved so far, both ways."""
        return self.down.moved + self.up.moved

    def report(self) -> None:
        """Add the bytes moved since the last report to the listener's stats."""
        down, up, stats = self.down, self.up, self.stats
        stats.bytes_in += down.moved - down.reported
        stats.bytes_out += up.moved - up.reported
        down.reported, up.reported = down.moved, up.moved

    def abort(self, exc: BaseException) -> None:
        """A socket error on either side ends both (the peer sees a close)."""
        if not isinstance(exc, _GONE) and getattr(exc, "errno", None) not in _GONE_ERRNOS:
            self.stats.reject("relay_error")
        self.close()

    def close(self) -> None:
        """Return the pipes, close both sockets and report; idempotent."""
        if self.closed:
            return
        self.closed = True
        poller, pool = self.poller, self.pool
        for half in (self.down, self.up):
            poller.detach(half.src_fd)  # closed below: that leaves the epoll set
            if half.pipe is not None and pool is not None:
                pool.release(half.pipe, empty=half.pending == 0)
                half.pipe = None
        self.down.src.close()
        self.up.src.close()
        self.report()
        self.stats.active -= 1
        self.stats.closed += 1
        if self._on_close is not None:
            self._on_close(self)
