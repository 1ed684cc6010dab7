"""``dig`` against a real ``meshnode agent -dev`` process (UDP and TCP).

Marked ``slow``. ``dig`` comes from Debian's dnsutils, installed with apt-get when it is
missing (as scripts/demo does), never assumed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.poll import wait_for_blocking

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"(http|dns) server listening addr=(\S+):(\d+)")


def ensure_dig() -> str:
    """The path of ``dig``, installing dnsutils first if needed."""
    found = shutil.which("dig")
    if found:
        return found
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "dnsutils"]):
        subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=600)
    found = shutil.which("dig")
    assert found, "dnsutils installed but dig is not on PATH"
    return found


@pytest.fixture
def node(tmp_path: Path) -> Iterator[dict[str, int]]:
    """A -dev node on free ports; yields {"http": port, "dns": port}."""
    log = tmp_path / "agent.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "node", "agent", "-dev", "-node", "dig1", "-http-port", "0",
             "-dns-port", "0", "-serf-lan-port", "0", "-serf-wan-port", "0", "-server-port", "0"],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:

        def ports() -> dict[str, int] | None:
            found = {m[0]: int(m[2]) for m in LISTENING.findall(log.read_text())}
            return found if {"http", "dns"} <= found.keys() else None

        yield wait_for_blocking(ports, "the agent's http and dns ports", timeout=30)
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def dig(port: int, *args: str) -> str:
    done = subprocess.run(
        [ensure_dig(), "@127.0.0.1", "-p", str(port), "+time=2", "+tries=2", *args],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return done.stdout


def test_dig_resolves_services_nodes_and_misses(node: dict[str, int]) -> None:
    ensure_dig()
    body = json.dumps({"Name": "api", "Port": 9090, "Tags": ["v1"]}).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{node['http']}/v1/agent/service/register", data=body, method="PUT"
    )
    urllib.request.urlopen(req, timeout=5).close()

    def srv() -> str | None:
        out = dig(node["dns"], "api.service.consul", "SRV", "+short")
        return out if "9090" in out else None

    assert wait_for_blocking(srv, "api's SRV record").split() == [
        "1",
        "1",
        "9090",
        "dig1.node.dc1.consul.",
    ]
    full = dig(node["dns"], "api.service.consul", "SRV")
    assert "status: NOERROR" in full and "flags: qr aa rd" in full
    assert re.search(r"dig1\.node\.dc1\.consul\.\s+0\s+IN\s+A\s+127\.0\.0\.1", full)  # additional
    assert dig(node["dns"], "v1.api.service.consul", "A", "+short", "+tcp").split() == ["127.0.0.1"]
    assert dig(node["dns"], "DIG1.node.consul", "+short").split() == ["127.0.0.1"]
    miss = dig(node["dns"], "nope.service.consul", "A")
    assert "status: NXDOMAIN" in miss and "SOA" in miss and "ns.consul. hostmaster.consul." in miss
