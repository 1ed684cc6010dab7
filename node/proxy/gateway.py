"""The mesh gateway listener: route TLS by SNI without terminating it.

Rule: the gateway never holds a key or a certificate. Per connection it reads the
ClientHello into a buffer (bounded by ``MAX_HELLO_BYTES`` and ``hello_timeout``), asks the
injected router where the SNI goes under the current ``GatewayPlan``, dials one healthy
endpoint (random start, the next on refusal, at most ``MAX_DIAL_ATTEMPTS``), writes the
buffered hello to it first, and hands both sockets to a splice ``Relay``. Anything else
(no SNI, garbage, foreign trust domain, unknown service or DC, slow sender, over the
connection limit) is closed, counted by reason and logged; nothing a client sends can
stop the listener.

The hot path avoids asyncio streams and tasks, and Python's ``socket.socket`` wrapper
too (its ``accept`` converts enums and runs Python ``__init__`` per connection): the
listening socket sits in the same private epoll set as the connections and is read in
batches of ``ACCEPT_BATCH`` raw accepts, accepted and dialled sockets are the C-level
``_socket.socket`` the stdlib wraps, each connection is one handler on its client fd
until the relay's two halves take over, accepted sockets use MSG_DONTWAIT per call
instead of an O_NONBLOCK ioctl each, route decisions (with their dial addresses) are
cached per SNI until the plan changes, and timeouts are enforced by one sweep per
listener on a coarse clock instead of a timer (or a clock read) per connection.
"""

from __future__ import annotations

import _socket
import asyncio
import errno
import functools
import ipaddress
import logging
import random
import socket
from collections.abc import Callable

from node.clock import Clock, MonotonicClock
from node.proxy.listen import ACCEPT_BATCH, bind_listener
from node.proxy.metrics import ListenerStats
from node.proxy.plan import (
    MAX_DIAL_ATTEMPTS,
    Endpoint,
    GatewayPlan,
    Route,
    RouteKind,
    route_gateway,
)
from node.proxy.pollers import EV_CLOSING, EV_WRITE, Poller, make_poller
from node.proxy.relay import AGAIN, DONTWAIT, SPLICE_SUPPORTED, PipePool, Relay, make_scratch
from node.proxy.sni import MAX_HELLO_BYTES, HelloStatus, parse_client_hello

__all__ = [
    "HELLO_TIMEOUT",
    "IDLE_TIMEOUT",
    "MAX_CONNECTIONS",
    "Router",
    "GatewayListener",
]

log = logging.getLogger(__name__)

HELLO_TIMEOUT = 5.0  # seconds for the whole ClientHello to arrive
IDLE_TIMEOUT = 600.0  # seconds without a byte either way before a relay is closed
MAX_CONNECTIONS = 10_000  # open (incl. not yet routed) connections per listener
SWEEP_INTERVAL = 0.25  # seconds between timeout sweeps (and byte-count reports)
ROUTE_CACHE_SIZE = 4096  # distinct SNIs remembered per plan (names come from clients)

Router = Callable[[GatewayPlan, str], Route]
_STREAM_NONBLOCK = socket.SOCK_STREAM | getattr(socket, "SOCK_NONBLOCK", 0)
_CONNECTING = (0, errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK)
# A cached routing answer: dial targets as (family, sockaddr), or a reject reason.
_Targets = tuple[tuple[int, tuple[str, int]], ...]


@functools.lru_cache(maxsize=4096)
def _family_of(address: str) -> int | None:
    """AF_INET/AF_INET6 for an IP literal; None for anything that would need DNS."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    return int(socket.AF_INET6 if ip.version == 6 else socket.AF_INET)


def _targets(endpoints: tuple[Endpoint, ...]) -> _Targets:
    """What ``connect`` takes for each endpoint; names that would need DNS are left out."""
    out = []
    for ep in endpoints:
        family = _family_of(ep.address)
        if family is not None:
            out.append((family, (ep.address, ep.port)))
    return tuple(out)


class _Pending:
    """The handler of a client socket until its relay starts: reads the hello."""

    __slots__ = (
        "gw",
        "sock",
        "fd",
        "buf",
        "deadline",
        "targets",
        "start",
        "attempt",
        "up",
        "hup",
        "more",
    )

    def __init__(self, gw: GatewayListener, sock: _socket.socket, fd: int, deadline: float):
        self.gw = gw
        self.sock = sock
        self.fd = fd
        self.buf = b""
        self.deadline = deadline
        self.targets: _Targets = ()
        self.start = 0
        self.attempt = 0
        self.up: _socket.socket | None = None  # set while a dial waits for its connect
        self.hup = False  # the client already sent its FIN
        self.more = False  # the last read filled its buffer: more may be queued

    def on_event(self, ev: int) -> None:
        if ev & EV_CLOSING:
            self.hup = True  # even while dialling: this edge will not come again
        if self.up is not None:
            return  # dialling: what the client sends waits for the relay
        gw = self.gw
        while True:  # more than once only after the FIN, to read up to the EOF
            want = MAX_HELLO_BYTES - len(self.buf)
            try:
                data = self.sock.recv(want, DONTWAIT)
            except AGAIN:
                return
            except OSError:
                gw.reject(self, "reset_before_hello")
                return
            if not data:
                gw.reject(self, "closed_before_hello")
                return
            self.more = len(data) == want
            self.buf = buf = self.buf + data if self.buf else data
            result = parse_client_hello(buf)
            status = result.status
            if status is HelloStatus.SNI:
                assert result.server_name is not None
                gw.route(self, result.server_name)
            elif status is HelloStatus.NO_SNI:
                gw.reject(self, "no_sni")
            elif status is HelloStatus.ERROR:
                gw.reject(self, "bad_hello", detail=result.reason)
            elif self.hup:
                continue
            return


class _Connect:
    """The handler of a dialled socket whose connect is still in progress."""

    __slots__ = ("gw", "conn")

    def __init__(self, gw: GatewayListener, conn: _Pending) -> None:
        self.gw, self.conn = gw, conn

    def on_event(self, ev: int) -> None:
        if ev & EV_WRITE:
            self.gw.connect_done(self.conn)


class GatewayListener:
    """One mesh gateway listening socket, routing by SNI under a swappable plan."""

    def __init__(
        self,
        plan: GatewayPlan,
        *,
        stats: ListenerStats,
        pool: PipePool | None = None,
        router: Router = route_gateway,
        rng: random.Random | None = None,
        clock: Clock | None = None,
        hello_timeout: float = HELLO_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        use_splice: bool = SPLICE_SUPPORTED,
        poller: Poller | None = None,
    ) -> None:
        self.plan = plan
        self.stats = stats
        self.loop = asyncio.get_running_loop()
        self._pool = (pool or PipePool()) if use_splice else None
        self._scratch = make_scratch()
        self.poller: Poller = poller or make_poller(self.loop)
        self._router = router
        self._rng = rng or random.Random()
        self._clock = clock or MonotonicClock()
        self.hello_timeout = hello_timeout
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self._sock: socket.socket | None = None
        self._family = 0
        self._pending: dict[_Pending, None] = {}
        self._relays: dict[Relay, None] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._routes: dict[str, _Targets | str] = {}
        self._accept_failed = False  # EMFILE and the like: retried by the sweep
        self._now = self._clock.monotonic()  # coarse: refreshed per accept batch and sweep

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); useful when the plan asked for port 0."""
        assert self._sock is not None
        host, port = self._sock.getsockname()[:2]
        return host, port

    @property
    def connections(self) -> int:
        """Connections held now (routing or relaying)."""
        return len(self._pending) + len(self._relays)

    def start(self, sock: socket.socket | None = None) -> None:
        """Listen (on ``sock`` if given, else the plan's address); ``ProxyError`` if we cannot."""
        plan = self.plan
        self._sock = sock or bind_listener(plan.bind_address, plan.bind_port, plan.name)
        self._sock.setblocking(False)
        self._family = int(self._sock.family)
        # Inherited by every accepted socket (Linux copies it from the listener).
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # In the private epoll set with the connections: one wakeup dispatches accepts
        # and relay events together (one Python callback from the loop, not two).
        self.poller.watch(self._sock.fileno(), self)
        self._schedule_sweep()

    def update(self, plan: GatewayPlan) -> None:
        """Route new connections by ``plan``; open ones are untouched."""
        self.plan = plan
        self._routes.clear()

    def stop_accepting(self) -> None:
        """Close the listening socket; open connections run until they end."""
        if self._sock is not None:
            self.poller.detach(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def close(self) -> None:
        """Stop listening and close every connection now."""
        self.stop_accepting()
        for conn in list(self._pending):
            self._drop(conn)
        for relay in list(self._relays):
            relay.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self.poller.close()

    # --- accepting ---------------------------------------------------------------
    def on_event(self, ev: int) -> None:
        """The listening socket is readable: accept a batch."""
        self._accept_batch()

    def _accept_batch(self) -> None:
        lsock = self._sock
        if lsock is None:
            return
        accept = lsock._accept  # type: ignore[attr-defined]  # (fd, address), no wrapper
        family, stats, pending, poller = self._family, self.stats, self._pending, self.poller
        self._now = now = self._clock.monotonic()
        deadline = now + self.hello_timeout
        for _ in range(ACCEPT_BATCH):
            try:
                fd, _addr = accept()
            except AGAIN:
                return
            except OSError as exc:  # EMFILE/ENFILE: leave the rest in the backlog
                self._accept_failed = True
                log.warning(
                    "gateway accept failed", extra={"listener": self.plan.name, "error": str(exc)}
                )
                return
            stats.opened += 1
            if len(pending) + len(self._relays) >= self.max_connections:
                stats.reject("connection_limit")
                stats.closed += 1
                _socket.socket(family, socket.SOCK_STREAM, 0, fd).close()
                continue
            stats.active += 1
            # TCP_NODELAY is inherited from the listening socket. The socket stays
            # blocking at the fd level (no FIONBIO ioctl): every read and write on it
            # passes MSG_DONTWAIT, and the relay sets O_NONBLOCK only if it splices.
            sock = _socket.socket(family, socket.SOCK_STREAM, 0, fd)
            if not DONTWAIT:  # a platform without per-call non-blocking I/O
                sock.setblocking(False)
            conn = _Pending(self, sock, fd, deadline)
            pending[conn] = None
            poller.watch(fd, conn)
        # A full batch: more may wait, and an edge-triggered poller will not say so again.
        poller.later(self._accept_batch)

    # --- routing and dialling ----------------------------------------------------
    def route(self, conn: _Pending, server_name: str) -> None:
        # Decisions are pure functions of (plan, name): cache them until the plan changes.
        decision = self._routes.get(server_name)
        if decision is None:
            decision = self._decide(server_name)
        if isinstance(decision, str):
            self.reject(conn, decision, detail=server_name)
            return
        conn.targets = decision
        n = len(decision)
        conn.start = self._rng.randrange(n) if n > 1 else 0
        # Coarse time (last accept batch or sweep): deadlines are swept every
        # SWEEP_INTERVAL anyway, so a clock read per connection buys nothing.
        conn.deadline = self._now + self.plan.connect_timeout
        self.dial_next(conn, "no endpoint has an IP address")

    def _decide(self, server_name: str) -> _Targets | str:
        route = self._router(self.plan, server_name)
        decision: _Targets | str = (
            route.reason if route.kind is RouteKind.REJECT else _targets(route.endpoints)
        )
        if len(self._routes) < ROUTE_CACHE_SIZE:
            self._routes[server_name] = decision
        return decision

    def dial_next(self, conn: _Pending, last_error: str) -> None:
        targets = conn.targets
        while conn.attempt < min(len(targets), MAX_DIAL_ATTEMPTS):
            family, addr = targets[(conn.start + conn.attempt) % len(targets)]
            conn.attempt += 1
            up = _socket.socket(family, _STREAM_NONBLOCK)
            up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            err = up.connect_ex(addr)
            if err in _CONNECTING:
                err = self._send_hello(conn, up)
                if err == 0:
                    return
                if err == errno.EINPROGRESS:
                    # Still connecting (a real network): wait for writability, quietly.
                    conn.up = up
                    self.poller.stop_read(conn.fd)
                    self.poller.watch(up.fileno(), _Connect(self, conn), write=True)
                    return
            up.close()
            last_error = errno.errorcode.get(err, str(err))
        self.reject(conn, "upstream_unavailable", detail=last_error)

    def _send_hello(self, conn: _Pending, up: _socket.socket, *, waited: bool = False) -> int:
        """Hand the hello over at once: on loopback and fast LANs the connect is already
        complete, which saves a writer registration per connection.
        Returns 0 (relaying), EINPROGRESS (wait for the connect) or the connect error."""
        try:
            sent = up.send(conn.buf)
        except AGAIN:
            return errno.EINPROGRESS
        except OSError as exc:
            if exc.errno == errno.ENOTCONN:
                return errno.EINPROGRESS
            return exc.errno or errno.ECONNREFUSED
        self.connected(conn, up, sent, waited=waited)
        return 0

    def connect_done(self, conn: _Pending) -> None:
        """A dial in progress finished, one way or the other."""
        up = conn.up
        assert up is not None
        conn.up = None
        err = up.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if not err:
            err = self._send_hello(conn, up, waited=True)
            if err == 0:
                return
        self.poller.detach(up.fileno())
        up.close()
        self.dial_next(conn, errno.errorcode.get(err, str(err)))

    def connected(self, conn: _Pending, up: _socket.socket, sent: int, *, waited: bool) -> None:
        """``up`` is connected and ``sent`` bytes of the hello are already there;
        ``waited``: its connect was in progress, so it is watched and reads were off."""
        del self._pending[conn]
        relay = Relay.handoff(
            self.poller,
            conn.sock,
            up,
            first=conn.buf,
            sent=sent,
            hup=conn.hup,
            more=conn.more,
            waited=waited,
            now=self._now,
            stats=self.stats,
            pool=self._pool,
            scratch=self._scratch,
            on_close=self._relay_closed,
        )
        if not relay.closed:  # a relay that died at once has already said so
            self._relays[relay] = None

    def _relay_closed(self, relay: Relay) -> None:
        self._relays.pop(relay, None)

    # --- rejecting and timeouts --------------------------------------------------
    def reject(self, conn: _Pending, reason: str, *, detail: str = "") -> None:
        """Close a connection that will not be relayed, counted under ``reason``."""
        self.stats.reject(reason)
        log.info(
            "gateway closed connection",
            extra={"listener": self.plan.name, "reason": reason, "detail": detail},
        )
        self._drop(conn)

    def _drop(self, conn: _Pending) -> None:
        if conn in self._pending:
            del self._pending[conn]
            self.poller.detach(conn.fd)  # closed right below: that leaves the epoll set
            if conn.up is not None:
                self.poller.detach(conn.up.fileno())
                conn.up.close()
            conn.sock.close()
            self.stats.active -= 1
            self.stats.closed += 1

    def _schedule_sweep(self) -> None:
        self._sweeper = self.loop.call_later(SWEEP_INTERVAL, self._sweep)

    def _sweep(self) -> None:
        self._now = now = self._clock.monotonic()
        for conn in [c for c in self._pending if c.deadline <= now]:
            if conn.up is not None:
                self.reject(conn, "connect_timeout")
            else:
                self.reject(conn, "hello_timeout", detail=f"{len(conn.buf)} bytes")
        for relay in list(self._relays):
            if relay.idle_past(now, self.idle_timeout):
                self.stats.reject("idle_timeout")
                relay.close()
        if self._accept_failed:
            self._accept_failed = False
            self._accept_batch()
        if self._sock is not None or self._pending or self._relays:
            self._schedule_sweep()
        else:  # stopped and drained: nothing will use the poller again
            self._sweeper = None
            self.poller.close()
