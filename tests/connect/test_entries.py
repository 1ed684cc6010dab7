"""Config entries: both key spellings, the seed's examples verbatim, and every bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from node.catalog.values import MeshGatewayMode
from node.config.hcl import load_document, normalize_blocks
from node.connect import ProxyDefaults, ServiceDefaults, entry_to_wire, parse_config_entry
from node.errors import InvalidRequest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "config"


def _load(name: str) -> dict[str, Any]:
    path = FIXTURES / name
    result: dict[str, Any] = normalize_blocks(load_document(path.read_text(), str(path)))
    return result


def test_seed_proxy_defaults_example_verbatim() -> None:
    entry = parse_config_entry(_load("proxy-defaults.hcl"))
    assert entry == ProxyDefaults(mesh_gateway=MeshGatewayMode.LOCAL)


def test_seed_service_defaults_example_verbatim() -> None:
    entry = parse_config_entry(_load("service-defaults.hcl"))
    assert entry == ServiceDefaults(name="web", mesh_gateway=MeshGatewayMode.LOCAL)


def test_json_body_pascal_case() -> None:
    body = {
        "Kind": "proxy-defaults",
        "Name": "global",
        "Config": {"protocol": "http", "nested": {"list": [1, "two"]}},
        "MeshGateway": {"Mode": "remote"},
    }
    entry = parse_config_entry(body)
    assert isinstance(entry, ProxyDefaults)
    assert entry.mesh_gateway is MeshGatewayMode.REMOTE
    assert entry.config["nested"]["list"] == (1, "two")  # deep-frozen
    with pytest.raises(TypeError):
        entry.config["protocol"] = "tcp"  # type: ignore[index]


def test_snake_case_and_defaults() -> None:
    entry = parse_config_entry({"kind": "service-defaults", "name": "api", "protocol": "HTTP"})
    assert entry == ServiceDefaults(name="api", protocol="http")
    assert entry.mesh_gateway is MeshGatewayMode.DEFAULT
    assert parse_config_entry({"Kind": "proxy-defaults"}).name == "global"


def test_index_fields_from_a_read_are_ignored() -> None:
    body = {"Kind": "service-defaults", "Name": "web", "CreateIndex": 3, "ModifyIndex": 9}
    assert parse_config_entry(body) == ServiceDefaults(name="web")


def test_consul_read_output_can_be_written_back() -> None:
    # `consul config read` (1.6) prints empty MeshGateway/Expose blocks and the indexes.
    proxy = {
        "Kind": "proxy-defaults",
        "Name": "global",
        "Config": {},
        "MeshGateway": {},
        "Expose": {},
        "CreateIndex": 5,
        "ModifyIndex": 5,
    }
    assert parse_config_entry(proxy) == ProxyDefaults()
    service = {
        "Kind": "service-defaults",
        "Name": "web",
        "Protocol": "http",
        "MeshGateway": {},
        "Expose": {"Checks": True},
        "ExternalSNI": "",
    }
    entry = parse_config_entry(service)
    assert isinstance(entry, ServiceDefaults) and entry.expose["Checks"] is True
    assert parse_config_entry(entry_to_wire(entry)) == entry


def test_hcl_block_list_of_one_is_tolerated() -> None:
    body = {"Kind": "service-defaults", "Name": "web", "MeshGateway": [{"Mode": "none"}]}
    assert parse_config_entry(body).mesh_gateway is MeshGatewayMode.NONE


@pytest.mark.parametrize(
    "entry",
    [
        ProxyDefaults(config={"a": [1, {"b": None}]}, mesh_gateway=MeshGatewayMode.LOCAL),
        ServiceDefaults(name="db", protocol="grpc", mesh_gateway=MeshGatewayMode.REMOTE),
        ServiceDefaults(name="x"),
    ],
)
def test_wire_round_trip(entry: ProxyDefaults | ServiceDefaults) -> None:
    assert parse_config_entry(entry_to_wire(entry)) == entry


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"Kind": "service-defaults", "Name": "w", "MeshGateway": {"Mode": "x"}},
            'Invalid Mesh Gateway Mode: "x"',
        ),
        (
            {"Kind": "proxy-defaults", "MeshGateway": {"Mode": "Local"}},
            'Invalid Mesh Gateway Mode: "Local"',
        ),
        ({"Kind": "proxy-defaults", "MeshGateway": {"Mode": 3}}, 'Invalid Mesh Gateway Mode: "3"'),
        (
            {"Kind": "proxy-defaults", "Name": "web"},
            'invalid name \\("web"\\), only "global" is supported',
        ),
        (
            {"Kind": "ingress-gateway", "Name": "web"},
            'invalid config entry kind: "ingress-gateway"',
        ),
        ({"Name": "web"}, "does not contain a Kind"),
        ({"Kind": "service-defaults"}, "requires a Name"),
        ({"Kind": "service-defaults", "Name": ""}, "requires a Name"),
        ({"Kind": "service-defaults", "Name": "a b"}, "is invalid"),
        (
            {"Kind": "service-defaults", "Name": "w", "Bogus": 1, "zz": 2},
            'invalid config key "Bogus", "zz"',
        ),
        ({"Kind": "service-defaults", "Name": "w", "Config": {}}, 'invalid config key "Config"'),
        ({"Kind": "proxy-defaults", "Protocol": "http"}, 'invalid config key "Protocol"'),
        (
            {"Kind": "service-defaults", "Name": "w", "MeshGateway": {"Mod": "x"}},
            'invalid config key "MeshGateway.Mod"',
        ),
        (
            {"Kind": "service-defaults", "Name": "w", "MeshGateway": "local"},
            "MeshGateway must be an object",
        ),
        (
            {"Kind": "service-defaults", "Name": "w", "name": "v"},
            'config key "Name" is given twice',
        ),
        ({"Kind": "service-defaults", "Name": "w", "Protocol": 5}, "Protocol must be a word"),
        ({"Kind": "proxy-defaults", "Config": [1]}, "Config must be an object"),
        ({"Kind": "proxy-defaults", "Config": {"x": object()}}, "unsupported type"),
        ({"Kind": "proxy-defaults", "Expose": "yes"}, "Expose must be an object"),
        (
            {"Kind": "service-defaults", "Name": "w", "ExternalSNI": 1},
            "ExternalSNI must be a string",
        ),
        ({"Kind": "proxy-defaults", "ExternalSNI": "x"}, 'invalid config key "ExternalSNI"'),
    ],
)
def test_bad_input_gets_a_clear_error(body: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        parse_config_entry(body)


def test_non_mapping_is_rejected() -> None:
    with pytest.raises(InvalidRequest, match="must be an object"):
        parse_config_entry(["Kind"])  # type: ignore[arg-type]


def test_proxy_defaults_constructor_refuses_other_names() -> None:
    with pytest.raises(InvalidRequest, match='only "global"'):
        ProxyDefaults(name="other")


def test_deeply_nested_config_is_bounded() -> None:
    deep: dict[str, Any] = {}
    cursor = deep
    for _ in range(100):
        cursor["x"] = {}
        cursor = cursor["x"]
    with pytest.raises(InvalidRequest, match="nested deeper"):
        parse_config_entry({"Kind": "proxy-defaults", "Config": deep})
