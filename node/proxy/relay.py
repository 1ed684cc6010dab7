"""Move bytes between two connected sockets: copy for small exchanges, splice for bulk.

Rule: per-connection work is as small as we can make it, because the gateway's cost per
connection is what baselines.md shows a Python relay losing on. So:

- sockets are watched by a ``Poller`` (``pollers``): on Linux a private edge-triggered
  epoll set, one handler object per socket;
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
import errno
import fcntl
import os
import socket
import sys
from collections.abc import Callable

from node.proxy.metrics import ListenerStats
from node.proxy.pollers import EV_CLOSING, EV_ERROR, EV_READ, EV_WRITE, Poller

__all__ = [
    "AGAIN",
    "DONTWAIT",
    "SPLICE_SUPPORTED",
    "PIPE_SIZE",
    "COPY_CHUNK",
    "PipePool",
    "Relay",
    "make_scratch",
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

_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
# Every copy-mode recv/send is non-blocking per call, so an accepted socket needs no
# FIONBIO ioctl (Python's accept has no SOCK_NONBLOCK); splice needs O_NONBLOCK on the
# socket itself and sets it when a direction starts splicing.
DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)
AGAIN = (BlockingIOError, InterruptedError)
# Errors that mean "the peer went away": end the relay quietly.
_GONE = (ConnectionError, BrokenPipeError, TimeoutError)
_GONE_ERRNOS = (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN)

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
        elif ev & EV_ERROR and self.eof:
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
                n = self.src.recv_into(view, 0, DONTWAIT)
            except AGAIN:
                return
            except OSError as exc:
                relay.abort(exc)
                return
            if not n:
                self.finish()
                return
            self.moved += n
            try:
                sent = self.dst.send(view[:n], DONTWAIT)
            except AGAIN:
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
            except AGAIN:
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
            except AGAIN:
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
                sent = self.dst.send(self.rest, DONTWAIT)
            except AGAIN:
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

    Built directly, the owner registers the sockets (``up`` and ``down`` are their
    handlers); ``handoff`` takes over a connection whose first bytes the owner read
    itself. The owner's periodic sweep asks ``idle_past`` (which also reports the bytes
    moved to the stats); ``close`` reports the rest and calls ``on_close``.
    """

    __slots__ = (
        "poller",
        "stats",
        "pool",
        "scratch",
        "closed",
        "down",
        "up",
        "_seen",
        "_since",
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
        self._seen = 0  # bytes moved at the owner's last look (idle detection)
        self._since = 0.0  # when the owner last saw bytes move
        self._on_close = on_close

    @classmethod
    def handoff(
        cls,
        poller: Poller,
        downstream: _socket.socket,
        upstream: _socket.socket,
        *,
        first: bytes,
        sent: int,
        hup: bool,
        more: bool,
        waited: bool,
        now: float,
        stats: ListenerStats,
        pool: PipePool | None,
        scratch: memoryview,
        on_close: Callable[[Relay], None] | None = None,
    ) -> Relay:
        """Take over a connection whose ``first`` bytes the owner read from ``downstream``.

        ``sent`` of them already reached ``upstream`` (the rest is sent before anything
        else); ``hup``: downstream's FIN has arrived; ``more``: the owner's last read
        filled its buffer, so bytes may be queued with no edge to come. ``downstream``
        is watched by ``poller`` already; ``upstream`` too when ``waited`` (its connect
        was waited for, with downstream's reads paused meanwhile). ``now`` starts the
        idle clock. The relay may be closed already when this returns.
        """
        relay = cls(
            poller, downstream, upstream, stats=stats, pool=pool, scratch=scratch, on_close=on_close
        )
        relay._since = now
        down, upside = relay.down, relay.up
        down.moved = len(first)  # all of it reaches upstream, or the relay dies
        down.hup = hup
        if waited:
            poller.attach(upside.src_fd, upside)
            poller.stop_write(upside.src_fd)
        else:
            poller.watch(upside.src_fd, upside)
        poller.attach(down.src_fd, down)
        if sent < len(first):
            down.rest = first[sent:]
            down.block()
        elif waited:
            poller.resume_read(down.src_fd)  # paused while dialling: reports what queued
        elif hup or more:
            # The owner's read left bytes (or the FIN) behind: no edge will tell.
            down.resume()
        return relay

    def idle_past(self, now: float, limit: float) -> bool:
        """Whether no byte moved either way for ``limit`` seconds as of ``now``; bytes
        moved since the last call go to the stats instead. For the owner's periodic sweep."""
        moved = self.down.moved + self.up.moved
        if moved != self._seen:
            self._seen, self._since = moved, now
            self.report()
            return False
        return now - self._since >= limit

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
