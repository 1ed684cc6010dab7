"""The discovery-chain compiler: golden chain JSON per case, and every graph error Consul gives."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from node.api.chaincodec import encode_chain
from node.catalog.values import MeshGatewayMode
from node.connect.chain import ChainError, ChainRequest, compile_chain, validate_proposed
from node.connect.entries import ConfigEntry, parse_config_entry
from node.errors import InvalidRequest

GOLDEN = Path(__file__).parent / "golden_chain"
UPDATE_GOLDEN = os.environ.get("MESHNODE_UPDATE_GOLDEN") == "1"
TD = "11111111-2222-3333-4444-555555555555.consul"


def _entries(*raw: dict[str, Any]) -> dict[tuple[str, str], ConfigEntry]:
    out: dict[tuple[str, str], ConfigEntry] = {}
    for body in raw:
        entry = parse_config_entry(body)
        out[(entry.kind, entry.name)] = entry
    return out


def _compile(service: str, *raw: dict[str, Any], dc: str = "dc1", **opts: Any) -> Any:
    req = ChainRequest(
        service=service, datacenter=dc, use_in_datacenter="dc1", trust_domain=TD, **opts
    )
    return compile_chain(req, _entries(*raw))


RESOLVER = "service-resolver"
MESH_REMOTE = {"Kind": "proxy-defaults", "Name": "global", "MeshGateway": {"Mode": "remote"}}
HTTP_DEFAULTS = {"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "http"}}
SUBSETS = {
    "v1": {"Filter": "Service.Meta.version == v1"},
    "v2": {"Filter": "Service.Meta.version == v2", "OnlyPassing": True},
}

CASES: dict[str, tuple[str, tuple[dict[str, Any], ...], dict[str, Any]]] = {
    "no_entries": ("web", (), {}),
    "compile_dc2_no_entries": ("web", (), {"dc": "dc2"}),
    "failover_remote_mode": (
        "web",
        ({"Kind": RESOLVER, "Name": "web", "Failover": {"*": {"Datacenters": ["dc2"]}}},
         MESH_REMOTE),
        {},
    ),
    "failover_three_datacenters": (
        "api",
        ({"Kind": RESOLVER, "Name": "api", "ConnectTimeout": "3s",
          "Failover": {"*": {"Datacenters": ["dc2", "dc1", "dc3"]}}},
         {"Kind": "service-defaults", "Name": "api", "MeshGateway": {"Mode": "local"}}),
        {},
    ),
    "subsets_default_subset": (
        "api",
        ({"Kind": RESOLVER, "Name": "api", "DefaultSubset": "v1", "Subsets": SUBSETS},),
        {},
    ),
    "subset_failover_by_subset": (
        "api",
        ({"Kind": RESOLVER, "Name": "api", "DefaultSubset": "v2", "Subsets": SUBSETS,
          "Failover": {"v2": {"ServiceSubset": "v1"}, "*": {"Datacenters": ["dc2"]}}},),
        {},
    ),
    "redirect_to_other_service_and_dc": (
        "web",
        ({"Kind": RESOLVER, "Name": "web", "Redirect": {"Service": "api", "Datacenter": "dc2"}},
         {"Kind": RESOLVER, "Name": "api", "DefaultSubset": "v1", "Subsets": SUBSETS}),
        {},
    ),
    "redirect_then_failover": (
        "web",
        ({"Kind": RESOLVER, "Name": "web", "Redirect": {"Service": "api"}},
         {"Kind": RESOLVER, "Name": "api", "Failover": {"*": {"Datacenters": ["dc3"]}}},
         MESH_REMOTE),
        {},
    ),
    "failover_into_redirecting_service": (
        "web",
        ({"Kind": RESOLVER, "Name": "web", "Failover": {"*": {"Service": "backup"}}},
         {"Kind": RESOLVER, "Name": "backup", "Redirect": {"Datacenter": "dc2"}}),
        {},
    ),
    "router_and_splitter_http": (
        "web",
        ({"Kind": "service-router", "Name": "web",
          "Routes": [{"Match": {"HTTP": {"PathPrefix": "/admin"}},
                      "Destination": {"Service": "admin"}},
                     {"Match": {"HTTP": {"Header": [{"Name": "x-canary", "Present": True}]}},
                      "Destination": {"ServiceSubset": "v2"}}]},
         {"Kind": "service-splitter", "Name": "web",
          "Splits": [{"Weight": 90, "ServiceSubset": "v1"},
                     {"Weight": 10, "Service": "web-next"}]},
         {"Kind": "service-splitter", "Name": "web-next",
          "Splits": [{"Weight": 50, "Service": "web-a"}, {"Weight": 50, "Service": "web-b"}]},
         {"Kind": RESOLVER, "Name": "web", "Subsets": SUBSETS},
         HTTP_DEFAULTS),
        {},
    ),
    "override_protocol_tcp_drops_router": (
        "web",
        ({"Kind": "service-router", "Name": "web",
          "Routes": [{"Destination": {"Service": "admin"}}]}, HTTP_DEFAULTS),
        {"override_protocol": "tcp"},
    ),
    "overrides_change_mode_and_timeout": (
        "web",
        ({"Kind": RESOLVER, "Name": "web", "Failover": {"*": {"Datacenters": ["dc2"]}}},
         MESH_REMOTE),
        {"override_mesh_gateway": MeshGatewayMode.LOCAL, "override_connect_timeout": 2.0},
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CASES))
def test_compile_golden(name: str) -> None:
    service, raw, opts = CASES[name]
    chain = _compile(service, *raw, **opts)
    rendered = json.dumps(encode_chain(chain), indent=2, sort_keys=True) + "\n"
    path = GOLDEN / f"{name}.json"
    if UPDATE_GOLDEN or not path.exists():
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(rendered)
        if not UPDATE_GOLDEN:
            pytest.fail(f"wrote missing golden file {path}; re-run")
    assert rendered == path.read_text(), f"chain differs from {path} (MESHNODE_UPDATE_GOLDEN=1)"


def test_consul_documented_failover_example_exactly() -> None:
    chain = _compile(
        "web",
        {"Kind": RESOLVER, "Name": "web", "Failover": {"*": {"Datacenters": ["dc2"]}}},
        MESH_REMOTE,
    )
    assert encode_chain(chain) == {"Chain": {
        "ServiceName": "web", "Namespace": "default", "Datacenter": "dc1", "Protocol": "tcp",
        "StartNode": "resolver:web.default.dc1",
        "Nodes": {"resolver:web.default.dc1": {
            "Type": "resolver", "Name": "web.default.dc1",
            "Resolver": {"ConnectTimeout": "5s", "Target": "web.default.dc1",
                         "Failover": {"Targets": ["web.default.dc2"]}}}},
        "Targets": {
            "web.default.dc1": {
                "ID": "web.default.dc1", "Service": "web", "Namespace": "default",
                "Datacenter": "dc1", "MeshGateway": {}, "Subset": {},
                "SNI": f"web.default.dc1.internal.{TD}", "Name": f"web.default.dc1.internal.{TD}"},
            "web.default.dc2": {
                "ID": "web.default.dc2", "Service": "web", "Namespace": "default",
                "Datacenter": "dc2", "MeshGateway": {"Mode": "remote"}, "Subset": {},
                "SNI": f"web.default.dc2.internal.{TD}", "Name": f"web.default.dc2.internal.{TD}"},
        }}}  # fmt: skip


def test_failover_order_and_modes_per_target_datacenter() -> None:
    chain = _compile(
        "api",
        {"Kind": RESOLVER, "Name": "api", "Failover": {"*": {"Datacenters": ["dc2", "dc3"]}}},
        {"Kind": "proxy-defaults", "MeshGateway": {"Mode": "local"}},
        override_mesh_gateway=MeshGatewayMode.REMOTE,
        override_level="upstream",
    )
    order = chain.failover_order()
    assert [t.id for t in order] == ["api.default.dc1", "api.default.dc2", "api.default.dc3"]
    assert [(t.mesh_gateway, t.mode_set_by) for t in order] == [
        ("", "same-datacenter"),
        ("remote", "upstream"),
        ("remote", "upstream"),
    ]


def test_subset_sni_and_filter_on_target() -> None:
    chain = _compile(
        "api", {"Kind": RESOLVER, "Name": "api", "DefaultSubset": "v2", "Subsets": SUBSETS}
    )
    (target,) = chain.failover_order()
    assert target.sni == f"v2.api.default.dc1.internal.{TD}"
    assert target.subset_filter == "Service.Meta.version == v2" and target.only_passing


@pytest.mark.parametrize(
    ("service", "raw", "message"),
    [
        ("a", ({"Kind": RESOLVER, "Name": "a", "Redirect": {"Service": "b"}},
               {"Kind": RESOLVER, "Name": "b", "Redirect": {"Service": "a"}}),
         r"detected circular resolver redirect: \[a.default.dc1 -> b.default.dc1 -> "
         r"a.default.dc1\]"),
        ("a", ({"Kind": RESOLVER, "Name": "a", "Redirect": {"Datacenter": "dc2"}},
               {"Kind": RESOLVER, "Name": "b"}, ),
         None),
        ("main", ({"Kind": "service-splitter", "Name": "main",
                   "Splits": [{"Weight": 100, "Service": "other"}]},
                  {"Kind": "service-splitter", "Name": "other",
                   "Splits": [{"Weight": 100, "Service": "main"}]}, HTTP_DEFAULTS),
         r"detected circular reference: \[splitter:main -> splitter:other -> splitter:main\]"),
        ("web", ({"Kind": "service-router", "Name": "web",
                  "Routes": [{"Destination": {"Service": "admin"}}]},),
         'discovery chain "web" uses a protocol "tcp" that does not permit advanced routing '
         "or splitting behavior"),
        ("web", ({"Kind": "service-splitter", "Name": "web", "Splits": [{"Weight": 100}]},
                 {"Kind": "service-defaults", "Name": "web", "Protocol": "tcp"},
                 HTTP_DEFAULTS),
         'uses a protocol "tcp" that does not permit'),
        ("web", ({"Kind": RESOLVER, "Name": "web", "Redirect": {"Service": "other"}},
                 {"Kind": "service-defaults", "Name": "web", "Protocol": "http"}),
         'discovery chain "web" uses inconsistent protocols; service "other" has "tcp" which '
         'is not "http"'),
        ("web", ({"Kind": RESOLVER, "Name": "web", "Redirect": {"Service": "api",
                                                                "ServiceSubset": "v3"}},
                 {"Kind": RESOLVER, "Name": "api", "Subsets": SUBSETS}),
         'service "api" does not have a subset named "v3"'),
        ("web", ({"Kind": RESOLVER, "Name": "web", "Subsets": SUBSETS},
                 {"Kind": "service-defaults", "Name": "web", "ExternalSNI": "web.example"}),
         'service "web" has an external SNI set; cannot define subsets for external services'),
    ],
)  # fmt: skip
def test_graph_errors(service: str, raw: tuple[dict[str, Any], ...], message: str | None) -> None:
    if message is None:
        assert _compile(service, *raw).start_node == "resolver:a.default.dc2"
        return
    with pytest.raises(ChainError, match=message):
        _compile(service, *raw)


def test_failover_is_not_recursive() -> None:
    chain = _compile(
        "main",
        {"Kind": RESOLVER, "Name": "main", "Failover": {"*": {"Service": "backup"}}},
        {"Kind": RESOLVER, "Name": "backup", "Failover": {"*": {"Service": "main"}}},
    )
    assert chain.failover_order()[1].id == "backup.default.dc1"


def test_missing_resolver_is_a_default_one() -> None:
    chain = _compile("web", {"Kind": "service-defaults", "Name": "web", "Protocol": "http"})
    res = chain.resolver_of(chain.start_node)
    assert res is not None and res.default and res.connect_timeout == 5.0
    assert chain.protocol == "http"


def test_empty_service_defaults_protocol_means_tcp_even_with_proxy_defaults() -> None:
    chain = _compile("web", {"Kind": "service-defaults", "Name": "web"}, HTTP_DEFAULTS)
    assert chain.protocol == "tcp"


def test_validate_proposed_checks_chains_linking_to_the_written_name() -> None:
    entries = _entries(
        {"Kind": RESOLVER, "Name": "web", "Redirect": {"Service": "api", "ServiceSubset": "v1"}},
        {"Kind": RESOLVER, "Name": "api", "Subsets": SUBSETS},
    )
    validate_proposed(entries, RESOLVER, "api")
    del entries[(RESOLVER, "api")]  # deleting api's resolver breaks web's chain
    with pytest.raises(ChainError, match='does not have a subset named "v1"'):
        validate_proposed(entries, RESOLVER, "api")


def test_missing_chain_name() -> None:
    with pytest.raises(InvalidRequest, match="Missing chain name"):
        _compile("")
