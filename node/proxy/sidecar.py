"""Sidecar listeners: the app's upstream ports (TLS out) and the public mTLS port (TLS in).

Rule: no byte reaches the other side before identity is settled. The upstream listener
holds the app's bytes (reading paused) until the TLS connection to the chosen endpoint
is up and the server's SPIFFE id names the target service; the public listener completes
the handshake (client certificate required, chained to the roots), reads the source
service from the client's SPIFFE id, asks ``authorize(source)`` and only then dials the
local app. Any failure closes the connection, is counted by reason and logged.

Certificates come from a ``TLSState`` the manager replaces on leaf or root rotation:
new connections use the new contexts, open ones keep theirs. Relaying is two small
``asyncio.Protocol`` halves with flow control (TLS cannot be spliced).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random
import socket
import ssl
from collections.abc import Callable
from typing import cast

from node.connect.tls import (
    ResumingClientContext,
    ServerContextSwitch,
    make_client_context,
    make_server_context,
    peer_spiffe_id,
    resumption_key,
)
from node.errors import ProxyError, TrustError
from node.proxy.listen import ACCEPT_BATCH, bind_listener
from node.proxy.metrics import ListenerStats
from node.proxy.plan import MAX_DIAL_ATTEMPTS, Endpoint, PublicPlan, TLSMaterial, UpstreamPlan

__all__ = [
    "HANDSHAKE_TIMEOUT",
    "Authorizer",
    "TLSState",
    "UpstreamListener",
    "PublicListener",
]

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0  # seconds for a TLS handshake, either side
LISTEN_BACKLOG = 1024
# Flow control: stop reading one side when the other has this much unsent.
WRITE_HIGH_WATER = 1 << 20

Authorizer = Callable[[str], bool]


class TLSState:
    """The current client and server contexts of one sidecar; ``update`` on rotation."""

    __slots__ = ("material", "client", "server")

    def __init__(self, material: TLSMaterial) -> None:
        self.material = material
        self.client = make_client_context(material.cert_pem, material.key_pem, material.roots_pem)
        self.server = ServerContextSwitch(
            make_server_context(material.cert_pem, material.key_pem, material.roots_pem)
        )

    @property
    def trust_domain(self) -> str:
        return self.material.trust_domain

    def update(self, material: TLSMaterial) -> None:
        """Build contexts for new material; no-op when it is unchanged."""
        if material == self.material:
            return
        client = make_client_context(material.cert_pem, material.key_pem, material.roots_pem)
        server = make_server_context(material.cert_pem, material.key_pem, material.roots_pem)
        self.material, self.client = material, client
        self.server.replace(server)


class _Half(asyncio.Protocol):
    """One side of a relay; holds what arrives until it is linked to its peer."""

    __slots__ = (
        "transport",
        "peer",
        "held",
        "eof",
        "lost",
        "stats",
        "outbound",
        "on_made",
        "on_lost",
        "resume",
    )

    def __init__(self, stats: ListenerStats, *, outbound: bool) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Half | None = None
        self.held: list[bytes] = []
        self.eof = False
        self.lost = False
        self.stats = stats
        self.outbound = outbound  # True: bytes from this side go downstream → upstream
        self.on_made: Callable[[_Half], None] | None = None
        self.on_lost: Callable[[], None] | None = None
        # Upstream TLS side: where to keep the session once its ticket has arrived.
        self.resume: tuple[ResumingClientContext, object, ssl.SSLObject] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they implement it.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        if self.on_made is not None:
            self.on_made(self)

    def data_received(self, data: bytes) -> None:
        if self.resume is not None:
            # TLS 1.3 tickets follow the handshake: by the first reply they are in.
            ctx, key, sslobj = self.resume
            self.resume = None
            ctx.remember(key, sslobj)
        if self.outbound:
            self.stats.bytes_in += len(data)
        else:
            self.stats.bytes_out += len(data)
        peer = self.peer
        if peer is None or peer.transport is None:
            self.held.append(data)
            assert self.transport is not None
            self.transport.pause_reading()
            return
        peer.transport.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        if self.peer is not None:
            self.peer.send_eof()
        # Keep our write side open for the reply: plain TCP can half-close; asyncio's TLS
        # transport cannot (it closes after EOF whatever we return, and warns on True).
        t = self.transport
        return t is not None and t.get_extra_info("sslcontext") is None

    def send_eof(self) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        if t.can_write_eof():
            t.write_eof()
        else:
            # asyncio's TLS transport cannot half-close: flush, send close_notify, close.
            # A reply the far side sends after seeing EOF is lost (documented limit).
            t.close()

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.mark_lost()
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()

    def mark_lost(self) -> None:
        """Record the end of this side once (counters), however it ended."""
        self.lost = True
        if self.on_lost is not None:
            self.on_lost()
            self.on_lost = None

    def link(self, peer: _Half) -> None:
        """Connect two halves and release what each held."""
        self.peer, peer.peer = peer, self
        for a, b in ((self, peer), (peer, self)):
            assert a.transport is not None and b.transport is not None
            for chunk in a.held:
                b.transport.write(chunk)
            a.held.clear()
            if a.eof:
                b.send_eof()
            elif not a.lost:
                a.transport.resume_reading()


async def _start_server(
    factory: Callable[[], asyncio.Protocol], host: str, port: int, what: str
) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    try:
        return await loop.create_server(factory, host or "0.0.0.0", port, backlog=LISTEN_BACKLOG)
    except OSError as exc:
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise ProxyError(f"{what}: cannot listen on {host}:{port}: {reason}") from exc


class _Listener:
    """What both sidecar listeners share: server lifetime, connection tasks, counters."""

    def __init__(self, name: str, stats: ListenerStats) -> None:
        self.name = name
        self.stats = stats
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.halves: set[_Half] = set()

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port)."""
        assert self.server is not None
        host, port = self.server.sockets[0].getsockname()[:2]
        return host, port

    def spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def opened(self, half: _Half) -> None:
        self.stats.opened += 1
        self.stats.active += 1
        self.halves.add(half)

        def lost() -> None:
            self.halves.discard(half)
            self.stats.active -= 1
            self.stats.closed += 1

        half.on_lost = lost

    def reject(self, half: _Half, reason: str, detail: str = "") -> None:
        self.stats.reject(reason)
        log.info(
            "sidecar closed connection",
            extra={"listener": self.name, "reason": reason, "detail": detail},
        )
        if half.transport is not None:
            half.transport.abort()
        half.mark_lost()

    def stop_accepting(self) -> None:
        """Close the listening socket; open connections run on."""
        if self.server is not None:
            self.server.close()
            self.server = None

    def close(self) -> None:
        """Stop listening and close every connection now."""
        self.stop_accepting()
        for task in list(self.tasks):
            task.cancel()
        for half in list(self.halves):
            if half.transport is not None:
                half.transport.abort()


class UpstreamListener(_Listener):
    """Plain TCP from the app → mTLS to an endpoint of the plan's target."""

    def __init__(
        self,
        plan: UpstreamPlan,
        *,
        tls: TLSState,
        stats: ListenerStats,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(plan.name, stats)
        self.plan = plan
        self.tls = tls
        self._rng = rng or random.Random()

    async def start(self) -> None:
        """Listen on the plan's bind address; ``ProxyError`` if we cannot."""
        self.server = await _start_server(
            self._accepted, self.plan.bind_address, self.plan.bind_port, self.name
        )

    def update(self, plan: UpstreamPlan) -> None:
        """New connections follow ``plan`` (same bind address and port)."""
        self.plan = plan

    def _accepted(self) -> _Half:
        half = _Half(self.stats, outbound=True)
        self.opened(half)
        half.on_made = self._start_connect
        return half

    def _start_connect(self, app: _Half) -> None:
        assert app.transport is not None
        app.transport.pause_reading()  # hold the app's bytes until the upstream is verified
        self.spawn(self._connect(app))

    async def _connect(self, app: _Half) -> None:
        plan = self.plan
        eps = plan.endpoints
        if not eps:
            self.reject(app, "no_healthy_endpoint", f"{plan.target_service} in {plan.target_dc}")
            return
        start = self._rng.randrange(len(eps))
        last = ""
        for i in range(min(len(eps), MAX_DIAL_ATTEMPTS)):
            ep = eps[(start + i) % len(eps)]
            try:
                remote = await self._dial(plan, ep)
            except TrustError as exc:
                self.reject(app, "peer_identity", str(exc))
                return
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                last = f"{ep}: {exc}"
                continue
            if app.lost:
                assert remote.transport is not None
                remote.transport.close()
                return
            app.link(remote)
            return
        self.reject(app, "upstream_unavailable", last)

    async def _dial(self, plan: UpstreamPlan, ep: Endpoint) -> _Half:
        loop = asyncio.get_running_loop()
        remote = _Half(self.stats, outbound=False)
        ctx = self.tls.client
        key = (ep.address, ep.port, plan.sni)
        token = resumption_key.set(key)  # offer this endpoint's last session, if any
        try:
            async with asyncio.timeout(plan.connect_timeout + HANDSHAKE_TIMEOUT):
                transport, _ = await loop.create_connection(
                    lambda: remote,
                    ep.address,
                    ep.port,
                    ssl=ctx,
                    server_hostname=plan.sni,
                    ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
                )
        finally:
            resumption_key.reset(token)
        sslobj = transport.get_extra_info("ssl_object")
        try:
            # Resumed or not, the session carries the server's certificate: check it.
            peer_spiffe_id(
                sslobj,
                trust_domain=self.tls.trust_domain,
                service=plan.target_service,
                datacenter=plan.target_dc,
            )
        except TrustError:
            transport.abort()
            raise
        if ctx.wants_session(key, sslobj.session_reused):
            remote.resume = (ctx, key, sslobj)
        return remote


class PublicListener(_Listener):
    """mTLS from other services → plain TCP to the local app, if intentions allow."""

    def __init__(
        self,
        plan: PublicPlan,
        *,
        tls: TLSState,
        stats: ListenerStats,
        authorize: Authorizer,
    ) -> None:
        super().__init__(plan.name, stats)
        self.plan = plan
        self.tls = tls
        self.authorize = authorize
        self._sock: socket.socket | None = None

    async def start(self) -> None:
        """Listen on the plan's bind address; ``ProxyError`` if we cannot."""
        # We accept ourselves and hand each socket to the TLS layer before any byte is
        # read, so a failed handshake is an exception we can count (a server made by
        # create_server(ssl=...) swallows it) and no plain transport ever sees the hello.
        self._sock = bind_listener(self.plan.bind_address, self.plan.bind_port, self.name)
        asyncio.get_running_loop().add_reader(self._sock.fileno(), self._on_accept)

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port)."""
        assert self._sock is not None
        host, port = self._sock.getsockname()[:2]
        return host, port

    def stop_accepting(self) -> None:
        """Close the listening socket; open connections run on."""
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def update(self, plan: PublicPlan, authorize: Authorizer | None = None) -> None:
        """New connections follow ``plan`` (and ``authorize`` when given)."""
        self.plan = plan
        if authorize is not None:
            self.authorize = authorize

    def _on_accept(self) -> None:
        lsock = self._sock
        for _ in range(ACCEPT_BATCH):
            if lsock is None:
                return
            try:
                sock, _addr = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: leave the rest in the backlog
                log.warning(
                    "sidecar accept failed", extra={"listener": self.name, "error": str(exc)}
                )
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            half = _Half(self.stats, outbound=True)
            self.opened(half)
            self.spawn(self._serve(half, sock))

    async def _serve(self, client: _Half, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.connect_accepted_socket(
                lambda: client,
                sock,
                ssl=self.tls.server.listening,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
            )
        except (OSError, TimeoutError, ssl.SSLError, ConnectionError) as exc:
            sock.close()
            self.reject(client, "tls_handshake_failed", str(exc))
            return
        await self._authorize_and_link(client, transport)

    async def _authorize_and_link(self, client: _Half, transport: asyncio.Transport) -> None:
        plan = self.plan
        try:
            source = peer_spiffe_id(
                transport.get_extra_info("ssl_object"), trust_domain=self.tls.trust_domain
            )
        except TrustError as exc:
            self.reject(client, "peer_identity", str(exc))
            return
        if not self.authorize(source.service):
            self.reject(client, "intention_denied", f"{source.service} -> {plan.service}")
            return
        app = _Half(self.stats, outbound=False)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(plan.connect_timeout):
                await loop.create_connection(lambda: app, plan.local_address, plan.local_port)
        except (OSError, TimeoutError) as exc:
            self.reject(client, "local_app_unavailable", str(exc))
            return
        if client.lost:
            assert app.transport is not None
            app.transport.close()
            return
        client.link(app)
