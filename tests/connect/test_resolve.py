"""Mesh-gateway mode resolution: one case per precedence level, plus the seed's examples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from node.catalog.parse import parse_service
from node.catalog.values import MeshGatewayMode, ServiceDefinition
from node.config.hcl import load_document, normalize_blocks
from node.connect import DecidedBy, ProxyDefaults, ServiceDefaults, resolve_upstreams
from node.errors import InvalidRequest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "config"
M = MeshGatewayMode
D = DecidedBy


def proxy(
    *, proxy_mode: str = "", upstream_mode: str = "", dc: str = "dc2", dest: str = "web"
) -> ServiceDefinition:
    upstream: dict[str, Any] = {
        "destination_name": "api",
        "local_bind_port": 10000,
        "datacenter": dc,
    }
    if upstream_mode:
        upstream["mesh_gateway"] = {"mode": upstream_mode}
    body: dict[str, Any] = {
        "name": f"{dest}-sidecar-proxy",
        "kind": "connect-proxy",
        "port": 8181,
        "proxy": {"destination_service_name": dest, "upstreams": [upstream]},
    }
    if proxy_mode:
        body["proxy"]["mesh_gateway"] = {"mode": proxy_mode}
    return parse_service(body)


def entries(
    service_mode: str | None = None, global_mode: str | None = None, name: str = "web"
) -> dict[tuple[str, str], Any]:
    out: dict[tuple[str, str], Any] = {}
    if service_mode is not None:
        out[("service-defaults", name)] = ServiceDefaults(name=name, mesh_gateway=M(service_mode))
    if global_mode is not None:
        out[("proxy-defaults", "global")] = ProxyDefaults(mesh_gateway=M(global_mode))
    return out


@pytest.mark.parametrize(
    ("upstream", "proxy_mode", "service", "glob", "central", "mode", "decided"),
    [
        ("remote", "local", "none", "local", True, M.REMOTE, D.UPSTREAM),
        ("", "local", "none", "remote", True, M.LOCAL, D.PROXY),
        ("", "", "remote", "local", True, M.REMOTE, D.SERVICE_DEFAULTS),
        ("", "", "", "local", True, M.LOCAL, D.PROXY_DEFAULTS),
        ("", "", None, "local", True, M.LOCAL, D.PROXY_DEFAULTS),
        ("", "", None, None, True, M.NONE, D.DEFAULT),
        (
            "",
            "",
            "remote",
            "local",
            False,
            M.NONE,
            D.DEFAULT,
        ),  # central config off: entries ignored
        ("", "remote", "local", "local", False, M.REMOTE, D.PROXY),
        ("none", "", "remote", "remote", True, M.NONE, D.UPSTREAM),  # explicit none is a decision
        ("", "none", "remote", "remote", True, M.NONE, D.PROXY),
    ],
)
def test_precedence_levels(
    upstream: str,
    proxy_mode: str,
    service: str | None,
    glob: str | None,
    central: bool,
    mode: MeshGatewayMode,
    decided: DecidedBy,
) -> None:
    (got,) = resolve_upstreams(
        proxy(proxy_mode=proxy_mode, upstream_mode=upstream), entries(service, glob), central
    )
    assert (got.mode, got.decided_by) == (mode, decided)


def test_service_defaults_are_keyed_by_the_proxys_destination_service() -> None:
    # An entry for the upstream target ("api") does not apply; one for "web" (the local service) does.
    (got,) = resolve_upstreams(proxy(), entries("remote", name="api"), True)
    assert got.decided_by is D.DEFAULT
    (got,) = resolve_upstreams(proxy(), entries("remote", name="web"), True)
    assert (got.mode, got.decided_by) == (M.REMOTE, D.SERVICE_DEFAULTS)


def _seed_service(name: str) -> ServiceDefinition:
    raw = normalize_blocks(load_document((FIXTURES / name).read_text(), name))
    return parse_service(raw["service"])


def test_seed_three_upstreams_example() -> None:
    svc = _seed_service("upstream-modes.hcl")
    got = resolve_upstreams(svc, entries(global_mode="remote"), True)
    table = [(r.upstream.destination_name, r.mode, r.decided_by) for r in got]
    assert table == [
        ("api", M.REMOTE, D.UPSTREAM),
        ("db", M.LOCAL, D.UPSTREAM),
        ("logging", M.NONE, D.UPSTREAM),
    ]


def test_seed_sidecar_with_proxy_level_remote() -> None:
    svc = _seed_service("sidecar-remote.hcl")
    (got,) = resolve_upstreams(svc, entries("local", "local"), True, local_datacenter="primary")
    assert (got.mode, got.decided_by) == (M.REMOTE, D.PROXY)
    assert got.upstream.datacenter == "secondary" and not got.same_datacenter and got.uses_gateway


def test_seed_global_and_per_service_entries() -> None:
    (got,) = resolve_upstreams(proxy(), entries(global_mode="local"), True)
    assert (got.mode, got.decided_by) == (M.LOCAL, D.PROXY_DEFAULTS)
    (got,) = resolve_upstreams(proxy(), entries("local"), True)
    assert (got.mode, got.decided_by) == (M.LOCAL, D.SERVICE_DEFAULTS)


def test_same_datacenter_never_uses_a_gateway() -> None:
    (got,) = resolve_upstreams(
        proxy(upstream_mode="local", dc=""), {}, True, local_datacenter="dc1"
    )
    assert got.mode is M.LOCAL and got.same_datacenter and not got.uses_gateway
    (got,) = resolve_upstreams(
        proxy(upstream_mode="local", dc="dc1"), {}, True, local_datacenter="dc1"
    )
    assert got.same_datacenter and not got.uses_gateway


def test_non_proxy_is_refused() -> None:
    svc = parse_service({"name": "web", "port": 80})
    with pytest.raises(InvalidRequest, match="not a connect-proxy"):
        resolve_upstreams(svc, {}, True)
