"""Pure tiers: snapshot updates, endpoint choice per mode, gateway routing, rendered plans (golden)."""

from __future__ import annotations

import dataclasses
import enum
import json
import os
from pathlib import Path
from typing import Any

import pytest

from node.connect.names import datacenter_sni, service_sni
from node.errors import InvalidRequest
from node.proxy.plan import Endpoint, GatewayPlan, RouteKind, render, route_gateway
from node.proxy.snapshot import (
    ConfigSnapshot,
    DatacentersUpdate,
    EndpointInfo,
    GatewayBind,
    GatewayEndpointsUpdate,
    Leaf,
    LeafUpdate,
    PublicSpec,
    Roots,
    RootsUpdate,
    ServiceEndpointsUpdate,
    ServicesUpdate,
    Update,
    UpstreamSpec,
    UpstreamsUpdate,
    handle_update,
    new_gateway_snapshot,
    new_sidecar_snapshot,
)

TD = "11111111-2222-3333-4444-555555555555.consul"
GOLDEN = Path(__file__).parent / "golden"
UPDATE_GOLDEN = os.environ.get("MESHNODE_UPDATE_GOLDEN") == "1"

ROOTS = RootsUpdate(roots=Roots(trust_domain=TD, roots_pem=("ROOT-PEM",)))
LEAF = LeafUpdate(leaf=Leaf(cert_pem="LEAF-PEM", key_pem="KEY-PEM"))


def info(
    addr: str, port: int, *, healthy: bool = True, wan: str = "", wan_port: int = 0
) -> EndpointInfo:
    return EndpointInfo(
        address=addr, port=port, healthy=healthy, wan_address=wan, wan_port=wan_port
    )


GW_DC1 = (
    info("10.1.0.5", 8443, wan="198.51.100.1", wan_port=443),
    info("10.1.0.6", 8443, healthy=False),
)
GW_DC2 = (
    info("10.2.0.5", 8443, wan="203.0.113.1", wan_port=443),
    info("10.2.0.6", 8443, wan="203.0.113.2"),
)
API_DC2 = (info("10.2.1.1", 21000, wan="203.0.113.50"), info("10.2.1.2", 21000, healthy=False))
API_DC1 = (info("10.1.1.1", 21000),)


def feed(snap: ConfigSnapshot, *updates: Update) -> ConfigSnapshot:
    for u in updates:
        snap = handle_update(snap, u)
    return snap


def web_sidecar(*ups: UpstreamSpec) -> ConfigSnapshot:
    snap = new_sidecar_snapshot(
        proxy_id="web-sidecar-proxy",
        service="web",
        local_dc="dc1",
        public=PublicSpec(bind_address="0.0.0.0", bind_port=21000, local_port=8080),
    )
    return feed(
        snap,
        ROOTS,
        LEAF,
        UpstreamsUpdate(upstreams=ups),
        GatewayEndpointsUpdate(datacenter="dc1", endpoints=GW_DC1),
        GatewayEndpointsUpdate(datacenter="dc2", endpoints=GW_DC2),
        ServiceEndpointsUpdate(service="api", datacenter="dc2", endpoints=API_DC2),
        ServiceEndpointsUpdate(service="api", datacenter="dc1", endpoints=API_DC1),
    )


def gateway() -> ConfigSnapshot:
    snap = new_gateway_snapshot(
        proxy_id="mesh-gateway",
        local_dc="dc1",
        binds=(GatewayBind(name="default", address="10.1.0.5", port=8443),),
    )
    return feed(
        snap,
        ROOTS,
        ServiceEndpointsUpdate(service="api", datacenter="dc1", endpoints=API_DC1),
        ServiceEndpointsUpdate(
            service="db", datacenter="dc1", endpoints=(info("10.1.2.1", 21001, healthy=False),)
        ),
        GatewayEndpointsUpdate(datacenter="dc2", endpoints=GW_DC2),
        GatewayEndpointsUpdate(
            datacenter="dc3", endpoints=(info("10.3.0.5", 8443, healthy=False),)
        ),
    )


@pytest.mark.parametrize(
    ("dc", "mode", "expected"),
    [
        ("dc2", "none", [Endpoint(address="203.0.113.50", port=21000)]),
        ("dc2", "", [Endpoint(address="203.0.113.50", port=21000)]),
        ("dc2", "local", [Endpoint(address="10.1.0.5", port=8443)]),
        (
            "dc2",
            "remote",
            [Endpoint(address="203.0.113.1", port=443), Endpoint(address="203.0.113.2", port=8443)],
        ),
        # Same DC: gateways are never used, whatever the mode.
        ("dc1", "remote", [Endpoint(address="10.1.1.1", port=21000)]),
        ("", "local", [Endpoint(address="10.1.1.1", port=21000)]),
    ],
)
def test_render_upstream_endpoints_by_mode(dc: str, mode: str, expected: list[Endpoint]) -> None:
    up = UpstreamSpec(service="api", datacenter=dc, bind_port=10000, mode=mode)
    plan = render(web_sidecar(up))
    assert plan is not None
    (upstream,) = [lp for lp in plan.listeners if ":upstream:api." in lp.name]
    assert list(upstream.endpoints) == expected  # type: ignore[union-attr]
    target_dc = dc or "dc1"
    assert upstream.sni == service_sni("api", "default", target_dc, TD)  # type: ignore[union-attr]


def test_render_waits_for_roots_and_leaf() -> None:
    snap = new_sidecar_snapshot(proxy_id="p", service="web", local_dc="dc1", public=None)
    assert render(snap) is None
    assert render(feed(snap, ROOTS)) is None
    assert render(feed(snap, ROOTS, LEAF)) is not None
    gw = new_gateway_snapshot(
        proxy_id="g", local_dc="dc1", binds=(GatewayBind(name="d", address="a", port=1),)
    )
    assert render(gw) is None and render(feed(gw, ROOTS)) is not None


def test_handle_update_rejects_wrong_kind() -> None:
    with pytest.raises(
        InvalidRequest, match="mesh-gateway 'mesh-gateway' does not take LeafUpdate"
    ):
        handle_update(gateway(), LEAF)
    with pytest.raises(InvalidRequest, match="does not take ServicesUpdate"):
        handle_update(web_sidecar(), ServicesUpdate(services=frozenset()))


def test_new_gateway_snapshot_needs_an_address() -> None:
    with pytest.raises(InvalidRequest, match="has no address to listen on"):
        new_gateway_snapshot(proxy_id="g", local_dc="dc1", binds=())


def test_handle_update_empty_result_deletes_group() -> None:
    snap = feed(gateway(), ServiceEndpointsUpdate(service="api", datacenter="dc1", endpoints=()))
    assert ("api", "dc1") not in snap.service_endpoints
    snap = feed(
        snap,
        ServicesUpdate(services=frozenset({"other"})),
        DatacentersUpdate(datacenters=frozenset({"dc1"})),
    )
    assert snap.service_endpoints == {} and snap.gateway_endpoints == {}


def _gw_plan() -> GatewayPlan:
    plan = render(gateway())
    assert plan is not None
    (lp,) = plan.listeners
    assert isinstance(lp, GatewayPlan)
    return lp


@pytest.mark.parametrize(
    ("sni", "kind", "detail"),
    [
        (service_sni("api", "default", "dc1", TD), RouteKind.LOCAL_SERVICE, "10.1.1.1:21000"),
        (service_sni("api", "default", "dc2", TD), RouteKind.REMOTE_DC, "203.0.113.1:443"),
        (datacenter_sni("dc2", TD), RouteKind.REMOTE_DC, "203.0.113.1:443"),
        (service_sni("nope", "default", "dc1", TD), RouteKind.REJECT, "unknown_service"),
        (service_sni("db", "default", "dc1", TD), RouteKind.REJECT, "no_healthy_instance"),
        (service_sni("api", "default", "dc3", TD), RouteKind.REJECT, "no_healthy_gateway"),
        (service_sni("api", "default", "dc9", TD), RouteKind.REJECT, "unknown_dc"),
        (datacenter_sni("dc1", TD), RouteKind.REJECT, "unknown_service"),
        ("v2." + service_sni("api", "default", "dc1", TD), RouteKind.REJECT, "unknown_service"),
        ("api.default.dc1.internal.other.consul", RouteKind.REJECT, "foreign_sni"),
        ("example.com", RouteKind.REJECT, "foreign_sni"),
    ],
)
def test_route_gateway(sni: str, kind: RouteKind, detail: str) -> None:
    route = route_gateway(_gw_plan(), sni)
    assert route.kind is kind
    if kind is RouteKind.REJECT:
        assert route.reason == detail and route.endpoints == ()
    else:
        assert str(route.endpoints[0]) == detail


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if hasattr(value, "items"):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


@pytest.mark.parametrize(
    ("name", "snapshot"),
    [
        (
            "sidecar_three_upstreams",
            lambda: web_sidecar(
                UpstreamSpec(service="api", datacenter="dc2", bind_port=10000, mode="remote"),
                UpstreamSpec(service="api", datacenter="dc2", bind_port=10001, mode="local"),
                UpstreamSpec(service="api", datacenter="dc2", bind_port=10002, mode="none"),
            ),
        ),
        ("mesh_gateway", gateway),
    ],
)
def test_render_golden(name: str, snapshot: Any) -> None:
    rendered = json.dumps(_jsonable(render(snapshot())), indent=2, sort_keys=True) + "\n"
    path = GOLDEN / f"{name}.json"
    if UPDATE_GOLDEN or not path.exists():
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(rendered)
        if not UPDATE_GOLDEN:
            pytest.fail(f"wrote missing golden file {path}; re-run")
    assert rendered == path.read_text(), (
        f"plan differs from {path} (MESHNODE_UPDATE_GOLDEN=1 to accept)"
    )
