"""The meshnode demo: a two-datacenter federation on loopback, and a request crossing it.

Starts the Procfile (six nodes, two mesh gateways, two demo apps) with honcho, waits with
a progress display until the WAN pool, the CA, the leaves and both gateways are ready,
then shows the WAN members, a request from web's upstream port (127.0.0.1:10000)
answered by api in dc2, the path it took according to both gateways' metrics, and
``dig`` asking dc1's DNS interface for api's Connect endpoints in dc2 (dnsutils is
installed with apt-get when ``dig`` is missing).

    scripts/demo            run until Ctrl-C, then stop every process it started
    scripts/demo --check    the same, then print the verdict and exit 0 or 1
    scripts/demo --dev      one `meshnode agent -dev` node, shown answering

Only the standard library is used here so that the script reads as a plain recipe.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "cluster-data"
DC1_SERVER = "127.0.0.1:8500"
DC2_SERVER = "127.0.2.1:8500"
DC1_GATEWAY = "127.0.1.2:8500"
DC2_GATEWAY = "127.0.2.2:8500"
DC1_WEB = "127.0.1.3:8500"
UPSTREAM = ("127.0.0.1", 10000)
#: dc1's server answers DNS on its client address, Consul's port.
DIG = ["dig", "@127.0.0.1", "-p", "8600", "api.connect.dc2.consul", "SRV", "+short"]
READY_TIMEOUT = 90.0
# honcho, meshnode and the Procfile's commands come from the interpreter's own venv.
BIN = str(Path(sys.executable).parent)
os.environ["PATH"] = BIN + os.pathsep + os.environ.get("PATH", "")


def http_json(addr: str, path: str, timeout: float = 2.0) -> object:
    """GET http://addr/path and decode JSON; raises OSError/ValueError on failure."""
    with urllib.request.urlopen(f"http://{addr}{path}", timeout=timeout) as resp:
        return json.loads(resp.read() or b"null")


def try_json(addr: str, path: str) -> object | None:
    """Like http_json, but None on any failure (used while waiting)."""
    try:
        return http_json(addr, path)
    except (OSError, ValueError, urllib.error.URLError):
        return None


def upstream_request(timeout: float = 3.0) -> str | None:
    """Send one HTTP GET through web's upstream port; return the body or None."""
    try:
        with socket.create_connection(UPSTREAM, timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n")
            data = b""
            while b"\r\n\r\n" not in data or not data.endswith(b"\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
                if len(data) > 65536:
                    break
    except OSError:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    return body.decode(errors="replace").strip() if head.startswith(b"HTTP/1.1 200") else None


def _wan_ready() -> bool:
    members = try_json(DC1_SERVER, "/v1/agent/members?wan=1")
    if not isinstance(members, list):
        return False
    alive = {m.get("Tags", {}).get("dc") for m in members if m.get("Status") == 1}
    return {"dc1", "dc2"} <= alive


def _roots_ready() -> bool:
    roots = [try_json(a, "/v1/connect/ca/roots") for a in (DC1_SERVER, DC2_SERVER)]
    ids = {r.get("ActiveRootID") for r in roots if isinstance(r, dict)}
    return len(ids) == 1 and None not in ids and "" not in ids


def _leaves_ready() -> bool:
    web = try_json(DC1_WEB, "/v1/agent/connect/ca/leaf/web")
    api = try_json("127.0.2.3:8500", "/v1/agent/connect/ca/leaf/api")
    return all(isinstance(x, dict) and x.get("CertPEM") for x in (web, api))


def _gateways_ready() -> bool:
    for addr in (DC1_SERVER, DC2_SERVER):
        gws = try_json(addr, "/v1/health/service/mesh-gateway?passing=1")
        if not isinstance(gws, list) or not gws:
            return False
    return True


STEPS: tuple[tuple[str, Callable[[], bool]], ...] = (
    ("WAN pool: dc1 and dc2 servers joined", _wan_ready),
    ("Connect CA: one root, shared by dc1 and dc2", _roots_ready),
    ("leaf certificates for web (dc1) and api (dc2)", _leaves_ready),
    ("mesh gateways registered and passing in both datacenters", _gateways_ready),
    ("web's upstream port answers through the gateways", lambda: upstream_request() is not None),
)


def wait_ready(proc: subprocess.Popen[bytes], started: float) -> bool:
    """Walk STEPS in order, printing progress; False on timeout or if honcho died."""
    deadline = started + READY_TIMEOUT
    for title, ready in STEPS:
        print(f"  ... {title}", end="", flush=True)
        while not ready():
            if proc.poll() is not None:
                print(f"\n  !! the federation stopped (exit {proc.returncode}); see the log above")
                return False
            if time.monotonic() > deadline:
                print(f"\n  !! not ready after {READY_TIMEOUT:.0f}s: {title}")
                return False
            print(".", end="", flush=True)
            time.sleep(0.5)
        print(f" ok ({time.monotonic() - started:.1f}s)")
    return True


def gateway_path() -> list[str]:
    """Describe the path from both gateways' metrics: connections per listener."""
    lines = []
    for name, addr in (("dc1", DC1_GATEWAY), ("dc2", DC2_GATEWAY)):
        metrics = try_json(addr, "/v1/agent/metrics")
        listeners = metrics.get("Listeners", []) if isinstance(metrics, dict) else []
        for lst in listeners:
            if lst.get("Kind") == "mesh-gateway":
                # Health-check probes connect and close before any ClientHello: not routed.
                routed = lst.get("ConnectionsOpened", 0) - sum(lst.get("Rejections", {}).values())
                lines.append(
                    f"  {name} mesh gateway {lst.get('Address')}: "
                    f"{routed} connections routed by SNI, "
                    f"{lst.get('BytesIn', 0)} bytes in / {lst.get('BytesOut', 0)} out"
                )
    return lines


def ensure_dig() -> bool:
    """``dig`` on PATH, installing Debian's dnsutils (apt-get, as root) when it is missing."""
    if shutil.which("dig"):
        return True
    print("  (installing dnsutils for dig ...)", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "dnsutils"]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"  !! {' '.join(cmd)} failed: {done.stderr.strip()[-300:]}")
            return False
    return shutil.which("dig") is not None


def dig_line() -> bool:
    """Ask dc1's DNS for api's Connect endpoints in dc2; True when an SRV record came back."""
    print(f"\n$ {' '.join(DIG)}   # dc1's DNS, answered by dc2's catalog")
    if not ensure_dig():
        print("  (dig is not available)")
        return False
    done = subprocess.run(DIG, capture_output=True, text=True, timeout=15, check=False)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    for line in lines or ["  (no answer)"]:
        print(f"  {line}")
    return done.returncode == 0 and any(line.split()[-1].endswith(".dc2.consul.") for line in lines)


def show_result() -> bool:
    """Print members, one request through the mesh, its path and the DNS answer; True if
    the request and the DNS answer worked."""
    print("\n$ meshnode members -wan")
    subprocess.run(["meshnode", "members", "-wan", "-http-addr", DC1_SERVER], check=False)
    print("\n$ curl 127.0.0.1:10000   # web's upstream port for api in dc2")
    body = upstream_request()
    print(f"  {body}" if body else "  (no answer)")
    print("\nthe path, from the gateways' metrics:")
    for line in gateway_path() or ["  (no gateway metrics)"]:
        print(line)
    dns_ok = dig_line()
    return body is not None and "api in dc2" in body and dns_ok


def start_federation() -> subprocess.Popen[bytes]:
    """Start honcho on the Procfile in its own process group, from a clean data folder."""
    if DATA.exists():
        shutil.rmtree(DATA)  # demo data only: every run starts a fresh federation
    DATA.mkdir()
    for addr in (DC1_SERVER, "127.0.1.1:8301", "127.0.0.1:10000", "127.0.0.1:8600"):
        host, port = addr.split(":")
        with socket.socket() as s:
            if s.connect_ex((host, int(port))) == 0:
                sys.exit(f"demo: {addr} is already in use; is another demo running?")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        ["honcho", "start", "-f", "Procfile"], cwd=ROOT, env=env, start_new_session=True
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop honcho and everything it started (SIGTERM to the group, then SIGKILL)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run_federation(check: bool) -> int:
    """The two-datacenter demo."""
    started = time.monotonic()
    print("meshnode demo: starting dc1 and dc2 (6 nodes, 2 gateways, 2 apps) ...")
    proc = start_federation()
    try:
        ok = wait_ready(proc, started) and show_result()
        print(f"\nfirst cross-datacenter request after {time.monotonic() - started:.1f}s")
        if check:
            print("demo check: " + ("PASS" if ok else "FAIL"))
            return 0 if ok else 1
        print("\nthe federation keeps running; press Ctrl-C to stop it")
        proc.wait()
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        stop(proc)


def run_dev(check: bool) -> int:
    """One -dev node, shown answering."""
    print("meshnode demo: starting one -dev node on 127.0.0.1:8500 ...")
    proc = subprocess.Popen(["meshnode", "agent", "-dev"], cwd=ROOT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while try_json(DC1_SERVER, "/v1/agent/self") is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                print("demo check: FAIL (the node did not answer)")
                return 1
            time.sleep(0.2)
        print("\n$ meshnode members")
        subprocess.run(["meshnode", "members"], check=False)
        print("\n$ meshnode catalog services")
        subprocess.run(["meshnode", "catalog", "services"], check=False)
        if check:
            print("demo check: PASS")
            return 0
        print("\nthe node keeps running; press Ctrl-C to stop it")
        proc.wait()
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        stop(proc)


def main() -> int:
    """Start the demo federation, wait until it is ready, print how to use it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 0/1 after the first request")
    parser.add_argument(
        "--dev", action="store_true", help="one -dev node instead of the federation"
    )
    args = parser.parse_args()
    return run_dev(args.check) if args.dev else run_federation(args.check)


if __name__ == "__main__":
    raise SystemExit(main())
