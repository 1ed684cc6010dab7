"""Connect across real in-process agents: two datacenters on 127.0.0.1, over HTTP.

s1 (dc1 server) + c1 (dc1 client), s2 (dc2 server, WAN-joined to s1) + c2 (dc2 client
hosting a sidecar for ``api``). Everything a user sees goes through the HTTP API.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from node.connect.ca import TrustBundle, generate_root, private_key_to_pem
from node.errors import ConfigError
from tests.helpers.cluster import Cluster
from tests.helpers.poll import wait_for

pytestmark = pytest.mark.timeout(90)

SIDECAR = {"Name": "api", "Port": 9090, "Connect": {"SidecarService": {}}}


async def _roots(cluster: Cluster, agent: Any) -> dict[str, Any] | None:
    status, body, _ = await cluster.get(agent, "/v1/agent/connect/ca/roots")
    return body if status == 200 and body["ActiveRootID"] else None


async def _leaf(cluster: Cluster, agent: Any, service: str) -> dict[str, Any] | None:
    status, body, _ = await cluster.get(agent, f"/v1/agent/connect/ca/leaf/{service}", wait="1s")
    return body if status == 200 else None


def _openssl_verify(tmp: Path, root_pem: str, chain: str) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        return
    end = "-----END CERTIFICATE-----\n"
    first = chain.index(end) + len(end)
    (tmp / "root.pem").write_text(root_pem)
    (tmp / "leaf.pem").write_text(chain[:first])
    (tmp / "inter.pem").write_text(chain[first:])
    done = subprocess.run(
        [openssl, "verify", "-CAfile", tmp / "root.pem", "-untrusted", tmp / "inter.pem",
         tmp / "leaf.pem"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


async def test_two_datacenters_share_one_ca_and_global_state(tmp_path: Path) -> None:
    async with Cluster(tmp_path) as cluster:
        s1 = await cluster.start("s1", server=True)
        c1 = await cluster.start("c1", join=[s1])
        s2 = await cluster.start("s2", dc="dc2", server=True, join_wan=[s1])
        c2 = await cluster.start("c2", dc="dc2", join=[s2])
        everyone = (s1, c1, s2, c2)
        status, body = await cluster.put(c2, "/v1/agent/service/register", json=SIDECAR)
        assert status == 200, body

        async def same_roots_everywhere() -> bool:
            seen = [await _roots(cluster, a) for a in everyone]
            return all(seen) and len({r["ActiveRootID"] for r in seen if r}) == 1

        await wait_for(same_roots_everywhere, "one CA on every node of both DCs", timeout=20)
        roots = await _roots(cluster, s1)
        assert roots is not None and roots["TrustDomain"].endswith(".consul")
        root_pem = roots["Roots"][0]["RootCert"]

        # A leaf issued in dc2 carries dc2's intermediate and verifies against dc1's root.
        leaf = await wait_for(lambda: _leaf(cluster, c2, "api"), "leaf in dc2", timeout=20)
        assert leaf["CertPEM"].count("BEGIN CERTIFICATE") == 2
        spiffe = TrustBundle([root_pem]).verify(leaf["CertPEM"], now=datetime.now(UTC))
        assert (spiffe.datacenter, spiffe.service) == ("dc2", "api")
        _openssl_verify(tmp_path, root_pem, leaf["CertPEM"])

        # A config entry written on a dc2 client is applied in dc1 and readable everywhere.
        entry = {"Kind": "service-defaults", "Name": "web", "MeshGateway": {"Mode": "local"}}
        start = asyncio.get_running_loop().time()
        status, body = await cluster.put(c2, "/v1/config", json=entry)
        assert (status, body) == (200, True)

        async def entry_everywhere() -> bool:
            for agent in everyone:
                code, got, _ = await cluster.get(agent, "/v1/config/service-defaults/web")
                if code != 200 or got["MeshGateway"] != {"Mode": "local"}:
                    return False
            return True

        await wait_for(
            entry_everywhere,
            "entry on every node",
            timeout=10,
        )
        assert asyncio.get_running_loop().time() - start < 5

        # An intention made in dc1 decides in dc2.
        status, body = await cluster.put(c1, "/v1/connect/intentions/exact", json={"Action": "deny"},
                                         source="web", destination="api")  # fmt: skip
        assert status == 200, body

        async def denied_in_dc2() -> bool:
            _, got, _ = await cluster.get(c2, "/v1/connect/intentions/check",
                                          source="web", destination="api")  # fmt: skip
            return got == {"Allowed": False}

        await wait_for(denied_in_dc2, "intention reached dc2")

        # Root rotation from a client: every node trusts both roots, dc2's leaf is re-issued.
        new_root = generate_root(trust_domain=roots["TrustDomain"], now=datetime.now(UTC))
        config = {"Provider": "consul", "Config": {"PrivateKey": private_key_to_pem(new_root.key),
                                                   "RootCert": new_root.info.root_cert}}  # fmt: skip
        status, body = await cluster.put(c1, "/v1/connect/ca/configuration", json=config)
        assert status == 200, body

        async def reissued() -> bool:
            got = await _leaf(cluster, c2, "api")
            if got is None:
                return False
            try:
                TrustBundle([new_root.info.root_cert]).verify(got["CertPEM"], now=datetime.now(UTC))
            except Exception:
                return False
            return True

        await wait_for(reissued, "dc2 leaf re-issued under the new root", timeout=30)
        for agent in everyone:
            got = await _roots(cluster, agent)
            assert got is not None and len(got["Roots"]) == 2
        # The old leaf still verifies against the bundle until it expires.
        bundle = TrustBundle([r["RootCert"] for r in got["Roots"]])
        bundle.verify(leaf["CertPEM"], now=datetime.now(UTC))


async def test_secondary_with_another_primary_datacenter_refuses_to_run(tmp_path: Path) -> None:
    async with Cluster(tmp_path) as cluster:
        s1 = await cluster.start("s1", server=True)
        await wait_for(lambda: s1.connect.roots(), "CA bootstrapped in dc1", timeout=10)
        await cluster.start("s2", dc="dc2", server=True, join_wan=[s1], primary_dc="dc3")
        task = cluster._tasks["dc2/s2"]
        await wait_for(task.done, "s2 stopped", timeout=20)
        error = task.exception()
        assert isinstance(error, ConfigError), repr(error)
        text = str(error)
        assert "primary_datacenter" in text and "'dc3'" in text and "'dc1'" in text
        assert not cluster._tasks["dc1/s1"].done()
