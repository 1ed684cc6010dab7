"""node.proxy: the data plane — sidecar listeners and the SNI mesh gateway.

Pure: ``sni`` (ClientHello → server name), ``snapshot`` (frozen inputs + ``handle_update``),
``plan`` (``render(snapshot)`` → listener plans, gateway routing, endpoint choice by mode).
I/O: ``relay`` (splice with pooled pipes), ``gateway``, ``sidecar``, ``manager``
(reconciles running listeners against plans), ``metrics`` (counters, JSON/Prometheus),
``feed`` (builds each local proxy's snapshot from the catalog, Connect and other
datacenters' blocking reads; ``endpoints`` is its pure address/health rule).
"""

from node.proxy.endpoints import endpoint_of, is_healthy, make_endpoint
from node.proxy.feed import FeedSources, ProxyFeed, gateway_binds, listeners_check_id
from node.proxy.gateway import GatewayListener
from node.proxy.manager import COALESCE_DELAY, ProxyManager, ProxyStatus
from node.proxy.metrics import ListenerStats, MetricsRegistry, render_prometheus
from node.proxy.plan import (
    Endpoint,
    GatewayPlan,
    ListenerPlan,
    ProxyPlan,
    PublicPlan,
    Route,
    RouteKind,
    TLSMaterial,
    UpstreamPlan,
    render,
    route_gateway,
    upstream_endpoints,
)
from node.proxy.relay import SPLICE_SUPPORTED, PipePool, Relay
from node.proxy.sidecar import Authorizer, PublicListener, TLSState, UpstreamListener
from node.proxy.snapshot import (
    ConfigSnapshot,
    DatacentersUpdate,
    EndpointInfo,
    GatewayBind,
    GatewayEndpointsUpdate,
    Leaf,
    LeafUpdate,
    ProxyKind,
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
from node.proxy.sni import MAX_HELLO_BYTES, HelloResult, HelloStatus, parse_client_hello

__all__ = [
    "Authorizer",
    "COALESCE_DELAY",
    "ConfigSnapshot",
    "DatacentersUpdate",
    "Endpoint",
    "EndpointInfo",
    "FeedSources",
    "GatewayBind",
    "GatewayEndpointsUpdate",
    "GatewayListener",
    "GatewayPlan",
    "HelloResult",
    "HelloStatus",
    "Leaf",
    "LeafUpdate",
    "ListenerPlan",
    "ListenerStats",
    "MAX_HELLO_BYTES",
    "MetricsRegistry",
    "PipePool",
    "ProxyFeed",
    "ProxyKind",
    "ProxyManager",
    "ProxyPlan",
    "ProxyStatus",
    "PublicListener",
    "PublicPlan",
    "PublicSpec",
    "Relay",
    "Roots",
    "RootsUpdate",
    "Route",
    "RouteKind",
    "SPLICE_SUPPORTED",
    "ServiceEndpointsUpdate",
    "ServicesUpdate",
    "TLSMaterial",
    "TLSState",
    "Update",
    "UpstreamListener",
    "UpstreamPlan",
    "UpstreamSpec",
    "UpstreamsUpdate",
    "endpoint_of",
    "gateway_binds",
    "handle_update",
    "is_healthy",
    "listeners_check_id",
    "make_endpoint",
    "new_gateway_snapshot",
    "new_sidecar_snapshot",
    "parse_client_hello",
    "render",
    "render_prometheus",
    "route_gateway",
    "upstream_endpoints",
]
