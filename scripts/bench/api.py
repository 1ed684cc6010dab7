"""HTTP API benchmark: meshnode's read endpoints against a bare aiohttp handler.

    .venv/bin/python scripts/bench/api.py [--duration 5] [--connections 32] [--watchers 1000]

Setup (one server process, uvloop when present): a ``-dev`` agent on a free port with
1,000 services registered (``svc-0000`` … ``svc-0999``, one TTL check each), and beside
it, on another free port and the same event loop, a bare aiohttp app whose one handler
returns the exact bytes (and headers) the agent returned for the measured path.

1. Throughput: for ``/v1/health/service/svc-0500`` and ``/v1/catalog/services``, the load
   generator hits the agent, then the bare handler, for ``--duration`` seconds each, and
   reports requests/s, p99 latency and the ratio agent/bare (target ≥ 0.6). The load
   generator is ``wrk`` when it is on PATH (a separate C process), else an aiohttp client
   in a separate Python process.
2. Filter cost: ``/v1/health/service/api?filter=<three clauses>`` against the same read
   without a filter, ``api`` having 1,000 instances (a quarter match), interleaved rounds
   on the same agent: requests/s filtered / unfiltered (target ≥ 0.7). Measured twice:
   with the agent's response cache (a repeated read is one lookup either way) and on a
   second agent whose cache holds nothing, so that every read runs the query, the
   encoding and the filter — the case of a catalog that changes all the time.
3. Wake-up: a separate client process parks ``--watchers`` blocking queries
   (``?index=N&wait=60s`` on ``/v1/health/service/svc-0500``), registers a new instance of
   that service, and reports the time from sending the registration until every blocked
   query has returned (target ≤ 100 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SERVICES = 1000
INSTANCES = 1000  # of FILTERED_SERVICE
FILTERED_SERVICE = "api"
FILTER = "Service.Meta.version == v2 and Service.Tags contains canary and Checks.Status == critical"
HEALTH_PATH = "/v1/health/service/svc-0500"
UNFILTERED_PATH = f"/v1/health/service/{FILTERED_SERVICE}"
CATALOG_PATH = "/v1/catalog/services"
READY_TIMEOUT = 60.0  # seconds for the server process to report its ports


# ---------------------------------------------------------------------------- server process


def _filtered_path() -> str:
    from urllib.parse import quote

    return f"{UNFILTERED_PATH}?filter={quote(FILTER)}"


async def _serve(uncached: bool) -> None:
    from aiohttp import web

    from node.agent.agent import Agent
    from node.api.app import HTTPServer
    from node.api.read import ResponseCache
    from node.catalog.parse import parse_service
    from node.config.agent import load

    agent = Agent(load([], dev=True, overrides={"http-port": 0, "node": "bench"}))
    if uncached:
        agent.response_cache = ResponseCache(limit=0)
    for i in range(SERVICES):
        raw = {"name": f"svc-{i:04d}", "port": 10000 + i, "tags": ["v1"], "check": {"ttl": "600s"}}
        agent.local.register_service(parse_service(raw))
    for i in range(INSTANCES):
        version = "v2" if i % 2 else "v1"
        tags = [version, "canary"] if i % 4 == 1 else [version]
        raw = {
            "name": FILTERED_SERVICE,
            "id": f"{FILTERED_SERVICE}-{i:04d}",
            "port": 20000 + i,
            "tags": tags,
            "meta": {"version": version},
            "check": {"ttl": "600s"},
        }
        agent.local.register_service(parse_service(raw))
    run = asyncio.create_task(agent.run())
    while "http" not in agent.bound:
        await asyncio.sleep(0.01)
    host, port = agent.bound["http"]
    bodies = {}
    for path in (HEALTH_PATH, CATALOG_PATH):
        bodies[path] = await _fetch(host, port, path)
    bare = web.Application()
    for path, (body, headers) in bodies.items():
        bare.router.add_get(path, _bare_handler(body, headers))
    bare_server = HTTPServer(bare, "127.0.0.1", 0)
    _, bare_port = await bare_server.start()
    print(json.dumps({"agent": port, "bare": bare_port}), flush=True)
    await run


def _bare_handler(body: bytes, headers: dict[str, str]) -> Any:
    from aiohttp import web

    async def handler(request: web.Request) -> web.Response:
        del request
        return web.Response(body=body, headers=headers)

    return handler


async def _fetch(host: str, port: int, path: str) -> tuple[bytes, dict[str, str]]:
    import aiohttp

    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{host}:{port}{path}") as resp,
    ):
        keep = ("Content-Type", "X-Consul-Index", "X-Consul-KnownLeader", "X-Consul-LastContact")
        return await resp.read(), {k: resp.headers[k] for k in keep if k in resp.headers}


# ---------------------------------------------------------------------------- load generators


def _wrk(url: str, duration: float, connections: int) -> tuple[float, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    assert p99 is not None, out
    scale = {"us": 1e-3, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return rps, float(p99.group(1)) * scale


async def _py_load(url: str, duration: float, connections: int) -> tuple[float, float]:
    import aiohttp

    latencies: list[float] = []
    deadline = time.perf_counter() + duration

    async def worker(session: aiohttp.ClientSession) -> None:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            async with session.get(url) as resp:
                await resp.read()
            latencies.append(time.perf_counter() - start)

    conn = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=conn) as session:
        begin = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(connections)))
        elapsed = time.perf_counter() - begin
    latencies.sort()
    return len(latencies) / elapsed, latencies[int(len(latencies) * 0.99)] * 1000


def _load(url: str, duration: float, connections: int) -> tuple[float, float]:
    if shutil.which("wrk"):
        return _wrk(url, duration, connections)
    cmd = [sys.executable, __file__, "--py-load", url, str(duration), str(connections)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps, p99 = json.loads(out)
    return float(rps), float(p99)


# ---------------------------------------------------------------------------- wake-up


class _Watcher(asyncio.Protocol):
    """One raw HTTP/1.1 blocking GET; records when its whole response has arrived.

    A raw protocol instead of aiohttp's client so that the load generator's own cost
    of parsing 1,000 responses does not dominate the wake-up figure.
    """

    def __init__(self, request: bytes, done: asyncio.Future[float]) -> None:
        self.request = request
        self.done = done
        self.buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0 or self.done.done():
            return
        match = re.search(rb"(?i)content-length:\s*(\d+)", bytes(self.buffer[:head_end]))
        assert match is not None, bytes(self.buffer[:200])
        if len(self.buffer) >= head_end + 4 + int(match.group(1)):
            self.done.set_result(time.perf_counter())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"closed before the response: {exc}"))


async def _wakeup(port: int, watchers: int) -> dict[str, float]:
    import aiohttp

    base = f"http://127.0.0.1:{port}"
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:
        async with session.get(base + HEALTH_PATH) as resp:
            index = resp.headers["X-Consul-Index"]
        request = (
            f"GET {HEALTH_PATH}?index={index}&wait=60s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        ).encode()
        futures: list[asyncio.Future[float]] = []
        transports = []
        for _ in range(watchers):
            done: asyncio.Future[float] = loop.create_future()
            transport, _ = await loop.create_connection(
                lambda d=done: _Watcher(request, d), "127.0.0.1", port
            )
            futures.append(done)
            transports.append(transport)
        # Let every request reach the server and park (a benchmark, not a test: a pause
        # is the honest way to know nothing is still in flight).
        await asyncio.sleep(2.0 + watchers / 1000)
        assert not any(f.done() for f in futures), "blocking queries returned before any change"
        body = {"ID": f"svc-0500-{time.time_ns()}", "Name": "svc-0500", "Port": 20500}
        start = time.perf_counter()
        async with session.put(base + "/v1/agent/service/register", json=body) as resp:
            assert resp.status == 200, await resp.text()
        registered = time.perf_counter()
        done_at = await asyncio.wait_for(asyncio.gather(*futures), 60)
        for transport in transports:
            transport.close()
    return {
        "watchers": watchers,
        "register_ms": (registered - start) * 1000,
        "first_ms": (min(done_at) - start) * 1000,
        "all_returned_ms": (max(done_at) - start) * 1000,
    }


# ---------------------------------------------------------------------------- driver


def _start_server(*extra: str) -> tuple[subprocess.Popen[str], dict[str, int]]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("{"):
            return proc, json.loads(line)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit("benchmark server did not start")


def main() -> None:
    """Run the benchmark and print a report."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved runs per target (median)"
    )
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--uncached", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--py-load", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--wakeup", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _run(_serve(args.uncached))
        return
    if args.py_load:
        url, duration, conns = args.py_load
        print(json.dumps(_run(_py_load(url, float(duration), int(conns)))))
        return
    if args.wakeup:
        print(json.dumps(_run(_wakeup(args.wakeup, args.watchers))))
        return
    _report(args)


def _alternate(
    ports: dict[str, int], path: str, args: argparse.Namespace
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Median (rps, p99) of meshnode and of the bare handler over interleaved rounds.

    The machine is shared, so load from elsewhere comes and goes: alternating the two
    targets round by round and taking medians keeps that noise out of the ratio.
    """
    runs: dict[str, list[tuple[float, float]]] = {"agent": [], "bare": []}
    for _ in range(args.rounds):
        for target in ("agent", "bare"):
            runs[target].append(
                _load(f"http://127.0.0.1:{ports[target]}{path}", args.duration, args.connections)
            )

    def median(values: list[tuple[float, float]]) -> tuple[float, float]:
        mid = len(values) // 2
        return sorted(v[0] for v in values)[mid], sorted(v[1] for v in values)[mid]

    return median(runs["agent"]), median(runs["bare"])


def _report(args: argparse.Namespace) -> None:
    proc, ports = _start_server()
    try:
        tool = "wrk -t1" if shutil.which("wrk") else "aiohttp client (separate process)"
        print(
            f"load generator: {tool}, {args.connections} connections, "
            f"{args.rounds} interleaved rounds of {args.duration:g}s per target (medians)"
        )
        print(
            f"{'path':32} {'meshnode rps':>13} {'p99 ms':>8} {'bare rps':>10} {'p99 ms':>8} {'ratio':>6}"
        )
        for path in (HEALTH_PATH, CATALOG_PATH):
            ours, bare = _alternate(ports, path, args)
            ratio = ours[0] / bare[0]
            print(
                f"{path:32} {ours[0]:13.0f} {ours[1]:8.2f} {bare[0]:10.0f} {bare[1]:8.2f} {ratio:6.2f}"
            )
        _report_filter(ports["agent"], args, "cached")
        cmd = [
            sys.executable,
            __file__,
            "--wakeup",
            str(ports["agent"]),
            "--watchers",
            str(args.watchers),
        ]
        rounds = [
            json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
            for _ in range(args.rounds)
        ]
        rounds.sort(key=lambda r: r["all_returned_ms"])
        wake = rounds[len(rounds) // 2]
        spread = ", ".join(f"{r['all_returned_ms']:.0f}" for r in rounds)
        print(
            f"wake-up: {wake['watchers']} blocking queries all returned {wake['all_returned_ms']:.1f} ms "
            f"(median of {len(rounds)}: {spread}) after the registration was sent "
            f"(first {wake['first_ms']:.1f} ms, registration answered in {wake['register_ms']:.1f} ms)"
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    proc, ports = _start_server("--uncached")
    try:
        _report_filter(ports["agent"], args, "no cache")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _report_filter(port: int, args: argparse.Namespace, label: str) -> None:
    """Filtered against unfiltered reads of the same 1,000 instances, interleaved."""
    import urllib.request

    paths = {"plain": UNFILTERED_PATH, "filtered": _filtered_path()}
    counts = {}
    for name, path in paths.items():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}") as resp:
            counts[name] = len(json.loads(resp.read()))
    assert counts == {"plain": INSTANCES, "filtered": INSTANCES // 4}, counts
    runs: dict[str, list[float]] = {"plain": [], "filtered": []}
    for _ in range(args.rounds):
        for name, path in paths.items():
            runs[name].append(
                _load(f"http://127.0.0.1:{port}{path}", args.duration, args.connections)[0]
            )
    plain = sorted(runs["plain"])[len(runs["plain"]) // 2]
    filtered = sorted(runs["filtered"])[len(runs["filtered"]) // 2]
    print(
        f"filter ({label}): {UNFILTERED_PATH} with {INSTANCES} instances {plain:.0f} rps, "
        f"?filter={FILTER!r} {filtered:.0f} rps, ratio {filtered / plain:.2f} (target >= 0.7)"
    )


def _run(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
