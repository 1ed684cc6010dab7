"""ClusterSim: many ``GossipProtocol`` cores in one process, in simulated time.

Rule: one seeded event heap drives everything — packet and stream deliveries decided by
``MemoryNetwork`` and each core's ``next_deadline()`` — and time jumps straight to the next
event, so 1,000 members for ten simulated minutes cost only the work the protocol does.
No wall clock, no threads, no sockets; same seed ⇒ same run.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from node.gossip.config import GossipConfig
from node.gossip.delegate import Delegate
from node.gossip.messages import Address, Decoder, MemberStatus
from node.gossip.protocol import (
    Action,
    GossipProtocol,
    MemberChanged,
    MemberReaped,
    SendPacket,
    SendStream,
)
from node.testing.network import LinkConditions, MemoryNetwork

__all__ = ["ClusterSim", "SimNode", "ChangeListener"]

#: Shared decode memo: broadcasts repeat verbatim across all cores.
DECODER_CACHE = 1 << 16

# Event kinds.
_TIMER, _PACKET, _STREAM_REQ, _STREAM_REPLY, _STREAM_FAIL = range(5)

#: Called as listener(observer_name, change, now) for every MemberChanged/MemberReaped.
ChangeListener = Callable[[str, "MemberChanged | MemberReaped", float], None]


@dataclass(slots=True, eq=False)
class SimNode:
    """One simulated process: its core, address and whether it is running."""

    name: str
    addr: Address
    proto: GossipProtocol
    up: bool = True
    gen: int = 0  # bumped on restart so replies to the old process are discarded
    scheduled: float | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


class ClusterSim:
    """Run N gossip cores over a seeded in-memory network."""

    def __init__(
        self,
        *,
        config: GossipConfig | None = None,
        seed: int = 0,
        conditions: LinkConditions | None = None,
        delegate_factory: Callable[[str], Delegate] | None = None,
    ) -> None:
        self.config = config or GossipConfig.lan()
        self.now = 0.0
        self._seed = seed
        self._rng = random.Random(seed)
        self.network = MemoryNetwork(rng=random.Random(seed * 7919 + 1), conditions=conditions)
        self.nodes: dict[str, SimNode] = {}
        self._by_addr: dict[Address, SimNode] = {}
        self._events: list[tuple[float, int, int, Any, Any, Any]] = []
        self._seq = 0
        self._decoder = Decoder(cache_size=DECODER_CACHE)
        self._delegate_factory = delegate_factory
        self.listeners: list[ChangeListener] = []
        self.events_processed = 0

    # ------------------------------------------------------------------ membership control

    def _make_proto(self, name: str, addr: Address, tags: Mapping[str, str]) -> GossipProtocol:
        rng = random.Random(self._rng.getrandbits(64))
        delegate = self._delegate_factory(name) if self._delegate_factory else None
        return GossipProtocol(config=self.config, name=name, addr=addr, tags=tags, rng=rng,
                              now=self.now, delegate=delegate, decoder=self._decoder)  # fmt: skip

    def add_node(
        self,
        name: str | None = None,
        *,
        join: Sequence[str] = (),
        tags: Mapping[str, str] | None = None,
    ) -> SimNode:
        """Start a new member (named ``n<i>`` by default) and join it through ``join``."""
        i = len(self.nodes)
        name = name or f"n{i}"
        if name in self.nodes:
            raise ValueError(f"node {name!r} already exists")
        addr = (f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}", 7946)
        tags = dict(tags or {})
        node = SimNode(name=name, addr=addr, proto=self._make_proto(name, addr, tags), tags=tags)
        self.nodes[name] = node
        self._by_addr[addr] = node
        self._reschedule(node)
        if join:
            self.join(name, join)
        return node

    def add_nodes(
        self, count: int, *, join_via: str | None = None, window: float = 0.0
    ) -> list[str]:
        """Add ``count`` members, each joining ``join_via`` (default: the first node) at a
        random moment within ``window`` seconds from now."""
        names = []
        for _ in range(count):
            node = self.add_node()
            names.append(node.name)
            seed = join_via or next(iter(self.nodes))
            if seed != node.name:
                at = self.now + self._rng.random() * window
                self._push(at, _TIMER, ("join", node, seed), None, None)
        return names

    def bootstrap(self, count: int) -> list[str]:
        """Add ``count`` members that already know each other (a converged cluster).

        Skips the O(n^2) join storm so benchmarks can start from steady state at large N;
        each core gets the same frozen ``Member`` values through ``GossipProtocol.preload``.
        """
        nodes = [self.add_node() for _ in range(count)]
        view = [m for n in nodes for m in n.proto.members() if m.name == n.name]
        for n in nodes:
            n.proto.preload(view, announce=False)
            n.scheduled = None
            self._reschedule(n)
        return [n.name for n in nodes]

    def join(self, name: str, seeds: Iterable[str]) -> None:
        """Make ``name`` push-pull with each seed now."""
        node = self.nodes[name]
        addrs = [self.nodes[s].addr for s in seeds if s != name]
        self._apply(node, node.proto.join(addrs, self.now))

    def kill(self, name: str) -> None:
        """Stop a member abruptly: it sends and answers nothing from now on."""
        self.nodes[name].up = False

    def restart(self, name: str, *, join: Sequence[str] = ()) -> SimNode:
        """Start a fresh process (incarnation 0, empty view) under the same name and address."""
        node = self.nodes[name]
        node.proto = self._make_proto(name, node.addr, node.tags)
        node.up = True
        node.gen += 1
        node.scheduled = None
        self._reschedule(node)
        if join:
            self.join(name, join)
        return node

    def leave(self, name: str) -> None:
        """Graceful leave (the process keeps running to spread it)."""
        node = self.nodes[name]
        self._apply(node, node.proto.leave(self.now))

    def partition(self, *groups: Iterable[str]) -> None:
        """Cut the network between groups of member names."""
        self.network.partition(*[[self.nodes[n].addr for n in g] for g in groups])

    def heal(self) -> None:
        """Remove every partition."""
        self.network.heal()

    def set_conditions(self, conditions: LinkConditions) -> None:
        """Change loss/delay/duplication/reordering from now on."""
        self.network.conditions = conditions

    # ------------------------------------------------------------------ observation

    def view(self, observer: str) -> dict[str, MemberStatus]:
        """What ``observer`` believes about every member it knows."""
        return {m.name: m.status for m in self.nodes[observer].proto.members()}

    def up_names(self) -> list[str]:
        """Members whose process is running."""
        return [n.name for n in self.nodes.values() if n.up]

    def converged(self) -> bool:
        """Every running member sees exactly the running members alive (and nobody else live)."""
        up = [n for n in self.nodes.values() if n.up]
        if any(n.proto.num_live() != len(up) for n in up):
            return False
        for n in up:
            member = n.proto.member
            for other in up:
                m = member(other.name)
                if m is None or m.status is not MemberStatus.ALIVE:
                    return False
        return True

    def status_everywhere(
        self, name: str, observers: Iterable[str] | None = None
    ) -> set[MemberStatus | None]:
        """The set of statuses the (running) observers hold for ``name``."""
        names = observers if observers is not None else self.up_names()
        out: set[MemberStatus | None] = set()
        for o in names:
            if o == name:
                continue
            m = self.nodes[o].proto.member(name)
            out.add(m.status if m else None)
        return out

    # ------------------------------------------------------------------ running

    def run_for(self, seconds: float) -> None:
        """Advance simulated time by ``seconds``."""
        self.run_until(self.now + seconds)

    def run_until(self, t_end: float) -> None:
        """Process every event up to ``t_end`` and leave the clock there."""
        ev = self._events
        pop = heapq.heappop
        while ev and ev[0][0] <= t_end:
            t, _, kind, a, b, c = pop(ev)
            self.now = t
            self.events_processed += 1
            self._dispatch(kind, a, b, c)
        self.now = max(self.now, t_end)

    def run_until_true(
        self, pred: Callable[[], bool], *, timeout: float, poll: float = 0.1
    ) -> bool:
        """Run until ``pred()`` holds (checked every ``poll`` simulated seconds) or ``timeout``."""
        end = self.now + timeout
        while True:
            if pred():
                return True
            if self.now >= end:
                return False
            self.run_until(min(end, self.now + poll))

    # ------------------------------------------------------------------ internals

    def _push(self, t: float, kind: int, a: Any, b: Any, c: Any) -> None:
        self._seq += 1
        heapq.heappush(self._events, (t, self._seq, kind, a, b, c))

    def _reschedule(self, node: SimNode) -> None:
        d = node.proto.next_deadline()
        if d is not None and d != node.scheduled:
            node.scheduled = d
            self._push(max(d, self.now), _TIMER, node, node.gen, d)

    def _dispatch(self, kind: int, a: Any, b: Any, c: Any) -> None:
        if kind == _PACKET:
            node = self._by_addr.get(a)
            if node is not None and node.up:
                self._apply(node, node.proto.receive_packet(b, c, self.now))
        elif kind == _TIMER:
            self._on_timer(a, b, c)
        elif kind == _STREAM_REQ:
            self._on_stream_request(a, b, c)
        else:
            node, gen, ref = a, b, c
            assert isinstance(node, SimNode)
            if node.up and node.gen == gen:
                if kind == _STREAM_REPLY:
                    ref_no, data = ref
                    self._apply(node, node.proto.receive_stream_reply(ref_no, data, self.now))
                else:
                    self._apply(node, node.proto.stream_failed(ref, self.now))

    def _on_timer(self, a: Any, gen: Any, when: Any) -> None:
        if isinstance(a, tuple):  # a delayed join
            _, node, seed = a
            if node.up:
                self.join(node.name, [seed])
            return
        node = a
        assert isinstance(node, SimNode)
        if not node.up or node.gen != gen or node.scheduled != when:
            return
        node.scheduled = None
        self._apply(node, node.proto.tick(self.now))

    def _on_stream_request(
        self, src: SimNode, gen_ref: tuple[int, int], req: tuple[Address, bytes]
    ) -> None:
        gen, ref = gen_ref
        dst_addr, payload = req
        dst = self._by_addr.get(dst_addr)
        if dst is None or not dst.up:
            self._push(
                self.now + self.network.conditions.stream_fail_delay, _STREAM_FAIL, src, gen, ref
            )
            return
        reply, actions = dst.proto.receive_stream(payload, src.addr, self.now)
        self._apply(dst, actions)
        if reply is None:
            self._push(self.now, _STREAM_FAIL, src, gen, ref)
            return
        delay = self.network.stream_delay(dst.addr, src.addr, len(reply))
        if delay is None:
            self._push(self.now + self.config.tcp_timeout, _STREAM_FAIL, src, gen, ref)
        else:
            self._push(self.now + delay, _STREAM_REPLY, src, gen, (ref, reply))

    def _apply(self, node: SimNode, actions: list[Action]) -> None:
        net = self.network
        now = self.now
        for act in actions:
            if isinstance(act, SendPacket):
                for d in net.packet_delays(node.addr, act.to, len(act.payload)):
                    self._push(now + d, _PACKET, act.to, act.payload, node.addr)
            elif isinstance(act, SendStream):
                self._send_stream(node, act)
            else:
                for cb in self.listeners:
                    cb(node.name, act, now)
        self._reschedule(node)

    def _send_stream(self, node: SimNode, act: SendStream) -> None:
        delay = self.network.stream_delay(node.addr, act.to, len(act.payload))
        if delay is None:
            fail_at = self.now + min(
                self.config.tcp_timeout, self.network.conditions.stream_fail_delay * 4
            )
            self._push(fail_at, _STREAM_FAIL, node, node.gen, act.ref)
            return
        self._push(self.now + delay, _STREAM_REQ, node, (node.gen, act.ref), (act.to, act.payload))
