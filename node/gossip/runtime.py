"""The asyncio driver of one gossip pool: sockets, time and encryption around the pure core.

Rule: this is the only place where a ``GossipProtocol`` meets I/O. Three loops (timers,
packets, inbound streams) feed the core bytes and ``clock.monotonic()`` and carry out the
actions it returns; none of them ever lets an exception escape (each failure is logged
with context and counted). Encryption happens here, not in the core: with a keyring,
outgoing bytes are sealed unless ``verify_outgoing`` is off, and incoming bytes that do
not decrypt are dropped and counted unless ``verify_incoming`` is off, in which case
they are taken as plaintext (Consul's rolling enablement of gossip encryption).

Timers: the timer loop sleeps until ``protocol.next_deadline()`` or until ``kick()``.
Every input kicks it, because an input can move the deadline earlier. A clock with an
awaitable ``sleep_until(t)`` (``node.testing.FakeClock``) is waited on in its own time,
so a test drives the runtime by moving fake time (or lets the clock autojump).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import ipaddress
import logging
import random
import socket
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

from node.clock import Clock, MonotonicClock
from node.errors import ConfigError, RemoteProtocolError
from node.gossip.config import GossipConfig
from node.gossip.delegate import Delegate
from node.gossip.keyring import ENCRYPTION_OVERHEAD, Keyring
from node.gossip.messages import Address, MemberStatus, MessageType, split_compound
from node.gossip.protocol import (
    Action,
    GossipProtocol,
    MemberChanged,
    MemberReaped,
    SendPacket,
    SendStream,
)
from node.gossip.state import Member
from node.gossip.transport import NetTransport, Stream, Transport

__all__ = [
    "MAX_INBOUND_STREAMS",
    "PACKET_LABEL",
    "STREAM_LABEL",
    "GossipRuntime",
    "MemberCallback",
    "with_encryption_overhead",
    "resolve",
    "open_pool",
]

#: First pause of retry_join; it doubles up to the configured retry interval.
RETRY_JOIN_FIRST_DELAY = 0.5

log = logging.getLogger(__name__)

#: Inbound streams (push-pulls, TCP pings) served at once (memberlist maxPushPullRequests).
MAX_INBOUND_STREAMS = 128
#: GCM additional data: a sealed packet cannot be replayed as a stream, nor either as RPC.
PACKET_LABEL = b"meshnode-gossip-packet"
STREAM_LABEL = b"meshnode-gossip-stream"
#: Message types sent ahead of others when the socket pushes back: acks and nacks keep
#: probes from timing out, alive messages carry joins and refutations of false suspicion.
_PRIORITY_TYPES = frozenset({MessageType.ACK, MessageType.NACK, MessageType.ALIVE})

MemberCallback = Callable[[Member, MemberStatus | None], None]


def with_encryption_overhead(config: GossipConfig) -> GossipConfig:
    """``config`` with room for the 29-byte AES-GCM envelope in every packet."""
    if config.packet_overhead >= ENCRYPTION_OVERHEAD:
        return config
    return dataclasses.replace(config, packet_overhead=ENCRYPTION_OVERHEAD)


async def resolve(addr: Address) -> Address:
    """``addr`` with its host resolved to an IP literal (IPv4 preferred)."""
    host, port = addr
    try:
        ipaddress.ip_address(host)
        return addr
    except ValueError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    return (str(infos[0][4][0]), port)


def _is_priority(payload: bytes) -> bool:
    if not payload:
        return False
    if payload[0] != MessageType.COMPOUND:
        return payload[0] in _PRIORITY_TYPES
    try:
        return any(part[:1] and part[0] in _PRIORITY_TYPES for part in split_compound(payload))
    except RemoteProtocolError:
        return False


class GossipRuntime:
    """Runs one ``GossipProtocol`` on one ``Transport``."""

    def __init__(
        self,
        *,
        protocol: GossipProtocol,
        transport: Transport,
        clock: Clock,
        keyring: Keyring | None,
        on_member_change: MemberCallback | None = None,
        verify_incoming: bool = True,
        verify_outgoing: bool = True,
        pool: str = "",
        on_member_reaped: Callable[[Member], None] | None = None,
    ) -> None:
        self._protocol = protocol
        self._transport = transport
        self._clock = clock
        self._keyring = keyring
        self._on_member_change = on_member_change
        self._on_member_reaped = on_member_reaped
        self._verify_incoming = verify_incoming
        self._verify_outgoing = verify_outgoing
        # The pool name ("lan"/"wan") is authenticated too: a sealed LAN packet replayed
        # to a WAN port (same key) does not open.
        self._packet_label = PACKET_LABEL + pool.encode()
        self._stream_label = STREAM_LABEL + pool.encode()
        self._config = _config_of(protocol)
        if (
            keyring is not None
            and verify_outgoing
            and self._config.packet_overhead < ENCRYPTION_OVERHEAD
        ):
            raise ConfigError(
                f"gossip packet_overhead is {self._config.packet_overhead} but encryption adds "
                f"{ENCRYPTION_OVERHEAD} bytes; build the config with with_encryption_overhead()",
                key="packet_overhead",
            )
        self._kick = asyncio.Event()
        self._ticked = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._inbound = 0
        self._stats: collections.Counter[str] = collections.Counter()

    # ------------------------------------------------------------------ views

    @property
    def protocol(self) -> GossipProtocol:
        """The core this runtime drives (read it; feed it only through the runtime)."""
        return self._protocol

    @property
    def config(self) -> GossipConfig:
        """The core's configuration."""
        return self._config

    @property
    def transport(self) -> Transport:
        """The transport (its owner closes it after ``run`` ends)."""
        return self._transport

    @property
    def keyring(self) -> Keyring | None:
        """The keyring (shared object: install/use/remove on it take effect at once)."""
        return self._keyring

    def members(self) -> tuple[Member, ...]:
        """Snapshot of every known member, ourselves included."""
        return self._protocol.members()

    @property
    def stats(self) -> Mapping[str, int]:
        """Runtime, transport (``transport_*``) and core (``core_*``) counters together."""
        merged = dict(self._stats)
        merged.update({f"transport_{k}": v for k, v in self._transport.stats.items()})
        merged.update({f"core_{k}": v for k, v in self._protocol.stats.items()})
        return merged

    def kick(self) -> None:
        """Re-evaluate timers now (after the clock moved or an outside input)."""
        self._kick.set()

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Drive the core until cancelled. The transport stays open (its owner closes it)."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._guarded("timers", self._timer_loop))
                group.create_task(self._guarded("packets", self._packet_loop))
                group.create_task(self._guarded("streams", self._accept_loop))
        finally:
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=5.0)

    async def join(self, addrs: Sequence[Address]) -> int:
        """Push-pull with each address; returns how many answered."""
        targets: list[Address] = []
        for addr in addrs:
            try:
                targets.append(await resolve(addr))
            except OSError as exc:
                log.warning(
                    "join: cannot resolve",
                    extra={"addr": f"{addr[0]}:{addr[1]}", "error": str(exc)},
                )
        actions = self._protocol.join(targets, self._clock.monotonic())
        streams = [a for a in actions if isinstance(a, SendStream)]
        self._execute([a for a in actions if not isinstance(a, SendStream)])
        results = await asyncio.gather(*(self._exchange(s) for s in streams))
        self.kick()
        return sum(results)

    async def retry_join(
        self, addrs: Sequence[Address], interval: float, max_attempts: int | None = None
    ) -> int:
        """``join`` until at least one address answers; 0 if ``max_attempts`` ran out.

        The pause doubles from ``RETRY_JOIN_FIRST_DELAY`` up to ``interval``: nodes started
        together (a new cluster, a demo) find each other in about a second instead of
        waiting out Consul's fixed 30 s, and a long outage still costs one try per
        ``interval``.
        """
        attempt = 0
        while max_attempts is None or attempt < max_attempts:
            attempt += 1
            joined = await self.join(addrs)
            if joined:
                log.info(
                    "join: answered",
                    extra={"answered": joined, "asked": len(addrs), "attempt": attempt},
                )
                return joined
            shown = ", ".join(f"{h}:{p}" for h, p in addrs)
            delay = min(interval, RETRY_JOIN_FIRST_DELAY * 2 ** (attempt - 1))
            log.warning(
                "join: no answer; retrying",
                extra={"addrs": shown, "attempt": attempt, "retry_in_s": round(delay, 3)},
            )
            if max_attempts is None or attempt < max_attempts:
                await asyncio.sleep(delay)
        log.error("join: giving up", extra={"attempts": attempt})
        return 0

    async def leave(self, timeout: float) -> None:
        """Broadcast our leave and wait (at most ``timeout`` s) until it has been sent."""
        alone = self._protocol.num_live() <= 1  # counted before we turn "left" ourselves
        self._execute(self._protocol.leave(self._clock.monotonic()))
        self.kick()
        if alone:
            return  # nobody to tell
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self._protocol.broadcasts_pending:
                    self._ticked.clear()
                    await self._ticked.wait()

    def update_tags(self, tags: Mapping[str, str]) -> None:
        """Announce new tags (e.g. a changed RPC port) to the pool."""
        self._execute(self._protocol.update_tags(tags, self._clock.monotonic()))
        self.kick()

    def force_leave(self, name: str) -> None:
        """Mark a failed member as left (``meshnode force-leave``) and tell the pool."""
        self._execute(self._protocol.force_leave(name, self._clock.monotonic()))
        self.kick()

    # ------------------------------------------------------------------ loops

    async def _guarded(self, name: str, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        # Each loop catches per-item errors itself; this is the last line: restart, never die.
        while True:
            try:
                await loop()
            except Exception:
                self._stats[f"{name}_loop_restarts"] += 1
                log.exception("gossip loop failed; restarting", extra={"loop": name})
                await asyncio.sleep(0.1)

    async def _timer_loop(self) -> None:
        while True:
            self._kick.clear()
            try:
                self._execute(self._protocol.tick(self._clock.monotonic()))
            except Exception:
                self._stats["tick_errors"] += 1
                log.exception("gossip tick failed")
            self._ticked.set()
            await self._wait(self._protocol.next_deadline())

    async def _wait(self, deadline: float | None) -> None:
        """Until ``deadline`` on our clock, or a kick, whichever comes first."""
        sleep_until = getattr(self._clock, "sleep_until", None)
        if deadline is None or sleep_until is None:
            delay = None if deadline is None else max(0.0, deadline - self._clock.monotonic())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._kick.wait()
            return
        # A clock that can wait on its own time (node.testing.FakeClock) is raced with the kick.
        kicked = asyncio.ensure_future(self._kick.wait())
        due = asyncio.ensure_future(sleep_until(deadline))
        try:
            await asyncio.wait((kicked, due), return_when=asyncio.FIRST_COMPLETED)
        finally:
            kicked.cancel()
            due.cancel()

    async def _packet_loop(self) -> None:
        while True:
            packet = await self._transport.recv_packet()
            plain = self._open(packet.payload, self._packet_label, "packet", packet.source)
            if plain is None:
                continue
            try:
                actions = self._protocol.receive_packet(
                    plain, packet.source, self._clock.monotonic()
                )
                self._execute(actions)
            except Exception:
                self._stats["packet_errors"] += 1
                log.exception(
                    "gossip packet failed", extra={"from": f"{packet.source[0]}:{packet.source[1]}"}
                )
            self._kick.set()

    async def _accept_loop(self) -> None:
        while True:
            stream = await self._transport.accept()
            if self._inbound >= MAX_INBOUND_STREAMS:
                self._stats["streams_refused_busy"] += 1
                stream.close()
                continue
            self._inbound += 1
            self._spawn(self._serve_stream(stream))

    async def _serve_stream(self, stream: Stream) -> None:
        source = stream.remote
        try:
            data = await stream.read_frame(timeout=self._config.tcp_timeout)
            plain = self._open(data, self._stream_label, "stream", source)
            if plain is None:
                return
            reply, actions = self._protocol.receive_stream(plain, source, self._clock.monotonic())
            self._execute(actions)
            self._kick.set()
            if reply is not None:
                async with asyncio.timeout(self._config.tcp_timeout):
                    await stream.write_frame(self._seal(reply, self._stream_label))
        except (TimeoutError, RemoteProtocolError, OSError) as exc:
            self._stats["inbound_stream_failures"] += 1
            log.debug(
                "gossip stream failed",
                extra={"from": f"{source[0]}:{source[1]}", "error": str(exc)},
            )
        except Exception:
            self._stats["inbound_stream_failures"] += 1
            log.exception("gossip stream failed", extra={"from": f"{source[0]}:{source[1]}"})
        finally:
            self._inbound -= 1
            stream.close()

    # ------------------------------------------------------------------ actions

    def _execute(self, actions: Sequence[Action]) -> None:
        for action in actions:
            if isinstance(action, SendPacket):
                self._send_packet(action)
            elif isinstance(action, SendStream):
                self._spawn(self._exchange(action))
            elif isinstance(action, MemberChanged):
                self._notify(action.member, action.old)
            elif isinstance(action, MemberReaped):
                log.info(
                    "gossip: forgot member",
                    extra={"member": action.member.name, "status": str(action.member.status)},
                )
                self._callback(self._on_member_reaped, action.member)

    def _send_packet(self, action: SendPacket) -> None:
        payload = self._seal(action.payload, self._packet_label)
        if not self._transport.write_to(payload, action.to, priority=_is_priority(action.payload)):
            self._stats["packets_not_sent"] += 1

    def _notify(self, member: Member, old: MemberStatus | None) -> None:
        if old is not member.status:
            log.info(
                "gossip: member status changed",
                extra={"member": member.name, "status": str(member.status), "was": str(old)},
            )
        self._callback(self._on_member_change, member, old)

    def _callback(self, callback: Callable[..., None] | None, member: Member, *rest: Any) -> None:
        if callback is None:
            return
        try:
            callback(member, *rest)
        except Exception:
            self._stats["callback_errors"] += 1
            log.exception("member callback failed", extra={"member": member.name})

    async def _exchange(self, action: SendStream) -> bool:
        """Run one outbound stream request; ``True`` if a usable reply came back."""
        where = f"{action.to[0]}:{action.to[1]}"
        try:
            async with asyncio.timeout(self._config.tcp_timeout):
                stream = await self._transport.dial(action.to, self._config.tcp_timeout)
                try:
                    await stream.write_frame(self._seal(action.payload, self._stream_label))
                    data = await stream.read_frame(timeout=self._config.tcp_timeout)
                finally:
                    stream.close()
            plain = self._open(data, self._stream_label, "stream reply", action.to)
        except (TimeoutError, RemoteProtocolError, OSError) as exc:
            self._stats["outbound_stream_failures"] += 1
            log.debug("gossip stream failed", extra={"to": str(where), "error": str(exc)})
            plain = None
        except Exception:  # e.g. an unencodable payload: still tell the core it failed
            self._stats["outbound_stream_failures"] += 1
            log.exception("gossip stream failed", extra={"to": str(where)})
            plain = None
        try:
            if plain is None:
                self._execute(self._protocol.stream_failed(action.ref, self._clock.monotonic()))
                return False
            self._execute(
                self._protocol.receive_stream_reply(action.ref, plain, self._clock.monotonic())
            )
            return plain[:1] != bytes((MessageType.ERR,))
        except Exception:
            self._stats["stream_errors"] += 1
            log.exception("gossip stream reply failed", extra={"from": str(where)})
            return False
        finally:
            self._kick.set()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ encryption

    def _seal(self, plain: bytes, label: bytes) -> bytes:
        if self._keyring is None or not self._verify_outgoing:
            return plain
        return self._keyring.encrypt(plain, label)

    def _open(self, data: bytes, label: bytes, what: str, source: Address) -> bytes | None:
        """Plaintext to act on, or ``None`` when the bytes must be dropped (counted)."""
        if self._keyring is None:
            return data
        try:
            return self._keyring.decrypt(data, label)
        except RemoteProtocolError as exc:
            if not self._verify_incoming:
                self._stats["accepted_plaintext"] += 1
                return data
            self._stats["dropped_undecryptable"] += 1
            count = self._stats["dropped_undecryptable"]
            # Loud enough to diagnose a key mismatch, quiet enough not to flood the log.
            level = logging.WARNING if count == 1 or count % 100 == 0 else logging.DEBUG
            log.log(
                level,
                "dropping %s from %s:%s: %s (%d dropped so far)",
                what,
                source[0],
                source[1],
                exc,
                count,
            )
            return None


async def open_pool(
    *,
    name: str,
    bind: Address,
    advertise: Address | None,
    config: GossipConfig,
    tags: Mapping[str, str],
    keyring: Keyring | None,
    pool: str,
    delegate: Delegate | None = None,
    on_member_change: MemberCallback | None = None,
    on_member_reaped: Callable[[Member], None] | None = None,
    verify_incoming: bool = True,
    verify_outgoing: bool = True,
    clock: Clock | None = None,
    rng: random.Random | None = None,
) -> GossipRuntime:
    """Bind a ``NetTransport`` on ``bind`` and build the core and its runtime.

    The core advertises ``advertise`` (a port of 0 there, or ``advertise=None``, means the
    bound port — useful with ``bind`` port 0). The encryption overhead is reserved in
    the packet budget when needed. The caller runs ``runtime.run()`` and closes
    ``runtime.transport`` afterwards.
    """
    transport = await NetTransport.bind(bind[0], bind[1], max_packet=config.udp_buffer_size)
    host, port = advertise if advertise is not None else transport.local_addr
    if keyring is not None and verify_outgoing:
        config = with_encryption_overhead(config)
    clock = clock if clock is not None else MonotonicClock()
    protocol = GossipProtocol(
        config=config,
        name=name,
        addr=(host, port or transport.local_addr[1]),
        tags=tags,
        rng=rng if rng is not None else random.Random(),
        now=clock.monotonic(),
        delegate=delegate,
    )
    return GossipRuntime(
        protocol=protocol,
        transport=transport,
        clock=clock,
        keyring=keyring,
        on_member_change=on_member_change,
        on_member_reaped=on_member_reaped,
        verify_incoming=verify_incoming,
        verify_outgoing=verify_outgoing,
        pool=pool,
    )


def _config_of(protocol: GossipProtocol) -> GossipConfig:
    config = getattr(protocol, "config", None)
    if isinstance(config, GossipConfig):
        return config
    fallback: GossipConfig = protocol._cfg  # until the core exposes ``config``
    return fallback
