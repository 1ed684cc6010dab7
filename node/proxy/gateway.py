"""The mesh gateway listener: route TLS by SNI without terminating it.

Rule: the gateway never holds a key or a certificate. Per connection it reads the
ClientHello into a buffer (bounded by ``MAX_HELLO_BYTES`` and ``hello_timeout``), asks the
injected router where the SNI goes under the current ``GatewayPlan``, dials one healthy
endpoint (random start, the next on refusal, at most ``MAX_DIAL_ATTEMPTS``), writes the
buffered hello to it first, and hands both sockets to a splice ``Relay``. Anything else
(no SNI, garbage, foreign trust domain, unknown service or DC, slow sender, over the
connection limit) is closed, counted by reason and logged; nothing a client sends can
stop the listener.

The hot path avoids asyncio streams and tasks: the listening socket sits in the same
private epoll set as the connections and is read in batches of ``ACCEPT_BATCH`` accepts,
each connection is a few callbacks on raw sockets (accepted ones use MSG_DONTWAIT per
call instead of an O_NONBLOCK ioctl each), and timeouts are enforced by one sweep per
listener on a coarse clock instead of a timer (or a clock read) per connection.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import ipaddress
import logging
import random
import socket
from collections.abc import Callable

from node.clock import Clock, MonotonicClock
from node.errors import ProxyError
from node.proxy.metrics import ListenerStats
from node.proxy.plan import Endpoint, GatewayPlan, Route, RouteKind, route_gateway
from node.proxy.relay import SPLICE_SUPPORTED, PipePool, Poller, Relay, make_poller, make_scratch
from node.proxy.sni import MAX_HELLO_BYTES, HelloStatus, parse_client_hello

_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)

__all__ = [
    "ACCEPT_BATCH",
    "HELLO_TIMEOUT",
    "IDLE_TIMEOUT",
    "MAX_CONNECTIONS",
    "MAX_DIAL_ATTEMPTS",
    "Router",
    "GatewayListener",
    "bind_listener",
]

log = logging.getLogger(__name__)

ACCEPT_BATCH = 64  # accepts per readiness callback; bounds one callback's work
HELLO_TIMEOUT = 5.0  # seconds for the whole ClientHello to arrive
IDLE_TIMEOUT = 600.0  # seconds without a byte either way before a relay is closed
MAX_CONNECTIONS = 10_000  # open (incl. not yet routed) connections per listener
MAX_DIAL_ATTEMPTS = 3  # endpoints tried per connection before giving up
SWEEP_INTERVAL = 0.25  # seconds between timeout sweeps
ROUTE_CACHE_SIZE = 4096  # distinct SNIs remembered per plan (names come from clients)
LISTEN_BACKLOG = 4096

Router = Callable[[GatewayPlan, str], Route]


def bind_listener(address: str, port: int, what: str) -> socket.socket:
    """A non-blocking listening socket, or ``ProxyError`` saying why it cannot be bound."""
    host = address or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, backlog=LISTEN_BACKLOG)
    except OSError as exc:
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise ProxyError(f"{what}: cannot listen on {host}:{port}: {reason}") from exc
    sock.setblocking(False)
    return sock


@functools.lru_cache(maxsize=4096)
def _family_of(address: str) -> socket.AddressFamily | None:
    """AF_INET/AF_INET6 for an IP literal; None for anything that would need DNS."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    return socket.AF_INET6 if ip.version == 6 else socket.AF_INET


class _Pending:
    """A connection between accept and relay: reading the hello, then dialling."""

    __slots__ = (
        "gw",
        "sock",
        "fd",
        "buf",
        "deadline",
        "endpoints",
        "start",
        "attempt",
        "up",
        "reading",
        "relay",
    )

    def __init__(self, gw: GatewayListener, sock: socket.socket, deadline: float) -> None:
        self.gw = gw
        self.sock = sock
        self.fd = sock.fileno()
        self.buf = b""
        self.deadline = deadline
        self.endpoints: tuple[Endpoint, ...] = ()
        self.start = 0
        self.attempt = 0
        self.up: socket.socket | None = None
        self.reading = True  # our on_hello reader is registered on the client socket
        self.relay: Relay | None = None  # set when relaying with our reader still registered

    def on_hello(self) -> None:
        relay = self.relay
        if relay is not None:  # relaying: this reader now serves the relay
            relay.downstream_readable()
            return
        try:
            data = self.sock.recv(MAX_HELLO_BYTES - len(self.buf), _DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.gw.reject(self, "reset_before_hello")
            return
        if not data:
            self.gw.reject(self, "closed_before_hello")
            return
        self.buf = self.buf + data if self.buf else data
        result = parse_client_hello(self.buf)
        status = result.status
        if status is HelloStatus.NEED_MORE:
            return
        if status is HelloStatus.SNI:
            assert result.server_name is not None
            self.gw.route(self, result.server_name)
        elif status is HelloStatus.NO_SNI:
            self.gw.reject(self, "no_sni")
        else:
            self.gw.reject(self, "bad_hello", detail=result.reason)

    def stop_reading(self) -> None:
        if self.reading:
            self.reading = False
            self.gw.poller.remove_reader(self.fd)

    def on_connect(self) -> None:
        up = self.up
        assert up is not None
        self.gw.poller.remove_writer(up.fileno())
        err = up.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            up.close()
            self.up = None
            self.gw.dial_next(self, errno.errorcode.get(err, str(err)))
            return
        self.gw.connected(self)


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
        self._pending: dict[_Pending, None] = {}
        self._relays: dict[Relay, tuple[int, float]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._routes: dict[str, Route] = {}
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
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # In the private epoll set with the connections: one wakeup dispatches accepts
        # and relay events together (one Python callback from the loop, not two).
        self.poller.add_reader(self._sock.fileno(), self._on_accept)
        self._schedule_sweep()

    def update(self, plan: GatewayPlan) -> None:
        """Route new connections by ``plan``; open ones are untouched."""
        self.plan = plan
        self._routes.clear()

    def stop_accepting(self) -> None:
        """Close the listening socket; open connections run until they end."""
        if self._sock is not None:
            self.poller.remove_reader(self._sock.fileno())
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
    def _on_accept(self) -> None:
        lsock = self._sock
        if lsock is None:
            return
        stats = self.stats
        self._now = now = self._clock.monotonic()
        deadline = now + self.hello_timeout
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _addr = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE/ENFILE: leave the rest in the backlog
                log.warning(
                    "gateway accept failed", extra={"listener": self.plan.name, "error": str(exc)}
                )
                return
            stats.opened += 1
            if len(self._pending) + len(self._relays) >= self.max_connections:
                stats.reject("connection_limit")
                stats.closed += 1
                sock.close()
                continue
            stats.active += 1
            # TCP_NODELAY is inherited from the listening socket. The socket stays
            # blocking at the fd level (no FIONBIO ioctl): every read and write on it
            # passes MSG_DONTWAIT, and the relay sets O_NONBLOCK only if it splices.
            if not _DONTWAIT:  # a platform without per-call non-blocking I/O
                sock.setblocking(False)
            conn = _Pending(self, sock, deadline)
            self._pending[conn] = None
            self.poller.add_reader(conn.fd, conn.on_hello)

    # --- routing and dialling ----------------------------------------------------
    def route(self, conn: _Pending, server_name: str) -> None:
        # Decisions are pure functions of (plan, name): cache them until the plan changes.
        decision = self._routes.get(server_name)
        if decision is None:
            decision = self._router(self.plan, server_name)
            if len(self._routes) < ROUTE_CACHE_SIZE:
                self._routes[server_name] = decision
        if decision.kind is RouteKind.REJECT:
            self.reject(conn, decision.reason, detail=server_name)
            return
        conn.endpoints = decision.endpoints
        n = len(decision.endpoints)
        conn.start = self._rng.randrange(n) if n > 1 else 0
        # Coarse time (last accept batch or sweep): deadlines are swept every
        # SWEEP_INTERVAL anyway, so a clock read per connection buys nothing.
        conn.deadline = self._now + self.plan.connect_timeout
        self.dial_next(conn, "")

    def dial_next(self, conn: _Pending, last_error: str) -> None:
        eps = conn.endpoints
        while conn.attempt < min(len(eps), MAX_DIAL_ATTEMPTS):
            ep = eps[(conn.start + conn.attempt) % len(eps)]
            conn.attempt += 1
            family = _family_of(ep.address)
            if family is None:
                last_error = f"endpoint {ep} is not an IP address"
                continue
            up = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
            up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            err = up.connect_ex((ep.address, ep.port))
            if err in (0, errno.EINPROGRESS):
                conn.up = up
                err = self._send_hello(conn)
                if err == 0:
                    return
                if err != errno.EINPROGRESS:
                    conn.up = None
                    up.close()
                    last_error = errno.errorcode.get(err, str(err))
                    continue
                # Still connecting (a real network): wait for writability, quietly.
                conn.stop_reading()
                self.poller.add_writer(up.fileno(), conn.on_connect)
                return
            up.close()
            last_error = errno.errorcode.get(err, str(err))
        self.reject(conn, "upstream_unavailable", detail=last_error)

    def _send_hello(self, conn: _Pending) -> int:
        """Try to hand the hello over at once; on loopback and fast LANs the connect is
        already complete, which saves a writer registration per connection.
        Returns 0 (relaying), EINPROGRESS (wait for the connect) or the connect error."""
        assert conn.up is not None
        try:
            sent = conn.up.send(conn.buf)
        except (BlockingIOError, InterruptedError):
            return errno.EINPROGRESS
        except OSError as exc:
            if exc.errno in (errno.ENOTCONN, errno.EAGAIN):
                return errno.EINPROGRESS
            return exc.errno or errno.ECONNREFUSED
        self.connected(conn, sent)
        return 0

    def connected(self, conn: _Pending, sent: int = 0) -> None:
        """Upstream is connected and ``sent`` bytes of the hello are already there."""
        del self._pending[conn]
        assert conn.up is not None
        relay = Relay(
            self.poller,
            conn.sock,
            conn.up,
            stats=self.stats,
            pool=self._pool,
            scratch=self._scratch,
            on_close=self._relay_closed,
        )
        self._relays[relay] = (0, self._now)
        if conn.reading:
            conn.relay = relay
        relay.start(conn.buf[sent:], already_sent=sent, downstream_reader=conn.reading)

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
            self.poller.forget(conn.fd)  # closed right below: no unregistering needed
            if conn.up is not None:
                self.poller.forget(conn.up.fileno())
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
        for relay, (moved, since) in list(self._relays.items()):
            if relay.moved != moved:
                self._relays[relay] = (relay.moved, now)
            elif now - since >= self.idle_timeout:
                self.stats.reject("idle_timeout")
                relay.close()
        if self._sock is not None or self._pending or self._relays:
            self._schedule_sweep()
        else:  # stopped and drained: nothing will use the poller again
            self._sweeper = None
            self.poller.close()
