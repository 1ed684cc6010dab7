#!/usr/bin/env python3
"""Benchmark: leaf certificates signed per second, meshnode's path against cryptography alone.

    .venv/bin/python scripts/bench/ca.py [--seconds 3] [--json]

Paths, measured in the same process, baseline and meshnode interleaved in ``--rounds`` short
rounds (``--seconds`` per path in total; the median round is reported):

  baseline   build and sign the leaf certificate with ``cryptography`` directly: the same
             subject, extensions, validity and issuer as ``CAServer.sign_leaf`` makes, the
             public key already in hand (no CSR, no checks, no RPC)
  meshnode   ``CAServer.sign_leaf(csr_pem, node, now)``: parse the CSR PEM, check key type,
             the one SPIFFE URI, trust domain, datacenter and the registration callback,
             build, sign, PEM-encode (the CSR signature is not verified by default, as in
             Consul; see ``CAServer.verify_csr_signatures``)
  PoP        the same with ``verify_csr_signatures = True`` (one more ECDSA verification)
  end-to-end the hosting node's side too: fresh EC P-256 key + CSR, then ``sign_leaf``
  rpc        the full path as a node takes it: ``ConnectService.sign_csr`` on a client
             agent → ``CA.SignLeaves`` RPC (msgpack frames over TCP on 127.0.0.1;
             concurrent requests share a call) → a real in-process server ``Agent`` (its
             ConnectService checks the registration and signs) → the certificates back;
             8 concurrent requests, both agents in this one process, per CPU second
             of it like the others, in 50 ms slices alternating with baseline slices
             (its ratio is to that interleaved baseline; the ratio to the separately
             measured baseline is reported too). Also reported: one ``CA.SignLeaf``
             RPC per leaf, measured the same way.

And the propagation time of a config entry: ``PUT /v1/config`` on the primary's server
until a blocking ``GET`` on a client of the secondary datacenter returns it (two real
datacenters in-process over 127.0.0.1; target ≤ 1 s).

Rates are per CPU second of this process (the machine is shared). The figure of merit is
meshnode / baseline (target ≥ 0.5). ``openssl speed -seconds 3
ecdsap256`` gives the hardware's raw ECDSA P-256 signs/s beside it.

The signing path is a parameter: ``measure_signer(sign, csrs, seconds)`` takes any
``sign(csr_pem) -> cert_pem`` and ``measure_async_signer`` any ``async sign(csr_pem)``, so the
RPC path (client → server → ``sign_leaf`` → back) can be plugged in once it exists, e.g.
``measure_async_signer(lambda csr: rpc.call("ConnectCA.Sign", csr), csrs, seconds)``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

from node.agent.agent import Agent  # noqa: E402
from node.config.agent import AgentConfig, Ports  # noqa: E402
from node.connect.ca import CLOCK_SKEW, CAServer, generate_root, key_id, make_leaf_csr  # noqa: E402
from node.connect.castate import DEFAULT_LEAF_CERT_TTL  # noqa: E402
from node.connect.spiffe import SpiffeID  # noqa: E402
from node.gossip.config import GossipConfig  # noqa: E402
from node.rpc.client import RPCClient  # noqa: E402

TD = "11111111-2222-3333-4444-555555555555.consul"
CSR_POOL = 200  # distinct CSRs cycled through, so no caching effect can help


def _rate(count: int, elapsed: float) -> float:
    return count / elapsed if elapsed > 0 else 0.0


def measure_signer(sign: Callable[[str], object], csrs: Sequence[str], seconds: float) -> float:
    """Certificates per CPU second through a synchronous ``sign(csr_pem)``.

    CPU time of this process, not wall time: the machine is shared, and other processes'
    load would otherwise decide the figure. Runs for ``seconds`` of wall time.
    """
    pool = itertools.cycle(csrs)
    count, deadline = 0, time.perf_counter() + seconds
    cpu_start = time.process_time()
    while time.perf_counter() < deadline:
        for _ in range(20):
            sign(next(pool))
        count += 20
    return _rate(count, time.process_time() - cpu_start)


def measure_async_signer(
    sign: Callable[[str], Awaitable[object]],
    csrs: Sequence[str],
    seconds: float,
    concurrency: int = 8,
) -> float:
    """Certificates per wall second through an ``async sign(csr_pem)`` (e.g. the RPC path,
    whose cost is spread over processes, so CPU time of this one would flatter it)."""

    async def run() -> float:
        pool = itertools.cycle(csrs)
        count = 0
        start = time.perf_counter()
        deadline = start + seconds

        async def worker() -> None:
            nonlocal count
            while time.perf_counter() < deadline:
                await sign(next(pool))
                count += 1

        async with asyncio.TaskGroup() as tg:
            for _ in range(concurrency):
                tg.create_task(worker())
        return _rate(count, time.perf_counter() - start)

    return asyncio.run(run())


def baseline_signer(
    root_key: Any, issuer: x509.Name, service: str
) -> Callable[[Any], x509.Certificate]:
    """Build + sign the same leaf as ``CAServer.sign_leaf``, from a public key, nothing else."""
    uri = SpiffeID(trust_domain=TD, datacenter="dc1", service=service).uri
    skid = key_id(root_key.public_key())
    usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=True,
        data_encipherment=True, key_agreement=True, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip

    def sign(public_key: Any) -> x509.Certificate:
        now = datetime.now(UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, service)]))
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now - CLOCK_SKEW + DEFAULT_LEAF_CERT_TTL)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False
            )
            .add_extension(x509.SubjectKeyIdentifier(key_id(public_key)), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier(skid, None, None), critical=False)
        )
        cert = builder.sign(root_key, hashes.SHA256())
        cert.public_bytes(serialization.Encoding.PEM)  # the CA hands out PEM too
        return cert

    return sign


FAST_GOSSIP = GossipConfig.local()


def _agent(tmp: Path, name: str, dc: str, *, server: bool) -> Agent:
    data_dir = tmp / f"{dc}-{name}"
    config = AgentConfig(
        node_name=name, datacenter=dc, primary_datacenter="dc1", data_dir=str(data_dir),
        server=server, bind_addr="127.0.0.1", advertise_addr="127.0.0.1",
        advertise_addr_wan="127.0.0.1", client_addr="127.0.0.1",
        ports=Ports(http=0, serf_lan=0, serf_wan=0, server=0),
    )  # fmt: skip
    return Agent(config, lan_gossip=FAST_GOSSIP, wan_gossip=FAST_GOSSIP)


async def _until(cond: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench setup: timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def rpc_path_rate(
    tmp: Path,
    seconds: float,
    concurrency: int = 8,
    *,
    batched: bool = True,
    baseline: Callable[[float], tuple[int, float]] | None = None,
) -> tuple[float, float]:
    """Leaves per CPU second from a client node through RPC to a real in-process server.

    ``batched``: the node's own path (``ConnectService.sign_csr``: concurrent requests
    share one ``CA.SignLeaves`` call); otherwise one ``CA.SignLeaf`` RPC per leaf.
    ``baseline(seconds) -> (certs, cpu seconds)``, when given, runs in short slices between
    slices of the RPC path (see ``_measure_interleaved``). Returns ``(rpc rate, baseline
    rate)`` (the latter 0 without ``baseline``).
    """
    server = _agent(tmp, "s1", "dc1", server=True)
    node = _agent(tmp, "c1", "dc1", server=False)
    runs = [asyncio.create_task(a.run()) for a in (server, node)]
    client = RPCClient()
    try:
        await _until(lambda: "serf_lan" in node.bound and "serf_lan" in server.bound, "bound")
        await node.join([_addr(server, "serf_lan")])
        await _until(lambda: server.connect.authority is not None
                     and server.connect.authority.signer is not None, "CA bootstrap")  # fmt: skip
        from node.catalog.parse import parse_service

        node.local.register_service(parse_service({"Name": "web", "Port": 80}))
        await _until(lambda: server.store.entry("c1") is not None, "c1's record on s1")
        roots = server.connect.roots()
        assert roots is not None
        identity = SpiffeID(trust_domain=roots.trust_domain, datacenter="dc1", service="web")
        csrs = [make_leaf_csr(identity)[1] for _ in range(CSR_POOL)]
        addr = server.bound["server"]

        async def single(csr: str) -> object:
            args = {"csr": csr, "node": "c1", "service": "web"}
            return await client.call(addr, "CA.SignLeaf", args, timeout=10.0)

        async def batched_sign(csr: str) -> object:
            return await node.connect.sign_csr(csr, "web")

        sign = batched_sign if batched else single
        if baseline is None:
            return await _measure_async(sign, csrs, seconds, concurrency), 0.0
        return await _measure_interleaved(sign, csrs, seconds, concurrency, baseline)
    finally:
        await client.close()
        for a in (server, node):
            a.stop()
        await asyncio.gather(*runs, return_exceptions=True)


async def _measure_async(
    sign: Callable[[str], Awaitable[object]], csrs: Sequence[str], seconds: float, concurrency: int
) -> float:
    """Certificates per CPU second of this process (client and server agents both live in
    it, so all the path's work is counted, and other processes' load is not)."""
    pool = itertools.cycle(csrs)
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    cpu_start = time.process_time()

    async def worker() -> None:
        nonlocal count
        while time.perf_counter() < deadline:
            await sign(next(pool))
            count += 1

    async with asyncio.TaskGroup() as tg:
        for _ in range(concurrency):
            tg.create_task(worker())
    return _rate(count, time.process_time() - cpu_start)


#: Length of one slice of the interleaved measurement: short enough that blocking the
#: event loop for a baseline slice never outlasts a gossip probe timeout (0.2 s locally).
SLICE = 0.05


async def _measure_interleaved(
    sign: Callable[[str], Awaitable[object]],
    csrs: Sequence[str],
    seconds: float,
    concurrency: int,
    baseline: Callable[[float], tuple[int, float]],
) -> tuple[float, float]:
    """``(rpc rate, baseline rate)`` per CPU second, measured in alternating ``SLICE``s.

    The RPC workers run throughout; a baseline slice runs synchronously on the loop (so
    the RPC path stands still meanwhile), then an RPC slice lets the loop run. Load from
    other processes on the shared machine then hits both paths alike, which separate
    windows cannot promise.
    """
    pool = itertools.cycle(csrs)
    count, stop = 0, False

    async def worker() -> None:
        nonlocal count
        while not stop:
            await sign(next(pool))
            count += 1

    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    await asyncio.sleep(SLICE)  # warm up: every worker has a request in flight
    totals = [0, 0.0, 0, 0.0]  # baseline certs, cpu; rpc certs, cpu
    for _ in range(max(1, round(seconds / SLICE))):
        certs, cpu = baseline(SLICE)
        totals[0] += certs
        totals[1] += cpu
        start_count, start_cpu = count, time.process_time()
        await asyncio.sleep(SLICE)
        totals[2] += count - start_count
        totals[3] += time.process_time() - start_cpu
    stop = True
    await asyncio.gather(*workers)
    return _rate(totals[2], totals[3]), _rate(totals[0], totals[1])


def baseline_slice(
    sign: Callable[[str], object], csrs: Sequence[str]
) -> Callable[[float], tuple[int, float]]:
    """``slice(seconds) -> (certs, cpu seconds)`` through a synchronous ``sign``."""
    pool = itertools.cycle(csrs)

    def run(seconds: float) -> tuple[int, float]:
        count, deadline = 0, time.perf_counter() + seconds
        cpu_start = time.process_time()
        while time.perf_counter() < deadline:
            for _ in range(5):
                sign(next(pool))
            count += 5
        return count, time.process_time() - cpu_start

    return run


async def propagation_times(tmp: Path, writes: int) -> list[float]:
    """Seconds from a config-entry write on dc1's server to a dc2 client reading it."""
    import aiohttp

    s1 = _agent(tmp, "s1", "dc1", server=True)
    s2 = _agent(tmp, "s2", "dc2", server=True)
    c2 = _agent(tmp, "c2", "dc2", server=False)
    agents = (s1, s2, c2)
    tasks = [asyncio.create_task(a.run()) for a in agents]
    try:
        await _until(lambda: all("serf_lan" in a.bound for a in agents), "agents bound")
        await _until(lambda: "serf_wan" in s1.bound, "s1 WAN bound")
        await s2.join([_addr(s1, "serf_wan")], wan=True)
        await c2.join([_addr(s2, "serf_lan")])
        await _until(lambda: c2.connect.roots() is not None, "roots in dc2")
        url = f"http://{_addr(s1, 'http')}/v1/config"
        out = []
        async with aiohttp.ClientSession() as http:
            for i in range(writes):
                read = f"http://{_addr(c2, 'http')}/v1/config/service-defaults/svc{i}"
                out.append(await _one_propagation(http, url, read, f"svc{i}"))
        return out
    finally:
        for a in agents:
            a.stop()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _one_propagation(http: Any, write_url: str, read_url: str, name: str) -> float:
    async with http.get(read_url) as first:
        index = first.headers["X-Consul-Index"]
    waiter = asyncio.ensure_future(http.get(read_url, params={"index": index, "wait": "10s"}))
    await asyncio.sleep(0.05)  # the blocking GET is parked on c2 before the write
    start = time.perf_counter()
    entry = {"Kind": "service-defaults", "Name": name, "MeshGateway": {"Mode": "local"}}
    async with http.put(write_url, json=entry) as resp:
        assert await resp.json() is True
    while True:
        async with await waiter as resp:
            if resp.status == 200:
                return time.perf_counter() - start
            index = resp.headers["X-Consul-Index"]
        waiter = asyncio.ensure_future(http.get(read_url, params={"index": index, "wait": "10s"}))


def _run_loop(coro: Awaitable[float]) -> float:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Linux-only dependency
        return asyncio.run(coro)  # type: ignore[arg-type]
    return uvloop.run(coro)  # type: ignore[arg-type,no-any-return]


def _addr(agent: Agent, listener: str) -> str:
    host, port = agent.bound[listener]
    return f"{host}:{port}"


def openssl_ecdsa_p256_signs(seconds: int = 3) -> float | None:
    """``openssl speed -seconds N ecdsap256`` sign/s, or None without openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    out = subprocess.run(
        [openssl, "speed", "-seconds", str(seconds), "ecdsap256"],
        capture_output=True, text=True, timeout=120, check=False,
    ).stdout  # fmt: skip
    match = re.search(r"256 bits ecdsa \(nistp256\)\s+\S+s\s+\S+s\s+([\d.]+)\s+([\d.]+)", out)
    return float(match.group(1)) if match else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per path, over all rounds")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--writes", type=int, default=10, help="propagation samples")
    args = parser.parse_args()

    now = datetime.now(UTC)
    root = generate_root(trust_domain=TD, now=now)
    ca = CAServer.primary(root, datacenter="dc1", trust_domain=TD, is_registered=lambda n, s: True)
    identity = SpiffeID(trust_domain=TD, datacenter="dc1", service="web")
    pairs = [make_leaf_csr(identity) for _ in range(CSR_POOL)]
    csrs = [csr for _, csr in pairs]
    public_keys = [key.public_key() for key, _ in pairs]

    base_sign = baseline_signer(root.key, root.cert.subject, "web")
    keys = itertools.cycle(public_keys)

    def baseline_path(_csr: str) -> object:
        return base_sign(next(keys))

    def meshnode_path(csr: str) -> object:
        return ca.sign_leaf(csr, "node-a", datetime.now(UTC))

    # The default (as Consul) takes the CSR's key as given; this one demands the proof.
    proving = CAServer.primary(
        root, datacenter="dc1", trust_domain=TD, is_registered=lambda n, s: True
    )
    proving.verify_csr_signatures = True

    def meshnode_no_pop_path(csr: str) -> object:
        return proving.sign_leaf(csr, "node-a", datetime.now(UTC))

    def end_to_end_path(_csr: str) -> object:
        return ca.sign_leaf(make_leaf_csr(identity)[1], "node-a", datetime.now(UTC))

    # Interleave short rounds so load from other processes on the shared machine hits both
    # paths alike; report the median round.
    per_round = args.seconds / args.rounds
    rounds = [
        (
            measure_signer(baseline_path, csrs, per_round),
            measure_signer(meshnode_path, csrs, per_round),
            measure_signer(meshnode_no_pop_path, csrs, per_round),
        )
        for _ in range(args.rounds)
    ]
    baseline = statistics.median(b for b, _, _ in rounds)
    meshnode = statistics.median(m for _, m, _ in rounds)
    ratio = statistics.median(m / b for b, m, _ in rounds)
    no_pop = statistics.median(f for _, _, f in rounds)
    ratio_no_pop = statistics.median(f / b for b, _, f in rounds)
    end_to_end = measure_signer(end_to_end_path, csrs, per_round)
    with tempfile.TemporaryDirectory() as tmp:
        # The agent runs on uvloop (node.agent.agent.run_agent); so does this path.
        slices = baseline_slice(baseline_path, csrs)
        rpc_rate, rpc_base = _run_loop(
            rpc_path_rate(Path(tmp) / "rpc", args.seconds / 2, baseline=slices)
        )
        rpc_single, single_base = _run_loop(
            rpc_path_rate(Path(tmp) / "rpc1", args.seconds / 2, batched=False, baseline=slices)
        )
        prop = asyncio.run(propagation_times(Path(tmp) / "prop", args.writes))
    ratio_rpc = rpc_rate / rpc_base
    openssl = openssl_ecdsa_p256_signs(max(1, round(args.seconds)))
    result = {
        "baseline_certs_per_s": round(baseline, 1),
        "meshnode_sign_leaf_per_s": round(meshnode, 1),
        "ratio_meshnode_to_baseline": round(ratio, 3),
        "meshnode_with_csr_signature_check_per_s": round(no_pop, 1),
        "ratio_with_csr_signature_check": round(ratio_no_pop, 3),
        "rounds": args.rounds,
        "end_to_end_keygen_csr_sign_per_s": round(end_to_end, 1),
        "openssl_ecdsap256_signs_per_s": openssl,
        "rpc_path_certs_per_s": round(rpc_rate, 1),
        "rpc_path_interleaved_baseline_per_s": round(rpc_base, 1),
        "ratio_rpc_path_to_baseline": round(ratio_rpc, 3),
        "ratio_rpc_path_to_separate_baseline": round(rpc_rate / baseline, 3),
        "rpc_one_call_per_leaf_per_s": round(rpc_single, 1),
        "ratio_rpc_one_call_per_leaf": round(rpc_single / single_base, 3),
        "config_entry_propagation_s": {
            "median": round(statistics.median(prop), 4),
            "max": round(max(prop), 4),
            "samples": len(prop),
        },
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"baseline (cryptography build+sign)    {baseline:10.1f} certs/cpu-s")
    print(
        f"meshnode CAServer.sign_leaf (CSR→PEM) {meshnode:10.1f} certs/cpu-s  ratio {meshnode / baseline:.2f} (target ≥ 0.5)"
    )
    print(
        f"  same, CSR signature verified too    {no_pop:10.1f} certs/cpu-s  ratio {ratio_no_pop:.2f} (opt-in)"
    )
    print(f"end to end (key + CSR + sign_leaf)    {end_to_end:10.1f} certs/cpu-s")
    print(
        f"full path CSR → RPC → sign → return   {rpc_rate:10.1f} certs/cpu-s  ratio {ratio_rpc:.2f} (target ≥ 0.5)"
        f"  [baseline interleaved with it: {rpc_base:.1f}]"
    )
    print(
        f"  same, one CA.SignLeaf RPC per leaf   {rpc_single:10.1f} certs/cpu-s  ratio {rpc_single / single_base:.2f}"
    )
    print(
        f"config entry dc1 write → dc2 client   median {statistics.median(prop) * 1000:.1f} ms, "
        f"max {max(prop) * 1000:.1f} ms over {len(prop)} writes (target ≤ 1 s)"
    )
    print(
        f"openssl speed ecdsap256 sign          {openssl if openssl is not None else 'n/a':>10} signs/s"
    )


if __name__ == "__main__":
    main()
