"""The demo federation as real processes: modes, failures, restarts, a third datacenter.

One federation is started for the module (it takes seconds, not minutes); tests run in
file order and each leaves it healthy for the next.
"""

from __future__ import annotations

import signal
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import (
    APP_ADDR,
    GATEWAY_ADDR,
    HTTP,
    TRANSIENT,
    Federation,
    request_through,
    try_http,
)
from tests.helpers.poll import wait_for_blocking

pytestmark = pytest.mark.slow

UPSTREAM_PORT = 10000


def _gateway_conns(fed: Federation, dc: str) -> int:
    """Connections the dc's gateway routed (health-check probes close before a hello)."""
    metrics = try_http(HTTP[f"{dc}-gateway"], "/v1/agent/metrics") or {}
    return sum(
        lst.get("ConnectionsOpened", 0) - sum(lst.get("Rejections", {}).values())
        for lst in metrics.get("Listeners", [])
        if lst.get("Kind") == "mesh-gateway"
    )


def _routed_via(fed: Federation) -> set[str] | None:
    """Send one request through web's upstream port; the DCs whose gateway routed it."""
    before = {dc: _gateway_conns(fed, dc) for dc in ("dc1", "dc2")}
    if request_through(UPSTREAM_PORT) != "api in dc2":
        return None
    return {dc for dc in ("dc1", "dc2") if _gateway_conns(fed, dc) > before[dc]}


def _set_mode(fed: Federation, mode: str, workdir: Path) -> None:
    entry = workdir / f"proxy-defaults-{mode}.hcl"
    entry.write_text(
        textwrap.dedent(
            f"""\
            Kind = "proxy-defaults"
            Name = "global"
            MeshGateway {{
              Mode = "{mode}"
            }}
            """
        )
    )
    result = fed.cli("config", "write", str(entry))
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    federation = Federation(tmp_path_factory.mktemp("federation"))
    try:
        for node in (
            "dc1-server",
            "dc2-server",
            "dc1-gateway",
            "dc2-gateway",
            "dc1-web",
            "dc2-api",
        ):
            federation.start_node(node)
        federation.start_app("web", "dc1", APP_ADDR["web"])
        federation.start_app("api", "dc2", APP_ADDR["api-dc2"])
        for dc in ("dc1", "dc2"):
            wait_for_blocking(
                lambda dc=dc: try_http(HTTP[f"{dc}-gateway"], "/v1/agent/self"),
                f"{dc} gateway node",
                30,
                ignoring=TRANSIENT,
            )
            federation.start_gateway(dc)
        wait_for_blocking(
            lambda: request_through(UPSTREAM_PORT) == "api in dc2",
            "first request web → api in dc2",
            60,
            ignoring=TRANSIENT,
        )
        yield federation
    except BaseException:
        print(federation.logs())
        raise
    finally:
        federation.stop_all()


@pytest.mark.parametrize(
    "mode, via", [("local", {"dc1", "dc2"}), ("remote", {"dc2"}), ("none", set())]
)
def test_Federation_modes_route_through_the_right_gateways(
    fed: Federation, mode: str, via: set[str], tmp_path: Path
) -> None:
    _set_mode(fed, mode, tmp_path)

    # The new plan must be in force: wait until a request takes exactly the expected path.
    def routed_as_expected() -> bool:
        before = {dc: _gateway_conns(fed, dc) for dc in ("dc1", "dc2")}
        if request_through(UPSTREAM_PORT) != "api in dc2":
            return False
        used = {dc for dc in ("dc1", "dc2") if _gateway_conns(fed, dc) > before[dc]}
        return used == via

    wait_for_blocking(
        routed_as_expected,
        f"a request in mode {mode} through gateways {sorted(via)}",
        15,
        ignoring=TRANSIENT,
    )
    _set_mode(fed, "local", tmp_path)


def test_Federation_gateway_killed_fails_fast_and_recovers(fed: Federation) -> None:
    wait_for_blocking(
        lambda: _routed_via(fed) == {"dc1", "dc2"},
        "mode local back in force",
        15,
        ignoring=TRANSIENT,
    )
    fed.procs["dc2-gateway"].kill(signal.SIGKILL)
    started = time.monotonic()
    assert request_through(UPSTREAM_PORT, timeout=10) is None
    assert time.monotonic() - started < 8, "a dead gateway must fail fast, not hang"
    fed.start_node("dc2-gateway")
    restarted = time.monotonic()
    wait_for_blocking(
        lambda: request_through(UPSTREAM_PORT) == "api in dc2",
        "traffic through restarted gateway",
        20,
        ignoring=TRANSIENT,
    )
    assert time.monotonic() - restarted < 20


def test_Federation_service_node_killed_is_marked_failed_and_comes_back(fed: Federation) -> None:
    fed.procs["dc2-api"].kill(signal.SIGKILL)

    def failed_everywhere() -> bool:
        for node in ("dc2-server", "dc2-gateway"):
            checks = try_http(HTTP[node], "/v1/health/service/api") or []
            statuses = [
                c["Status"]
                for entry in checks
                for c in entry["Checks"]
                if c["CheckID"] == "serfHealth"
            ]
            if "critical" not in statuses:
                return False
        return True

    wait_for_blocking(
        failed_everywhere,
        "dc2-api marked failed on every dc2 node",
        10,
        ignoring=TRANSIENT,
    )
    fed.start_node("dc2-api")
    wait_for_blocking(
        lambda: [s for s in (try_http(HTTP["dc2-api"], "/v1/agent/services") or {}) if s == "api"],
        "api registration restored from data_dir",
        20,
        ignoring=TRANSIENT,
    )
    wait_for_blocking(
        lambda: request_through(UPSTREAM_PORT) == "api in dc2",
        "web → api after restart",
        30,
        ignoring=TRANSIENT,
    )


def test_Federation_third_datacenter_joins_at_runtime(fed: Federation, tmp_path: Path) -> None:
    for node in ("dc3-server", "dc3-gateway", "dc3-api"):
        fed.start_node(node)
    fed.start_app("api", "dc3", APP_ADDR["api-dc3"])
    wait_for_blocking(
        lambda: try_http(HTTP["dc3-gateway"], "/v1/agent/self"),
        "dc3 gateway node",
        30,
        ignoring=TRANSIENT,
    )
    fed.start_gateway("dc3")
    for node in HTTP:
        if node.startswith(("dc1", "dc2")) or node == "dc3-server":
            wait_for_blocking(
                lambda node=node: "dc3" in (try_http(HTTP[node], "/v1/catalog/datacenters") or []),
                f"dc3 in /v1/catalog/datacenters on {node}",
                30,
                ignoring=TRANSIENT,
            )
    upstream = tmp_path / "web-dc3.hcl"
    upstream.write_text(
        textwrap.dedent(
            """\
            service {
              name = "web"
              port = 9090
              connect {
                sidecar_service {
                  proxy {
                    upstreams = [
                      { destination_name = "api", datacenter = "dc2", local_bind_port = 10000 },
                      { destination_name = "api", datacenter = "dc3", local_bind_port = 10003 },
                    ]
                  }
                }
              }
            }
            """
        )
    )
    result = fed.cli("services", "register", str(upstream), http_addr=HTTP["dc1-web"])
    assert result.returncode == 0, result.stderr
    wait_for_blocking(
        lambda: request_through(10003) == "api in dc3",
        "web → api in dc3 through the gateways",
        45,
        ignoring=TRANSIENT,
    )
    assert GATEWAY_ADDR["dc3"]
