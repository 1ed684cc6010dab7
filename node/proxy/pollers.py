"""Readiness of sockets for the data plane's own fd handling: one handler object per fd.

Rule: the cheapest watcher the platform has. On Linux that is a private,
edge-triggered epoll set (``EdgePoller``) which the event loop watches through one fd:
a socket costs one ``epoll_ctl`` for its whole life unless a direction pushes back, a
closed socket leaves the set by itself, and readiness goes to one handler object per
socket (``on_event``) instead of a callback swap per state change. Elsewhere
``LoopPoller`` maps the same calls onto the loop's level-triggered add_reader/add_writer.
Work left after a bounded batch runs from ``Poller.later``.
"""

from __future__ import annotations

import asyncio
import logging
import select
import sys
from collections.abc import Callable
from typing import Protocol

__all__ = [
    "EV_CLOSING",
    "EV_ERROR",
    "EV_READ",
    "EV_WRITE",
    "EdgePoller",
    "Handler",
    "LoopPoller",
    "Poller",
    "make_poller",
]

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
EV_ERROR = _ERR  # an error is pending on the socket
_WATCH = _IN | _RDHUP | _ET
_WATCH_OUT = _WATCH | _OUT

log = logging.getLogger(__name__)


class Handler(Protocol):
    """What a ``Poller`` tells about one fd: ``ev`` holds epoll bits, to be tested
    against EV_READ, EV_WRITE, EV_CLOSING and EV_ERROR."""

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
