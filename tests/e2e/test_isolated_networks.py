"""Datacenters that can reach each other only through their gateways (network namespaces).

Topology built by this test (root only; iproute2's ``ip netns``):

    ns mn-dc1 (lo: 127.0.1.x)          ns mn-wan (bridge mnbr0)          ns mn-dc2 (lo: 127.0.2.x)
      dc1-server  dc1-gateway  dc1-web ── veth 10.99.0.1 ─┤ ├─ veth 10.99.0.2 ── dc2-server dc2-gateway dc2-api

Each datacenter's nodes keep the loopback addresses of ``cluster-configs/`` inside their
own namespace, so nothing of one datacenter is reachable from the other. The only shared
network is the WAN bridge: the servers bind their WAN address there (WAN pool and RPC)
and each mesh gateway listens on it as its ``wan`` tagged address. A direct connection
from dc1 to dc2's service fails; ``local`` and ``remote`` modes work; ``none`` cannot.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import CONFIGS, ROOT, TRANSIENT, Proc
from tests.helpers.poll import wait_for_blocking

pytestmark = pytest.mark.slow

WAN = {"dc1": "10.99.0.1", "dc2": "10.99.0.2"}
PREFIX = "mn"  # namespace and link names start with this, so teardown finds them all


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=20)


def _can_build_namespaces() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2 (`ip`); scripts/test installs it"
    probe = _ip("netns", "add", f"{PREFIX}-probe", check=False)
    _ip("netns", "del", f"{PREFIX}-probe", check=False)
    if probe.returncode != 0:
        return f"cannot create network namespaces here: {probe.stderr.strip()}"
    return None


def _teardown() -> None:
    for ns in ("dc1", "dc2", "wan"):
        _ip("netns", "del", f"{PREFIX}-{ns}", check=False)


def _build() -> None:
    _teardown()
    _ip("netns", "add", f"{PREFIX}-wan")
    _ip("-n", f"{PREFIX}-wan", "link", "add", "mnbr0", "type", "bridge")
    _ip("-n", f"{PREFIX}-wan", "link", "set", "mnbr0", "up")
    for dc, addr in WAN.items():
        ns = f"{PREFIX}-{dc}"
        _ip("netns", "add", ns)
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("link", "add", f"{PREFIX}{dc}w", "type", "veth", "peer", "name", f"{PREFIX}{dc}b")
        _ip("link", "set", f"{PREFIX}{dc}w", "netns", ns)
        _ip("link", "set", f"{PREFIX}{dc}b", "netns", f"{PREFIX}-wan")
        _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", f"{PREFIX}{dc}w")
        _ip("-n", ns, "link", "set", f"{PREFIX}{dc}w", "up")
        _ip("-n", f"{PREFIX}-wan", "link", "set", f"{PREFIX}{dc}b", "master", "mnbr0")
        _ip("-n", f"{PREFIX}-wan", "link", "set", f"{PREFIX}{dc}b", "up")


def _in_ns(dc: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", f"{PREFIX}-{dc}", *argv]


def _probe(dc: str, code: str, timeout: float = 10) -> str:
    """Run a Python snippet inside a datacenter's namespace; its stdout."""
    argv = _in_ns(dc, sys.executable, "-c", code)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout).stdout.strip()


def _http(dc: str, addr: str, path: str) -> object:
    code = textwrap.dedent(
        f"""
        import urllib.request, sys
        try:
            print(urllib.request.urlopen("http://{addr}{path}", timeout=2).read().decode())
        except Exception:
            print("null")
        """
    )
    out = _probe(dc, code)
    try:
        return json.loads(out or "null")
    except ValueError:
        return None


def _get(dc: str, host: str, port: int) -> str | None:
    code = textwrap.dedent(
        f"""
        import socket
        try:
            s = socket.create_connection(("{host}", {port}), timeout=3)
            s.settimeout(5)
            s.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
            data = b""
            for _ in range(64):
                c = s.recv(65536)
                if not c:
                    break
                data += c
            print(data.partition(b"\\r\\n\\r\\n")[2].decode().strip())
        except OSError as exc:
            print("ERROR", exc)
        """
    )
    out = _probe(dc, code)
    return None if out.startswith("ERROR") or not out else out


class NetnsFederation:
    """dc1 and dc2 of cluster-configs/, each in its own namespace, joined by the WAN bridge."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[Proc] = []

    def _spawn(self, dc: str, name: str, argv: list[str]) -> None:
        proc = Proc(name, _in_ns(dc, *argv), self.workdir / f"{name}.log")
        self.procs.append(proc)
        proc.start()

    def _override(self, dc: str, node: str) -> Path:
        # Servers live on the WAN address (the only address the other DC can reach);
        # the other nodes of the DC join them there.
        wan = WAN[dc]
        if node.endswith("server"):
            text = f'bind_addr = "{wan}"\n'
            if dc != "dc1":
                text += f'retry_join_wan = ["{WAN["dc1"]}:8302"]\n'
        else:
            text = f'retry_join = ["{wan}"]\n'
        path = self.workdir / f"{node}-override.hcl"
        path.write_text(text)
        return path

    def start(self) -> None:
        for dc, app_node in (("dc1", "dc1-web"), ("dc2", "dc2-api")):
            for node in (f"{dc}-server", f"{dc}-gateway", app_node):
                argv = [sys.executable, "-m", "node", "agent"]
                argv += ["-config-file", str(CONFIGS / f"{node}.hcl")]
                argv += ["-config-file", str(self._override(dc, node))]
                argv += ["-data-dir", str(self.workdir / "data" / node)]
                self._spawn(dc, node, argv)
        self._spawn(
            "dc1",
            "web-app",
            [sys.executable, str(ROOT / "scripts/demo_app.py"), "web", "dc1", "127.0.1.3:9090"],
        )
        self._spawn(
            "dc2",
            "api-app",
            [sys.executable, str(ROOT / "scripts/demo_app.py"), "api", "dc2", "127.0.2.3:9090"],
        )
        for dc in ("dc1", "dc2"):
            gw = f"127.0.{dc[-1]}.2"
            wait_for_blocking(
                lambda dc=dc, gw=gw: _http(dc, f"{gw}:8500", "/v1/agent/self"),
                f"{dc} gateway node",
                30,
                ignoring=TRANSIENT,
            )
            argv = [
                sys.executable,
                "-m",
                "node",
                "connect",
                "gateway",
                "-register",
                "-http-addr",
                f"{gw}:8500",
            ]
            argv += ["-address", f"{gw}:8443", "-wan-address", f"{WAN[dc]}:8443"]
            self._spawn(dc, f"{dc}-gw", argv)

    def set_mode(self, mode: str) -> None:
        entry = self.workdir / f"mode-{mode}.hcl"
        entry.write_text(
            f'Kind = "proxy-defaults"\nName = "global"\nMeshGateway {{\n  Mode = "{mode}"\n}}\n'
        )
        argv = _in_ns(
            "dc1",
            sys.executable,
            "-m",
            "node",
            "config",
            "write",
            str(entry),
            "-http-addr",
            "127.0.0.1:8500",
        )
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.kill()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.tail()}" for p in self.procs)


@pytest.fixture(scope="module")
def netfed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetnsFederation]:
    reason = _can_build_namespaces()
    if reason:
        pytest.skip(reason)
    fed = NetnsFederation(tmp_path_factory.mktemp("netns"))
    try:
        _build()
        fed.start()
        yield fed
    except BaseException:
        print(fed.logs())
        raise
    finally:
        fed.stop()
        _teardown()


def test_IsolatedNetworks_direct_connection_fails(netfed: NetnsFederation) -> None:
    # api's app and its sidecar exist only inside dc2's namespace.
    assert _get("dc1", "127.0.2.3", 9090) is None
    assert _get("dc1", "127.0.2.3", 21000) is None


@pytest.mark.parametrize("mode", ["local", "remote"])
def test_IsolatedNetworks_upstream_works_through_gateways(
    netfed: NetnsFederation, mode: str
) -> None:
    netfed.set_mode(mode)
    try:
        wait_for_blocking(
            lambda: _get("dc1", "127.0.0.1", 10000) == "api in dc2",
            f"web → api in mode {mode}",
            60,
            ignoring=TRANSIENT,
        )
    except AssertionError:
        print(netfed.logs())
        raise


def test_IsolatedNetworks_mode_none_cannot_cross(netfed: NetnsFederation) -> None:
    # Without gateways the sidecar dials api's own address, which dc1 cannot reach: the
    # app's connection is closed instead of hanging, and no reply ever arrives.
    netfed.set_mode("none")
    try:
        wait_for_blocking(
            lambda: _get("dc1", "127.0.0.1", 10000) is None,
            "mode none failing fast",
            30,
            ignoring=TRANSIENT,
        )
    finally:
        netfed.set_mode("local")
