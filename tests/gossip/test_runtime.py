"""GossipRuntime on the in-memory transport with node.testing.FakeClock (fake time).

Every wait is on a condition with a fake-time limit; the clock autojumps whenever the
event loop is idle, so minutes of gossip take milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from node.errors import ConfigError, RemoteProtocolError
from node.gossip.config import GossipConfig
from node.gossip.keyring import Keyring
from node.gossip.messages import Ack, Alive, MemberStatus, MessageType, encode, make_compound
from node.gossip.protocol import GossipProtocol
from node.gossip.runtime import (
    GossipRuntime,
    _is_priority,
    open_pool,
    resolve,
    with_encryption_overhead,
)
from node.gossip.state import Member
from node.gossip.transport import MemoryNetwork, MemoryTransport, NetTransport
from node.testing.clock import FakeClock
from tests.helpers.poll import wait_for

pytestmark = pytest.mark.timeout(60)

K1, K2 = bytes(range(32)), bytes(range(32, 64))
CONFIG = GossipConfig.lan()


@dataclass
class Node:
    runtime: GossipRuntime
    transport: MemoryTransport
    task: asyncio.Task[None]
    changes: list[tuple[str, MemberStatus, MemberStatus | None]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.runtime.protocol.local_name

    @property
    def addr(self) -> tuple[str, int]:
        return self.transport.local_addr

    def view(self) -> dict[str, MemberStatus]:
        return {m.name: m.status for m in self.runtime.members()}

    async def kill(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.transport.close()


class Cluster:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.net = MemoryNetwork()
        self.nodes: list[Node] = []

    def add(
        self,
        name: str,
        *,
        keyring: Keyring | None = None,
        config: GossipConfig = CONFIG,
        callback: Callable[[Member, MemberStatus | None], None] | None = None,
        **kw: Any,
    ) -> Node:
        transport = self.net.transport()
        if keyring is not None:
            config = with_encryption_overhead(config)
        protocol = GossipProtocol(
            config=config,
            name=name,
            addr=transport.local_addr,
            tags={"dc": "dc1"},
            rng=random.Random(name),
            now=self.clock.monotonic(),
        )
        changes: list[tuple[str, MemberStatus, MemberStatus | None]] = []

        def record(member: Member, old: MemberStatus | None) -> None:
            changes.append((member.name, member.status, old))
            if callback is not None:
                callback(member, old)

        runtime = GossipRuntime(
            protocol=protocol,
            transport=transport,
            clock=self.clock,
            keyring=keyring,
            on_member_change=record,
            **kw,
        )
        node = Node(runtime, transport, asyncio.ensure_future(runtime.run()), changes)
        self.nodes.append(node)
        return node

    async def until(self, cond: Callable[[], bool], *, within: float, what: str) -> float:
        """Wait (fake time) until ``cond()``; return the fake seconds it took."""
        start = self.clock.monotonic()
        await wait_for(cond, what, within, interval=0.05, clock=self.clock)
        return self.clock.monotonic() - start

    def converged(self, nodes: list[Node], n: int) -> bool:
        return all(
            sum(s is MemberStatus.ALIVE for s in node.view().values()) == n for node in nodes
        )


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    c = Cluster(FakeClock(autojump_threshold=0))
    yield c
    for node in c.nodes:
        await node.kill()


async def test_members_join_converge_and_callbacks_fire(cluster: Cluster) -> None:
    nodes = [cluster.add(f"n{i}") for i in range(6)]
    for node in nodes[1:]:
        assert await node.runtime.join([nodes[0].addr]) == 1
    await cluster.until(lambda: cluster.converged(nodes, 6), within=60, what="convergence")
    # (our own entry is created with the core, before the runtime exists)
    assert {name for name, status, old in nodes[0].changes if old is None} == {
        f"n{i}" for i in range(1, 6)
    }


async def test_killed_member_is_detected_dead_by_everyone(cluster: Cluster) -> None:
    nodes = [cluster.add(f"n{i}") for i in range(5)]
    for node in nodes[1:]:
        await node.runtime.join([nodes[0].addr])
    await cluster.until(lambda: cluster.converged(nodes, 5), within=60, what="convergence")
    await nodes[4].kill()
    took = await cluster.until(
        lambda: all(n.view()["n4"] is MemberStatus.DEAD for n in nodes[:4]),
        within=60,
        what="failure detection",
    )
    # Lifeguard bound for n=5 on LAN: suspicion max = 6 * 4 * max(1, log10 5) * 1 s = 24 s,
    # plus a probe round to start suspecting.
    assert took < 30
    assert all(n.view()[f"n{i}"] is MemberStatus.ALIVE for n in nodes[:4] for i in range(4))


async def test_graceful_leave_is_seen_as_left(cluster: Cluster) -> None:
    nodes = [cluster.add(f"n{i}") for i in range(4)]
    for node in nodes[1:]:
        await node.runtime.join([nodes[0].addr])
    await cluster.until(lambda: cluster.converged(nodes, 4), within=60, what="convergence")
    await nodes[3].runtime.leave(timeout=5)
    assert nodes[3].runtime.protocol.broadcasts_pending == 0
    await nodes[3].kill()
    await cluster.until(
        lambda: all(n.view()["n3"] is MemberStatus.LEFT for n in nodes[:3]),
        within=30,
        what="leave propagation",
    )


async def test_update_tags_and_force_leave_reach_the_pool(cluster: Cluster) -> None:
    nodes = [cluster.add(f"n{i}") for i in range(3)]
    for node in nodes[1:]:
        await node.runtime.join([nodes[0].addr])
    await cluster.until(lambda: cluster.converged(nodes, 3), within=60, what="convergence")
    nodes[1].runtime.update_tags({"dc": "dc1", "role": "server", "port": "8300"})
    await cluster.until(
        lambda: all(
            next(m for m in n.runtime.members() if m.name == "n1").tags.get("role") == "server"
            for n in nodes
        ),
        within=30,
        what="tag propagation",
    )
    await nodes[2].kill()
    await cluster.until(
        lambda: nodes[0].view()["n2"] is MemberStatus.DEAD, within=60, what="detection"
    )
    nodes[0].runtime.force_leave("n2")
    await cluster.until(
        lambda: all(n.view()["n2"] is MemberStatus.LEFT for n in nodes[:2]),
        within=30,
        what="force-leave propagation",
    )


async def test_join_counts_only_answering_addresses(cluster: Cluster) -> None:
    a, b = cluster.add("a"), cluster.add("b")
    assert await b.runtime.join([a.addr, ("127.0.0.1", 1), ("127.0.0.1", 2)]) == 1
    assert b.runtime.stats["outbound_stream_failures"] == 2
    assert await b.runtime.retry_join([("127.0.0.1", 3)], interval=0.001, max_attempts=2) == 0


async def test_wrong_key_never_joins_and_drops_are_counted(cluster: Cluster) -> None:
    a = cluster.add("a", keyring=Keyring(K1))
    b = cluster.add("b", keyring=Keyring(K1))
    intruder = cluster.add("x", keyring=Keyring(K2))
    plain = cluster.add("p")
    assert await b.runtime.join([a.addr]) == 1
    assert await intruder.runtime.join([a.addr]) == 0
    assert await plain.runtime.join([a.addr]) == 0
    # the intruder also throws packets at a
    intruder.transport.write_to(Keyring(K2).encrypt(b"\x00junk"), a.addr)
    await cluster.until(lambda: cluster.converged([a, b], 2), within=30, what="a+b convergence")
    await cluster.clock.sleep(10)
    assert set(a.view()) == {"a", "b"} and set(b.view()) == {"a", "b"}
    assert a.runtime.stats["dropped_undecryptable"] >= 3
    # the plaintext node could not read a's encrypted reply either
    assert "a" not in plain.view()


async def test_pools_with_the_same_key_do_not_accept_each_others_bytes(cluster: Cluster) -> None:
    lan = cluster.add("lan", keyring=Keyring(K1), pool="lan")
    wan = cluster.add("wan", keyring=Keyring(K1), pool="wan")
    assert await wan.runtime.join([lan.addr]) == 0
    assert lan.runtime.stats["dropped_undecryptable"] == 1
    other_lan = cluster.add("lan2", keyring=Keyring(K1), pool="lan")
    assert await other_lan.runtime.join([lan.addr]) == 1


async def test_verify_incoming_off_accepts_plaintext_members(cluster: Cluster) -> None:
    # Rolling enablement: a has the key but still accepts (and, with verify_outgoing
    # off, sends) plaintext, so an unencrypted member can join it.
    a = cluster.add("a", keyring=Keyring(K1), verify_incoming=False, verify_outgoing=False)
    p = cluster.add("p")
    assert await p.runtime.join([a.addr]) == 1
    await cluster.until(lambda: cluster.converged([a, p], 2), within=30, what="convergence")
    assert a.runtime.stats["accepted_plaintext"] >= 1


async def test_verify_outgoing_on_but_incoming_off_mixed_cluster(cluster: Cluster) -> None:
    # Step 2 of the rollout: everyone has the key and sends encrypted, still accepts plaintext.
    a = cluster.add("a", keyring=Keyring(K1), verify_incoming=False)
    b = cluster.add("b", keyring=Keyring(K1), verify_incoming=False, verify_outgoing=False)
    assert await b.runtime.join([a.addr]) == 1
    await cluster.until(lambda: cluster.converged([a, b], 2), within=30, what="convergence")


async def test_key_rotation_keeps_everyone_talking(cluster: Cluster) -> None:
    rings = [Keyring(K1) for _ in range(3)]
    nodes = [cluster.add(f"n{i}", keyring=rings[i]) for i in range(3)]
    for node in nodes[1:]:
        await node.runtime.join([nodes[0].addr])
    await cluster.until(lambda: cluster.converged(nodes, 3), within=60, what="convergence")
    for step in ("install", "use", "remove"):
        for ring in rings:
            {"install": lambda r: r.install(K2), "use": lambda r: r.use(K2),
             "remove": lambda r: r.remove(K1)}[step](ring)  # fmt: skip
            await cluster.clock.sleep(3)  # gossip runs between each node's change
            assert cluster.converged(nodes, 3), f"lost a member during {step}"
    newcomer = cluster.add("new", keyring=Keyring(K2))
    assert await newcomer.runtime.join([nodes[1].addr]) == 1
    stale = cluster.add("stale", keyring=Keyring(K1))
    assert await stale.runtime.join([nodes[1].addr]) == 0
    await cluster.until(lambda: cluster.converged([*nodes, newcomer], 4), within=60, what="rejoin")
    assert all(not any(s is MemberStatus.SUSPECT for _, s, _ in n.changes) for n in nodes)


async def test_garbage_and_callback_errors_never_stop_the_loops(cluster: Cluster) -> None:
    def explode(member: Member, old: MemberStatus | None) -> None:
        raise RuntimeError("callback bug")

    a = cluster.add("a", callback=explode)
    b = cluster.add("b")
    for junk in (b"", b"\xff", b"\x07\x05", b"\x04" + b"\xc1" * 50, bytes(1400)):
        b.transport.write_to(junk, a.addr)
    stream = await b.transport.dial(a.addr, timeout=1)
    await stream.write_frame(b"\x06garbage")
    reply = await stream.read_frame(timeout=5)
    assert reply[0] == MessageType.ERR
    assert await b.runtime.join([a.addr]) == 1
    await cluster.until(lambda: cluster.converged([a, b], 2), within=30, what="convergence")
    stats = a.runtime.stats
    assert stats["callback_errors"] >= 1
    assert stats.get("core_dropped_malformed", 0) + stats.get("core_dropped_unknown_type", 0) >= 3


async def test_random_bytes_with_a_keyring_are_all_dropped_and_counted(cluster: Cluster) -> None:
    a = cluster.add("a", keyring=Keyring(K1))
    b = cluster.add("b", keyring=Keyring(K1))
    rng = random.Random(42)
    blobs = [rng.randbytes(rng.randrange(0, 1400)) for _ in range(300)]
    blobs += [b"\x01" + blob for blob in blobs[:100]]  # right version byte, wrong everything else
    for blob in blobs:
        b.transport.write_to(blob, a.addr)
    await cluster.until(
        lambda: a.runtime.stats.get("dropped_undecryptable", 0) == len(blobs),
        within=10,
        what="every blob dropped",
    )
    assert await b.runtime.join([a.addr]) == 1  # still serving


class FlakyProtocol(GossipProtocol):
    """A core whose inputs blow up once each, to prove the loops survive a bug."""

    __slots__ = ("blown",)

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.blown: set[str] = set()

    def _once(self, what: str) -> None:
        if what not in self.blown:
            self.blown.add(what)
            raise RuntimeError(f"bug in {what}")

    def receive_packet(self, data, source, now):  # type: ignore[no-untyped-def]
        self._once("packet")
        return super().receive_packet(data, source, now)

    def tick(self, now):  # type: ignore[no-untyped-def]
        self._once("tick")
        return super().tick(now)

    def receive_stream(self, data, source, now):  # type: ignore[no-untyped-def]
        self._once("stream")
        return super().receive_stream(data, source, now)


async def test_core_exceptions_are_logged_and_the_loops_go_on(cluster: Cluster) -> None:
    good = cluster.add("good")
    t = cluster.net.transport()
    flaky = FlakyProtocol(
        config=CONFIG, name="flaky", addr=t.local_addr, tags={}, rng=random.Random(3),
        now=cluster.clock.monotonic(),
    )  # fmt: skip
    runtime = GossipRuntime(protocol=flaky, transport=t, clock=cluster.clock, keyring=None)
    cluster.nodes.append(Node(runtime, t, asyncio.ensure_future(runtime.run())))
    assert await good.runtime.join([t.local_addr]) == 0  # first stream hits the bug
    assert await good.runtime.join([t.local_addr]) == 1
    await cluster.until(
        lambda: (
            {m.name for m in runtime.members()} == {"good", "flaky"}
            and flaky.blown == {"packet", "tick", "stream"}
        ),
        within=30,
        what="recovery",
    )
    stats = runtime.stats
    assert stats["tick_errors"] == 1 and stats["packet_errors"] == 1
    assert stats["inbound_stream_failures"] == 1


async def test_inbound_stream_cap(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    import node.gossip.runtime as runtime_module

    monkeypatch.setattr(runtime_module, "MAX_INBOUND_STREAMS", 1)
    a, b = cluster.add("a"), cluster.add("b")
    silent = await b.transport.dial(a.addr, timeout=1)  # holds the only slot
    await cluster.until(lambda: a.runtime._inbound == 1, within=1, what="slot taken")
    refused = await b.transport.dial(a.addr, timeout=1)
    with pytest.raises(RemoteProtocolError, match="closed"):
        await refused.read_frame(timeout=5)
    assert a.runtime.stats["streams_refused_busy"] == 1
    silent.close()


async def test_leave_of_a_pair_still_tells_the_other(cluster: Cluster) -> None:
    a, b = cluster.add("a"), cluster.add("b")
    assert await b.runtime.join([a.addr]) == 1
    await cluster.until(lambda: cluster.converged([a, b], 2), within=30, what="convergence")
    await b.runtime.leave(timeout=5)
    await b.kill()
    await cluster.until(lambda: a.view()["b"] is MemberStatus.LEFT, within=10, what="leave seen")


async def test_reaped_members_are_reported(cluster: Cluster) -> None:
    short = dataclasses.replace(CONFIG, tombstone_timeout=60.0, reap_interval=5.0)
    reaped: list[str] = []
    a = cluster.add("a", config=short, on_member_reaped=lambda m: reaped.append(m.name))
    b = cluster.add("b", config=short)
    assert await b.runtime.join([a.addr]) == 1
    await cluster.until(lambda: cluster.converged([a, b], 2), within=30, what="convergence")
    await b.runtime.leave(timeout=5)
    await b.kill()
    await cluster.until(lambda: reaped == ["b"], within=120, what="reap")
    assert "b" not in a.view()


async def test_leave_alone_returns_at_once(cluster: Cluster) -> None:
    lonely = cluster.add("lonely")
    real_start = asyncio.get_running_loop().time()
    await lonely.runtime.leave(timeout=30)
    assert asyncio.get_running_loop().time() - real_start < 5


async def test_resolve_turns_names_into_ip_literals() -> None:
    assert await resolve(("127.0.0.1", 8301)) == ("127.0.0.1", 8301)
    host, port = await resolve(("localhost", 8301))
    assert port == 8301 and host in ("127.0.0.1", "::1")


def test_priority_classification() -> None:
    alive = encode(Alive(incarnation=1, node="n", addr=("127.0.0.1", 1), meta=b""))
    ack = encode(Ack(seq=1))
    ping = bytes((MessageType.PING,)) + b"body"  # only the type byte matters
    assert _is_priority(alive) and _is_priority(ack) and not _is_priority(ping)
    assert _is_priority(make_compound([ping, alive])) and not _is_priority(make_compound([ping]))
    assert not _is_priority(b"") and not _is_priority(b"\x07\xff")


def test_encryption_needs_room_in_the_packet() -> None:
    net = MemoryNetwork()
    t = net.transport()
    protocol = GossipProtocol(
        config=CONFIG, name="a", addr=t.local_addr, tags={}, rng=random.Random(1), now=0.0
    )
    with pytest.raises(ConfigError, match="packet_overhead is 0 but encryption adds 29"):
        GossipRuntime(protocol=protocol, transport=t, clock=FakeClock(), keyring=Keyring(K1))
    assert with_encryption_overhead(CONFIG).packet_overhead == 29
    # no keyring, or plaintext outgoing: no overhead needed
    GossipRuntime(protocol=protocol, transport=t, clock=FakeClock(), keyring=None)
    GossipRuntime(
        protocol=protocol,
        transport=t,
        clock=FakeClock(),
        keyring=Keyring(K1),
        verify_outgoing=False,
    )


# --------------------------------------------------------------------------- real sockets

#: Loopback-speed profile: memberlist's local config, probing and gossiping faster.
FAST = dataclasses.replace(
    GossipConfig.local(), probe_interval=0.5, probe_timeout=0.2, gossip_interval=0.05,
    push_pull_interval=5.0,
)  # fmt: skip


@dataclass
class NetNode:
    runtime: GossipRuntime
    transport: NetTransport
    task: asyncio.Task[None]

    def view(self) -> dict[str, MemberStatus]:
        return {m.name: m.status for m in self.runtime.members()}

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.transport.close()


@pytest.fixture
async def net_nodes() -> AsyncIterator[Callable[..., object]]:
    started: list[NetNode] = []

    async def start(name: str, keyring: Keyring | None = None) -> NetNode:
        runtime = await open_pool(
            name=name, bind=("127.0.0.1", 0), advertise=("127.0.0.1", 0), config=FAST,
            tags={"role": "node"}, keyring=keyring, pool="lan", rng=random.Random(name),
        )  # fmt: skip
        assert isinstance(runtime.transport, NetTransport)
        assert runtime.protocol.local_addr == runtime.transport.local_addr
        if keyring is not None:
            assert runtime.config.packet_overhead == 29
        node = NetNode(runtime, runtime.transport, asyncio.ensure_future(runtime.run()))
        started.append(node)
        return node

    yield start
    for node in started:
        await node.stop()


def alive_everywhere(nodes: list[NetNode], n: int) -> bool:
    return all(sum(s is MemberStatus.ALIVE for s in x.view().values()) == n for x in nodes)


async def test_real_sockets_pool_converges_and_refuses_wrong_key(net_nodes) -> None:  # type: ignore[no-untyped-def]
    nodes = [await net_nodes(f"n{i}", Keyring(K1)) for i in range(5)]
    for node in nodes[1:]:
        assert await node.runtime.join([nodes[0].transport.local_addr]) == 1
    await wait_for(lambda: alive_everywhere(nodes, 5), "convergence", 15, interval=0.02)
    intruder = await net_nodes("intruder", Keyring(K2))
    assert await intruder.runtime.join([nodes[1].transport.local_addr]) == 0
    assert nodes[1].runtime.stats["dropped_undecryptable"] >= 1
    assert "intruder" not in nodes[1].view() and set(intruder.view()) == {"intruder"}


async def test_real_sockets_key_rotation(net_nodes) -> None:  # type: ignore[no-untyped-def]
    rings = [Keyring(K1) for _ in range(3)]
    nodes = [await net_nodes(f"n{i}", rings[i]) for i in range(3)]
    for node in nodes[1:]:
        assert await node.runtime.join([nodes[0].transport.local_addr]) == 1
    await wait_for(lambda: alive_everywhere(nodes, 3), "convergence", 15, interval=0.02)
    for ring in rings:
        ring.install(K2)
    for ring in rings:
        ring.use(K2)
        # a push-pull between a switched and an unswitched node still works
        assert await nodes[0].runtime.join([nodes[2].transport.local_addr]) == 1
    for ring in rings:
        ring.remove(K1)
    assert await nodes[2].runtime.join([nodes[1].transport.local_addr]) == 1
    stale = await net_nodes("stale", Keyring(K1))
    assert await stale.runtime.join([nodes[0].transport.local_addr]) == 0
    fresh = await net_nodes("fresh", Keyring(K2))
    assert await fresh.runtime.join([nodes[0].transport.local_addr]) == 1
    await wait_for(lambda: alive_everywhere([*nodes, fresh], 4), "rejoin", 15, interval=0.02)
