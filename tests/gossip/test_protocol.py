"""GossipProtocol behaviour, one rule at a time, with cores wired by hand (no event loop)."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

import pytest

from node.errors import LocalProtocolError
from node.gossip import (
    GossipConfig,
    GossipProtocol,
    MemberChanged,
    MemberReaped,
    MemberStatus,
    SendPacket,
    SendStream,
)
from node.gossip.messages import (
    Ack,
    Alive,
    Dead,
    Nack,
    Ping,
    PingReq,
    PushNodeState,
    PushPull,
    Suspect,
    User,
    decode,
    decode_packet,
    encode,
    split_compound,
)
from node.gossip.protocol import Action

CFG = GossipConfig.lan()


def core(
    name: str, *, now: float = 0.0, delegate: object = None, cfg: GossipConfig = CFG
) -> GossipProtocol:
    i = int(name[1:]) if name[1:].isdigit() else 99
    return GossipProtocol(config=cfg, name=name, addr=(f"10.0.0.{i}", 7946), tags={},
                          rng=random.Random(i), now=now, delegate=delegate)  # type: ignore[arg-type]  # fmt: skip


class Mesh:
    """Cores with instant delivery; ``drop(src, dst, msgs)`` filters packets."""

    def __init__(self, *cores: GossipProtocol) -> None:
        self.cores = {c.local_addr: c for c in cores}
        self.drop: Callable[[GossipProtocol, tuple[str, int], list[object]], bool] = (
            lambda s, d, m: False
        )
        self.changes: list[tuple[str, MemberChanged | MemberReaped]] = []
        self.now = 0.0
        self.after_tick: Callable[[], None] = lambda: None

    def deliver(self, src: GossipProtocol, actions: list[Action], depth: int = 0) -> None:
        assert depth < 50
        for a in actions:
            if isinstance(a, SendPacket):
                assert len(a.payload) <= src._cfg.packet_budget
                dst = self.cores.get(a.to)
                msgs = [m for m, _ in decode_packet(a.payload, max_bytes=65507)]
                if dst is not None and not self.drop(src, a.to, msgs):
                    self.deliver(
                        dst, dst.receive_packet(a.payload, src.local_addr, self.now), depth + 1
                    )
            elif isinstance(a, SendStream):
                dst = self.cores.get(a.to)
                if dst is None or self.drop(src, a.to, []):
                    self.deliver(src, src.stream_failed(a.ref, self.now), depth + 1)
                    continue
                reply, acts = dst.receive_stream(a.payload, src.local_addr, self.now)
                self.deliver(dst, acts, depth + 1)
                assert reply is not None
                self.deliver(src, src.receive_stream_reply(a.ref, reply, self.now), depth + 1)
            else:
                self.changes.append((src.local_name, a))

    def run_until(self, t: float) -> None:
        while True:
            when, c = min(
                ((c.next_deadline() or t + 1, c) for c in self.cores.values()), key=lambda x: x[0]
            )
            if when > t:
                break
            self.now = max(self.now, when)
            self.deliver(c, c.tick(self.now))
            self.after_tick()
        self.now = t

    def join_all(self) -> None:
        first, *rest = self.cores.values()
        for c in rest:
            self.deliver(c, c.join([first.local_addr], self.now))
        self.run_until(self.now + 5)


def statuses(c: GossipProtocol) -> dict[str, MemberStatus]:
    return {m.name: m.status for m in c.members()}


def test_ping_is_answered_with_ack_of_same_seq() -> None:
    a = core("n1")
    out = a.receive_packet(encode(Ping(seq=77, node="n1", source_addr=("10.0.0.2", 7946),
                                       source_node="n2")), ("10.0.0.2", 7946), 1.0)  # fmt: skip
    assert len(out) == 1 and isinstance(out[0], SendPacket)
    msgs = [m for m, _ in decode_packet(out[0].payload, max_bytes=1400)]
    assert msgs[0] == Ack(seq=77)
    assert out[0].to == ("10.0.0.2", 7946)


def test_ping_for_another_node_is_refused() -> None:
    a = core("n1")
    ping = Ping(seq=1, node="someone-else", source_addr=("10.0.0.2", 7946), source_node="n2")
    assert a.receive_packet(encode(ping), ("10.0.0.2", 7946), 1.0) == []
    assert a.stats["dropped_ping_wrong_node"] == 1


def test_join_converges_three_cores() -> None:
    mesh = Mesh(core("n1"), core("n2"), core("n3"))
    mesh.join_all()
    for c in mesh.cores.values():
        assert statuses(c) == {
            "n1": MemberStatus.ALIVE,
            "n2": MemberStatus.ALIVE,
            "n3": MemberStatus.ALIVE,
        }


def test_failed_probe_goes_indirect_then_tcp_then_suspects() -> None:
    n1, n2, n3, n4 = core("n1"), core("n2"), core("n3"), core("n4")
    mesh = Mesh(n1, n2, n3, n4)
    mesh.join_all()
    sent: list[object] = []

    def drop(src: GossipProtocol, dst: tuple[str, int], msgs: list[object]) -> bool:
        if src is n1:
            sent.extend(msgs)
        return dst == n4.local_addr or src is n4  # n4 is unreachable, even over TCP

    mesh.drop = drop
    mesh.run_until(mesh.now + 4)
    reqs = [m for m in sent if isinstance(m, PingReq)]
    assert reqs and all(r.node == "n4" and r.nack for r in reqs)
    assert n1.stats.get("stream_failures", 0) >= 1  # the TCP fallback ping was tried
    assert statuses(n1)["n4"] is MemberStatus.SUSPECT
    # The relays answered with nacks, so n1 does not blame itself.
    assert n1.health_score == 0


def _lonely_probe(nack: bool) -> GossipProtocol:
    """n1 knows n2 and n3, answers nobody; returns n1 after one failed probe."""
    a = core("n1", cfg=dataclasses.replace(CFG, disable_tcp_pings=True))
    for i in (2, 3):
        addr = (f"10.0.0.{i}", 7946)
        a.receive_packet(encode(Alive(incarnation=0, node=f"n{i}", addr=addr)), addr, 0.0)
    t, seq = 0.0, None
    while seq is None:
        t = a.next_deadline()  # type: ignore[assignment]
        for x in a.tick(t):
            for m, _ in decode_packet(x.payload, max_bytes=1400):  # type: ignore[union-attr]
                if isinstance(m, PingReq):
                    seq = m.seq
    if nack:
        a.receive_packet(encode(Nack(seq=seq)), ("10.0.0.2", 7946), t + 0.1)
    while a.stats.get("probe_failures", 0) == 0:
        t = a.next_deadline()  # type: ignore[assignment]
        a.tick(t)
    return a


def test_missing_nacks_raise_local_health_score() -> None:
    assert _lonely_probe(nack=False).health_score == 1  # the relay's nack never came: maybe it's us
    assert (
        _lonely_probe(nack=True).health_score == 0
    )  # the relay is fine and says the target is gone


def test_tcp_fallback_success_prevents_suspicion() -> None:
    n1, n2 = core("n1"), core("n2")
    mesh = Mesh(n1, n2)
    mesh.join_all()
    mesh.drop = lambda s, d, m: (
        bool(m) and (s is n2 or d == n2.local_addr)
    )  # UDP only (m == [] for streams)
    mesh.run_until(mesh.now + 5)
    assert statuses(n1)["n2"] is MemberStatus.ALIVE
    assert n1.stats.get("probe_tcp_only", 0) >= 1


def test_suspicion_about_self_is_refuted_with_higher_incarnation() -> None:
    a = core("n1")
    out = a.receive_packet(
        encode(Suspect(incarnation=4, node="n1", accuser="n2")), ("10.0.0.2", 7946), 1.0
    )
    assert out == []
    assert a.incarnation == 5
    assert a.stats["refutes"] == 1
    assert a.health_score == 1
    # The refutation rides on the next packet we send.
    ack = a.receive_packet(encode(Ping(seq=1, node="n1", source_addr=("10.0.0.2", 7946),
                                       source_node="n2")), ("10.0.0.2", 7946), 1.1)  # fmt: skip
    msgs = [m for m, _ in decode_packet(ack[0].payload, max_bytes=1400)]  # type: ignore[union-attr]
    assert Alive(incarnation=5, node="n1", addr=a.local_addr) in msgs


def test_probe_of_a_suspect_carries_the_suspicion_buddy_system() -> None:
    n1, n2 = core("n1"), core("n2")
    mesh = Mesh(n1, n2)
    mesh.join_all()
    packets: list[list[object]] = []

    def drop(src: GossipProtocol, dst: tuple[str, int], msgs: list[object]) -> bool:
        if src is n1 and dst == n2.local_addr:
            packets.append(msgs)
            return True
        return False

    mesh.drop = drop
    n1.receive_packet(encode(Suspect(incarnation=n2.incarnation, node="n2", accuser="n9")),
                      ("10.0.0.9", 7946), mesh.now)  # fmt: skip
    mesh.run_until(mesh.now + 2)
    probes = [p for p in packets if any(isinstance(m, Ping) and m.node == "n2" for m in p)]
    assert probes
    assert Suspect(incarnation=0, node="n2", accuser="n1") in probes[0]
    mesh.drop = lambda s, d, m: False
    mesh.run_until(mesh.now + 2)
    assert statuses(n1)["n2"] is MemberStatus.ALIVE  # n2 heard it and refuted
    assert n2.incarnation == 1


def test_push_pull_downgrades_remote_dead_to_suspect() -> None:
    a = core("n1")
    a.receive_packet(
        encode(Alive(incarnation=3, node="n5", addr=("10.0.0.5", 7946))), ("10.0.0.5", 7946), 0.0
    )
    pp = PushPull(join=False, nodes=(PushNodeState(name="n5", addr=("10.0.0.5", 7946), meta=b"",
                                                  incarnation=3, status=MemberStatus.DEAD),))  # fmt: skip
    reply, actions = a.receive_stream(encode(pp), ("10.0.0.7", 7946), 1.0)
    assert statuses(a)["n5"] is MemberStatus.SUSPECT
    assert any(
        isinstance(x, MemberChanged) and x.member.status is MemberStatus.SUSPECT for x in actions
    )
    assert isinstance(decode(reply or b""), PushPull)


def test_stale_alive_from_restarted_node_is_reaccused() -> None:
    # memberlist#311: we hold n5 dead at incarnation 7; its new process says alive at 0.
    a = core("n1")
    addr5 = ("10.0.0.5", 7946)
    a.receive_packet(encode(Alive(incarnation=7, node="n5", addr=addr5)), addr5, 0.0)
    a.receive_packet(encode(Dead(incarnation=7, node="n5", accuser="n2")), ("10.0.0.2", 7946), 1.0)
    out = a.receive_packet(encode(Alive(incarnation=0, node="n5", addr=addr5)), addr5, 2.0)
    assert [x for x in out if isinstance(x, SendPacket)] == [
        SendPacket(to=addr5, payload=encode(Dead(incarnation=7, node="n5", accuser="n1")))
    ]
    # The restarted node refutes above 7, and that alive is accepted.
    b = core("n5")
    b.receive_packet(out[0].payload, a.local_addr, 2.1)  # type: ignore[union-attr]
    assert b.incarnation == 8
    a.receive_packet(encode(Alive(incarnation=8, node="n5", addr=addr5)), addr5, 2.2)
    assert statuses(a)["n5"] is MemberStatus.ALIVE


def test_address_conflict_is_rejected_and_counted() -> None:
    a = core("n1")
    a.receive_packet(
        encode(Alive(incarnation=1, node="n5", addr=("10.0.0.5", 7946))), ("10.0.0.5", 7946), 0.0
    )
    a.receive_packet(
        encode(Alive(incarnation=9, node="n5", addr=("10.9.9.9", 7946))), ("10.9.9.9", 7946), 1.0
    )
    assert a.member("n5").addr == ("10.0.0.5", 7946)  # type: ignore[union-attr]
    assert a.stats["addr_conflicts"] == 1


def test_leave_marks_us_left_everywhere_and_stops_probing() -> None:
    mesh = Mesh(core("n1"), core("n2"), core("n3"))
    mesh.join_all()
    n1 = mesh.cores[("10.0.0.1", 7946)]
    mesh.deliver(n1, n1.leave(mesh.now))
    mesh.run_until(mesh.now + 3)
    for c in mesh.cores.values():
        assert statuses(c)["n1"] is MemberStatus.LEFT
    probes = n1.stats.get("probes", 0)
    mesh.run_until(mesh.now + 5)
    assert n1.stats.get("probes", 0) == probes


def test_force_leave_and_update_tags_validate_input() -> None:
    a = core("n1")
    with pytest.raises(LocalProtocolError, match="no member named 'ghost'"):
        a.force_leave("ghost", 0.0)
    with pytest.raises(LocalProtocolError, match="limit 512"):
        a.update_tags({"k": "v" * 600}, 0.0)
    out = a.update_tags({"role": "server"}, 1.0)
    assert a.incarnation == 1
    assert isinstance(out[0], MemberChanged) and out[0].member.tags == {"role": "server"}


def test_dead_members_are_reaped_after_reconnect_timeout() -> None:
    cfg = dataclasses.replace(CFG, reconnect_timeout=100.0, reap_interval=10.0)
    a = core("n1", cfg=cfg)
    addr5 = ("10.0.0.5", 7946)
    a.receive_packet(encode(Alive(incarnation=1, node="n5", addr=addr5)), addr5, 0.0)
    a.receive_packet(encode(Dead(incarnation=1, node="n5", accuser="n2")), ("10.0.0.2", 7946), 1.0)
    reaped: list[Action] = []
    t = 1.0
    while t < 150.0:
        t = a.next_deadline() or 150.0
        reaped += [x for x in a.tick(t) if isinstance(x, MemberReaped)]
    assert [r.member.name for r in reaped] == ["n5"]  # type: ignore[union-attr]
    assert a.member("n5") is None


def test_packets_never_exceed_budget_with_a_full_queue() -> None:
    a = core("n1")
    for i in range(300):
        a.receive_packet(encode(Alive(incarnation=1, node=f"member-{i:04d}", addr=(f"10.1.{i // 250}.{i % 250}", 7946))),
                         ("10.0.0.2", 7946), 0.0)  # fmt: skip
    t = 0.0
    sizes = []
    for _ in range(50):
        t = a.next_deadline() or t + 1
        sizes += [len(x.payload) for x in a.tick(t) if isinstance(x, SendPacket)]
    assert sizes and max(sizes) <= CFG.packet_budget
    assert max(len(split_compound(b"\x07" + b"")) if False else 0 for _ in [0]) == 0


class RecordingDelegate:
    def __init__(self) -> None:
        self.got: list[bytes] = []
        self.merged: list[tuple[bytes, bool]] = []
        self.outbox = [b"user-1"]

    def notify_msg(self, payload: bytes) -> None:
        self.got.append(payload)

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        out, self.outbox = self.outbox, []
        return out

    def local_state(self, join: bool) -> bytes:
        return b"state-of-" + (b"join" if join else b"sync")

    def merge_remote_state(self, payload: bytes, join: bool) -> None:
        self.merged.append((payload, join))


def test_delegate_rides_broadcasts_and_push_pull() -> None:
    d1, d2 = RecordingDelegate(), RecordingDelegate()
    n1, n2 = core("n1", delegate=d1), core("n2", delegate=d2)
    mesh = Mesh(n1, n2)
    mesh.join_all()
    assert (b"state-of-join", True) in d1.merged and (b"state-of-join", True) in d2.merged
    assert b"user-1" in d1.got and b"user-1" in d2.got
    n1.receive_packet(encode(User(payload=b"direct")), n2.local_addr, mesh.now)
    assert d1.got[-1] == b"direct"


@pytest.mark.parametrize(
    ("n", "interval"),
    [(1, 30.0), (32, 30.0), (33, 60.0), (64, 60.0), (65, 90.0), (1000, 180.0), (10000, 300.0)],
)
def test_push_pull_scale_table(n: int, interval: float) -> None:
    from node.gossip import push_pull_scale

    assert push_pull_scale(30.0, n) == interval


def test_GossipConfig_profiles_derive_from_lan() -> None:
    lan, wan, local = GossipConfig.lan(), GossipConfig.wan(), GossipConfig.local()
    assert (lan.probe_interval, lan.probe_timeout, lan.suspicion_mult, lan.gossip_nodes) == (
        1.0,
        0.5,
        4,
        3,
    )
    assert (wan.probe_interval, wan.probe_timeout, wan.suspicion_mult, wan.gossip_nodes) == (
        5.0,
        3.0,
        6,
        4,
    )
    assert (local.probe_timeout, local.indirect_checks, local.retransmit_mult) == (0.2, 1, 2)
    assert lan.reconnect_timeout == 72 * 3600 and lan.udp_buffer_size == 1400
    assert wan.udp_buffer_size == lan.udp_buffer_size  # not overridden


def test_GossipConfig_rejects_nonsense_with_the_key_named() -> None:
    from node.errors import ConfigError

    with pytest.raises(ConfigError, match="probe_timeout"):
        dataclasses.replace(CFG, probe_timeout=2.0)
    with pytest.raises(ConfigError, match="gossip_interval"):
        dataclasses.replace(CFG, gossip_interval=0.0)
