"""Listener plans: what a proxy or gateway should be running, rendered from a snapshot.

Rule: a plan is a frozen value and ``render(snapshot)`` is a pure function of the
snapshot (Consul's ``xds`` renders from ``proxycfg.ConfigSnapshot`` the same way).
The manager compares plans by value and reconciles the running listeners; the
listeners read only their plan. Endpoint choice per mesh-gateway mode
(reference/consul-connect.md §3.3) and gateway routing by SNI (§1.2) live here, so
both are tested without sockets.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from node.connect.names import parse_sni, service_sni
from node.proxy.snapshot import (
    ConfigSnapshot,
    EndpointInfo,
    ProxyKind,
    UpstreamSpec,
)

__all__ = [
    "MAX_DIAL_ATTEMPTS",
    "Endpoint",
    "TLSMaterial",
    "UpstreamPlan",
    "PublicPlan",
    "GatewayPlan",
    "ListenerPlan",
    "ProxyPlan",
    "RouteKind",
    "Route",
    "render",
    "route_gateway",
    "upstream_endpoints",
]

MAX_DIAL_ATTEMPTS = 3  # endpoints a listener tries per connection before giving up

_EMPTY: Mapping[str, tuple[Endpoint, ...]] = MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """An address to dial."""

    address: str
    port: int

    def __str__(self) -> str:
        return f"{self.address}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSMaterial:
    """The PEM a sidecar needs: its leaf (cert chain + key) and the trust bundle."""

    cert_pem: str
    key_pem: str
    roots_pem: tuple[str, ...]
    trust_domain: str


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamPlan:
    """Plain TCP from the app on ``bind``, TLS to one of ``endpoints`` with ``sni``."""

    name: str
    bind_address: str
    bind_port: int
    target_service: str
    target_namespace: str
    target_dc: str
    sni: str
    mode: str
    endpoints: tuple[Endpoint, ...]
    connect_timeout: float

    @property
    def key(self) -> tuple[str, str, int]:
        """Listeners with the same key are the same socket (reconfigured in place)."""
        return ("upstream", self.bind_address, self.bind_port)


@dataclass(frozen=True, slots=True, kw_only=True)
class PublicPlan:
    """mTLS server for ``service``; authorised clients are piped to the local app."""

    name: str
    bind_address: str
    bind_port: int
    service: str
    local_address: str
    local_port: int
    connect_timeout: float

    @property
    def key(self) -> tuple[str, str, int]:
        """Listeners with the same key are the same socket (reconfigured in place)."""
        return ("public", self.bind_address, self.bind_port)


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayPlan:
    """A mesh gateway listener: SNI routing tables, no key material at all."""

    name: str
    bind_address: str
    bind_port: int
    local_dc: str
    trust_domain: str
    # service name in the local DC → its healthy Connect-capable instances (LAN address)
    services: Mapping[str, tuple[Endpoint, ...]] = field(default_factory=lambda: _EMPTY)
    # other DC → its healthy mesh gateways (WAN address)
    datacenters: Mapping[str, tuple[Endpoint, ...]] = field(default_factory=lambda: _EMPTY)
    connect_timeout: float = 5.0

    @property
    def key(self) -> tuple[str, str, int]:
        """Listeners with the same key are the same socket (reconfigured in place)."""
        return ("gateway", self.bind_address, self.bind_port)


ListenerPlan = UpstreamPlan | PublicPlan | GatewayPlan


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyPlan:
    """Everything one proxy (sidecar or gateway) runs; ``tls`` is None for gateways."""

    proxy_id: str
    kind: ProxyKind
    listeners: tuple[ListenerPlan, ...]
    tls: TLSMaterial | None = None
    # The service this sidecar fronts (its SPIFFE id is checked by upstream peers).
    service: str = ""


class RouteKind(enum.Enum):
    """Where a gateway sends a connection (or why it does not)."""

    LOCAL_SERVICE = "local"
    REMOTE_DC = "remote"
    REJECT = "reject"


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """A routing decision; ``reason`` names the rejection (a metrics label)."""

    kind: RouteKind
    endpoints: tuple[Endpoint, ...] = ()
    reason: str = ""


def route_gateway(plan: GatewayPlan, server_name: str) -> Route:
    """Route one SNI: local service → its instances, other DC → its gateways, else reject."""
    parsed = parse_sni(server_name, plan.trust_domain)
    if parsed is None:
        return Route(kind=RouteKind.REJECT, reason="foreign_sni")
    if parsed.datacenter != plan.local_dc:
        eps = plan.datacenters.get(parsed.datacenter)
        if eps is None:
            return Route(kind=RouteKind.REJECT, reason="unknown_dc")
        if not eps:
            return Route(kind=RouteKind.REJECT, reason="no_healthy_gateway")
        return Route(kind=RouteKind.REMOTE_DC, endpoints=eps)
    if parsed.service is None or parsed.subset is not None:
        return Route(kind=RouteKind.REJECT, reason="unknown_service")
    eps = plan.services.get(parsed.service)
    if eps is None:
        return Route(kind=RouteKind.REJECT, reason="unknown_service")
    if not eps:
        return Route(kind=RouteKind.REJECT, reason="no_healthy_instance")
    return Route(kind=RouteKind.LOCAL_SERVICE, endpoints=eps)


def _healthy(infos: tuple[EndpointInfo, ...], *, wan: bool) -> tuple[Endpoint, ...]:
    """Healthy endpoints at their LAN or WAN address (Consul ``BestAddress(wan)``)."""
    out = []
    for info in infos:
        if not info.healthy:
            continue
        if wan and info.wan_address:
            out.append(Endpoint(address=info.wan_address, port=info.wan_port or info.port))
        else:
            out.append(Endpoint(address=info.address, port=info.port))
    return tuple(out)


def upstream_endpoints(snap: ConfigSnapshot, up: UpstreamSpec) -> tuple[Endpoint, ...]:
    """Endpoints for one upstream per its resolved mode (reference §3.3)."""
    target_dc = up.datacenter or snap.local_dc
    if target_dc == snap.local_dc:
        # Gateways are never used inside one datacenter.
        return _healthy(snap.service_endpoints.get((up.service, target_dc), ()), wan=False)
    if up.mode == "local":
        return _healthy(snap.gateway_endpoints.get(snap.local_dc, ()), wan=False)
    if up.mode == "remote":
        return _healthy(snap.gateway_endpoints.get(target_dc, ()), wan=True)
    return _healthy(snap.service_endpoints.get((up.service, target_dc), ()), wan=True)


def _render_upstream(snap: ConfigSnapshot, up: UpstreamSpec) -> UpstreamPlan:
    target_dc = up.datacenter or snap.local_dc
    return UpstreamPlan(
        name=f"{snap.proxy_id}:upstream:{up.service}.{target_dc}:{up.bind_port}",
        bind_address=up.bind_address,
        bind_port=up.bind_port,
        target_service=up.service,
        target_namespace=up.namespace,
        target_dc=target_dc,
        sni=service_sni(up.service, up.namespace, target_dc, snap.trust_domain),
        mode="none" if target_dc == snap.local_dc else (up.mode or "none"),
        endpoints=upstream_endpoints(snap, up),
        connect_timeout=up.connect_timeout,
    )


def _render_sidecar(snap: ConfigSnapshot) -> ProxyPlan:
    assert snap.leaf is not None and snap.roots is not None  # guaranteed by is_valid()
    listeners: list[ListenerPlan] = []
    if snap.public is not None:
        listeners.append(
            PublicPlan(
                name=f"{snap.proxy_id}:public",
                bind_address=snap.public.bind_address,
                bind_port=snap.public.bind_port,
                service=snap.service,
                local_address=snap.public.local_address,
                local_port=snap.public.local_port,
                connect_timeout=snap.public.connect_timeout,
            )
        )
    listeners.extend(_render_upstream(snap, up) for up in snap.upstreams)
    tls = TLSMaterial(
        cert_pem=snap.leaf.cert_pem,
        key_pem=snap.leaf.key_pem,
        roots_pem=snap.roots.roots_pem,
        trust_domain=snap.trust_domain,
    )
    return ProxyPlan(
        proxy_id=snap.proxy_id,
        kind=snap.kind,
        listeners=tuple(listeners),
        tls=tls,
        service=snap.service,
    )


def _render_gateway(snap: ConfigSnapshot) -> ProxyPlan:
    services = MappingProxyType(
        {
            svc: _healthy(infos, wan=False)
            for (svc, dc), infos in sorted(snap.service_endpoints.items())
            if dc == snap.local_dc
        }
    )
    datacenters = MappingProxyType(
        {
            dc: _healthy(infos, wan=True)
            for dc, infos in sorted(snap.gateway_endpoints.items())
            if dc != snap.local_dc
        }
    )
    listeners = tuple(
        GatewayPlan(
            name=f"{snap.proxy_id}:{bind.name}",
            bind_address=bind.address,
            bind_port=bind.port,
            local_dc=snap.local_dc,
            trust_domain=snap.trust_domain,
            services=services,
            datacenters=datacenters,
            connect_timeout=snap.connect_timeout,
        )
        for bind in snap.gateway_binds
    )
    return ProxyPlan(proxy_id=snap.proxy_id, kind=snap.kind, listeners=listeners)


def render(snap: ConfigSnapshot) -> ProxyPlan | None:
    """The plan for this snapshot, or ``None`` while it is not yet valid."""
    if not snap.is_valid():
        return None
    if snap.kind is ProxyKind.MESH_GATEWAY:
        return _render_gateway(snap)
    return _render_sidecar(snap)
