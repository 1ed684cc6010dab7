"""``/v1/agent/monitor``: this node's log lines, streamed while the client listens.

Rule: one ``LogHub`` (a ``logging.Handler`` on the root logger while the app runs) hands
each record to every subscriber whose level admits it, formatted once per format (text
as on stderr, or hclog JSON with ``?logjson``). A subscriber's buffer is bounded
(``BUFFER_LINES``): when a slow reader lets it fill, new lines are dropped and counted,
so logging never waits for a reader. Records may come from other threads (the Raft
driver's), so buffers are guarded by a lock and readers are woken on their loop.
Levels are Consul's (``trace``, ``debug``, ``info``, ``warn``, ``err``, ``error``;
any case); an unknown one is a 400 with Consul's text.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading

from aiohttp import web

from node.errors import InvalidRequest
from node.logfmt import JSONFormatter, KeyValueFormatter

__all__ = ["routes", "LogHub", "Subscriber", "HUB", "setup", "parse_level", "BUFFER_LINES"]

routes = web.RouteTableDef()

#: Lines a subscriber may have waiting before new ones are dropped (Consul: 512).
BUFFER_LINES = 512
#: How often an idle stream checks that its client is still there.
IDLE_CHECK = 1.0
_LEVELS = {
    "TRACE": logging.DEBUG,
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "ERR": logging.ERROR,
    "ERROR": logging.ERROR,
}


def parse_level(text: str) -> int:
    """A Consul log level name (any case; empty = INFO) → a ``logging`` level."""
    level = _LEVELS.get((text or "INFO").upper())
    if level is None:
        raise InvalidRequest(f"Unknown log level: {text}", field="loglevel")
    return level


class Subscriber:
    """One reader's bounded queue of formatted lines."""

    __slots__ = ("level", "json", "dropped", "_lines", "_lock", "_wake", "_loop", "closed")

    def __init__(self, level: int, *, json: bool, loop: asyncio.AbstractEventLoop) -> None:
        self.level = level
        self.json = json
        self.dropped = 0
        self.closed = False
        self._lines: collections.deque[str] = collections.deque()
        self._lock = threading.Lock()
        self._wake = asyncio.Event()
        self._loop = loop

    def offer(self, line: str) -> None:
        """Queue ``line`` unless the buffer is full (then count it dropped); never blocks."""
        with self._lock:
            if len(self._lines) >= BUFFER_LINES:
                self.dropped += 1
                return
            self._lines.append(line)
        self._notify()

    def close(self) -> None:
        """End the stream (the app is shutting down)."""
        self.closed = True
        self._notify()

    def _notify(self) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._wake.set()
        else:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody reads
                self._loop.call_soon_threadsafe(self._wake.set)

    def take(self) -> list[str]:
        """Every waiting line, oldest first."""
        with self._lock:
            lines = list(self._lines)
            self._lines.clear()
        self._wake.clear()
        return lines

    async def wait(self, timeout: float) -> None:
        """Until a line arrives, the stream is closed, or ``timeout`` passes."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()


class LogHub(logging.Handler):
    """Fans log records out to the monitor subscribers."""

    def __init__(self) -> None:
        super().__init__(level=logging.NOTSET)
        self._subscribers: set[Subscriber] = set()
        self._base_level = logging.INFO  # the root logger's level without subscribers
        self._text = KeyValueFormatter()
        self._json = JSONFormatter()

    def attach(self) -> None:
        """Listen to the root logger (whose level is the node's ``log_level``)."""
        root = logging.getLogger()
        self._base_level = root.level
        root.addHandler(self)

    def detach(self) -> None:
        """End every stream and stop listening; the root logger gets its level back."""
        for sub in list(self._subscribers):
            sub.close()
        self._subscribers.clear()
        root = logging.getLogger()
        root.removeHandler(self)
        root.setLevel(self._base_level)

    def set_base_level(self, level: int) -> None:
        """The node's log level changed (reload): keep it under the subscribers' needs."""
        self._base_level = level
        self._apply_level()

    def subscribe(self, sub: Subscriber) -> None:
        """Start delivering to ``sub``; the root logger lets its level through."""
        self._subscribers.add(sub)
        self._apply_level()

    def unsubscribe(self, sub: Subscriber) -> None:
        """Stop delivering to ``sub``."""
        self._subscribers.discard(sub)
        self._apply_level()

    def _apply_level(self) -> None:
        # A monitor at debug sees debug records even when the node logs at info: the
        # root logger lets them through, and the stderr handler keeps its own level.
        levels = [self._base_level, *(s.level for s in self._subscribers)]
        logging.getLogger().setLevel(min(levels))

    def emit(self, record: logging.LogRecord) -> None:
        """Format ``record`` at most once per format and offer it to each subscriber."""
        subs = [s for s in list(self._subscribers) if record.levelno >= s.level]
        if not subs:
            return
        try:
            text = self._text.format(record) if any(not s.json for s in subs) else ""
            as_json = self._json.format(record) if any(s.json for s in subs) else ""
        except Exception:  # a record that cannot be formatted must not break logging
            self.handleError(record)
            return
        for sub in subs:
            sub.offer((as_json if sub.json else text) + "\n")


HUB: web.AppKey[LogHub] = web.AppKey("log_hub", LogHub)


def setup(app: web.Application) -> None:
    """Give ``app`` a hub that listens to the root logger while the app runs."""
    hub = LogHub()
    app[HUB] = hub

    async def attach(app: web.Application) -> None:
        del app
        hub.attach()

    async def detach(app: web.Application) -> None:
        del app
        hub.detach()

    app.on_startup.append(attach)
    app.on_shutdown.append(detach)


@routes.get("/v1/agent/monitor")
async def monitor(request: web.Request) -> web.StreamResponse:
    """Stream log lines at ``?loglevel=`` or above (``?logjson``: JSON lines)."""
    level = parse_level(request.query.get("loglevel", ""))
    hub = request.app[HUB]
    sub = Subscriber(level, json="logjson" in request.query, loop=asyncio.get_running_loop())
    resp = web.StreamResponse(status=200, headers={"Content-Type": "text/plain; charset=utf-8"})
    await resp.prepare(request)
    hub.subscribe(sub)
    try:
        await _pump(request, resp, sub)
    finally:
        hub.unsubscribe(sub)
        if sub.dropped:
            logging.getLogger(__name__).warning(
                "Dropped logs during monitor request", extra={"dropped_count": sub.dropped}
            )
    return resp


async def _pump(request: web.Request, resp: web.StreamResponse, sub: Subscriber) -> None:
    while not sub.closed:
        lines = sub.take()
        if lines:
            try:
                await resp.write("".join(lines).encode())
            except (ConnectionError, RuntimeError):  # the client went away
                return
            continue
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        await sub.wait(IDLE_CHECK)
