"""Real-process benchmark on loopback: N ``meshnode agent`` processes converge and detect a kill.

Writes one JSON config file per agent into a temporary directory (every port 0, the
agent writes what it bound to ``<data_dir>/ports.json``), starts ``python -m node agent
-config-file ...`` for each, the first as a server; the others find it through
``retry_join``. Everything is observed the way a user would, through each agent's HTTP
API: convergence = every agent's ``/v1/agent/members`` lists N alive members; catalog
spread = a service registered on the last agent shows in every agent's
``/v1/catalog/service/...``; then one agent is SIGKILLed and we time, per survivor,
when ``/v1/agent/members`` shows it failed (status 4) and when
``/v1/health/node/<victim>`` shows ``serfHealth`` critical. Gossip runs memberlist's
LAN profile (the agent's default), encrypted with ``--encrypt``.

    .venv/bin/python scripts/bench/gossip_real.py [--n 10] [--rounds 2] [--encrypt]

Target: 10 agents converge and detect a SIGKILLed member in under 10 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from node.gossip.keyring import generate_key  # noqa: E402

#: Upper bound of every phase: the benchmark fails loudly rather than hang.
PHASE_LIMIT = 60.0
POLL = 0.05  # seconds between polling rounds


class Agent:
    """One ``meshnode agent`` child process and its HTTP address."""

    def __init__(self, name: str, config: Path, data_dir: Path, log: Path) -> None:
        self.name, self.config, self.data_dir, self.log = name, config, data_dir, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = ""
        self.serf_lan = 0

    def start(self) -> None:
        """Start the agent process, its output to ``log``."""
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "node", "agent", "-config-file", str(self.config)],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    async def wait_ports(self) -> None:
        """Wait (bounded) until the agent wrote its bound ports."""
        ports = self.data_dir / "ports.json"
        deadline = time.monotonic() + PHASE_LIMIT
        while not ports.exists():
            if self.proc is not None and self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited: see {self.log}")
            if time.monotonic() > deadline:
                raise SystemExit(f"{self.name} did not bind within {PHASE_LIMIT}s")
            await asyncio.sleep(POLL)
        bound = json.loads(ports.read_text())
        self.http, self.serf_lan = f"http://127.0.0.1:{bound['http']}", bound["serf_lan"]

    def kill(self) -> None:
        """SIGKILL the agent (a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        """SIGTERM the agent and wait for it to exit (bounded)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def write_config(tmp: Path, index: int, server_join: str | None, key: str | None) -> Agent:
    """Write agent ``index``'s config file (joining ``server_join``) and return it."""
    name = f"a{index}"
    data_dir = tmp / name
    data_dir.mkdir()
    doc: dict[str, Any] = {
        "node_name": name, "datacenter": "dc1", "data_dir": str(data_dir), "server": index == 0,
        "bind_addr": "127.0.0.1", "client_addr": "127.0.0.1", "log_level": "WARN",
        "ports": {"http": 0, "serf_lan": 0, "serf_wan": 0, "server": 0},
        "retry_interval": "1s",
    }  # fmt: skip
    if server_join:
        doc["retry_join"] = [server_join]
    if key:
        doc["encrypt"] = key
    config = tmp / f"{name}.json"
    config.write_text(json.dumps(doc, indent=2))
    return Agent(name, config, data_dir, tmp / f"{name}.log")


async def get_json(session: aiohttp.ClientSession, url: str) -> Any:
    """GET ``url`` as JSON; None on any failure (the agent may be restarting)."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
            return await resp.json() if resp.status == 200 else None
    except (aiohttp.ClientError, TimeoutError):
        return None


async def until_all(
    session: aiohttp.ClientSession, agents: list[Agent], path: str, done: Any, what: str
) -> dict[str, float]:
    """Poll ``path`` on every agent until ``done(body)``; seconds per agent from now."""
    start = time.monotonic()
    seen: dict[str, float] = {}
    while len(seen) < len(agents):
        if time.monotonic() - start > PHASE_LIMIT:
            missing = sorted({a.name for a in agents} - set(seen))
            raise SystemExit(f"{what}: not reached within {PHASE_LIMIT}s on {missing}")
        pending = [a for a in agents if a.name not in seen]
        bodies = await asyncio.gather(*(get_json(session, a.http + path) for a in pending))
        now = time.monotonic() - start
        for agent, body in zip(pending, bodies, strict=True):
            if body is not None and done(body):
                seen[agent.name] = now
        await asyncio.sleep(POLL)
    return seen


def alive_count(body: Any) -> int:
    """How many members ``/v1/agent/members`` reports alive."""
    return sum(1 for m in body if m.get("Status") == 1)


def status_of(body: Any, name: str) -> int | None:
    """The serf status of member ``name``, or None when it is not listed."""
    return next((m.get("Status") for m in body if m.get("Name") == name), None)


def serf_critical(body: Any) -> bool:
    """Whether the node's serfHealth check is critical."""
    return any(c.get("CheckID") == "serfHealth" and c.get("Status") == "critical" for c in body)


def summary(times: dict[str, float]) -> str:
    """First, median and last of the per-agent times."""
    values = sorted(times.values())
    return f"first {values[0]:.2f}s  median {statistics.median(values):.2f}s  all {values[-1]:.2f}s"


async def run(n: int, rounds: int, encrypt: bool) -> dict[str, Any]:
    """Start ``n`` agents, measure convergence and failure detection ``rounds`` times."""
    key = generate_key() if encrypt else None
    with tempfile.TemporaryDirectory(prefix="meshnode-bench-") as tmpdir:
        tmp = Path(tmpdir)
        first = write_config(tmp, 0, None, key)
        agents = [first]
        try:
            t0 = time.monotonic()
            first.start()
            await first.wait_ports()
            join = f"127.0.0.1:{first.serf_lan}"
            agents += [write_config(tmp, i, join, key) for i in range(1, n)]
            for agent in agents[1:]:
                agent.start()
            await asyncio.gather(*(a.wait_ports() for a in agents[1:]))
            started = time.monotonic() - t0
            return await measure(agents, n, rounds, started)
        finally:
            for agent in agents:
                agent.stop()


async def measure(agents: list[Agent], n: int, rounds: int, started: float) -> dict[str, Any]:
    """Time convergence, then kill and restart one agent per round and time detection."""
    result: dict[str, Any] = {"n": n, "processes_bound_s": round(started, 2), "rounds": []}
    async with aiohttp.ClientSession() as session:
        converge = await until_all(session, agents, "/v1/agent/members",
                                   lambda b: alive_count(b) == n, "convergence")  # fmt: skip
        result["converge_s"] = round(max(converge.values()), 2)
        print(f"converged ({n} alive everywhere): {summary(converge)}")
        last = agents[-1]
        async with session.put(last.http + "/v1/agent/service/register",
                               json={"Name": "bench", "Port": 1}) as resp:  # fmt: skip
            assert resp.status == 200, await resp.text()
        spread = await until_all(session, agents, "/v1/catalog/service/bench",
                                 lambda b: len(b) == 1, "catalog spread")  # fmt: skip
        result["catalog_spread_s"] = round(max(spread.values()), 2)
        print(f"service registered on {last.name} visible everywhere: {summary(spread)}")
        alive = list(agents)
        for r in range(rounds):
            victim = alive.pop(len(alive) // 2 if r % 2 == 0 else -1)
            victim.kill()
            name = victim.name
            failed = await until_all(session, alive, "/v1/agent/members",
                                     lambda b, v=name: status_of(b, v) == 4, "detection")  # fmt: skip
            critical = await until_all(session, alive, f"/v1/health/node/{name}",
                                       serf_critical, "serfHealth critical")  # fmt: skip
            print(f"round {r + 1}: SIGKILL {name}; failed in members: {summary(failed)}")
            print(f"          serfHealth critical (after the above): {summary(critical)}")
            result["rounds"].append({
                "victim": name, "detect_all_s": round(max(failed.values()), 2),
                "detect_first_s": round(min(failed.values()), 2),
                "critical_all_extra_s": round(max(critical.values()), 2),
            })  # fmt: skip
    return result


def main() -> None:
    """Parse flags, run the benchmark, print the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--encrypt", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(run(args.n, args.rounds, args.encrypt))
    print(json.dumps(result))
    worst = max([result["converge_s"], *(r["detect_all_s"] for r in result["rounds"])])
    print(f"target (< 10 s to converge and to detect): {'met' if worst < 10 else 'MISSED'}")


if __name__ == "__main__":
    main()
