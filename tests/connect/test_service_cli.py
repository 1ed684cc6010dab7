"""The connect / intention / config CLI against a real in-process server over HTTP."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from node.cli.main import main
from tests.helpers.cluster import Cluster
from tests.helpers.poll import wait_for

pytestmark = pytest.mark.timeout(60)

SIDECAR = {
    "Name": "web",
    "Port": 8080,
    "Connect": {"SidecarService": {"Proxy": {"Upstreams": [
        {"DestinationName": "api", "Datacenter": "dc2", "LocalBindPort": 10000},
    ]}}},
}  # fmt: skip


async def _cli(capsys: Any, *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, list(argv), {})
    out, err = capsys.readouterr()
    return code, out, err


async def test_cli_connect_intention_and_config(tmp_path: Path, capsys: Any) -> None:
    async with Cluster(tmp_path) as cluster:
        s1 = await cluster.start("s1", server=True, enable_central_service_config=True)
        await wait_for(lambda: s1.connect.roots(), "CA bootstrapped", timeout=10)
        status, body = await cluster.put(s1, "/v1/agent/service/register", json=SIDECAR)
        assert status == 200, body
        host, port = s1.bound["http"]
        addr = ["-http-addr", f"{host}:{port}"]

        code, out, _ = await _cli(capsys, "connect", "ca", "get-config", *addr)
        assert code == 0 and json.loads(out)["Provider"] == "consul"
        conf = tmp_path / "ca.json"
        conf.write_text(json.dumps({"Provider": "consul", "Config": {"LeafCertTTL": "48h"}}))
        code, out, _ = await _cli(
            capsys, "connect", "ca", "set-config", "-config-file", str(conf), *addr
        )
        assert (code, out.strip()) == (0, "Configuration updated!")
        conf.write_text(json.dumps({"Config": {"LeafCertTTL": "1m"}}))
        code, _, err = await _cli(
            capsys, "connect", "ca", "set-config", "-config-file", str(conf), *addr
        )
        assert code == 1 and "LeafCertTTL" in err

        code, out, _ = await _cli(capsys, "intention", "create", "-deny", "web", "api", *addr)
        assert (code, out.strip()) == (0, "Created: web => api (deny)")
        code, out, _ = await _cli(capsys, "intention", "check", "web", "api", *addr)
        assert (code, out.strip()) == (2, "Denied")
        code, out, _ = await _cli(capsys, "intention", "check", "db", "api", *addr)
        assert (code, out.strip()) == (0, "Allowed")
        code, out, _ = await _cli(capsys, "intention", "list", *addr)
        assert code == 0 and "web" in out and "deny" in out and "9" in out
        code, out, _ = await _cli(capsys, "intention", "delete", "web", "api", *addr)
        assert (code, out.strip()) == (0, "Intention deleted.")
        code, _, err = await _cli(capsys, "intention", "delete", "web", "api", *addr)
        assert code == 1 and "not found" in err

        seed = tmp_path / "proxy-defaults.hcl"
        seed.write_text(
            'Kind = "proxy-defaults"\nName = "global"\nMeshGateway {\nMode = "local"\n}\n'
        )
        code, out, _ = await _cli(capsys, "config", "write", str(seed), *addr)
        assert (code, out.strip()) == (0, "Config entry written: proxy-defaults/global")
        bad = tmp_path / "bad.hcl"
        bad.write_text('Kind = "service-defaults"\nName = "web"\nMeshGateway {\nMode = "x"\n}\n')
        code, _, err = await _cli(capsys, "config", "write", str(bad), *addr)
        assert code == 1 and 'Invalid Mesh Gateway Mode: "x"' in err and "bad.hcl" in err
        code, out, _ = await _cli(
            capsys, "config", "read", "-kind", "proxy-defaults", "-name", "global", *addr
        )
        assert code == 0 and json.loads(out)["MeshGateway"] == {"Mode": "local"}
        code, out, _ = await _cli(capsys, "config", "list", "-kind", "proxy-defaults", *addr)
        assert (code, out.strip()) == (0, "global")

        code, out, _ = await _cli(capsys, "connect", "proxy-config", "web-sidecar-proxy", *addr)
        assert code == 0
        row = next(line for line in out.splitlines() if line.startswith("api"))
        assert row.split()[3:6] == ["local", "proxy-defaults", "yes"]

        code, out, _ = await _cli(
            capsys, "config", "delete", "-kind", "proxy-defaults", "-name", "global", *addr
        )
        assert (code, out.strip()) == (0, "Config entry deleted: proxy-defaults/global")
        code, _, err = await _cli(
            capsys, "config", "read", "-kind", "proxy-defaults", "-name", "global", *addr
        )
        assert code == 1 and "Config entry not found" in err
