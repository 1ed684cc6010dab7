"""Parsing and validation of service/check definitions, sidecar expansion, wire round-trips."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.catalog.model import (
    CheckKind,
    CheckState,
    Health,
    MeshGatewayMode,
    NodeRecord,
    ServiceInstance,
    ServiceKind,
    SidecarPorts,
    expand_sidecar,
    parse_check,
    parse_duration,
    parse_mesh_gateway_mode,
    parse_service,
)
from node.errors import InvalidRequest, RemoteProtocolError


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


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10s", 10.0),
        ("1m30s", 90.0),
        ("500ms", 0.5),
        ("1.5h", 5400.0),
        ("0", 0.0),
        (10_000_000_000, 10.0),
    ],
)
def test_parse_duration_go_syntax_and_nanoseconds(text: object, seconds: float) -> None:
    assert parse_duration(text, field="f") == pytest.approx(seconds)


# ----------------------------------------------------------------------------- sidecars


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


# ----------------------------------------------------------------------------- wire


def test_service_definition_round_trips_through_to_raw() -> None:
    parent, sidecar = expand_sidecar(
        _web_with_sidecar(
            proxy={
                "upstreams": [
                    {
                        "destination_name": "api",
                        "local_bind_port": 1,
                        "config": {"a": [1, {"b": 2}]},
                    }
                ]
            }
        ),
        allocate_port=SidecarPorts().allocate,
    )
    for svc in (parent, sidecar):
        assert parse_service(svc.to_raw()) == svc
    gw = parse_service(
        {
            "name": "gw",
            "kind": "mesh-gateway",
            "port": 443,
            "tagged_addresses": {"wan": {"address": "1.2.3.4", "port": 8443}},
            "proxy": {"config": {"envoy_mesh_gateway_no_default_bind": True}},
        }
    )
    assert parse_service(gw.to_raw()) == gw


def test_node_record_wire_round_trip_and_garbage() -> None:
    svc = parse_service({"name": "web", "port": 80, "connect": {"native": True}}).instance()
    chk = CheckState(
        id="c",
        name="c",
        kind=CheckKind.TTL,
        status=Health.WARNING,
        output="o",
        service_id="web",
        service_name="web",
    )
    rec = NodeRecord(
        name="n1",
        node_id="id",
        address="10.0.0.1",
        datacenter="dc1",
        tagged_addresses={"wan": "1.1.1.1"},
        services={"web": svc},
        checks={"c": chk},
        version=7,
    )
    back = NodeRecord.from_wire(rec.to_wire())
    assert back.services["web"] == svc and back.checks["c"] == chk and back.version == 7
    assert dict(back.tagged_addresses) == {"wan": "1.1.1.1"}
    for bad in (
        None,
        [],
        {"name": "n"},
        {**rec.to_wire(), "version": "1"},
        {**rec.to_wire(), "services": [{"name": 3}]},
        {**rec.to_wire(), "checks": [{"id": "c", "status": "weird"}]},
    ):
        with pytest.raises(RemoteProtocolError):
            NodeRecord.from_wire(bad)
    with pytest.raises(RemoteProtocolError):
        ServiceInstance.from_wire({"name": "x", "checks": []})


# ----------------------------------------------------------------------------- fuzz

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_keys = st.sampled_from(
    ["name", "id", "kind", "port", "address", "tags", "meta", "proxy", "connect", "check", "checks",
     "weights", "tagged_addresses", "Upstreams", "destination_service_name", "sidecar_service"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_keys | st.text(max_size=6), _json, max_size=6))
def test_parse_service_only_ever_raises_InvalidRequest(raw: dict[str, Any]) -> None:
    try:
        svc = parse_service(raw)
    except InvalidRequest as exc:
        assert str(exc)
    else:
        assert svc.name


@settings(max_examples=300, deadline=None)
@given(_json)
def test_from_wire_only_ever_raises_RemoteProtocolError(raw: Any) -> None:
    for decode in (NodeRecord.from_wire, ServiceInstance.from_wire, CheckState.from_wire):
        try:
            decode(raw)
        except RemoteProtocolError:
            pass


def test_ServiceDefinition_instance_copies_every_instance_field() -> None:
    import dataclasses

    from node.catalog.model import ServiceDefinition, ServiceInstance

    definition = parse_service(
        {"name": "web", "port": 80, "tags": ["a"], "meta": {"k": "v"}, "address": "10.0.0.1",
         "connect": {"native": True}, "check": {"ttl": "5s"}}
    )  # fmt: skip
    instance = definition.instance()
    names = [f.name for f in dataclasses.fields(ServiceInstance)]
    assert set(names) <= {f.name for f in dataclasses.fields(ServiceDefinition)}
    assert all(getattr(instance, n) == getattr(definition, n) for n in names)
