"""py-consul, the real Consul client library, against a real meshnode process.

Marked ``slow``: starts ``python -m node agent -dev`` on a free port. This is the
compatibility promise: a Consul client registers a service with a TTL check, reads it
back from the catalog and health endpoints, passes the check, watches a blocking query
wake on the change, and deregisters.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import consul
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 30.0
WAKE_TIMEOUT = 10.0
#: Every listener on a free port, so parallel runs never collide on Consul's defaults.
ANY_PORTS = ("-http-port", "0", "-serf-lan-port", "0", "-serf-wan-port", "0", "-server-port", "0",
             "-dns-port", "0")  # fmt: skip
LISTENING = re.compile(r"http server listening addr=(\S+):(\d+)")


@pytest.fixture
def node() -> Any:
    """A -dev meshnode on a free port; yields (host, port); stopped with SIGTERM."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "node", "agent", "-dev", "-node", "rc1", *ANY_PORTS],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    found: list[tuple[str, int]] = []
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            match = LISTENING.search(line)
            if match and not found:
                found.append((match.group(1), int(match.group(2))))
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        if not ready.wait(START_TIMEOUT) or not found:
            raise AssertionError("meshnode did not start:\n" + "".join(lines))
        yield found[0]
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)


def test_py_consul_register_read_pass_watch_deregister(node: tuple[str, int]) -> None:
    host, port = node
    c = consul.Consul(host=host, port=port)

    assert c.agent.service.register(
        "web", service_id="web1", port=8080, tags=["v1"], check=consul.Check.ttl("60s")
    )
    services = c.agent.services()
    assert services["web1"]["Service"] == "web"
    assert services["web1"]["Port"] == 8080
    check_id = "service:web1"
    assert c.agent.checks()[check_id]["Status"] == "critical"

    index, entries = c.catalog.service("web")
    assert [(e["ServiceID"], e["ServicePort"], e["ServiceTags"]) for e in entries] == [
        ("web1", 8080, ["v1"])
    ]
    assert int(index) >= 1
    _, catalog_services = c.catalog.services()
    assert catalog_services["web"] == ["v1"]
    _, health = c.health.service("web")
    assert [e["Service"]["ID"] for e in health] == ["web1"]
    _, passing = c.health.service("web", passing=True)
    assert passing == []  # the TTL check starts critical

    # Watch: a blocking query parked on the current index wakes when the check passes.
    health_index, _ = c.health.service("web")
    woke: list[tuple[str, Any]] = []
    watcher = threading.Thread(
        target=lambda: woke.append(c.health.service("web", index=health_index, wait="30s"))
    )
    watcher.start()
    assert c.agent.check.ttl_pass(check_id, "all good")
    watcher.join(WAKE_TIMEOUT)
    assert not watcher.is_alive(), "blocking query did not wake on the check change"
    new_index, entries = woke[0]
    assert int(new_index) > int(health_index)
    statuses = {chk["CheckID"]: (chk["Status"], chk["Output"]) for chk in entries[0]["Checks"]}
    assert statuses[check_id] == ("passing", "all good")
    assert statuses["serfHealth"][0] == "passing"
    _, passing = c.health.service("web", passing=True)
    assert [e["Service"]["ID"] for e in passing] == ["web1"]

    _, nodes = c.catalog.nodes()
    assert [n["Node"] for n in nodes] == ["rc1"]
    assert c.catalog.datacenters() == ["dc1"]
    assert c.status.leader()
    assert [m["Name"] for m in c.agent.members()] == ["rc1"]

    assert c.agent.service.deregister("web1")
    assert c.agent.services() == {}
    _, entries = c.catalog.service("web")
    assert entries == []
    assert check_id not in c.agent.checks()
