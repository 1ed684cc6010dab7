"""Config snapshots: the point-in-time inputs one proxy or gateway is rendered from.

Rule: a snapshot is a frozen value, changed only by ``handle_update(snapshot, update)``
which returns a new one (Consul's ``proxycfg`` per-kind ``handleUpdate``, without the
deep copies). Which updates a kind accepts is the ``_HANDLERS`` table; anything else is
an ``InvalidRequest`` naming the kind and the update. Inputs are plain values
(addresses, ports, health flags, PEM strings) so the agent can feed them from the
catalog and CA without this module knowing their types. ``is_valid()`` gates
rendering until the roots (and, for a sidecar, the leaf) exist.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from node.errors import InvalidRequest

__all__ = [
    "ProxyKind",
    "EndpointInfo",
    "Roots",
    "Leaf",
    "UpstreamSpec",
    "PublicSpec",
    "GatewayBind",
    "ConfigSnapshot",
    "RootsUpdate",
    "LeafUpdate",
    "ServiceEndpointsUpdate",
    "GatewayEndpointsUpdate",
    "ServicesUpdate",
    "DatacentersUpdate",
    "UpstreamsUpdate",
    "Update",
    "new_sidecar_snapshot",
    "new_gateway_snapshot",
    "handle_update",
]

DEFAULT_CONNECT_TIMEOUT = 5.0  # seconds; Consul's connect_timeout_ms default


class ProxyKind(enum.Enum):
    """The two kinds of proxy a node runs (Consul ``ServiceKind`` values)."""

    CONNECT_PROXY = "connect-proxy"
    MESH_GATEWAY = "mesh-gateway"


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointInfo:
    """One catalog instance as the proxy sees it; ``wan_*`` empty when not tagged."""

    address: str
    port: int
    healthy: bool
    wan_address: str = ""
    wan_port: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Roots:
    """The trust bundle and the trust domain it belongs to."""

    trust_domain: str
    roots_pem: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Leaf:
    """A leaf certificate (with intermediates, PEM) and its private key (PEM)."""

    cert_pem: str
    key_pem: str


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamSpec:
    """One upstream after mode resolution (``mode`` is '', 'none', 'local' or 'remote')."""

    service: str
    bind_port: int
    bind_address: str = "127.0.0.1"
    namespace: str = "default"
    datacenter: str = ""
    mode: str = ""
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT


@dataclass(frozen=True, slots=True, kw_only=True)
class PublicSpec:
    """The sidecar's public listener and the local app it fronts."""

    bind_address: str
    bind_port: int
    local_address: str = "127.0.0.1"
    local_port: int
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayBind:
    """One address a gateway listens on (``default``, ``lan``, ``wan`` or a named bind)."""

    name: str
    address: str
    port: int


_NO_ENDPOINTS: Mapping[Any, tuple[EndpointInfo, ...]] = MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigSnapshot:
    """Everything one proxy is rendered from; replace, never mutate."""

    kind: ProxyKind
    proxy_id: str
    local_dc: str
    service: str = ""  # the destination service of a sidecar
    roots: Roots | None = None
    leaf: Leaf | None = None
    public: PublicSpec | None = None
    upstreams: tuple[UpstreamSpec, ...] = ()
    gateway_binds: tuple[GatewayBind, ...] = ()
    # (service, dc) → Connect-capable instances (sidecars and native services)
    service_endpoints: Mapping[tuple[str, str], tuple[EndpointInfo, ...]] = field(
        default_factory=lambda: _NO_ENDPOINTS
    )
    # dc → mesh gateway instances of that DC
    gateway_endpoints: Mapping[str, tuple[EndpointInfo, ...]] = field(
        default_factory=lambda: _NO_ENDPOINTS
    )
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT

    @property
    def trust_domain(self) -> str:
        """The trust domain from the roots ('' before they arrive)."""
        return self.roots.trust_domain if self.roots else ""

    def is_valid(self) -> bool:
        """Enough data to render: roots always, plus the leaf for a sidecar."""
        if self.roots is None:
            return False
        return self.kind is ProxyKind.MESH_GATEWAY or self.leaf is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class RootsUpdate:
    """The CA roots changed."""

    roots: Roots


@dataclass(frozen=True, slots=True, kw_only=True)
class LeafUpdate:
    """The sidecar's leaf was issued or renewed."""

    leaf: Leaf


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceEndpointsUpdate:
    """Connect-capable instances of ``service`` in ``datacenter`` (empty = none left)."""

    service: str
    datacenter: str
    endpoints: tuple[EndpointInfo, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayEndpointsUpdate:
    """Mesh gateway instances of ``datacenter`` (empty = none left)."""

    datacenter: str
    endpoints: tuple[EndpointInfo, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ServicesUpdate:
    """The local service list (gateway): services not listed are forgotten."""

    services: frozenset[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class DatacentersUpdate:
    """The known datacenters (gateway): gateway groups of vanished DCs are dropped."""

    datacenters: frozenset[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamsUpdate:
    """The sidecar's upstreams were re-resolved (registration or config entries)."""

    upstreams: tuple[UpstreamSpec, ...]


Update = (
    RootsUpdate
    | LeafUpdate
    | ServiceEndpointsUpdate
    | GatewayEndpointsUpdate
    | ServicesUpdate
    | DatacentersUpdate
    | UpstreamsUpdate
)


def new_sidecar_snapshot(
    *,
    proxy_id: str,
    service: str,
    local_dc: str,
    public: PublicSpec | None,
    upstreams: tuple[UpstreamSpec, ...] = (),
) -> ConfigSnapshot:
    """An empty sidecar snapshot (invalid until roots and leaf arrive)."""
    return ConfigSnapshot(
        kind=ProxyKind.CONNECT_PROXY,
        proxy_id=proxy_id,
        service=service,
        local_dc=local_dc,
        public=public,
        upstreams=upstreams,
    )


def new_gateway_snapshot(
    *,
    proxy_id: str,
    local_dc: str,
    binds: tuple[GatewayBind, ...],
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
) -> ConfigSnapshot:
    """An empty gateway snapshot (invalid until roots arrive)."""
    if not binds:
        raise InvalidRequest(f"mesh gateway {proxy_id!r} has no address to listen on")
    return ConfigSnapshot(
        kind=ProxyKind.MESH_GATEWAY,
        proxy_id=proxy_id,
        local_dc=local_dc,
        gateway_binds=binds,
        connect_timeout=connect_timeout,
    )


def _set_roots(snap: ConfigSnapshot, u: RootsUpdate) -> ConfigSnapshot:
    return dataclasses.replace(snap, roots=u.roots)


def _set_leaf(snap: ConfigSnapshot, u: LeafUpdate) -> ConfigSnapshot:
    return dataclasses.replace(snap, leaf=u.leaf)


def _set_service_endpoints(snap: ConfigSnapshot, u: ServiceEndpointsUpdate) -> ConfigSnapshot:
    table = dict(snap.service_endpoints)
    key = (u.service, u.datacenter)
    if u.endpoints:
        table[key] = u.endpoints
    else:
        table.pop(key, None)  # an empty result deletes the group, as in Consul
    return dataclasses.replace(snap, service_endpoints=MappingProxyType(table))


def _set_gateway_endpoints(snap: ConfigSnapshot, u: GatewayEndpointsUpdate) -> ConfigSnapshot:
    table = dict(snap.gateway_endpoints)
    if u.endpoints:
        table[u.datacenter] = u.endpoints
    else:
        table.pop(u.datacenter, None)
    return dataclasses.replace(snap, gateway_endpoints=MappingProxyType(table))


def _set_services(snap: ConfigSnapshot, u: ServicesUpdate) -> ConfigSnapshot:
    table = {
        (svc, dc): eps
        for (svc, dc), eps in snap.service_endpoints.items()
        if dc != snap.local_dc or svc in u.services
    }
    return dataclasses.replace(snap, service_endpoints=MappingProxyType(table))


def _set_datacenters(snap: ConfigSnapshot, u: DatacentersUpdate) -> ConfigSnapshot:
    table = {dc: eps for dc, eps in snap.gateway_endpoints.items() if dc in u.datacenters}
    return dataclasses.replace(snap, gateway_endpoints=MappingProxyType(table))


def _set_upstreams(snap: ConfigSnapshot, u: UpstreamsUpdate) -> ConfigSnapshot:
    return dataclasses.replace(snap, upstreams=u.upstreams)


_Handler = Callable[[ConfigSnapshot, Any], ConfigSnapshot]
_COMMON: dict[type, _Handler] = {
    RootsUpdate: _set_roots,
    ServiceEndpointsUpdate: _set_service_endpoints,
    GatewayEndpointsUpdate: _set_gateway_endpoints,
}
_HANDLERS: Mapping[ProxyKind, Mapping[type, _Handler]] = MappingProxyType(
    {
        ProxyKind.CONNECT_PROXY: MappingProxyType(
            {**_COMMON, LeafUpdate: _set_leaf, UpstreamsUpdate: _set_upstreams}
        ),
        ProxyKind.MESH_GATEWAY: MappingProxyType(
            {**_COMMON, ServicesUpdate: _set_services, DatacentersUpdate: _set_datacenters}
        ),
    }
)


def handle_update(snap: ConfigSnapshot, update: Update) -> ConfigSnapshot:
    """Apply one update to a snapshot of its kind; returns the new snapshot."""
    handler = _HANDLERS[snap.kind].get(type(update))
    if handler is None:
        raise InvalidRequest(
            f"{snap.kind.value} {snap.proxy_id!r} does not take {type(update).__name__}"
        )
    return handler(snap, update)
