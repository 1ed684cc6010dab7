"""Real-process gossip benchmark on loopback: convergence and failure-detection times.

Starts N ``GossipRuntime`` instances, each in its own OS process with a real
``NetTransport`` on 127.0.0.1:0 and the real clock, joins them all through the first
one, then SIGKILLs one member and measures how long until every survivor marks it
dead. Every child reports member changes (name, status, CLOCK_MONOTONIC, which is
system-wide on Linux) to the parent over a queue; the parent only observes.

    .venv/bin/python scripts/bench/gossip_real.py [--n 10] [--encrypt] [--profile lan|local]

Target (issue 3): 10 members converge and detect a SIGKILLed member in under 10 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from node.clock import MonotonicClock  # noqa: E402
from node.gossip.config import GossipConfig  # noqa: E402
from node.gossip.keyring import Keyring  # noqa: E402
from node.gossip.protocol import GossipProtocol  # noqa: E402
from node.gossip.runtime import GossipRuntime, with_encryption_overhead  # noqa: E402
from node.gossip.transport import NetTransport  # noqa: E402

KEY = bytes(range(32))
#: Upper bounds for each phase; the benchmark fails loudly rather than hang.
PHASE_LIMIT = 60.0


def _child(index: int, profile: str, encrypt: bool, events: Any, commands: Any) -> None:
    asyncio.run(_child_main(index, profile, encrypt, events, commands))


async def _child_main(index: int, profile: str, encrypt: bool, events: Any, commands: Any) -> None:
    name = f"node{index}"
    config = GossipConfig.lan() if profile == "lan" else GossipConfig.local()
    keyring = Keyring(KEY) if encrypt else None
    if keyring is not None:
        config = with_encryption_overhead(config)
    transport = await NetTransport.bind("127.0.0.1", 0)
    clock = MonotonicClock()
    protocol = GossipProtocol(config=config, name=name, addr=transport.local_addr, tags={"role": "node"},
                              rng=random.Random(index), now=clock.monotonic())  # fmt: skip

    def report(member: Any, old: Any) -> None:
        events.put(("change", index, member.name, str(member.status), time.monotonic()))

    runtime = GossipRuntime(protocol=protocol, transport=transport, clock=clock,
                            keyring=keyring, on_member_change=report)  # fmt: skip
    task = asyncio.ensure_future(runtime.run())
    events.put(("ready", index, name, transport.local_addr[1], os.getpid()))
    loop = asyncio.get_running_loop()
    while True:
        command = await loop.run_in_executor(None, commands.get)
        if command[0] == "join":
            joined = await runtime.join([("127.0.0.1", command[1])])
            events.put(("joined", index, joined, time.monotonic()))
        elif command[0] == "stop":
            break
    task.cancel()
    await transport.close()


class Observer:
    """The parent's picture of what every child believes."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.views: dict[int, dict[str, str]] = {i: {f"node{i}": "alive"} for i in range(n)}
        self.first: dict[tuple[int, str, str], float] = {}

    def apply(self, event: tuple[Any, ...]) -> None:
        _, index, member, status, at = event
        self.views[index][member] = status
        self.first.setdefault((index, member, status), at)

    def converged(self, live: list[int]) -> bool:
        return all(sum(s == "alive" for s in self.views[i].values()) == len(live) for i in live)

    def everyone_says(self, live: list[int], member: str, status: str) -> bool:
        return all(self.views[i].get(member) == status for i in live)


def _drain_until(events: Any, observer: Observer, cond: Any, limit: float, what: str) -> float:
    deadline = time.monotonic() + limit
    while not cond():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SystemExit(f"FAIL: {what} not reached within {limit}s")
        try:
            event = events.get(timeout=min(remaining, 0.5))
        except Exception:
            continue
        if event[0] == "change":
            observer.apply(event)
    return time.monotonic()


def run(n: int, profile: str, encrypt: bool) -> dict[str, Any]:
    """Run one benchmark round and return its figures."""
    ctx = mp.get_context("spawn")
    events = ctx.Queue()
    commands = [ctx.Queue() for _ in range(n)]
    procs = [ctx.Process(target=_child, args=(i, profile, encrypt, events, commands[i]), daemon=True)
             for i in range(n)]  # fmt: skip
    for p in procs:
        p.start()
    ports: dict[int, int] = {}
    pids: dict[int, int] = {}
    observer = Observer(n)
    try:
        deadline = time.monotonic() + PHASE_LIMIT
        while len(ports) < n:
            event = events.get(timeout=max(0.1, deadline - time.monotonic()))
            if event[0] == "ready":
                ports[event[1]], pids[event[1]] = event[3], event[4]
            elif event[0] == "change":
                observer.apply(event)
        start = time.monotonic()
        for i in range(1, n):
            commands[i].put(("join", ports[0]))
        everyone = list(range(n))
        converged_at = _drain_until(
            events, observer, lambda: observer.converged(everyone), PHASE_LIMIT, "convergence"
        )
        victim = n // 2
        victim_name = f"node{victim}"
        killed_at = time.monotonic()
        os.kill(pids[victim], signal.SIGKILL)
        survivors = [i for i in everyone if i != victim]
        detected_at = _drain_until(
            events,
            observer,
            lambda: observer.everyone_says(survivors, victim_name, "dead"),
            PHASE_LIMIT,
            "detection",
        )
        per_node = [observer.first[(i, victim_name, "dead")] - killed_at for i in survivors]
        suspects = [observer.first.get((i, victim_name, "suspect")) for i in survivors]
        first_suspect = (
            min(s for s in suspects if s is not None) - killed_at if any(suspects) else None
        )
        false_positives = sum(
            1
            for (i, member, status) in observer.first
            if member != victim_name and status in ("suspect", "dead")
        )
        return {
            "n": n,
            "profile": profile,
            "encrypted": encrypt,
            "convergence_s": round(converged_at - start, 3),
            "first_suspect_s": None if first_suspect is None else round(first_suspect, 3),
            "detection_all_dead_s": round(detected_at - killed_at, 3),
            "detection_per_node_s": {
                "min": round(min(per_node), 3),
                "median": round(statistics.median(per_node), 3),
                "max": round(max(per_node), 3),
            },
            "false_positives": false_positives,
        }
    finally:
        for q in commands:
            q.put(("stop",))
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()


def main() -> None:
    """Parse flags, run, print one JSON line per round."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=10, help="members (default 10)")
    parser.add_argument("--profile", choices=("lan", "local"), default="lan")
    parser.add_argument("--encrypt", action="store_true", help="AES-GCM gossip encryption on")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    for _ in range(args.rounds):
        result = run(args.n, args.profile, args.encrypt)
        ok = result["convergence_s"] < 10 and result["detection_all_dead_s"] < 10
        print(json.dumps({**result, "target_under_10s": ok}), flush=True)


if __name__ == "__main__":
    main()
