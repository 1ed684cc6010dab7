"""The agent as a real process: start on port 0, serve, stop on SIGTERM/SIGINT, restore state.

Marked ``slow``: each test starts ``python -m node agent`` subprocesses.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.poll import wait_for_blocking

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 30.0  # seconds for an agent to print its HTTP address
STOP_TIMEOUT = 15.0
LISTENING = re.compile(r"http server listening addr=(\S+)")
#: Loopback only, every listener (HTTP, RPC, both gossip pools) on a free port.
LOOPBACK_ANY_PORTS = ("-bind", "127.0.0.1", "-http-port", "0", "-server-port", "0",
                      "-serf-lan-port", "0", "-serf-wan-port", "0", "-dns-port", "0")  # fmt: skip


class AgentProcess:
    """``python -m node agent ...`` with its stderr collected by a reader thread."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "node", "agent", *LOOPBACK_ANY_PORTS, *args],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.addr: str | None = None
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            match = LISTENING.search(line)
            if match and self.addr is None:
                self.addr = match.group(1)
                self._ready.set()
        self._ready.set()  # EOF: the process ended

    def wait_listening(self) -> str:
        """The bound HTTP address; fails with the log if the agent died or is too slow."""
        if not self._ready.wait(START_TIMEOUT) or self.addr is None:
            self.kill()
            raise AssertionError("agent did not start:\n" + "\n".join(self.lines))
        return self.addr

    def http(self, path: str, *, method: str = "GET", body: Any = None) -> Any:
        """One API call; returns decoded JSON."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://{self.addr}{path}", data=data, method=method)
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send ``sig`` and wait for the exit status."""
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("agent ignored " + signal.Signals(sig).name) from None

    def kill(self) -> None:
        """SIGKILL and reap."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT)

    def wait_log(self, needle: str, timeout: float = 5.0) -> None:
        """Wait until a log line containing ``needle`` was read (the reader thread lags)."""
        wait_for_blocking(
            lambda: any(needle in line for line in self.lines),
            lambda: f"a log line with {needle!r}:\n" + "\n".join(self.lines),
            timeout,
            interval=0.01,
        )


@pytest.fixture
def agents() -> Any:
    started: list[AgentProcess] = []

    def start(*args: str) -> AgentProcess:
        agent = AgentProcess(*args)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.kill()


def _port_closed(addr: str) -> bool:
    try:
        urllib.request.urlopen(f"http://{addr}/v1/agent/self", timeout=2)
    except OSError:
        return True
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_Agent_dev_serves_and_stops_cleanly(agents: Any, sig: int) -> None:
    agent = agents("-dev", "-node", "t1")
    addr = agent.wait_listening()
    assert addr.startswith("127.0.0.1:") and not addr.endswith(":0")
    me = agent.http("/v1/agent/self")
    assert (me["Config"]["NodeName"], me["Config"]["Datacenter"], me["Config"]["Server"]) == (
        "t1",
        "dc1",
        True,
    )
    assert agent.stop(sig) == 0
    agent.wait_log("agent stopped")
    assert any("[INFO]" in line and "node=t1" in line for line in agent.lines)
    assert _port_closed(addr)


def test_Agent_restart_restores_services_and_writes_ports(agents: Any, tmp_path: Path) -> None:
    first = agents("-data-dir", str(tmp_path), "-node", "r1")
    addr = first.wait_listening()
    ports = json.loads((tmp_path / "ports.json").read_text())
    assert f"127.0.0.1:{ports['http']}" == addr
    body = {"Name": "web", "Port": 80, "Check": {"CheckID": "web-ttl", "TTL": "300s"}}
    first.http("/v1/agent/service/register", method="PUT", body=body)
    node_id = first.http("/v1/agent/self")["Config"]["NodeID"]
    assert first.stop() == 0

    second = agents("-data-dir", str(tmp_path), "-node", "r1")
    second.wait_listening()
    assert set(second.http("/v1/agent/services")) == {"web"}
    assert "web-ttl" in second.http("/v1/agent/checks")
    assert second.http("/v1/agent/self")["Config"]["NodeID"] == node_id
    assert [e["ServiceID"] for e in second.http("/v1/catalog/service/web")] == ["web"]


def test_Agent_sigkill_loses_nothing_acknowledged(agents: Any, tmp_path: Path) -> None:
    first = agents("-data-dir", str(tmp_path), "-node", "k1")
    first.wait_listening()
    for i in range(5):
        first.http(
            "/v1/agent/service/register", method="PUT", body={"Name": f"svc{i}", "Port": 1000 + i}
        )
    first.http("/v1/agent/service/deregister/svc0", method="PUT")
    first.kill()
    second = agents("-data-dir", str(tmp_path), "-node", "k1")
    second.wait_listening()
    assert set(second.http("/v1/agent/services")) == {"svc1", "svc2", "svc3", "svc4"}


def test_Agent_bad_config_exits_nonzero_with_one_line(tmp_path: Path) -> None:
    conf = tmp_path / "bad.hcl"
    conf.write_text(f'data_dir = "{tmp_path}"\nportz {{ http = 1 }}\n')
    proc = subprocess.run(
        [sys.executable, "-m", "node", "agent", "-config-file", str(conf)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "bad.hcl" in lines[0] and "portz" in lines[0] and "did you mean" in lines[0]


def test_Agent_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "node", "agent", "-dev", "-http-port", str(port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and f"cannot listen on 127.0.0.1:{port}" in last
    assert "Traceback" not in proc.stderr


def test_Agent_registers_services_from_config_files(tmp_path: Path) -> None:
    from node.agent.agent import Agent
    from node.config.agent import load

    conf = tmp_path / "web.hcl"
    conf.write_text(
        f'data_dir = "{tmp_path}"\nnode_name = "cfg1"\n'
        'service {\n  name = "web"\n  port = 8080\n  connect { sidecar_service {} }\n}\n'
    )
    agent = Agent(load([str(conf)], overrides={"http-port": 0}))
    assert set(agent.local.services()) == {"web", "web-sidecar-proxy"}
    assert [c.name for c in agent.components()] == ["http", "checks", "connect", "proxies", "dns"]


def test_Agent_config_services_follow_the_files_api_services_survive_sigkill(
    agents: Any, tmp_path: Path
) -> None:
    conf = tmp_path / "services.hcl"
    conf.write_text(
        'service {\n  name = "web"\n  port = 8080\n}\nservice {\n  name = "db"\n  port = 5432\n}\n'
    )
    data = tmp_path / "data"
    first = agents("-data-dir", str(data), "-node", "s1", "-config-file", str(conf))
    first.wait_listening()
    first.http("/v1/agent/service/register", method="PUT", body={"Name": "api", "Port": 9000})
    first.kill()

    second = agents("-data-dir", str(data), "-node", "s1", "-config-file", str(conf))
    second.wait_listening()
    assert set(second.http("/v1/agent/services")) == {"web", "db", "api"}
    second.kill()

    conf.write_text('service {\n  name = "web"\n  port = 8080\n}\n')
    third = agents("-data-dir", str(data), "-node", "s1", "-config-file", str(conf))
    third.wait_listening()
    assert set(third.http("/v1/agent/services")) == {"web", "api"}
