"""Consul JSON shapes: encoders of domain values and decoders of request bodies."""

from __future__ import annotations

import pytest

from node.api import codec
from node.catalog.parse import parse_service
from node.errors import InvalidRequest


def test_proxy_encoding_keeps_upstreams_and_mesh_gateway_modes() -> None:
    svc = parse_service(
        {
            "kind": "connect-proxy",
            "name": "web-proxy",
            "port": 21000,
            "proxy": {
                "destination_service_name": "web",
                "mesh_gateway": {"mode": "local"},
                "upstreams": [
                    {"destination_name": "api", "datacenter": "dc2", "local_bind_port": 10000},
                    {
                        "destination_name": "db",
                        "local_bind_port": 10001,
                        "mesh_gateway": {"mode": "remote"},
                    },
                ],
            },
        }
    ).instance()
    out = codec.encode_agent_service(svc)
    assert out["Kind"] == "connect-proxy"
    proxy = out["Proxy"]
    assert proxy["MeshGateway"] == {"Mode": "local"}
    assert [
        (u["DestinationName"], u["Datacenter"], u["LocalBindPort"], u["MeshGateway"])
        for u in proxy["Upstreams"]
    ] == [
        ("api", "dc2", 10000, {}),
        ("db", "", 10001, {"Mode": "remote"}),
    ]
    assert proxy["Upstreams"][0]["DestinationType"] == "service"
    assert proxy["Upstreams"][0]["LocalBindAddress"] == "127.0.0.1"


def test_typical_service_has_no_proxy_and_native_connect_is_marked() -> None:
    plain = codec.encode_agent_service(parse_service({"name": "a"}).instance())
    assert "Proxy" not in plain and "Connect" not in plain
    native = codec.encode_agent_service(
        parse_service({"name": "b", "connect": {"native": True}}).instance()
    )
    assert native["Connect"] == {"Native": True}


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(10.0, "10s"), (90.0, "1m30s"), (0.5, "500ms"), (3600.0, "1h0m0s"), (1.5, "1.5s")],
)
def test_go_duration_formatting(seconds: float, text: str) -> None:
    assert codec._go_duration(seconds) == text


def test_decode_check_update_accepts_any_casing() -> None:
    assert codec.decode_check_update(b'{"Status": "passing", "Output": "ok"}') == ("passing", "ok")
    assert codec.decode_check_update(b'{"status": "warning"}') == ("warning", "")


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"", "empty body"),
        (b"{", "Request decode failed"),
        (b"[]", "expected a JSON object"),
        (b'{"Status": 3}', "must be strings"),
        (b'{"Nope": 1}', "Nope"),
    ],
)
def test_decode_check_update_errors_name_the_problem(body: bytes, needle: str) -> None:
    with pytest.raises(InvalidRequest, match=needle):
        codec.decode_check_update(body)


def test_decode_service_passes_field_errors_through() -> None:
    with pytest.raises(InvalidRequest) as info:
        codec.decode_service(b'{"Name": "web", "Port": -1}')
    assert "port" in str(info.value).lower() or (info.value.field or "").lower().endswith("port")
