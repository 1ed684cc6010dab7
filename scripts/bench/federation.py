"""Benchmark the demo federation: start-up time and the mesh's cost per request.

Starts the Procfile federation exactly as ``scripts/demo`` does, and reports

- seconds from start until the first request crosses the gateways;
- for each mesh-gateway mode (local, remote, none): requests per second and p50/p99
  latency of small HTTP requests sent to web's upstream port (127.0.0.1:10000), against
  the same requests sent straight to the api app (127.0.2.3:9090) in the same run.

Two request patterns: ``keepalive`` (C persistent connections, requests back to back:
the relay's per-request cost) and ``connect`` (a new connection per request: the mTLS
handshake and the gateways' per-connection cost). Run: ``python scripts/bench/federation.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import demo  # noqa: E402  (scripts/demo.py: the same start-up as the demo)

REQUEST = b"GET / HTTP/1.1\r\nHost: api\r\n\r\n"
DIRECT = ("127.0.2.3", 9090)
UPSTREAM = ("127.0.0.1", 10000)


async def _one_response(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await reader.readexactly(length)


async def _keepalive_client(addr: tuple[str, int], until: float, lat: list[float]) -> None:
    reader, writer = await asyncio.open_connection(*addr)
    try:
        while time.perf_counter() < until:
            start = time.perf_counter()
            writer.write(REQUEST)
            await _one_response(reader)
            lat.append(time.perf_counter() - start)
    finally:
        writer.close()


async def _connect_client(addr: tuple[str, int], until: float, lat: list[float]) -> None:
    while time.perf_counter() < until:
        start = time.perf_counter()
        reader, writer = await asyncio.open_connection(*addr)
        writer.write(REQUEST)
        await _one_response(reader)
        writer.close()
        lat.append(time.perf_counter() - start)


async def _measure(
    addr: tuple[str, int], pattern: str, conns: int, seconds: float
) -> dict[str, float]:
    lat: list[float] = []
    until = time.perf_counter() + seconds
    client = _keepalive_client if pattern == "keepalive" else _connect_client
    await asyncio.gather(*(client(addr, until, lat) for _ in range(conns)))
    lat.sort()
    return {
        "rps": len(lat) / seconds,
        "p50_ms": 1000 * statistics.median(lat),
        "p99_ms": 1000 * lat[int(len(lat) * 0.99)],
    }


def _set_mode(mode: str, workdir: Path) -> None:
    entry = workdir / f"mode-{mode}.hcl"
    entry.write_text(
        f'Kind = "proxy-defaults"\nName = "global"\nMeshGateway {{\n  Mode = "{mode}"\n}}\n'
    )
    subprocess.run(["meshnode", "config", "write", str(entry)], check=True, capture_output=True)
    time.sleep(1.5)  # the proxies follow a new plan within 1 s


def _row(label: str, r: dict[str, float], base: dict[str, float] | None) -> str:
    ratio = f"{r['rps'] / base['rps']:.2f}" if base else "1.00"
    return f"  {label:<22} {r['rps']:9.0f} rps  p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  ratio {ratio}"


def main() -> int:
    """Start the demo federation, measure each mode against direct requests, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--conns", type=int, default=8)
    args = parser.parse_args()
    started = time.monotonic()
    proc = demo.start_federation()
    try:
        if not demo.wait_ready(proc, started):
            return 1
        print(f"\nfirst cross-datacenter request after {time.monotonic() - started:.1f}s")
        workdir = demo.DATA
        for pattern in ("keepalive", "connect"):
            print(f"\n{pattern}: {args.conns} concurrent clients, {args.seconds:g}s each")
            base = asyncio.run(_measure(DIRECT, pattern, args.conns, args.seconds))
            print(_row("direct to api app", base, None))
            for mode in ("local", "remote", "none"):
                _set_mode(mode, workdir)
                result = asyncio.run(_measure(UPSTREAM, pattern, args.conns, args.seconds))
                print(_row(f"mesh, mode {mode}", result, base))
        return 0
    finally:
        demo.stop(proc)


if __name__ == "__main__":
    raise SystemExit(main())
