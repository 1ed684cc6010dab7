"""Sidecar expansion with Consul's defaults, and the sidecar port allocator."""

from __future__ import annotations

from typing import Any

import pytest

from node.catalog.parse import parse_service
from node.catalog.sidecar import SidecarPorts, expand_sidecar
from node.catalog.values import CheckKind, MeshGatewayMode, ServiceKind
from node.errors import InvalidRequest


def _web_with_sidecar(**sidecar: Any) -> Any:
    return parse_service(
        {
            "name": "web",
            "id": "web1",
            "port": 8080,
            "tags": ["t"],
            "meta": {"m": "1"},
            "connect": {"sidecar_service": sidecar},
        }
    )


def test_expand_sidecar_applies_consul_defaults() -> None:
    ports = SidecarPorts()
    parent, sidecar = expand_sidecar(
        _web_with_sidecar(
            proxy={
                "upstreams": [{"destination_name": "api", "local_bind_port": 10000}],
                "mesh_gateway": {"mode": "remote"},
            }
        ),
        allocate_port=ports.allocate,
    )
    assert parent.sidecar is None
    assert (sidecar.id, sidecar.name, sidecar.kind, sidecar.port) == (
        "web1-sidecar-proxy",
        "web-sidecar-proxy",
        ServiceKind.CONNECT_PROXY,
        21000,
    )
    assert sidecar.tags == ("t",) and dict(sidecar.meta) == {"m": "1"}
    proxy = sidecar.proxy
    assert proxy is not None
    assert (proxy.destination_service_name, proxy.destination_service_id) == ("web", "web1")
    assert (proxy.local_service_address, proxy.local_service_port) == ("127.0.0.1", 8080)
    assert proxy.mesh_gateway is MeshGatewayMode.REMOTE
    assert proxy.upstreams[0].destination_name == "api"
    listening, aliasing = sidecar.checks
    assert (listening.name, listening.kind, listening.tcp, listening.interval) == (
        "Connect Sidecar Listening",
        CheckKind.TCP,
        "127.0.0.1:21000",
        10.0,
    )
    assert (aliasing.name, aliasing.kind, aliasing.alias_service) == (
        "Connect Sidecar Aliasing web1",
        CheckKind.ALIAS,
        "web1",
    )
    assert [c.id for c in sidecar.checks] == [
        "service:web1-sidecar-proxy:1",
        "service:web1-sidecar-proxy:2",
    ]
    assert all(c.service_id == "web1-sidecar-proxy" for c in sidecar.checks)


def test_expand_sidecar_keeps_given_port_and_checks() -> None:
    def never(_: str) -> int:
        raise AssertionError("allocator must not be called when a port is given")

    _, sidecar = expand_sidecar(
        _web_with_sidecar(port=25000, checks=[{"name": "mine", "ttl": "5s"}]), allocate_port=never
    )
    assert sidecar.port == 25000
    assert [(c.id, c.name, c.service_id) for c in sidecar.checks] == [
        ("service:web1-sidecar-proxy", "mine", "web1-sidecar-proxy")
    ]


def test_expand_sidecar_without_spec_returns_service() -> None:
    svc = parse_service({"name": "x"})
    assert expand_sidecar(svc, allocate_port=SidecarPorts().allocate) == (svc,)


def test_sidecar_ports_lowest_free_stable_and_exhaustion() -> None:
    ports = SidecarPorts(lo=21000, hi=21002)
    ports.set_in_use({"other": 21000})
    assert ports.allocate("a-sidecar-proxy") == 21001
    ports.set_in_use({"other": 21000, "a-sidecar-proxy": 21001})
    assert ports.allocate("a-sidecar-proxy") == 21001  # re-registration keeps its port
    assert ports.allocate("b-sidecar-proxy") == 21002
    ports.set_in_use({"other": 21000, "a-sidecar-proxy": 21001, "b-sidecar-proxy": 21002})
    with pytest.raises(InvalidRequest) as info:
        ports.allocate("c-sidecar-proxy")
    assert str(info.value) == (
        "Invalid SidecarService: no port provided for sidecar_service and none left in the "
        "configured range [21000, 21002]"
    )
    # A sidecar that was deregistered gets its old port back while it is free.
    again = SidecarPorts(lo=21000, hi=21002, assigned=ports.assigned)
    again.set_in_use({})
    assert again.allocate("b-sidecar-proxy") == 21002
