"""The sans-I/O SWIM + Lifeguard state machine (memberlist semantics).

Rule: ``GossipProtocol`` performs no I/O and reads no clock. Every input method takes the
bytes and ``now`` and returns the ``Action``s it causes; ``next_deadline()`` says when
``tick(now)`` must next be called. Randomness comes only from the injected ``rng``. Merge
precedence is decided in ``state.py``; this module carries verdicts out.

Driver contract (the runtime follows this):

- ``SendPacket(to, payload)``: send one UDP datagram (payload <= ``config.packet_budget``).
- ``SendStream(to, payload, ref)``: open a TCP stream, send ``wire.frame(payload)``, read one
  framed reply and call ``receive_stream_reply(ref, reply, now)``; on connect/IO error or
  after ``config.tcp_timeout`` call ``stream_failed(ref, now)``. Push-pulls (periodic, and
  one per address from ``join``) and TCP fallback pings both use this — the core emits the
  push-pull payload itself (``make_push_pull`` is public for drivers that want it).
- ``MemberChanged(member, old)``: a member appeared (``old is None``), changed status, or
  changed address/tags. ``MemberReaped(member)``: a dead/left member was forgotten.
- Inbound streams: ``receive_stream(data, source, now)`` returns ``(reply or None, actions)``.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeAlias

from node.errors import LocalProtocolError, RemoteProtocolError
from node.gossip.awareness import Awareness
from node.gossip.broadcast import TransmitLimitedQueue
from node.gossip.config import GossipConfig
from node.gossip.delegate import Delegate
from node.gossip.messages import (
    COMPOUND_HEADER_BYTES,
    COMPOUND_PART_OVERHEAD,
    MAX_COMPOUND_PARTS,
    MAX_U32,
    Ack,
    Address,
    Alive,
    Dead,
    Decoder,
    Err,
    MemberStatus,
    Message,
    Nack,
    Ping,
    PingReq,
    PushPull,
    Suspect,
    UnknownMessageType,
    User,
    decode_tags,
    encode,
    encode_push_pull,
    encode_tags,
    make_compound,
    make_push_entry,
    split_compound,
)
from node.gossip.state import (
    Member,
    Verdict,
    is_redundant_alive,
    judge_alive,
    judge_dead,
    judge_suspect,
)
from node.gossip.suspicion import Suspicion, suspicion_timeouts

__all__ = [
    "GossipProtocol",
    "SendPacket",
    "SendStream",
    "MemberChanged",
    "MemberReaped",
    "Action",
    "push_pull_scale",
    "MAX_PENDING_RELAYS",
    "MAX_PENDING_STREAMS",
    "MAX_PACKET_BYTES",
    "NACK_TIMEOUT_FRACTION",
]

#: Indirect pings we relay at once for others; more are dropped (bounded memory).
MAX_PENDING_RELAYS = 1024
#: Outbound streams awaiting a reply; push-pulls beyond this are skipped.
MAX_PENDING_STREAMS = 256
#: Largest datagram we will even try to decode (UDP's own maximum payload).
MAX_PACKET_BYTES = 65507
#: A relay nacks after this fraction of the probe timeout without an ack.
NACK_TIMEOUT_FRACTION = 0.8
#: memberlist's pushPullScaleThreshold: clusters above this push-pull less often.
PUSH_PULL_SCALE_THRESHOLD = 32

_LIVE = (MemberStatus.ALIVE, MemberStatus.SUSPECT)
_NO_TAGS: Mapping[str, str] = MappingProxyType({})
#: Distinct tag sets memoised per core before the memo is reset.
_TAGS_MEMO_SIZE = 1024
_USER_OVERHEAD = 1 + COMPOUND_PART_OVERHEAD  # type byte + length prefix

# Enum members bound once: attribute lookups on the class are slow in hot paths.
_ALIVE, _SUSPECT, _DEAD, _LEFT = (
    MemberStatus.ALIVE,
    MemberStatus.SUSPECT,
    MemberStatus.DEAD,
    MemberStatus.LEFT,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class SendPacket:
    """Send ``payload`` as one UDP datagram to ``to``."""

    to: Address
    payload: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class SendStream:
    """Send ``payload`` as one framed TCP request; report the reply or failure with ``ref``."""

    to: Address
    payload: bytes
    ref: int


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberChanged:
    """``member`` is new (``old is None``) or its status/address/tags changed from ``old``."""

    member: Member
    old: MemberStatus | None


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberReaped:
    """A dead or left ``member`` was forgotten (reconnect/tombstone timeout)."""

    member: Member


Action: TypeAlias = SendPacket | SendStream | MemberChanged | MemberReaped


def push_pull_scale(interval: float, n: int) -> float:
    """memberlist pushPullScale: one extra interval per doubling above 32 members."""
    if n <= PUSH_PULL_SCALE_THRESHOLD:
        return interval
    mult = math.ceil(math.log2(n) - math.log2(PUSH_PULL_SCALE_THRESHOLD)) + 1.0
    return interval * mult


class _Probe:
    """Our probe of one member in progress."""

    __slots__ = (
        "seq",
        "target",
        "addr",
        "ack_deadline",
        "end",
        "expected_nacks",
        "nacks",
        "tcp_ok",
    )

    def __init__(self, seq: int, target: str, addr: Address, ack_deadline: float, end: float):
        self.seq = seq
        self.target = target
        self.addr = addr
        self.ack_deadline = ack_deadline
        self.end = end
        self.expected_nacks = 0
        self.nacks = 0
        self.tcp_ok = False


class _Relay:
    """An indirect ping we perform for ``origin``."""

    __slots__ = ("origin", "origin_seq", "nack", "deadline")

    def __init__(self, origin: Address, origin_seq: int, nack: bool, deadline: float):
        self.origin = origin
        self.origin_seq = origin_seq
        self.nack = nack
        self.deadline = deadline


# Timer kinds in the heap.
_T_ACK, _T_END, _T_RELAY, _T_SUSPECT = 0, 1, 2, 3
# Outbound stream kinds.
_S_PING, _S_PUSH_PULL = "ping", "push-pull"


class GossipProtocol:
    """One member's view of the cluster and its failure detector."""

    __slots__ = (
        "_cfg", "_name", "_addr", "_rng", "_delegate", "_decoder", "_members", "_names",
        "_probe_list", "_probe_pos", "_queue", "_awareness", "_suspicions",
        "_probe", "_relays", "_streams", "_seq", "_ref", "_timers", "_next_probe",
        "_next_gossip", "_next_push_pull", "_next_reap", "_next_reconnect", "_leaving", "_live", "_stats",
        "_reaccused", "_incarnation", "_meta", "_handlers", "_tags_memo",
    )  # fmt: skip

    def __init__(
        self,
        *,
        config: GossipConfig,
        name: str,
        addr: Address,
        tags: Mapping[str, str],
        rng: random.Random,
        now: float,
        delegate: Delegate | None = None,
        decoder: Decoder | None = None,
    ) -> None:
        self._cfg = config
        self._name = name
        self._addr = addr
        self._rng = rng
        self._delegate = delegate
        self._decoder = decoder if decoder is not None else Decoder()
        self._members: dict[str, Member] = {}
        self._names: list[str] = []  # for O(1) random picks
        self._probe_list: list[str] = []
        self._probe_pos = 0
        self._queue = TransmitLimitedQueue(config.retransmit_mult)
        self._awareness = Awareness(config.awareness_max_multiplier)
        self._suspicions: dict[str, Suspicion] = {}
        self._probe: _Probe | None = None
        self._relays: dict[int, _Relay] = {}
        self._streams: dict[int, tuple[str, Any]] = {}
        self._seq = rng.randrange(MAX_U32)
        self._ref = 0
        self._timers: list[tuple[float, int, Any]] = []
        # Stagger periodic work so a cluster started at once does not beat in lock-step.
        self._next_probe = now + rng.uniform(0, config.probe_interval)
        self._next_gossip = now + rng.uniform(0, config.gossip_interval)
        self._next_push_pull = now + rng.uniform(0, config.push_pull_interval)
        self._next_reap = now + config.reap_interval
        self._next_reconnect = now + config.reconnect_interval
        self._leaving = False
        self._live = 0
        self._stats: dict[str, int] = {}
        self._reaccused: dict[str, float] = {}
        self._incarnation = 0
        self._meta = encode_tags(tags)
        self._tags_memo: dict[bytes, Mapping[str, str]] = {}
        self._handlers: dict[type, Any] = {
            Ping: self._on_ping, PingReq: self._on_ping_req, Ack: self._on_ack,
            Nack: self._on_nack, Alive: self._on_alive, Suspect: self._on_suspect,
            Dead: self._on_dead, User: self._on_user,
        }  # fmt: skip
        self._announce_self(now)

    # ------------------------------------------------------------------ read-only views

    @property
    def config(self) -> GossipConfig:
        """The tuning profile this core runs with."""
        return self._cfg

    @property
    def local_name(self) -> str:
        """Our member name."""
        return self._name

    @property
    def local_addr(self) -> Address:
        """The address we advertise."""
        return self._addr

    @property
    def incarnation(self) -> int:
        """Our current incarnation number."""
        return self._incarnation

    @property
    def health_score(self) -> int:
        """Lifeguard local health score (0 = healthy)."""
        return self._awareness.score

    @property
    def broadcasts_pending(self) -> int:
        """Member broadcasts still queued for piggybacking (a leave waits for 0)."""
        return len(self._queue)

    @property
    def stats(self) -> Mapping[str, int]:
        """Counters (dropped_malformed, dropped_unknown_type, refutes, ...)."""
        return MappingProxyType(dict(self._stats))

    def members(self) -> tuple[Member, ...]:
        """Snapshot of every known member, including ourselves."""
        return tuple(self._members.values())

    def member(self, name: str) -> Member | None:
        """What we believe about ``name``, if anything."""
        return self._members.get(name)

    def num_live(self) -> int:
        """Alive or suspect members, ourselves included."""
        return self._live

    def _count(self, key: str, n: int = 1) -> None:
        self._stats[key] = self._stats.get(key, 0) + n

    # ------------------------------------------------------------------ local inputs

    def join(self, addrs: Sequence[Address], now: float) -> list[Action]:
        """Start a join push-pull with each address (one ``SendStream`` per address)."""
        return [self._stream(a, _S_PUSH_PULL, True, self.make_push_pull(True)) for a in addrs]

    def leave(self, now: float) -> list[Action]:
        """Announce a graceful leave; keep ticking until ``broadcasts_pending`` is 0 or timeout."""
        if self._leaving:
            return []
        self._leaving = True
        out: list[Action] = []
        self._on_dead(Dead(incarnation=self._incarnation, node=self._name, accuser=self._name),
                      None, self._addr, now, out)  # fmt: skip
        out += self._gossip(now)
        return out

    def force_leave(self, name: str, now: float) -> list[Action]:
        """Declare ``name`` left on its behalf (Consul force-leave); a live node will refute."""
        held = self._members.get(name)
        if held is None:
            raise LocalProtocolError(f"force-leave: no member named {name!r}")
        if name == self._name:
            raise LocalProtocolError("force-leave: use leave() for the local member")
        out: list[Action] = []
        self._on_dead(Dead(incarnation=held.incarnation, node=name, accuser=name),
                      None, self._addr, now, out)  # fmt: skip
        out += self._gossip(now)
        return out

    def update_tags(self, tags: Mapping[str, str], now: float) -> list[Action]:
        """Change our tags: a new incarnation announces them."""
        self._meta = encode_tags(tags)
        self._bump_incarnation(self._incarnation + 1)
        return self._announce_self(now)

    def preload(self, members: Iterable[Member], *, announce: bool = True) -> None:
        """Adopt already-known members without gossiping about them.

        For restoring a saved view (Serf's snapshot) and for simulations that start from a
        converged cluster. Members we already know, and ourselves, are skipped; the
        ``Member`` values may be shared between cores (they are frozen). With
        ``announce=False`` our own start-up alive broadcast is withdrawn too (everyone in
        ``members`` already holds it: a simulation's steady state).
        """
        if not announce:
            self._queue.reset()
        for m in members:
            if m.name == self._name or m.name in self._members:
                continue
            self._members[m.name] = m
            self._names.append(m.name)
            self._live += m.status in _LIVE
        self._probe_list = []
        self._probe_pos = 0

    def make_push_pull(self, join: bool) -> bytes:
        """Our full state (members + delegate blob) as a push-pull payload."""
        user = self._delegate.local_state(join) if self._delegate is not None else b""
        entries = [
            make_push_entry(m.name, m.addr, m.meta, m.incarnation, m.status)
            for m in self._members.values()
        ]
        return encode_push_pull(join, entries, user)

    # ------------------------------------------------------------------ timers

    def next_deadline(self) -> float | None:
        """When ``tick`` must next run."""
        timers = self._timers
        while timers and not self._timer_live(timers[0]):
            heapq.heappop(timers)
        due = min(
            self._next_probe,
            self._next_gossip,
            self._next_push_pull,
            self._next_reap,
            self._next_reconnect,
        )
        return min(due, timers[0][0]) if timers else due

    def tick(self, now: float) -> list[Action]:
        """Run every timer that is due at ``now``."""
        out: list[Action] = []
        timers = self._timers
        while timers and timers[0][0] <= now:
            entry = heapq.heappop(timers)
            if self._timer_live(entry):
                self._fire(entry, now, out)
        if now >= self._next_probe:
            self._start_probe(now, out)
        if now >= self._next_gossip:
            self._next_gossip = now + self._cfg.gossip_interval
            out += self._gossip(now)
        if now >= self._next_push_pull:
            out += self._periodic_push_pull(now)
        if now >= self._next_reconnect:
            self._next_reconnect = now + self._cfg.reconnect_interval
            out += self._reconnect()
        if now >= self._next_reap:
            self._next_reap = now + self._cfg.reap_interval
            self._reap(now, out)
        return out

    def _timer_live(self, entry: tuple[float, int, Any]) -> bool:
        when, kind, key = entry
        if kind in (_T_ACK, _T_END):
            p = self._probe
            return (
                p is not None
                and p.seq == key
                and (p.ack_deadline if kind == _T_ACK else p.end) == when
            )
        if kind == _T_RELAY:
            r = self._relays.get(key)
            return r is not None and r.deadline == when
        s = self._suspicions.get(key)
        return s is not None and s.deadline == when

    def _fire(self, entry: tuple[float, int, Any], now: float, out: list[Action]) -> None:
        _, kind, key = entry
        if kind == _T_ACK:
            self._probe_indirect(now, out)
        elif kind == _T_END:
            self._probe_failed(now, out)
        elif kind == _T_RELAY:
            relay = self._relays.pop(key)
            if relay.nack:
                out.append(self._packet(relay.origin, [encode(Nack(seq=relay.origin_seq))]))
        else:
            self._suspicion_expired(key, now, out)

    def _at(self, when: float, kind: int, key: Any) -> None:
        heapq.heappush(self._timers, (when, kind, key))

    # ------------------------------------------------------------------ probing

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & MAX_U32
        return self._seq

    def _next_target(self) -> str | None:
        for _ in range(len(self._probe_list) + 1):
            if self._probe_pos >= len(self._probe_list):
                self._probe_list = [n for n in self._names if n != self._name]
                self._rng.shuffle(self._probe_list)
                self._probe_pos = 0
                if not self._probe_list:
                    return None
            name = self._probe_list[self._probe_pos]
            self._probe_pos += 1
            m = self._members.get(name)
            if m is not None and m.status in _LIVE:
                return name
        return None

    def _start_probe(self, now: float, out: list[Action]) -> None:
        interval = self._awareness.scale(self._cfg.probe_interval)
        self._next_probe = now + interval
        self._probe = None
        target = None if self._leaving else self._next_target()
        if target is None:
            return
        m = self._members[target]
        seq = self._next_seq()
        p = _Probe(seq, target, m.addr, now + self._cfg.probe_timeout, now + interval)
        self._probe = p
        self._at(p.ack_deadline, _T_ACK, seq)
        self._at(p.end, _T_END, seq)
        parts = [encode(Ping(seq=seq, node=target, source_addr=self._addr, source_node=self._name))]
        if m.status is _SUSPECT:
            # Buddy system: tell the suspect directly so it can refute at once.
            parts.append(
                encode(Suspect(incarnation=m.incarnation, node=target, accuser=self._name))
            )
        self._count("probes")
        out.append(self._packet(m.addr, parts))

    def _probe_indirect(self, now: float, out: list[Action]) -> None:
        p = self._probe
        assert p is not None
        relays = self._random_members(self._cfg.indirect_checks, _alive_only, exclude=p.target)
        req = encode(PingReq(seq=p.seq, node=p.target, target=p.addr, nack=True,
                             source_addr=self._addr, source_node=self._name))  # fmt: skip
        for r in relays:
            out.append(self._packet(r.addr, [req]))
        p.expected_nacks = len(relays)
        if not self._cfg.disable_tcp_pings:
            ping = encode(
                Ping(seq=p.seq, node=p.target, source_addr=self._addr, source_node=self._name)
            )
            out.append(self._stream(p.addr, _S_PING, p.seq, ping))

    def _probe_failed(self, now: float, out: list[Action]) -> None:
        p = self._probe
        assert p is not None
        self._probe = None
        if p.tcp_ok:
            # UDP is broken somewhere but the node answers: do not accuse (memberlist).
            self._count("probe_tcp_only")
            return
        missed = p.expected_nacks - p.nacks if p.expected_nacks > 0 else 1
        self._awareness.apply_delta(max(0, missed))
        self._count("probe_failures")
        m = self._members.get(p.target)
        if m is not None and m.status in _LIVE:
            msg = Suspect(incarnation=m.incarnation, node=p.target, accuser=self._name)
            self._on_suspect(msg, None, self._addr, now, out)

    def _probe_succeeded(self) -> None:
        self._probe = None
        self._awareness.apply_delta(-1)
        self._count("probe_acks")

    # ------------------------------------------------------------------ packet input

    def receive_packet(self, data: bytes, source: Address, now: float) -> list[Action]:
        """Handle one plaintext datagram; malformed input is dropped and counted."""
        out: list[Action] = []
        if len(data) > MAX_PACKET_BYTES:
            self._count("dropped_oversized")
            return out
        try:
            parts = split_compound(data) if data[:1] == b"\x07" else [data]
        except RemoteProtocolError:
            self._count("dropped_malformed")
            return out
        memo_get = self._decoder.memo.get
        members_get = self._members.get
        handlers = self._handlers
        for part in parts:
            msg = memo_get(part)
            if msg is None:
                msg = self._decode_part(part)
                if msg is None:
                    continue
            if type(msg) is Alive:
                # Most gossip is an echo of what we hold; skip it without the full rules.
                held = members_get(msg.node)
                if held is not None and is_redundant_alive(held, msg):
                    continue
            handler = handlers.get(type(msg))
            if handler is None:
                self._count("dropped_unexpected")  # stream-only kinds sent as packets
                continue
            handler(msg, part, source, now, out)
        return out

    def _decode_part(self, part: bytes) -> Message | None:
        try:
            if part[:1] == b"\x07":
                raise RemoteProtocolError("nested compound message")
            return self._decoder.decode_part(part, MAX_PACKET_BYTES)
        except UnknownMessageType:
            self._count("dropped_unknown_type")
        except RemoteProtocolError:
            self._count("dropped_malformed")
        return None

    def _on_ping(
        self, msg: Ping, raw: bytes, source: Address, now: float, out: list[Action]
    ) -> None:
        if msg.node and msg.node != self._name:
            self._count("dropped_ping_wrong_node")
            return
        out.append(self._packet(source, [encode(Ack(seq=msg.seq))]))

    def _on_ping_req(
        self, msg: PingReq, raw: bytes, source: Address, now: float, out: list[Action]
    ) -> None:
        if len(self._relays) >= MAX_PENDING_RELAYS:
            self._count("dropped_relay_full")
            return
        seq = self._next_seq()
        # Nack at 80 % of the probe timeout (Lifeguard paper) so it reaches the origin before
        # its probe interval ends; at 100 % (memberlist) it races the origin's deadline.
        deadline = now + self._cfg.probe_timeout * NACK_TIMEOUT_FRACTION
        self._relays[seq] = _Relay(source, msg.seq, msg.nack, deadline)
        self._at(deadline, _T_RELAY, seq)
        ping = Ping(seq=seq, node=msg.node, source_addr=self._addr, source_node=self._name)
        out.append(self._packet(msg.target, [encode(ping)]))

    def _on_ack(self, msg: Ack, raw: bytes, source: Address, now: float, out: list[Action]) -> None:
        p = self._probe
        if p is not None and p.seq == msg.seq:
            self._probe_succeeded()
            return
        relay = self._relays.pop(msg.seq, None)
        if relay is not None:
            ack = Ack(seq=relay.origin_seq, payload=msg.payload)
            out.append(self._packet(relay.origin, [encode(ack)]))

    def _on_nack(
        self, msg: Nack, raw: bytes, source: Address, now: float, out: list[Action]
    ) -> None:
        p = self._probe
        if p is not None and p.seq == msg.seq:
            p.nacks += 1

    def _on_user(
        self, msg: User, raw: bytes, source: Address, now: float, out: list[Action]
    ) -> None:
        if self._delegate is not None:
            self._delegate.notify_msg(msg.payload)

    # ------------------------------------------------------------------ merge rules

    def _on_alive(
        self, msg: Alive, raw: bytes | None, source: Address, now: float, out: list[Action]
    ) -> None:
        held = self._members.get(msg.node)
        is_self = msg.node == self._name
        v = judge_alive(held, msg, is_self=is_self, now=now,
                        reclaim_time=self._cfg.dead_node_reclaim_time)  # fmt: skip
        if v is Verdict.IGNORE:
            return
        if v is Verdict.REFUTE:
            self._refute(msg.incarnation, now)
        elif v is Verdict.CONFLICT:
            self._count("addr_conflicts")
        elif v is Verdict.STALE_ALIVE:
            assert held is not None
            self._reaccuse(held, msg.addr, now, out)
        else:
            self._apply_alive(held, msg, raw, now, out)

    def _apply_alive(
        self, held: Member | None, msg: Alive, raw: bytes | None, now: float, out: list[Action]
    ) -> None:
        tags = self._tags_for(msg.meta)
        if tags is None:
            self._count("dropped_bad_meta")
            return
        self._suspicions.pop(msg.node, None)
        same = held is not None and held.status is _ALIVE
        new = Member(name=msg.node, addr=msg.addr, tags=tags,
                     incarnation=msg.incarnation, status=_ALIVE,
                     status_since=held.status_since if same and held else now, meta=msg.meta)  # fmt: skip
        self._set_member(new, held)
        self._queue.queue(raw if raw is not None else encode(msg), msg.node)
        if held is None or not same or held.addr != new.addr or held.meta != new.meta:
            out.append(MemberChanged(member=new, old=held.status if held else None))

    def _tags_for(self, meta: bytes) -> Mapping[str, str] | None:
        """Decoded, read-only tags for ``meta`` (memoised: most members share a few)."""
        if not meta:
            return _NO_TAGS
        tags = self._tags_memo.get(meta)
        if tags is None:
            try:
                tags = MappingProxyType(decode_tags(meta))
            except RemoteProtocolError:
                return None
            if len(self._tags_memo) >= _TAGS_MEMO_SIZE:
                self._tags_memo.clear()
            self._tags_memo[meta] = tags
        return tags

    def _on_suspect(
        self, msg: Suspect, raw: bytes | None, source: Address, now: float, out: list[Action]
    ) -> None:
        held = self._members.get(msg.node)
        v = judge_suspect(held, msg, is_self=msg.node == self._name)
        if v is Verdict.IGNORE:
            return
        if v is Verdict.REFUTE:
            self._refute(msg.incarnation, now)
            return
        assert held is not None
        if v is Verdict.CONFIRM:
            s = self._suspicions.get(msg.node)
            if s is not None and s.confirm(msg.accuser):
                self._at(s.deadline, _T_SUSPECT, msg.node)
                self._queue.queue(raw if raw is not None else encode(msg), msg.node)
            return
        new = _replace_status(held, _SUSPECT, msg.incarnation, now)
        self._set_member(new, held)
        self._queue.queue(raw if raw is not None else encode(msg), msg.node)
        self._start_suspicion(msg, now)
        out.append(MemberChanged(member=new, old=held.status))

    def _start_suspicion(self, msg: Suspect, now: float) -> None:
        cfg = self._cfg
        n = self._live
        k = cfg.suspicion_mult - 2
        if n - 2 < k:
            k = 0
        lo, hi = suspicion_timeouts(suspicion_mult=cfg.suspicion_mult,
                                    max_timeout_mult=cfg.suspicion_max_timeout_mult,
                                    n=n, probe_interval=cfg.probe_interval)  # fmt: skip
        s = Suspicion(
            incarnation=msg.incarnation, accuser=msg.accuser, start=now, k=k, lo=lo, hi=hi
        )
        self._suspicions[msg.node] = s
        self._at(s.deadline, _T_SUSPECT, msg.node)

    def _suspicion_expired(self, name: str, now: float, out: list[Action]) -> None:
        s = self._suspicions.pop(name)
        held = self._members.get(name)
        if held is None or held.status is not _SUSPECT:
            return
        if held.incarnation != s.incarnation:
            return
        self._count("suspicions_expired")
        dead = Dead(incarnation=held.incarnation, node=name, accuser=self._name)
        self._on_dead(dead, None, self._addr, now, out)

    def _on_dead(
        self, msg: Dead, raw: bytes | None, source: Address, now: float, out: list[Action]
    ) -> None:
        held = self._members.get(msg.node)
        is_self = msg.node == self._name
        v = judge_dead(held, msg, is_self=is_self, leaving=self._leaving)
        if v is Verdict.IGNORE:
            return
        if v is Verdict.REFUTE:
            self._refute(msg.incarnation, now)
            return
        assert held is not None
        self._suspicions.pop(msg.node, None)
        status = _LEFT if msg.accuser == msg.node else _DEAD
        new = _replace_status(held, status, msg.incarnation, now)
        self._set_member(new, held)
        self._queue.queue(raw if raw is not None else encode(msg), msg.node)
        out.append(MemberChanged(member=new, old=held.status))

    def _refute(self, accused: int, now: float) -> None:
        if self._leaving:
            return
        self._bump_incarnation(max(self._incarnation + 1, accused + 1))
        self._awareness.apply_delta(1)
        self._count("refutes")
        self._announce_self(now)

    def _bump_incarnation(self, inc: int) -> None:
        if inc > MAX_U32:
            raise LocalProtocolError("incarnation number exhausted")
        self._incarnation = inc

    def _announce_self(self, now: float) -> list[Action]:
        held = self._members.get(self._name)
        new = Member(name=self._name, addr=self._addr, tags=MappingProxyType(decode_tags(self._meta)),
                     incarnation=self._incarnation, status=_ALIVE,
                     status_since=held.status_since if held else now, meta=self._meta)  # fmt: skip
        self._set_member(new, held)
        alive = Alive(
            incarnation=self._incarnation, node=self._name, addr=self._addr, meta=self._meta
        )
        self._queue.queue(encode(alive), self._name)
        if held is None or held.meta != new.meta:
            return [MemberChanged(member=new, old=held.status if held else None)]
        return []

    def _reaccuse(self, held: Member, addr: Address, now: float, out: list[Action]) -> None:
        # memberlist#311: an old alive from a node we hold suspect/dead/left means it
        # restarted without hearing the accusation. Tell it directly (rate-limited) so it
        # refutes with a higher incarnation instead of staying dead forever.
        last = self._reaccused.get(held.name)
        if last is not None and now - last < self._cfg.probe_interval:
            return
        self._reaccused[held.name] = now
        self._count("reaccused")
        if held.status is _SUSPECT:
            msg: Message = Suspect(incarnation=held.incarnation, node=held.name, accuser=self._name)
        else:
            accuser = held.name if held.status is _LEFT else self._name
            msg = Dead(incarnation=held.incarnation, node=held.name, accuser=accuser)
        out.append(SendPacket(to=addr, payload=encode(msg)))

    def _set_member(self, new: Member, old: Member | None) -> None:
        name = new.name
        self._members[name] = new
        if old is None:
            self._names.append(name)
            if name != self._name:
                span = len(self._probe_list) - self._probe_pos
                pos = self._probe_pos + int(self._rng.random() * (span + 1))
                self._probe_list.insert(pos, name)
        self._live += (new.status in _LIVE) - (old is not None and old.status in _LIVE)

    # ------------------------------------------------------------------ streams

    def _stream(self, to: Address, kind: str, key: Any, payload: bytes) -> SendStream:
        if len(self._streams) >= MAX_PENDING_STREAMS:
            # A driver that never reported back; forget the oldest rather than grow forever.
            del self._streams[next(iter(self._streams))]
            self._count("streams_abandoned")
        self._ref += 1
        self._streams[self._ref] = (kind, key)
        return SendStream(to=to, payload=payload, ref=self._ref)

    def receive_stream(
        self, data: bytes, source: Address, now: float
    ) -> tuple[bytes | None, list[Action]]:
        """Answer one inbound stream request (push-pull or TCP ping)."""
        try:
            msg = self._decoder.decode_stream(data)
        except UnknownMessageType as exc:
            self._count("dropped_unknown_type")
            return encode(Err(error=str(exc))), []
        except RemoteProtocolError as exc:
            self._count("dropped_malformed")
            return encode(Err(error=str(exc))), []
        if isinstance(msg, Ping):
            if msg.node and msg.node != self._name:
                self._count("dropped_ping_wrong_node")
                return encode(Err(error=f"ping for {msg.node!r}, this is {self._name!r}")), []
            return encode(Ack(seq=msg.seq)), []
        if isinstance(msg, PushPull):
            out: list[Action] = []
            self._merge_push_pull(msg, now, out)
            return self.make_push_pull(msg.join), out
        self._count("dropped_unexpected")
        return encode(Err(error=f"unexpected {type(msg).__name__} on a stream")), []

    def receive_stream_reply(self, ref: int, data: bytes, now: float) -> list[Action]:
        """Handle the reply to our ``SendStream(ref=ref)``."""
        pending = self._streams.pop(ref, None)
        out: list[Action] = []
        if pending is None:
            self._count("dropped_unknown_stream")
            return out
        kind, key = pending
        try:
            msg = self._decoder.decode_stream(data)
        except RemoteProtocolError:
            self._count("dropped_malformed")
            return out
        if isinstance(msg, Err):
            self._count("stream_errors")
        elif kind == _S_PING and isinstance(msg, Ack):
            p = self._probe
            if p is not None and p.seq == key == msg.seq:
                p.tcp_ok = True
        elif kind == _S_PUSH_PULL and isinstance(msg, PushPull):
            self._count("push_pulls")
            self._merge_push_pull(msg, now, out)
        else:
            self._count("dropped_unexpected")
        return out

    def stream_failed(self, ref: int, now: float) -> list[Action]:
        """Our ``SendStream(ref=ref)`` could not complete."""
        if self._streams.pop(ref, None) is not None:
            self._count("stream_failures")
        return []

    def _merge_push_pull(self, msg: PushPull, now: float, out: list[Action]) -> None:
        src = self._addr
        get = self._members.get
        for e in msg.nodes:
            held = get(e.name)
            if held is not None and is_redundant_alive(held, e):
                continue
            if e.status is _ALIVE:
                alive = Alive(incarnation=e.incarnation, node=e.name, addr=e.addr, meta=e.meta)
                self._on_alive(alive, None, src, now, out)
            elif e.status is _LEFT:
                leave = Dead(incarnation=e.incarnation, node=e.name, accuser=e.name)
                self._on_dead(leave, None, src, now, out)
            else:
                # Remote "dead" is only a suspicion here: let our own detector confirm it.
                sus = Suspect(incarnation=e.incarnation, node=e.name, accuser=self._name)
                self._on_suspect(sus, None, src, now, out)
        if self._delegate is not None and msg.user_state:
            self._delegate.merge_remote_state(msg.user_state, msg.join)

    def _periodic_push_pull(self, now: float) -> list[Action]:
        interval = push_pull_scale(self._cfg.push_pull_interval, self._live)
        self._next_push_pull = now + interval
        if self._leaving or len(self._streams) >= MAX_PENDING_STREAMS:
            return []
        peers = self._random_members(1, _alive_only)
        if not peers:
            return []
        return [self._stream(peers[0].addr, _S_PUSH_PULL, False, self.make_push_pull(False))]

    def _reconnect(self) -> list[Action]:
        """Serf's reconnect: push-pull with a random failed member, probability failed/alive.

        Without it two halves of a healed partition, each holding the other dead, would
        never talk again (nobody probes or push-pulls a dead member).
        """
        if self._leaving:
            return []
        failed = [m for m in self._members.values() if m.status is _DEAD]
        if not failed or self._rng.random() >= len(failed) / max(1, self._live):
            return []
        m = failed[int(self._rng.random() * len(failed))]
        self._count("reconnect_attempts")
        return [self._stream(m.addr, _S_PUSH_PULL, True, self.make_push_pull(True))]

    # ------------------------------------------------------------------ gossip

    def _gossip(self, now: float) -> list[Action]:
        if not len(self._queue) and self._delegate is None:
            return []
        horizon = now - self._cfg.gossip_to_the_dead_time

        def eligible(m: Member) -> bool:
            if m.status in _LIVE:
                return True
            return m.status is _DEAD and m.status_since > horizon

        out: list[Action] = []
        for m in self._random_members(self._cfg.gossip_nodes, eligible):
            parts = self._fill([], self._cfg.packet_budget - COMPOUND_HEADER_BYTES)
            if not parts:
                break
            payload = parts[0] if len(parts) == 1 else make_compound(parts)
            out.append(SendPacket(to=m.addr, payload=payload))
        return out

    def _packet(self, to: Address, parts: list[bytes]) -> SendPacket:
        used = COMPOUND_HEADER_BYTES + sum(len(p) + COMPOUND_PART_OVERHEAD for p in parts)
        parts = self._fill(parts, self._cfg.packet_budget - used)
        payload = parts[0] if len(parts) == 1 else make_compound(parts)
        return SendPacket(to=to, payload=payload)

    def _fill(self, parts: list[bytes], free: int) -> list[bytes]:
        """Append queued member broadcasts, then the delegate's, into ``free`` bytes."""
        extra = self._queue.get_broadcasts(COMPOUND_PART_OVERHEAD, free, self._live)
        if extra:
            parts = parts + extra
            free -= sum(len(b) + COMPOUND_PART_OVERHEAD for b in extra)
        if self._delegate is not None and free > _USER_OVERHEAD:
            user = self._delegate.get_broadcasts(_USER_OVERHEAD, free)
            parts = parts + [b"\x08" + u for u in user]
        return parts[:MAX_COMPOUND_PARTS]

    def _random_members(self, k: int, accept: Any, exclude: str | None = None) -> list[Member]:
        """Up to ``k`` distinct random members (not us, not ``exclude``) passing ``accept``."""
        names, members, rng = self._names, self._members, self._rng
        n = len(names)
        out: list[Member] = []
        seen: set[str] = {self._name}
        if exclude is not None:
            seen.add(exclude)
        for _ in range(3 * n):  # memberlist kRandomNodes: bounded random draws
            if len(out) >= k:
                break
            name = names[int(rng.random() * n)]
            if name in seen:
                continue
            seen.add(name)
            m = members[name]
            if accept(m):
                out.append(m)
        return out

    # ------------------------------------------------------------------ reaping

    def _reap(self, now: float, out: list[Action]) -> None:
        cfg = self._cfg
        for m in list(self._members.values()):
            if m.status is _DEAD:
                expired = now - m.status_since > cfg.reconnect_timeout
            elif m.status is _LEFT:
                expired = now - m.status_since > cfg.tombstone_timeout
            else:
                continue
            if expired and m.name != self._name:
                self._forget(m.name)
                out.append(MemberReaped(member=m))
        stale = now - cfg.probe_interval
        self._reaccused = {k: t for k, t in self._reaccused.items() if t > stale}

    def _forget(self, name: str) -> None:
        del self._members[name]
        self._suspicions.pop(name, None)
        # Rare (reaping), so an O(n) rebuild beats keeping an index per member.
        self._names = [n for n in self._names if n != name]
        self._count("reaped")


def _alive_only(m: Member) -> bool:
    return m.status is _ALIVE


def _replace_status(m: Member, status: MemberStatus, inc: int, now: float) -> Member:
    since = m.status_since if m.status is status else now
    return Member(name=m.name, addr=m.addr, tags=m.tags, incarnation=inc, status=status,
                  status_since=since, meta=m.meta)  # fmt: skip
