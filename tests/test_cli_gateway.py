"""``meshnode connect gateway`` and ``/v1/agent/metrics``.

Pure parts (address flags, the registration body, the status line), then the real
command as a subprocess against an in-process server: it waits for the node, registers,
stays in the foreground printing status until SIGTERM (exit 0, registration kept).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from node.cli.gateway import (
    GatewayCommandError,
    gateway_registration,
    parse_gateway_addr,
    status_line,
)
from node.config.agent import TelemetryConfig
from tests.helpers.cluster import Cluster, free_port
from tests.helpers.poll import wait_for

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("10.0.0.1:8443", ("10.0.0.1", 8443)),
        ("10.0.0.1", ("10.0.0.1", 443)),
        ("[::1]:9000", ("::1", 9000)),
        ("::1", ("::1", 443)),
    ],
)
def test_parse_gateway_addr(text: str, want: tuple[str, int]) -> None:
    assert parse_gateway_addr(text, flag="address", default_port=443) == want


@pytest.mark.parametrize(
    ("text", "message"),
    [("gw.example:443", "not an IP address"), ("10.0.0.1:0", "port must be 1-65535"),
     ("10.0.0.1:http", "port must be 1-65535")],
)  # fmt: skip
def test_parse_gateway_addr_names_the_flag(text: str, message: str) -> None:
    with pytest.raises(GatewayCommandError, match=f"-wan-address.*{message}"):
        parse_gateway_addr(text, flag="wan-address", default_port=443)


def test_gateway_registration_binds_like_consul() -> None:
    lan, wan = ("10.0.0.1", 8443), ("198.51.100.1", 443)
    local = gateway_registration(
        service="mesh-gateway", lan=lan, wan=wan, binds={}, deregister_after="6h",
        is_local=lambda ip: True,
    )  # fmt: skip
    assert local["Kind"] == "mesh-gateway" and local["Port"] == 8443
    assert local["TaggedAddresses"]["wan"] == {"Address": "198.51.100.1", "Port": 443}
    assert local["Proxy"]["Config"] == {
        "envoy_mesh_gateway_no_default_bind": True,
        "envoy_mesh_gateway_bind_tagged_addresses": True,
    }
    assert local["Check"] == {
        "Name": "Mesh Gateway Listening", "TCP": "10.0.0.1:8443", "Interval": "10s",
        "DeregisterCriticalServiceAfter": "6h",
    }  # fmt: skip
    remote_wan = gateway_registration(
        service="gw", lan=lan, wan=wan, binds={}, deregister_after="1h",
        is_local=lambda ip: ip == "10.0.0.1",
    )  # fmt: skip
    assert remote_wan["Proxy"]["Config"] == {}
    named = gateway_registration(
        service="gw", lan=lan, wan=wan, binds={"x": ("127.0.0.2", 9)}, deregister_after="1h"
    )
    assert named["Proxy"]["Config"] == {
        "envoy_mesh_gateway_no_default_bind": True,
        "envoy_mesh_gateway_bind_addresses": {"x": {"Address": "127.0.0.2", "Port": 9}},
    }


def test_status_line_sums_the_gateways_listeners() -> None:
    metrics = {
        "Listeners": [
            {"Proxy": "gw", "Address": "127.0.0.1:8443", "ConnectionsActive": 1,
             "ConnectionsOpened": 5, "BytesIn": 10, "BytesOut": 20, "Rejections": {"no_sni": 2}},
            {"Proxy": "other", "Address": "127.0.0.1:1", "ConnectionsOpened": 99},
        ]
    }  # fmt: skip
    checks = {"c": {"ServiceID": "gw", "Status": "passing", "Name": "x"}}
    line = status_line("gw", metrics, checks)
    assert line == (
        "gw: listening on 127.0.0.1:8443; connections 1 active, 5 total, 2 rejected; "
        "10 bytes in, 20 bytes out; health passing"
    )


async def _cli(*args: str) -> asyncio.subprocess.Process:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "node", "connect", "gateway", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT, env=env,
    )  # fmt: skip


async def test_connect_gateway_registers_reports_status_and_exits_0_on_sigterm(
    tmp_path: Path,
) -> None:
    async with Cluster(tmp_path) as cluster:
        telemetry = TelemetryConfig(prometheus_retention_time=60.0)
        s1 = await cluster.start("s1", server=True, telemetry=telemetry)
        http = "{}:{}".format(*s1.bound["http"])
        port = free_port()
        addr = f"127.0.0.1:{port}"
        proc = await _cli("-register", "-http-addr", http, "-address", addr, "-wan-address", addr,
                          "-status-interval", "0.2")  # fmt: skip
        assert proc.stdout is not None
        lines: list[str] = []

        async def passing_status() -> bool:
            assert proc.stdout is not None
            line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode().strip()
            lines.append(line)
            return f"listening on {addr}" in line and "health passing" in line

        await wait_for(passing_status, "a passing status line", timeout=30)
        assert lines[0] == f"Registered mesh gateway 'mesh-gateway' at {addr}"
        svc = s1.local.service("mesh-gateway")
        assert svc.proxy is not None
        assert svc.proxy.config["envoy_mesh_gateway_bind_tagged_addresses"] is True

        # The metrics endpoint: JSON (meshnode's Listeners, which scripts and e2e read) and
        # Prometheus text.
        status, body, _ = await cluster.get(s1, "/v1/agent/metrics")
        assert status == 200
        (row,) = [r for r in body["Listeners"] if r["Kind"] == "mesh-gateway"]
        assert row["Address"] == addr and row["Name"] == "mesh-gateway:lan"
        for key in ("ConnectionsOpened", "ConnectionsActive", "ConnectionsClosed", "BytesIn",
                    "BytesOut", "Rejections"):  # fmt: skip
            assert key in row
        status, text, headers = await cluster.get(s1, "/v1/agent/metrics", format="prometheus")
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        assert 'meshnode_proxy_connections_opened_total{listener="mesh-gateway:lan"' in text
        status, text, _ = await cluster.get(s1, "/v1/agent/metrics", format="xml")
        assert status == 400 and "format" in str(text)

        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        assert "mesh-gateway" in s1.local.services(), "SIGTERM must not deregister"

        # -detach registers and returns at once.
        other = f"127.0.0.1:{free_port()}"
        detached = await _cli("-register", "-detach", "-service", "gw2", "-http-addr", http,
                              "-address", other)  # fmt: skip
        out, err = await asyncio.wait_for(detached.communicate(), 20)
        assert detached.returncode == 0, err
        assert "gw2" in s1.local.services()


async def test_connect_gateway_gives_up_on_an_unreachable_node_with_a_clear_error() -> None:
    dead = f"127.0.0.1:{free_port()}"
    proc = await _cli("-register", "-http-addr", dead, "-address", "127.0.0.1:8443",
                      "-wait-agent", "1")  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 1
    assert "did not answer within 1s" in err.decode()
