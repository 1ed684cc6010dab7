"""State-write benchmark: intention writes committed by the servers' Raft group, against
the same writes on three servers without a group (last-writer-wins), in the same run.

    .venv/bin/python scripts/bench/state.py [--duration 5] [--writers 1,8,64] [--rounds 1]

Setup: two groups of three real server processes on loopback addresses
(``node.testing.servers``), started side by side so that both see the same machine:

- ``raft``: ``bootstrap_expect = 3``: every write is forwarded to the leader, committed
  by a quorum and applied in log order (the uniqueness of a source/destination pair is
  checked there);
- ``lww``: no ``bootstrap_expect``: each server commits the writes it receives at once
  and gossips them (the write path of a primary without consensus).

1. Throughput and latency: for each number of concurrent writers, the writers (one
   aiohttp client in this process, spread evenly over the three servers of a group)
   create intentions with distinct pairs for ``--duration`` seconds; reported: committed
   writes per second, p50 and p99 latency, and the ratio raft/lww of the rates (target
   ≥ 0.5). Groups alternate, writer count by writer count.
2. Leader kill (``raft`` only): eight writers write to the two other servers; the leader
   is SIGKILLed; reported: the time until the survivors name a new leader and until the
   first write sent after the kill is committed.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from node.testing.servers import TRANSIENT, ServerProcesses, loopback  # noqa: E402
from tests.helpers.poll import wait_for_blocking  # noqa: E402

READY_TIMEOUT = 90.0  # seconds for a group to commit its first write


def _started(workdir: Path, name: str, octet: int, expect: int | None) -> ServerProcesses:
    servers = ServerProcesses(workdir / name, loopback(octet), bootstrap_expect=expect,
                              log_level="WARN")  # fmt: skip
    (workdir / name).mkdir(parents=True)
    servers.start()
    return servers


def _ready(servers: ServerProcesses) -> None:
    body = {"SourceName": "ready-src", "DestinationName": "ready-dst", "Action": "allow"}
    wait_for_blocking(
        lambda: servers.request(1, "/v1/connect/intentions", method="POST", body=body)[0]
        in (200, 409),
        f"a first committed write on {servers.bind(1)}", READY_TIMEOUT, ignoring=TRANSIENT,
    )  # fmt: skip


class _Pairs:
    """Distinct source names, so no write is refused as a duplicate pair."""

    def __init__(self, tag: str) -> None:
        self._tag = tag
        self._n = itertools.count()

    def body(self) -> dict[str, Any]:
        return {"SourceName": f"{self._tag}-{next(self._n)}", "DestinationName": "db",
                "Action": "allow"}  # fmt: skip


async def _post(session: Any, url: str, body: dict[str, Any]) -> bool:
    async with session.post(url + "/v1/connect/intentions", json=body) as resp:
        await resp.read()
        return resp.status == 200


async def _load(
    servers: ServerProcesses, writers: int, duration: float, pairs: _Pairs
) -> dict[str, float]:
    import aiohttp

    latencies: list[float] = []
    failed = 0
    urls = [servers.http_url(i) for i in servers.numbers]
    deadline = time.perf_counter() + duration

    async def writer(w: int, session: aiohttp.ClientSession) -> None:
        nonlocal failed
        url = urls[w % len(urls)]
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            if await _post(session, url, pairs.body()):
                latencies.append(time.perf_counter() - start)
            else:
                failed += 1

    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        begin = time.perf_counter()
        await asyncio.gather(*(writer(w, session) for w in range(writers)))
        elapsed = time.perf_counter() - begin
    latencies.sort()
    if not latencies:
        return {"rate": 0.0, "p50": float("nan"), "p99": float("nan"), "failed": failed}
    return {
        "rate": len(latencies) / elapsed,
        "p50": latencies[len(latencies) // 2] * 1000,
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "failed": failed,
    }


async def _leader_kill(servers: ServerProcesses, pairs: _Pairs) -> dict[str, float]:
    import aiohttp

    leader = wait_for_blocking(servers.leader, "an agreed leader", 30, ignoring=TRANSIENT)
    survivors = [i for i in servers.numbers if i != leader]
    killed_at: float | None = None
    committed_at: float | None = None

    async def writer(w: int, session: aiohttp.ClientSession) -> None:
        nonlocal committed_at
        url = servers.http_url(survivors[w % len(survivors)])
        for _ in range(100_000):
            if committed_at is not None:
                return
            sent = time.perf_counter()
            try:
                ok = await _post(session, url, pairs.body())
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            if ok and killed_at is not None and sent > killed_at and committed_at is None:
                committed_at = time.perf_counter()

    async def elected() -> float:
        assert killed_at is not None
        for _ in range(3000):
            found = await asyncio.to_thread(servers.leader, survivors)
            if found is not None:
                return time.perf_counter() - killed_at
            await asyncio.sleep(0.01)
        return float("nan")

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        tasks = [asyncio.create_task(writer(w, session)) for w in range(8)]
        await asyncio.sleep(1.0)  # writes flowing before the kill
        await asyncio.to_thread(servers.kill, leader)
        killed_at = time.perf_counter()
        election = await elected()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
    assert committed_at is not None
    return {"elected": election, "committed": committed_at - killed_at}


def _run(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--writers", default="1,8,64", help="concurrent writers, comma-separated")
    parser.add_argument("--rounds", type=int, default=1, help="alternations per writer count")
    args = parser.parse_args()
    counts = [int(w) for w in args.writers.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-state-") as tmp:
        groups = {
            "raft": _started(Path(tmp), "raft", 78, 3),
            "lww": _started(Path(tmp), "lww", 79, None),
        }
        try:
            for servers in groups.values():
                _ready(servers)
            _report(groups, counts, args)
        except BaseException:
            for name, servers in groups.items():
                print(f"=== {name}\n{servers.logs(20)}")
            raise
        finally:
            for servers in groups.values():
                servers.stop()


def _report(groups: dict[str, ServerProcesses], counts: list[int], args: Any) -> None:
    print(f"intention writes, {args.duration:g}s per measurement, writers spread over 3 servers")
    print(f"{'writers':>7} {'group':>5} {'writes/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'failed':>6}")
    pairs = {name: _Pairs(name) for name in groups}
    for writers in counts:
        best: dict[str, dict[str, float]] = {}
        for _ in range(args.rounds):
            for name, servers in groups.items():
                result = _run(_load(servers, writers, args.duration, pairs[name]))
                if name not in best or result["rate"] > best[name]["rate"]:
                    best[name] = result
        for name, r in best.items():
            print(f"{writers:7} {name:>5} {r['rate']:9.1f} {r['p50']:8.1f} {r['p99']:8.1f} "
                  f"{r['failed']:6.0f}")  # fmt: skip
        ratio = best["raft"]["rate"] / best["lww"]["rate"] if best["lww"]["rate"] else float("nan")
        print(f"{writers:7} ratio raft/lww {ratio:.2f} (target >= 0.5)")
    kill = _run(_leader_kill(groups["raft"], pairs["raft"]))
    print(f"leader SIGKILL: new leader named after {kill['elected'] * 1000:.0f} ms, first write "
          f"sent after the kill committed after {kill['committed'] * 1000:.0f} ms")  # fmt: skip


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
