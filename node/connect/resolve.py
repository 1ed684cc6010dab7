"""Which mesh-gateway mode each upstream of a connect proxy uses, and why.

Rule: the mode of an upstream is decided here and nowhere else, by the first level that
sets one (``MeshGatewayMode.DEFAULT`` means "not set, ask the next level")::

    1. "upstream"          the upstream's own ``mesh_gateway``
    2. "proxy"             the proxy registration's ``proxy.mesh_gateway``
    3. "service-defaults"  the service-defaults entry of the proxy's *destination service*
    4. "proxy-defaults"    the proxy-defaults ``global`` entry
    5. "default"           nothing set: ``none`` (dial the target's instances directly)

Levels 3 and 4 apply only with ``enable_central_service_config``. Level 3 is keyed by the
proxy's ``destination_service_name`` (the local service), as Consul 1.6's agent does it
(``service_manager.go``: ``ResolveServiceConfig{Name: Proxy.DestinationServiceName}``, the
documented "gateways for all Connect services with the name web"). Consul's servers also
consult the *target's* service-defaults while compiling the discovery chain; meshnode
leaves that out so the answer has one documented order.

Whether a gateway is actually used also depends on the
target datacenter: the same datacenter never goes through one (``same_datacenter``).

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from node.catalog.values import MeshGatewayMode, ServiceDefinition, ServiceKind, Upstream
from node.connect.entries import (
    PROXY_CONFIG_GLOBAL,
    PROXY_DEFAULTS,
    SERVICE_DEFAULTS,
    ConfigEntry,
    ProxyDefaults,
    ServiceDefaults,
)
from node.errors import InvalidRequest

__all__ = ["DecidedBy", "ResolvedUpstream", "resolve_upstreams"]


class DecidedBy(StrEnum):
    """The level that set an upstream's mode."""

    UPSTREAM = "upstream"
    PROXY = "proxy"
    SERVICE_DEFAULTS = "service-defaults"
    PROXY_DEFAULTS = "proxy-defaults"
    DEFAULT = "default"


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedUpstream:
    """An upstream with its resolved mode and the level that decided it."""

    upstream: Upstream
    mode: MeshGatewayMode
    decided_by: DecidedBy
    same_datacenter: bool

    @property
    def uses_gateway(self) -> bool:
        """True when traffic goes through a mesh gateway (another DC, mode local/remote)."""
        return not self.same_datacenter and self.mode in (
            MeshGatewayMode.LOCAL,
            MeshGatewayMode.REMOTE,
        )


def _central_levels(
    proxy_service: str, entries: Mapping[tuple[str, str], ConfigEntry]
) -> list[tuple[MeshGatewayMode, DecidedBy]]:
    service = entries.get((SERVICE_DEFAULTS, proxy_service))
    glob = entries.get((PROXY_DEFAULTS, PROXY_CONFIG_GLOBAL))
    levels: list[tuple[MeshGatewayMode, DecidedBy]] = []
    if isinstance(service, ServiceDefaults):
        levels.append((service.mesh_gateway, DecidedBy.SERVICE_DEFAULTS))
    if isinstance(glob, ProxyDefaults):
        levels.append((glob.mesh_gateway, DecidedBy.PROXY_DEFAULTS))
    return levels


def _first_set(
    levels: list[tuple[MeshGatewayMode, DecidedBy]],
) -> tuple[MeshGatewayMode, DecidedBy]:
    for mode, level in levels:
        if mode is not MeshGatewayMode.DEFAULT:
            return mode, level
    return MeshGatewayMode.NONE, DecidedBy.DEFAULT


def resolve_upstreams(
    proxy: ServiceDefinition,
    entries: Mapping[tuple[str, str], ConfigEntry],
    central_config: bool,
    *,
    local_datacenter: str = "",
) -> tuple[ResolvedUpstream, ...]:
    """Resolve every upstream of a connect-proxy registration, in declaration order.

    ``entries`` maps ``(kind, name)`` to config entries (the global state's view);
    ``central_config`` is the agent's ``enable_central_service_config``.
    """
    if proxy.kind is not ServiceKind.CONNECT_PROXY or proxy.proxy is None:
        raise InvalidRequest(
            f"service {proxy.id!r} is not a connect-proxy; only proxies have upstreams"
        )
    conf = proxy.proxy
    central = _central_levels(conf.destination_service_name, entries) if central_config else []
    inherited = [(conf.mesh_gateway, DecidedBy.PROXY), *central]
    out = []
    for up in conf.upstreams:
        mode, level = _first_set([(up.mesh_gateway, DecidedBy.UPSTREAM), *inherited])
        same = up.datacenter in ("", local_datacenter)
        out.append(ResolvedUpstream(upstream=up, mode=mode, decided_by=level, same_datacenter=same))
    return tuple(out)
