"""Real-process harness for the end-to-end tier.

Rule: every wait has a deadline and says what it waited for (``tests.helpers.poll``);
every process started here is stopped at teardown (SIGTERM, then SIGKILL), even when the test fails.
Nodes come from ``cluster-configs/`` with only ``-data-dir`` overridden, so the tests
exercise exactly the files users run.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "cluster-configs"

#: HTTP address of each node of the demo federation (from cluster-configs/).
HTTP = {
    "dc1-server": "127.0.0.1:8500",
    "dc1-gateway": "127.0.1.2:8500",
    "dc1-web": "127.0.1.3:8500",
    "dc2-server": "127.0.2.1:8500",
    "dc2-gateway": "127.0.2.2:8500",
    "dc2-api": "127.0.2.3:8500",
    "dc3-server": "127.0.3.1:8500",
    "dc3-gateway": "127.0.3.2:8500",
    "dc3-api": "127.0.3.3:8500",
}
GATEWAY_ADDR = {"dc1": "127.0.1.2:8443", "dc2": "127.0.2.2:8443", "dc3": "127.0.3.2:8443"}
APP_ADDR = {"web": "127.0.1.3:9090", "api-dc2": "127.0.2.3:9090", "api-dc3": "127.0.3.3:9090"}
#: What a probe of a node that is still starting raises; a poll retries on these.
TRANSIENT = (OSError, ValueError, KeyError)


def http(
    addr: str, path: str, *, method: str = "GET", body: Any = None, timeout: float = 5.0
) -> Any:
    """One HTTP request to a node's API; JSON in and out. Raises on non-2xx."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{addr}{path}", data=data, method=method)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


def try_http(addr: str, path: str) -> Any:
    """``http`` GET, or None on any failure."""
    try:
        return http(addr, path, timeout=2.0)
    except (OSError, ValueError, urllib.error.URLError):
        return None


def request_through(port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> str | None:
    """One HTTP GET through a local port (an upstream listener); the body, or None."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            chunks = []
            for _ in range(64):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
    except OSError:
        return None
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return body.decode(errors="replace").strip() if head.startswith(b"HTTP/1.1 200") else None


@dataclass
class Proc:
    """One process started by the harness, with its log file."""

    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        out = self.log.open("ab")
        self.popen = subprocess.Popen(
            self.argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        out.close()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.popen and self.popen.poll() is None:
            os.killpg(self.popen.pid, sig)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=10)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Federation:
    """Nodes, gateways and demo apps of cluster-configs/, started as real processes."""

    workdir: Path
    procs: dict[str, Proc] = field(default_factory=dict)

    def _spawn(self, name: str, argv: list[str]) -> Proc:
        proc = Proc(name, argv, self.workdir / f"{name}.log")
        self.procs[name] = proc
        proc.start()
        return proc

    def start_node(self, node: str) -> Proc:
        """Start (or restart) the node ``node`` (e.g. ``dc1-web``) from its config file."""
        argv = [sys.executable, "-m", "node", "agent", "-config-file", str(CONFIGS / f"{node}.hcl")]
        argv += ["-data-dir", str(self.workdir / "data" / node)]
        return self._spawn(node, argv)

    def start_gateway(self, dc: str) -> Proc:
        """Register dc's mesh gateway on its gateway node (foreground command)."""
        addr = GATEWAY_ADDR[dc]
        argv = [sys.executable, "-m", "node", "connect", "gateway", "-register"]
        argv += ["-http-addr", HTTP[f"{dc}-gateway"], "-address", addr, "-wan-address", addr]
        return self._spawn(f"{dc}-gw", argv)

    def start_app(self, name: str, dc: str, addr: str) -> Proc:
        argv = [sys.executable, str(ROOT / "scripts" / "demo_app.py"), name, dc, addr]
        return self._spawn(f"{name}-{dc}-app", argv)

    def cli(
        self, *args: str, http_addr: str = HTTP["dc1-server"]
    ) -> subprocess.CompletedProcess[str]:
        """Run a meshnode CLI command against a node; returns the completed process."""
        argv = [sys.executable, "-m", "node", *args, "-http-addr", http_addr]
        return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs.values())):
            proc.kill(signal.SIGTERM)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.tail()}" for p in self.procs.values())
