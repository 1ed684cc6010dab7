"""Simulated gossip benchmark (ClusterSim, LAN profile): dissemination, detection, cost.

For each N and packet-loss rate, starting from a converged cluster:

- join: time until 99.99 % of members know a new member (from its join push-pull), and the
  ratio to the Serf convergence model of reference/gossip.md §5.1;
- kill: time until every member marks a killed member dead, against memberlist's
  expected time (SWIM first detection e/(e-1) probe intervals + the Lifeguard minimum
  suspicion timeout) and its upper bound (maximum suspicion timeout + a few intervals);
- false positives: healthy members declared dead by anyone during the run;
- bytes/s per node (UDP + streams), and CPU seconds per simulated second (this window
  includes the first push-pull round after the bootstrap, so it is above steady state).

Usage: python scripts/bench/gossip.py [--quick] [--sizes 100,1000] [--losses 0,0.1] [--json FILE]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from node.gossip import GossipConfig, MemberChanged, MemberStatus, suspicion_timeouts  # noqa: E402
from node.testing import ClusterSim, LinkConditions  # noqa: E402

TARGET_FRACTION = 0.9999


def serf_model_seconds(n: int, loss: float, *, fanout: int = 3, interval: float = 0.2) -> float:
    """Serf simulator (logistic epidemic): seconds until 99.99 % of ``n`` are infected."""
    contact = (fanout / n) * (1 - loss) * 0.5
    # N / (1 + (N+1) e^(-contact N x)) = f N  =>  x = ln((N+1) f / (1-f)) / (contact N)
    rounds = math.log((n + 1) * TARGET_FRACTION / (1 - TARGET_FRACTION)) / (contact * n)
    return math.ceil(rounds) * interval


@dataclass
class Row:
    """One result line: cluster size, loss, and the measured times."""

    n: int
    loss: float
    join_s: float | None
    serf_model_s: float
    ratio: float | None
    kill_all_dead_s: float | None
    kill_expected_s: float
    kill_upper_s: float
    false_positives: int
    bytes_per_node_s: float
    cpu_per_sim_s: float


def _bytes(sim: ClusterSim) -> int:
    """UDP payload bytes plus stream (push-pull, TCP ping) bytes sent so far."""
    return sim.network.bytes_sent + sim.network.stream_bytes


def run_case(n: int, loss: float, *, seed: int, settle: float, window: float) -> Row:
    """Simulate ``n`` members at ``loss`` packet loss; time join, detection and recovery."""
    cfg = GossipConfig.lan()
    sim = ClusterSim(seed=seed, config=cfg, conditions=LinkConditions(loss=loss))
    sim.bootstrap(n - 1)
    # Millions of long-lived member entries make every cyclic-GC pass crawl; they are
    # acyclic and permanent, so move them out of the collector's sight.
    gc.collect()
    gc.freeze()
    sim.run_for(settle)  # let the bootstrap's own alive broadcasts drain
    killed: set[str] = set()
    knows: dict[str, float] = {}
    dead_at: dict[str, float] = {}
    false_pos: list[tuple[str, str]] = []
    victim = f"n{random.Random(seed).randrange(1, n - 1)}"

    def listener(observer: str, change: object, now: float) -> None:
        if not isinstance(change, MemberChanged):
            return
        m = change.member
        if m.name == "new" and m.status is MemberStatus.ALIVE:
            knows.setdefault(observer, now)
        if m.status is MemberStatus.DEAD:
            if m.name in killed:
                dead_at.setdefault(observer, now)
            else:
                false_pos.append((observer, m.name))

    sim.listeners.append(listener)
    cpu0, bytes0, t0 = time.process_time(), _bytes(sim), sim.now
    # -- a new member joins through one random seed
    seed_name = f"n{random.Random(seed + 1).randrange(n - 1)}"
    sim.add_node("new", join=[seed_name])
    need = math.ceil(TARGET_FRACTION * (n - 1))
    joined = sim.run_until_true(lambda: len(knows) >= need, timeout=120, poll=0.05)
    join_s = (max(sorted(knows.values())[:need]) - t0) if joined else None
    # -- a member is killed
    killed.add(victim)
    sim.kill(victim)
    t_kill = sim.now
    others = n - 1
    _, hi = suspicion_timeouts(suspicion_mult=cfg.suspicion_mult,
                               max_timeout_mult=cfg.suspicion_max_timeout_mult,
                               n=n, probe_interval=cfg.probe_interval)  # fmt: skip
    upper = hi + 6 * cfg.probe_interval
    sim.run_until_true(lambda: len(dead_at) >= others, timeout=upper * 2, poll=0.1)
    kill_s = (max(dead_at.values()) - t_kill) if len(dead_at) >= others else None
    sim.run_for(window)  # keep watching for false positives
    sim_elapsed = sim.now - t0
    lo, _ = suspicion_timeouts(suspicion_mult=cfg.suspicion_mult,
                               max_timeout_mult=cfg.suspicion_max_timeout_mult,
                               n=n, probe_interval=cfg.probe_interval)  # fmt: skip
    expected = cfg.probe_interval * math.e / (math.e - 1) + lo
    model = serf_model_seconds(n, loss)
    return Row(
        n=n,
        loss=loss,
        join_s=round(join_s, 3) if join_s is not None else None,
        serf_model_s=round(model, 2),
        ratio=round(join_s / model, 2) if join_s is not None else None,
        kill_all_dead_s=round(kill_s, 2) if kill_s is not None else None,
        kill_expected_s=round(expected, 2),
        kill_upper_s=round(upper, 2),
        false_positives=len(false_pos),
        bytes_per_node_s=round((_bytes(sim) - bytes0) / n / sim_elapsed, 1),
        cpu_per_sim_s=round((time.process_time() - cpu0) / sim_elapsed, 3),
    )


def main(argv: list[str] | None = None) -> int:
    """Run the table of cases and print it (or JSON)."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick", action="store_true", help="N=100,1000 at 0%% and 10%% loss, short windows"
    )
    ap.add_argument("--sizes", default=None, help="comma-separated N (default 100,1000,5000)")
    ap.add_argument("--losses", default=None, help="comma-separated loss rates (default 0,0.1,0.5)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--window",
        type=float,
        default=None,
        help="extra simulated seconds watched for false positives",
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    sizes = [
        int(x) for x in (args.sizes or ("100,1000" if args.quick else "100,1000,5000")).split(",")
    ]
    losses = [
        float(x) for x in (args.losses or ("0,0.1" if args.quick else "0,0.1,0.5")).split(",")
    ]
    window = args.window if args.window is not None else (10.0 if args.quick else 60.0)
    rows = []
    header = (
        "N",
        "loss",
        "join s",
        "serf s",
        "ratio",
        "all-dead s",
        "expect s",
        "upper s",
        "FP",
        "B/s/node",
        "cpu/sim s",
    )
    print(" | ".join(header))
    for n in sizes:
        for loss in losses:
            row = run_case(n, loss, seed=args.seed, settle=5.0, window=window)
            rows.append(row)
            print(" | ".join(str(v) for v in asdict(row).values()), flush=True)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
