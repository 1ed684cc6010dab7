"""A mesh gateway in maintenance gets no new connections from sidecars.

Maintenance is a critical check, so the health-based endpoint selection of the sidecars
of another datacenter drops the gateway: requests through it are refused while it is in
maintenance (node or service), and flow again once maintenance ends. Real in-process
agents of two datacenters on 127.0.0.1 (``tests/proxy/test_federation_inprocess.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.poll import wait_for
from tests.proxy.test_federation_inprocess import _refused, federation, set_mode

pytestmark = pytest.mark.timeout(120)


async def test_gateway_in_maintenance_is_not_chosen_until_maintenance_ends(
    tmp_path: Path,
) -> None:
    async with federation(tmp_path) as fed:
        api = fed.up_ports["api"]
        await set_mode(fed, "proxy-defaults", "global", "remote")
        await fed.wait_route(api, "api", {"dc2"}, "remote through dc2's gateway", timeout=40)
        g2 = fed.agents["g2"]

        status, _ = await fed.cluster.put(g2, "/v1/agent/maintenance?enable=true&reason=upgrade")
        assert status == 200
        await wait_for(lambda: _refused(api), "node maintenance drains the gateway", 10.0)
        status, _ = await fed.cluster.put(g2, "/v1/agent/maintenance?enable=false")
        assert status == 200
        await fed.wait_route(api, "api", {"dc2"}, "the gateway serves after node maintenance")

        path = "/v1/agent/service/maintenance/mesh-gateway?enable=true"
        status, _ = await fed.cluster.put(g2, path)
        assert status == 200
        await wait_for(lambda: _refused(api), "service maintenance drains the gateway", 10.0)
        status, _ = await fed.cluster.put(g2, path.replace("true", "false"))
        assert status == 200
        await fed.wait_route(api, "api", {"dc2"}, "the gateway serves after service maintenance")
