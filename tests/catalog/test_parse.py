"""Parsing and validation of service and check registrations, with Consul's messages."""

from __future__ import annotations

from typing import Any

import pytest

from node.catalog.parse import parse_check, parse_mesh_gateway_mode, parse_service
from node.catalog.values import CheckKind, Health, MeshGatewayMode, ServiceKind
from node.errors import InvalidRequest


def _error(raw: dict[str, Any]) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        parse_service(raw)
    return info.value


def test_parse_service_accepts_pascal_and_snake_case_identically() -> None:
    pascal = parse_service(
        {
            "Name": "web",
            "Port": 8080,
            "Tags": ["v1"],
            "Meta": {"team": "a"},
            "TaggedAddresses": {"wan": {"Address": "10.0.0.1", "Port": 80}},
            "Weights": {"Passing": 3, "Warning": 1},
            "Check": {"CheckID": "c1", "TTL": "10s"},
        }
    )
    snake = parse_service(
        {
            "name": "web",
            "port": 8080,
            "tags": ["v1"],
            "meta": {"team": "a"},
            "tagged_addresses": {"wan": {"address": "10.0.0.1", "port": 80}},
            "weights": {"passing": 3, "warning": 1},
            "check": {"check_id": "c1", "ttl": "10s"},
        }
    )
    assert pascal == snake
    assert pascal.id == "web"
    assert pascal.tagged_addresses["wan"].address == "10.0.0.1"
    assert pascal.checks[0].kind is CheckKind.TTL and pascal.checks[0].ttl == 10.0


def test_parse_service_nulls_mean_unset_like_consul_json() -> None:
    svc = parse_service({"Name": "a", "Tags": None, "Proxy": None, "Connect": None, "Kind": ""})
    assert svc.tags == () and svc.proxy is None and svc.kind is ServiceKind.TYPICAL


def test_parse_service_default_check_ids_and_names() -> None:
    svc = parse_service(
        {"name": "web", "checks": [{"ttl": "5s"}, {"tcp": "127.0.0.1:1", "interval": "1s"}]}
    )
    assert [c.id for c in svc.checks] == ["service:web:1", "service:web:2"]
    assert svc.checks[0].name == "Service 'web' check"
    assert all(c.service_id == "web" for c in svc.checks)
    single = parse_service({"name": "web", "id": "w1", "check": {"ttl": "5s"}})
    assert single.checks[0].id == "service:w1"


@pytest.mark.parametrize(
    ("raw", "message", "field"),
    [
        ({}, "Missing service name", "name"),
        ({"name": "x", "prot": 1}, 'Unknown field "prot" (did you mean "port"?)', "prot"),
        ({"name": "x", "port": "80"}, 'port: expected an integer, got a string ("80")', "port"),
        ({"name": "x", "port": 70000}, "port: 70000 is out of range [0, 65535]", "port"),
        ({"name": "x", "kind": "gateway"}, 'kind: unknown service kind "gateway"', "kind"),
        ({"name": "x", "address": "0.0.0.0"}, "Invalid service address", "address"),
        (
            {"name": "x", "weights": {"passing": 0}},
            "Invalid Weights: Passing must be greater than 0",
            "weights",
        ),
        (
            {"name": "x", "meta": {"consul-x": "1"}},
            "Invalid Service Meta: Couldn't load metadata pair ('consul-x', '1'): Key prefix 'consul-' is reserved for internal use",
            "meta.consul-x",
        ),
        ({"name": "x", "tags": "a"}, "tags: expected a list of strings", "tags"),
        (
            {"name": "x", "kind": "connect-proxy", "port": 1},
            "Proxy.DestinationServiceName must be non-empty for Connect proxy services",
            "proxy.destination_service_name",
        ),
        (
            {"name": "x", "kind": "connect-proxy", "proxy": {"destination_service_name": "a"}},
            "Port must be set for a Connect proxy",
            "port",
        ),
        (
            {
                "name": "x",
                "kind": "connect-proxy",
                "port": 1,
                "proxy": {"destination_service_name": "a"},
                "connect": {"native": True},
            },
            "A Proxy cannot also be Connect Native, only typical services",
            "connect.native",
        ),
        (
            {"name": "g", "kind": "mesh-gateway"},
            "Port must be non-zero for a Mesh Gateway",
            "port",
        ),
        (
            {"name": "g", "kind": "mesh-gateway", "port": 443, "connect": {"sidecar_service": {}}},
            "Mesh Gateways cannot have a sidecar service defined",
            "connect.sidecar_service",
        ),
        (
            {
                "name": "g",
                "kind": "mesh-gateway",
                "port": 443,
                "proxy": {"upstreams": [{"destination_name": "a", "local_bind_port": 1}]},
            },
            "The Proxy.Upstreams configuration is invalid for Mesh Gateways",
            "proxy.upstreams",
        ),
        (
            {
                "name": "g",
                "kind": "mesh-gateway",
                "port": 443,
                "proxy": {"destination_service_name": "a"},
            },
            "The Proxy.DestinationServiceName configuration is invalid for Mesh Gateways",
            "proxy.destination_service_name",
        ),
        (
            {"name": "g", "kind": "mesh-gateway", "port": 443, "connect": {"native": True}},
            "Mesh Gateways cannot be Connect Native",
            "connect.native",
        ),
        (
            {"name": "x", "connect": {"sidecar_service": {"id": "mine"}}},
            "A SidecarService cannot specify an ID as this is managed by the agent",
            "connect.sidecar_service.id",
        ),
        (
            {"name": "x", "connect": {"sidecar_service": {"connect": {"sidecar_service": {}}}}},
            "A SidecarService cannot have a nested SidecarService",
            "connect.sidecar_service.connect.sidecar_service",
        ),
        (
            {
                "name": "x",
                "kind": "connect-proxy",
                "port": 1,
                "proxy": {
                    "destination_service_name": "a",
                    "upstreams": [{"destination_name": "db"}],
                },
            },
            "proxy.upstreams[0]: upstream local bind port cannot be zero",
            "proxy.upstreams[0].local_bind_port",
        ),
        (
            {
                "name": "x",
                "kind": "connect-proxy",
                "port": 1,
                "proxy": {"destination_service_name": "a", "upstreams": [{"local_bind_port": 9}]},
            },
            "proxy.upstreams[0]: upstream destination name cannot be empty",
            "proxy.upstreams[0].destination_name",
        ),
        (
            {
                "name": "x",
                "kind": "connect-proxy",
                "port": 1,
                "proxy": {
                    "destination_service_name": "a",
                    "upstreams": [
                        {"destination_name": "db", "local_bind_port": 9},
                        {"destination_name": "db", "local_bind_port": 10},
                    ],
                },
            },
            'upstreams cannot contain duplicates of [type="service", name="db", namespace="", datacenter=""]',
            "proxy.upstreams[1]",
        ),
        (
            {
                "name": "x",
                "kind": "connect-proxy",
                "port": 1,
                "proxy": {
                    "destination_service_name": "a",
                    "upstreams": [
                        {"destination_name": "db", "local_bind_port": 9},
                        {"destination_name": "api", "local_bind_port": 9},
                    ],
                },
            },
            'upstreams cannot contain duplicates by local bind address and port; "127.0.0.1:9" is specified twice',
            "proxy.upstreams[1].local_bind_port",
        ),
        (
            {
                "name": "x",
                "connect": {
                    "sidecar_service": {
                        "proxy": {
                            "upstreams": [
                                {
                                    "destination_name": "db",
                                    "local_bind_port": 9,
                                    "mesh_gateway": {"mode": "bogus"},
                                }
                            ]
                        }
                    }
                },
            },
            'Invalid Mesh Gateway Mode: "bogus"',
            "connect.sidecar_service.proxy.upstreams[0].mesh_gateway.mode",
        ),
        (
            {"name": "x", "check": {"tcp": "127.0.0.1:1"}},
            "Invalid check: Interval must be > 0 for Script, HTTP, or TCP checks",
            "check.interval",
        ),
        ({"name": "x", "check": {}}, "Invalid check: TTL must be > 0 for TTL checks", "check.ttl"),
        (
            {"name": "x", "check": {"ttl": "1s", "interval": "1s"}},
            "Invalid check: Interval and TTL cannot both be specified",
            "check.ttl",
        ),
        (
            {"name": "x", "check": {"alias_service": "y", "ttl": "1s"}},
            "Invalid check: TTL must be not be set for Alias checks",
            "check.ttl",
        ),
        (
            {"name": "x", "checks": [{"ttl": "1s", "status": "ok"}]},
            "Status for checks must 'passing', 'warning', 'critical'",
            "checks[0].status",
        ),
        ({"name": "x", "check": {"ttl": "10q"}}, 'check.ttl: invalid duration "10q"', "check.ttl"),
        (
            {"name": "x", "check": {"args": ["/bin/true"], "interval": "1s"}},
            "check.args: script checks are not supported by meshnode",
            "check.args",
        ),
        (
            {"name": "x", "proxy": {"destination_service_name": "a"}},
            "proxy: a proxy block is only valid for connect-proxy and mesh-gateway services",
            "proxy",
        ),
    ],
)
def test_parse_service_rejects_with_consul_message(
    raw: dict[str, Any], message: str, field: str
) -> None:
    err = _error(raw)
    assert str(err).startswith(message), str(err)
    assert err.field == field


def test_parse_mesh_gateway_mode_exact_consul_message() -> None:
    assert parse_mesh_gateway_mode("local") is MeshGatewayMode.LOCAL
    assert parse_mesh_gateway_mode("") is MeshGatewayMode.DEFAULT
    with pytest.raises(InvalidRequest) as info:
        parse_mesh_gateway_mode("Local")
    assert str(info.value) == 'Invalid Mesh Gateway Mode: "Local"'


def test_parse_service_connect_proxy_with_upstreams_and_modes() -> None:
    svc = parse_service(
        {
            "Kind": "connect-proxy",
            "Name": "web-proxy",
            "Port": 21000,
            "Proxy": {
                "DestinationServiceName": "web",
                "MeshGateway": {"Mode": "local"},
                "Config": {"protocol": "tcp", "nested": {"list": [1, 2]}},
                "Upstreams": [
                    {
                        "DestinationName": "api",
                        "Datacenter": "dc2",
                        "LocalBindPort": 10000,
                        "MeshGateway": {"Mode": "remote"},
                    },
                ],
            },
        }
    )
    assert svc.proxy is not None
    assert svc.proxy.mesh_gateway is MeshGatewayMode.LOCAL
    up = svc.proxy.upstreams[0]
    assert (up.destination_name, up.datacenter, up.local_bind_address, up.local_bind_port) == (
        "api",
        "dc2",
        "127.0.0.1",
        10000,
    )
    assert up.mesh_gateway is MeshGatewayMode.REMOTE
    assert svc.proxy.config["nested"]["list"] == (1, 2)
    with pytest.raises(TypeError):
        svc.proxy.config["x"] = 1  # type: ignore[index]


def test_parse_service_accepts_hcl_single_block_lists() -> None:
    svc = parse_service(
        {
            "name": "web",
            "port": 80,
            "connect": [
                {
                    "sidecar_service": [
                        {
                            "proxy": [
                                {
                                    "upstreams": [
                                        {
                                            "destination_name": "api",
                                            "local_bind_port": 9191,
                                            "mesh_gateway": [{"mode": "local"}],
                                        }
                                    ]
                                }
                            ]
                        }
                    ]
                }
            ],
        }
    )
    assert svc.sidecar is not None and svc.sidecar.proxy is not None
    assert svc.sidecar.proxy.upstreams[0].mesh_gateway is MeshGatewayMode.LOCAL


def test_parse_check_standalone_rules() -> None:
    chk = parse_check(
        {"Name": "mem", "TTL": "30s", "ServiceID": "web", "Notes": "n", "Status": "passing"}
    )
    assert (chk.id, chk.service_id, chk.status, chk.kind) == (
        "mem",
        "web",
        Health.PASSING,
        CheckKind.TTL,
    )
    http = parse_check(
        {
            "name": "h",
            "http": "http://127.0.0.1:1/",
            "interval": "2s",
            "timeout": "500ms",
            "header": {"X": ["a", "b"]},
            "method": "post",
        }
    )
    assert (http.kind, http.interval, http.timeout, http.method) == (
        CheckKind.HTTP,
        2.0,
        0.5,
        "POST",
    )
    alias = parse_check({"name": "a", "alias_service": "web"})
    assert alias.kind is CheckKind.ALIAS
    with pytest.raises(InvalidRequest, match="Missing check name"):
        parse_check({"ttl": "1s"})
    with pytest.raises(InvalidRequest, match='tcp: "nope" is not a host:port address'):
        parse_check({"name": "t", "tcp": "nope", "interval": "1s"})
