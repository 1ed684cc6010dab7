"""Move bytes between two connected sockets: copy for small exchanges, splice for bulk.

Rule: per-connection work is as small as we can make it, because the gateway's cost per
connection is what baselines.md shows a Python relay losing on. So:

- raw non-blocking sockets and ``loop.add_reader/add_writer`` (no streams, no tasks);
- a direction starts in copy mode through one scratch buffer shared by the listener
  (``recv_into`` then ``send``: two syscalls, no allocation), which is what small
  request/response traffic wants; splice costs more per call than a small copy;
- the first read that fills the scratch buffer switches that direction to zero-copy
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
import os
import socket
import sys
from collections.abc import Callable

from node.proxy.metrics import ListenerStats

__all__ = ["SPLICE_SUPPORTED", "PIPE_SIZE", "COPY_CHUNK", "PipePool", "Relay", "make_scratch"]

SPLICE_SUPPORTED = sys.platform == "linux" and hasattr(os, "splice")
# 1 MiB pipes halved router CPU per GiB against 64 KiB ones in baselines.md (e'' vs e);
# pages are only pinned while data sits in the pipe.
PIPE_SIZE = 1 << 20
# The shared copy buffer; a read that fills it means bulk traffic → switch to splice.
COPY_CHUNK = 64 * 1024
# Idle pipes kept for reuse; beyond this they are closed (2 fds each).
MAX_IDLE_PIPES = 512

_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
# Errors that mean "the peer went away": end the relay quietly.
_GONE = (ConnectionError, BrokenPipeError, TimeoutError)


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
            n = self.src.recv_into(view)
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
        if n == len(view) and relay.pool is not None and not self.writing and not relay.closed:
            self.start_splicing()

    def send_copy(self, data: memoryview | bytes) -> None:
        try:
            sent = self.dst.send(data)
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
            sent = self.dst.send(self.rest)
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
        self.relay.loop.add_reader(self.src_fd, self.on_readable_splice)  # replaces on_readable

    def on_readable_splice(self) -> None:
        assert self.pipe is not None
        try:
            n = os.splice(self.src_fd, self.pipe[1], PIPE_SIZE, flags=_SPLICE_FLAGS)
        except BlockingIOError:
            return
        except OSError as exc:
            self.relay.abort(exc)
            return
        if n == 0:
            self.on_eof()
            return
        self.pending += n
        self.count(n)
        self.flush_splice()

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
            loop = self.relay.loop
            if not self.eof:
                loop.remove_reader(self.src_fd)
            loop.add_writer(self.dst_fd, flush)

    def resume_reading(self) -> None:
        if self.writing:
            self.writing = False
            loop = self.relay.loop
            loop.remove_writer(self.dst_fd)
            if not self.eof:
                reader = self.on_readable_splice if self.pipe is not None else self.on_readable
                loop.add_reader(self.src_fd, reader)
        if self.eof:
            self.finish()

    def on_eof(self) -> None:
        self.eof = True
        self.relay.loop.remove_reader(self.src_fd)
        if not self.pending and not self.rest:
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
        "loop",
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
        loop: asyncio.AbstractEventLoop,
        downstream: socket.socket,
        upstream: socket.socket,
        *,
        stats: ListenerStats,
        pool: PipePool | None,
        scratch: memoryview,
        on_close: Callable[[Relay], None] | None = None,
    ) -> None:
        self.loop = loop
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

    def start(self, initial: bytes = b"", *, already_sent: int = 0) -> None:
        """Begin relaying; ``initial`` goes to upstream before anything else.

        ``already_sent`` counts bytes the caller delivered upstream itself. A reader
        the caller left registered on ``downstream`` is replaced, not duplicated.
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
            if not d.writing:
                self.loop.add_reader(d.src_fd, d.on_readable)

    def direction_done(self, d: _Direction) -> None:
        other = self._dirs[1] if d is self._dirs[0] else self._dirs[0]
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
        loop = self.loop
        for d in self._dirs:
            if d.writing:
                loop.remove_writer(d.dst_fd)
            elif not d.eof:
                loop.remove_reader(d.src_fd)
            if d.pipe is not None and self.pool is not None:
                self.pool.release(d.pipe, empty=d.pending == 0)
                d.pipe = None
        self._a.close()
        self._b.close()
        self.stats.active -= 1
        self.stats.closed += 1
        if self._on_close is not None:
            self._on_close(self)
