"""Cluster behaviour in simulated time (ClusterSim): joins, failures, loss, partitions."""

from __future__ import annotations

import dataclasses

import pytest

from node.gossip import GossipConfig, MemberChanged, MemberStatus, suspicion_timeouts
from node.testing import ClusterSim, LinkConditions

ALIVE, SUSPECT, DEAD = MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.DEAD


def _cluster(n: int, *, seed: int = 1, loss: float = 0.0, window: float = 2.0) -> ClusterSim:
    sim = ClusterSim(seed=seed, conditions=LinkConditions(loss=loss))
    sim.add_nodes(n, window=window)
    assert sim.run_until_true(sim.converged, timeout=120, poll=0.5), "cluster did not converge"
    return sim


def _detection_bound(cfg: GossipConfig, n: int) -> float:
    """Lifeguard bound for 'every member marks a killed node dead'.

    First detection by round-robin probing (a few intervals, SWIM expects ~1.6), the
    suspicion timeout at its maximum (no confirmations at all), then dissemination of the
    dead message (a few gossip rounds) — with a generous margin of 5 probe intervals.
    """
    _, hi = suspicion_timeouts(suspicion_mult=cfg.suspicion_mult,
                               max_timeout_mult=cfg.suspicion_max_timeout_mult,
                               n=n, probe_interval=cfg.probe_interval)  # fmt: skip
    return 5 * cfg.probe_interval + cfg.probe_interval + hi + 5 * cfg.probe_interval


@pytest.mark.timeout(600)  # pure CPU: about 40 s alone, slower on a busy 2-core box
def test_ClusterSim_thousand_nodes_join_and_converge() -> None:
    sim = ClusterSim(seed=7)
    sim.add_nodes(1000, window=5.0)
    assert sim.run_until_true(sim.converged, timeout=400, poll=2.0)
    views = {len(n.proto.members()) for n in sim.nodes.values()}
    assert views == {1000}


def test_ClusterSim_killed_node_detected_by_everyone_within_lifeguard_bound() -> None:
    sim = _cluster(100)
    dead_at: dict[str, float] = {}

    def on_change(observer: str, change: object, now: float) -> None:
        c = change
        if isinstance(c, MemberChanged) and c.member.name == "n42" and c.member.status is DEAD:
            dead_at.setdefault(observer, now)

    sim.listeners.append(on_change)
    sim.kill("n42")
    killed = sim.now
    bound = _detection_bound(sim.config, 100)
    assert sim.run_until_true(lambda: len(dead_at) == 99, timeout=bound, poll=0.25)
    assert max(dead_at.values()) - killed <= bound
    # Lifeguard confirmations make it much faster than the worst case.
    lo, _ = suspicion_timeouts(suspicion_mult=4, max_timeout_mult=6, n=100, probe_interval=1.0)
    assert max(dead_at.values()) - killed < lo * 3


def test_ClusterSim_no_healthy_node_declared_dead_at_ten_percent_loss() -> None:
    sim = _cluster(48, seed=3, loss=0.10)
    false_deaths: list[tuple[str, str]] = []

    def on_change(observer: str, change: object, now: float) -> None:
        if isinstance(change, MemberChanged) and change.member.status is DEAD:
            false_deaths.append((observer, change.member.name))

    sim.listeners.append(on_change)
    sim.run_for(600.0)  # ten simulated minutes
    assert false_deaths == []
    assert sim.converged()
    probes = sum(n.proto.stats.get("probes", 0) for n in sim.nodes.values())
    failures = sum(n.proto.stats.get("probe_failures", 0) for n in sim.nodes.values())
    assert probes > 48 * 500  # the detector really ran all along
    assert failures > 0  # and loss really made probes fail: suspicion/refutation absorbed them


def test_ClusterSim_suspected_node_refutes() -> None:
    sim = _cluster(30)
    before = sim.nodes["n7"].proto.incarnation
    others = [n for n in sim.nodes if n != "n7"]
    sim.partition(["n7"], others)
    # Long enough to be suspected, far shorter than the suspicion timeout.
    assert sim.run_until_true(lambda: SUSPECT in sim.status_everywhere("n7"), timeout=30, poll=0.1)
    sim.heal()
    assert sim.run_until_true(lambda: sim.status_everywhere("n7") == {ALIVE}, timeout=30, poll=0.1)
    assert sim.nodes["n7"].proto.incarnation > before
    assert sim.nodes["n7"].proto.stats.get("refutes", 0) >= 1
    assert DEAD not in sim.status_everywhere("n7")


def test_ClusterSim_partition_heals_and_both_sides_converge() -> None:
    sim = _cluster(40, seed=5)
    left = [f"n{i}" for i in range(20)]
    right = [f"n{i}" for i in range(20, 40)]
    sim.partition(left, right)
    # Each side declares the other dead.
    assert sim.run_until_true(
        lambda: (
            sim.status_everywhere("n30", left) == {DEAD}
            and sim.status_everywhere("n3", right) == {DEAD}
        ),
        timeout=120,
        poll=1.0,
    )
    sim.heal()
    # Serf-style reconnects (every 30 s, probability failed/alive) re-merge the halves.
    assert sim.run_until_true(sim.converged, timeout=300, poll=1.0)


def test_ClusterSim_restarted_node_rejoins_after_being_declared_dead() -> None:
    sim = _cluster(30, seed=9)
    old_inc = max(n.proto.member("n4").incarnation for n in sim.nodes.values())  # type: ignore[union-attr]
    sim.kill("n4")
    assert sim.run_until_true(lambda: sim.status_everywhere("n4") == {DEAD}, timeout=60, poll=0.5)
    held = max(n.proto.member("n4").incarnation for n in sim.nodes.values() if n.up)  # type: ignore[union-attr]
    node = sim.restart("n4", join=["n0"])  # a fresh process: incarnation 0, knows nobody
    assert node.proto.incarnation == 0
    assert sim.run_until_true(sim.converged, timeout=60, poll=0.5)
    assert node.proto.incarnation > max(old_inc, held)


def test_ClusterSim_restarted_node_wins_back_without_joining_the_accusers() -> None:
    # memberlist#311: the restarted node only talks to one member; everyone else holds
    # it dead at a higher incarnation and must re-accuse it instead of dropping its alive.
    cfg = dataclasses.replace(GossipConfig.lan(), push_pull_interval=3600.0)
    sim = ClusterSim(seed=11, config=cfg)
    sim.add_nodes(20, window=1.0)
    assert sim.run_until_true(sim.converged, timeout=60, poll=0.5)
    sim.kill("n3")
    assert sim.run_until_true(lambda: sim.status_everywhere("n3") == {DEAD}, timeout=60, poll=0.5)
    sim.restart("n3", join=["n0"])
    assert sim.run_until_true(sim.converged, timeout=60, poll=0.5)


def test_ClusterSim_graceful_leave_marks_left_everywhere() -> None:
    sim = _cluster(25)
    sim.leave("n6")
    assert sim.run_until_true(
        lambda: sim.status_everywhere("n6") == {MemberStatus.LEFT}, timeout=10, poll=0.1
    )
    sim.kill("n6")
    sim.run_for(60)
    assert sim.status_everywhere("n6") == {MemberStatus.LEFT}


def test_ClusterSim_is_deterministic_for_a_seed() -> None:
    def run() -> list[tuple[str, int, str]]:
        sim = ClusterSim(seed=21, conditions=LinkConditions(loss=0.2, duplicate=0.05, reorder=0.1))
        sim.add_nodes(15, window=1.0)
        sim.run_for(20)
        return sorted((n.name, n.proto.incarnation, str(n.proto.stats)) for n in sim.nodes.values())

    assert run() == run()


def test_MemoryNetwork_loss_partition_and_duplication() -> None:
    import random

    from node.testing import MemoryNetwork

    net = MemoryNetwork(rng=random.Random(1), conditions=LinkConditions(loss=0.3, duplicate=0.1))
    a, b, c = ("10.0.0.1", 1), ("10.0.0.2", 1), ("10.0.0.3", 1)
    fates = [net.packet_delays(a, b, 100) for _ in range(10_000)]
    lost = sum(1 for f in fates if not f) / len(fates)
    dup = sum(1 for f in fates if len(f) == 2) / len(fates)
    assert 0.27 < lost < 0.33 and 0.05 < dup < 0.09
    net.partition([a], [b, c])
    assert net.packet_delays(a, b, 1) == () and net.stream_delay(a, c, 1) is None
    assert net.can_reach(b, c)
    net.heal()
    assert net.stream_delay(a, b, 1) is not None


async def test_FakeClock_jump_wakes_sleepers_in_order() -> None:
    import asyncio

    from node.testing import FakeClock

    clock = FakeClock()
    woke: list[float] = []

    async def sleeper(t: float) -> None:
        await clock.sleep_until(t)
        woke.append(clock.monotonic())

    tasks = [asyncio.ensure_future(sleeper(t)) for t in (3.0, 1.0, 2.0)]
    await asyncio.sleep(0)
    clock.jump(1.5)
    await asyncio.sleep(0)
    assert woke == [1.5]
    clock.advance_to(10.0)
    await asyncio.gather(*tasks)
    assert woke == [1.5, 10.0, 10.0]
    assert clock.utcnow().year == 2026


async def test_FakeClock_autojump_runs_to_the_next_sleeper() -> None:
    from node.testing import FakeClock

    clock = FakeClock(autojump_threshold=0)
    await clock.sleep(3600.0)  # returns at once in real time
    assert clock.monotonic() == 3600.0
