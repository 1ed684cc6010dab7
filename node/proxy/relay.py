"""Move bytes between two connected sockets: copy for small exchanges, splice for bulk.

Rule: per-connection work is as small as we can make it, because the gateway's cost per
connection is what baselines.md shows a Python relay losing on. So:

- raw non-blocking sockets watched by a ``Poller``: on Linux a private epoll set
  (``EpollPoller``) that the loop watches through one fd, so a connection costs one
  ``epoll_ctl`` per socket; elsewhere the loop's add_reader (no streams, no tasks);
- a direction starts in copy mode through one scratch buffer shared by the listener
  (``recv_into`` then ``send``: two syscalls, no allocation), which is what small
  request/response traffic wants; splice costs more per call than a small copy;
- a large read (``SPLICE_AFTER_READ``) switches that direction to zero-copy
  ``os.splice`` socket → pipe → socket for the rest of its life; pipes come from a
  ``PipePool`` and go back to it when empty, so even bulk connections cost no
  ``pipe2``/``fcntl`` calls;
- readers stay registered for the life of the connection; a direction swaps its
  reader for a writer only when the destination pushes back (and swaps back after);
- half-close is forwarded (EOF on one side → ``shutdown(SHUT_WR)`` on the other; when
  both are done the sockets are simply closed) and any socket error ends both sides.

Bytes handed over before the relay starts (the ClientHello the gateway read) are sent
first, so nothing the client sent is lost. Counters go to a ``ListenerStats``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import select
import socket
import sys
from collections.abc import Callable
from typing import Any, Protocol

from node.proxy.metrics import ListenerStats

__all__ = [
    "Poller",
    "LoopPoller",
    "EpollPoller",
    "make_poller",
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
# Socket → pipe → socket rounds per readiness event while reads come back full.
SPLICE_ROUNDS = 4
# Idle pipes kept for reuse; beyond this they are closed (2 fds each).
MAX_IDLE_PIPES = 512

_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
# Every copy-mode recv/send is non-blocking per call, so an accepted socket needs no
# FIONBIO ioctl (Python's accept4 has no SOCK_NONBLOCK); splice needs O_NONBLOCK on the
# socket itself and sets it when a direction starts splicing.
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
# Errors that mean "the peer went away": end the relay quietly.
_GONE = (ConnectionError, BrokenPipeError, TimeoutError)

log = logging.getLogger(__name__)


def make_scratch(size: int = COPY_CHUNK) -> memoryview:
    """A copy buffer to share among the relays of one event loop (one per listener)."""
    return memoryview(bytearray(size))


class PipePool:
    """Reusable pipes for splice; ``acquire`` → (read fd, write fd), ``release`` when empty."""

    __slots__ = ("_idle", "_size", "_max_idle")

    def __init__(self, size: int = PIPE_SIZE, max_idle: int = MAX_IDLE_PIPES) -> None:
        self._idle: list[tuple[int, int]] = []
        self._size = size
        self._max_idle = max_idle

    def acquire(self) -> tuple[int, int]:
        """An empty pipe, reused when possible."""
        if self._idle:
            return self._idle.pop()
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        with contextlib.suppress(OSError):  # the system limit may be lower; keep the default
            fcntl.fcntl(w, _F_SETPIPE_SZ, self._size)
        return r, w

    def release(self, pipe: tuple[int, int], *, empty: bool) -> None:
        """Return a pipe; one that still holds bytes is closed, never reused."""
        if empty and len(self._idle) < self._max_idle:
            self._idle.append(pipe)
        else:
            os.close(pipe[0])
            os.close(pipe[1])

    def close(self) -> None:
        """Close every idle pipe."""
        while self._idle:
            r, w = self._idle.pop()
            os.close(r)
            os.close(w)

    @property
    def idle(self) -> int:
        """How many pipes wait for reuse."""
        return len(self._idle)


class Poller(Protocol):
    """Readiness callbacks per fd, like the loop's add_reader/add_writer."""

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None: ...
    def remove_reader(self, fd: int) -> None: ...
    def add_writer(self, fd: int, callback: Callable[[], None]) -> None: ...
    def remove_writer(self, fd: int) -> None: ...
    def forget(self, fd: int) -> None:
        """Drop every callback of ``fd``; the caller closes it right after."""

    def close(self) -> None: ...


class LoopPoller:
    """The event loop's own fd watching (portable)."""

    __slots__ = ("_loop",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        self._loop.add_reader(fd, callback)

    def remove_reader(self, fd: int) -> None:
        self._loop.remove_reader(fd)

    def add_writer(self, fd: int, callback: Callable[[], None]) -> None:
        self._loop.add_writer(fd, callback)

    def remove_writer(self, fd: int) -> None:
        self._loop.remove_writer(fd)

    def forget(self, fd: int) -> None:
        self._loop.remove_reader(fd)
        self._loop.remove_writer(fd)

    def close(self) -> None:
        pass


_EP_READ = select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR | select.EPOLLRDHUP
_EP_WRITE = select.EPOLLOUT | select.EPOLLHUP | select.EPOLLERR
MAX_EVENTS = 256  # per dispatch; the rest stay ready (level-triggered) for the next one


class EpollPoller:
    """A private epoll set, itself watched by the event loop through one reader.

    Why: under uvloop every add_reader on a new fd costs libuv's pollability check
    (epoll ADD+DEL) on top of the registration, and callback swaps cost more; here a
    connection costs one ``epoll_ctl`` per socket, and closing a socket removes it from
    the set for free (``forget`` then close). Level-triggered, like the loop's own.
    """

    __slots__ = ("_loop", "_ep", "_fds")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._ep = select.epoll()
        # fd → [registered mask (-1: not registered), reader, writer]
        self._fds: dict[int, list[Any]] = {}
        loop.add_reader(self._ep.fileno(), self._dispatch)

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        self._set(fd, 1, callback)

    def remove_reader(self, fd: int) -> None:
        self._set(fd, 1, None)

    def add_writer(self, fd: int, callback: Callable[[], None]) -> None:
        self._set(fd, 2, callback)

    def remove_writer(self, fd: int) -> None:
        self._set(fd, 2, None)

    def forget(self, fd: int) -> None:
        self._fds.pop(fd, None)

    def _set(self, fd: int, slot: int, callback: Callable[[], None] | None) -> None:
        entry = self._fds.get(fd)
        if entry is None:
            if callback is None:
                return
            entry = self._fds[fd] = [-1, None, None]
        entry[slot] = callback
        mask = (select.EPOLLIN if entry[1] else 0) | (select.EPOLLOUT if entry[2] else 0)
        if mask == entry[0]:
            return  # only the callback changed: no syscall
        if mask == 0:
            # Unregister rather than keep a 0 mask: HUP/ERR would still be reported.
            del self._fds[fd]
            self._ep.unregister(fd)
        elif entry[0] == -1:
            try:
                self._ep.register(fd, mask)
            except FileExistsError:  # forgotten but still open: take it over
                self._ep.modify(fd, mask)
        else:
            self._ep.modify(fd, mask)
        if mask:
            entry[0] = mask

    def _dispatch(self) -> None:
        try:
            events = self._ep.poll(0, MAX_EVENTS)
        except InterruptedError:
            return
        fds = self._fds
        for fd, ev in events:
            entry = fds.get(fd)
            if entry is None:  # forgotten but not yet closed by its owner: stop it
                with contextlib.suppress(OSError):
                    self._ep.unregister(fd)
                continue
            try:
                if ev & _EP_READ and entry[1] is not None:
                    entry[1]()
                    entry = fds.get(fd)  # the callback may have changed or dropped it
                if entry is not None and ev & _EP_WRITE and entry[2] is not None:
                    entry[2]()
            except Exception:  # one connection's bug must not stop the others
                log.exception("relay callback failed", extra={"fd": fd})

    def close(self) -> None:
        """Stop watching (idempotent); the owner closes its sockets itself."""
        if not self._ep.closed:
            self._loop.remove_reader(self._ep.fileno())
            self._ep.close()
        self._fds.clear()


def make_poller(loop: asyncio.AbstractEventLoop) -> Poller:
    """The cheapest fd watcher on this platform."""
    if sys.platform == "linux":
        return EpollPoller(loop)
    return LoopPoller(loop)


class _Direction:
    """One way of a relay: src socket → (scratch buffer | pipe) → dst socket."""

    __slots__ = (
        "relay",
        "src",
        "dst",
        "src_fd",
        "dst_fd",
        "pipe",
        "rest",
        "pending",
        "writing",
        "eof",
        "done",
        "outbound",
    )

    def __init__(self, relay: Relay, src: socket.socket, dst: socket.socket, outbound: bool):
        self.relay = relay
        self.src, self.dst = src, dst
        self.src_fd, self.dst_fd = src.fileno(), dst.fileno()
        self.pipe: tuple[int, int] | None = None  # set once the direction splices
        self.rest = b""  # copy mode: bytes read but not yet sent
        self.pending = 0  # splice mode: bytes in the pipe not yet sent
        self.writing = False  # waiting for dst to become writable (reader removed)
        self.eof = False
        self.done = False
        self.outbound = outbound  # True = accepting side → dialled side

    def count(self, n: int) -> None:
        stats = self.relay.stats
        if self.outbound:
            stats.bytes_in += n
        else:
            stats.bytes_out += n
        self.relay.moved += n

    # --- copy mode ---------------------------------------------------------------
    def on_readable(self) -> None:
        relay = self.relay
        view = relay.scratch
        try:
            n = self.src.recv_into(view, 0, _DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            relay.abort(exc)
            return
        if n == 0:
            self.on_eof()
            return
        self.count(n)
        self.send_copy(view[:n])
        if (
            n >= SPLICE_AFTER_READ
            and relay.pool is not None
            and not self.writing
            and not relay.closed
        ):
            self.start_splicing()

    def send_copy(self, data: memoryview | bytes) -> None:
        try:
            sent = self.dst.send(data, _DONTWAIT)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self.relay.abort(exc)
            return
        if sent < len(data):
            self.rest = bytes(data[sent:])  # the scratch buffer is reused by the next read
            self.wait_writable(self.flush_copy)

    def flush_copy(self) -> None:
        try:
            sent = self.dst.send(self.rest, _DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.relay.abort(exc)
            return
        self.rest = self.rest[sent:]
        if not self.rest:
            self.resume_reading()

    # --- splice mode -------------------------------------------------------------
    def start_splicing(self) -> None:
        pool = self.relay.pool
        assert pool is not None
        self.pipe = pool.acquire()
        for sock in (self.src, self.dst):
            if sock.gettimeout() != 0.0:  # splice honours only the socket's own O_NONBLOCK
                sock.setblocking(False)
        self.relay.poller.add_reader(self.src_fd, self.on_readable_splice)  # replaces on_readable

    def on_readable_splice(self) -> None:
        assert self.pipe is not None
        w = self.pipe[1]
        relay = self.relay
        # A full pipe's worth means more is probably queued: move it now rather than
        # after another trip through epoll; a short read means the socket is drained.
        # Bounded, so one stream cannot starve the other connections of this loop.
        for _ in range(SPLICE_ROUNDS):
            try:
                n = os.splice(self.src_fd, w, PIPE_SIZE, flags=_SPLICE_FLAGS)
            except BlockingIOError:
                return
            except OSError as exc:
                relay.abort(exc)
                return
            if n == 0:
                self.on_eof()
                return
            self.pending += n
            self.count(n)
            self.flush_splice()
            if n < PIPE_SIZE or self.writing or relay.closed:
                return

    def flush_splice(self) -> None:
        assert self.pipe is not None
        r = self.pipe[0]
        while self.pending:
            try:
                n = os.splice(r, self.dst_fd, self.pending, flags=_SPLICE_FLAGS)
            except BlockingIOError:
                self.wait_writable(self.flush_splice)
                return
            except OSError as exc:
                self.relay.abort(exc)
                return
            self.pending -= n
        self.resume_reading()

    # --- shared ------------------------------------------------------------------
    def wait_writable(self, flush: Callable[[], None]) -> None:
        if not self.writing:
            self.writing = True
            poller = self.relay.poller
            if not self.eof:
                poller.remove_reader(self.src_fd)
            poller.add_writer(self.dst_fd, flush)

    def resume_reading(self) -> None:
        if self.writing:
            self.writing = False
            poller = self.relay.poller
            poller.remove_writer(self.dst_fd)
            if not self.eof:
                reader = self.on_readable_splice if self.pipe is not None else self.on_readable
                poller.add_reader(self.src_fd, reader)
        if self.eof:
            self.finish()

    def on_eof(self) -> None:
        self.eof = True
        empty = not self.pending and not self.rest
        # The last EOF closes both sockets right away, and close() drops them from the
        # epoll set: unregistering first would be a wasted epoll_ctl per connection.
        if not (empty and self.relay.other(self).done):
            self.relay.poller.remove_reader(self.src_fd)
        if empty:
            self.finish()

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        self.relay.direction_done(self)

    @property
    def empty(self) -> bool:
        return not self.pending and not self.rest


class Relay:
    """Bidirectional relay between ``downstream`` (accepted) and ``upstream`` (dialled)."""

    __slots__ = (
        "poller",
        "stats",
        "pool",
        "scratch",
        "moved",
        "closed",
        "_a",
        "_b",
        "_on_close",
        "_dirs",
    )

    def __init__(
        self,
        poller: Poller,
        downstream: socket.socket,
        upstream: socket.socket,
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
        self.moved = 0  # total bytes both ways; the idle sweep watches it change
        self.closed = False
        self._a, self._b = downstream, upstream
        self._on_close = on_close
        self._dirs = (
            _Direction(self, downstream, upstream, outbound=True),
            _Direction(self, upstream, downstream, outbound=False),
        )

    def start(
        self, initial: bytes = b"", *, already_sent: int = 0, downstream_reader: bool = False
    ) -> None:
        """Begin relaying; ``initial`` goes to upstream before anything else.

        ``already_sent`` counts bytes the caller delivered upstream itself.
        ``downstream_reader`` means the caller keeps a reader registered on
        ``downstream`` that forwards to ``downstream_readable`` (re-registering a
        callback costs epoll_ctl calls under uvloop, so we avoid it).
        """
        out = self._dirs[0]
        if already_sent:
            out.count(already_sent)
        if initial:
            out.count(len(initial))
            out.send_copy(initial)
            if self.closed:
                return
        for d in self._dirs:
            if d.writing or (downstream_reader and d is out):
                continue
            self.poller.add_reader(d.src_fd, d.on_readable)

    def downstream_readable(self) -> None:
        """Readiness of the downstream socket, for a caller-owned reader."""
        self._dirs[0].on_readable()

    def other(self, d: _Direction) -> _Direction:
        """The opposite direction of ``d``."""
        return self._dirs[1] if d is self._dirs[0] else self._dirs[0]

    def direction_done(self, d: _Direction) -> None:
        other = self.other(d)
        if other.done:
            self.close()  # close() sends the FIN; a shutdown first would be a wasted syscall
            return
        try:
            d.dst.shutdown(socket.SHUT_WR)  # forward the half-close
        except OSError as exc:
            self.abort(exc)

    def abort(self, exc: BaseException) -> None:
        """A socket error on either side ends both (the peer sees a close)."""
        if not isinstance(exc, _GONE) and getattr(exc, "errno", None) not in (
            errno.ECONNRESET,
            errno.EPIPE,
            errno.ENOTCONN,
        ):
            self.stats.reject("relay_error")
        self.close()

    def close(self) -> None:
        """Unregister, return the pipes and close both sockets; idempotent."""
        if self.closed:
            return
        self.closed = True
        poller = self.poller
        for d in self._dirs:
            poller.forget(d.src_fd)  # both fds are closed below: no unregistering needed
            if d.pipe is not None and self.pool is not None:
                self.pool.release(d.pipe, empty=d.pending == 0)
                d.pipe = None
        self._a.close()
        self._b.close()
        self.stats.active -= 1
        self.stats.closed += 1
        if self._on_close is not None:
            self._on_close(self)
