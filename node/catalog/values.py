"""Catalog values: service and check definitions and what a node replicates.

Rule: every value here is frozen; raw mappings become values only through ``parse``.
Replicated records (``ServiceInstance``, ``CheckState``, ``NodeRecord``) cross the wire
only through ``to_wire``/``from_wire``; ``from_wire`` raises ``RemoteProtocolError`` on
anything malformed, and a peer's service is validated exactly as a registration is.
``to_raw`` gives the snake_case form ``parse`` reads back into an equal value (used for
persistence). Durations are float seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

from node.catalog.wire import wire_float, wire_list, wire_map, wire_str, wire_str_map, wire_strs
from node.errors import InvalidRequest, RemoteProtocolError
from node.frozen import thaw

__all__ = [
    "ServiceKind",
    "MeshGatewayMode",
    "Health",
    "CheckKind",
    "TaggedAddress",
    "Weights",
    "Upstream",
    "ProxyConfig",
    "CheckDefinition",
    "SidecarSpec",
    "ServiceDefinition",
    "ServiceInstance",
    "CheckState",
    "NodeRecord",
    "DEFAULT_CHECK_TIMEOUT",
    "DEFAULT_OUTPUT_MAX_SIZE",
    "SERF_CHECK_ID",
    "format_duration",
    "aggregate_health",
    "EMPTY_MAP",
]

#: Timeout of TCP/HTTP checks that do not set one (Consul: 10s).
DEFAULT_CHECK_TIMEOUT = 10.0
#: Check output kept per check (Consul ``check_output_max_size`` default).
DEFAULT_OUTPUT_MAX_SIZE = 4096
#: The node-level check every node carries, driven by gossip membership.
SERF_CHECK_ID = "serfHealth"


EMPTY_MAP: Mapping[str, Any] = MappingProxyType({})


def _empty_map() -> Mapping[str, Any]:
    # dataclasses refuse a mappingproxy as a plain default (it is unhashable).
    return EMPTY_MAP


class ServiceKind(StrEnum):
    """What a registered service is (Consul ``ServiceKind``)."""

    TYPICAL = ""
    CONNECT_PROXY = "connect-proxy"
    MESH_GATEWAY = "mesh-gateway"


class MeshGatewayMode(StrEnum):
    """How an upstream reaches another datacenter; ``DEFAULT`` means "inherit"."""

    DEFAULT = ""
    NONE = "none"
    LOCAL = "local"
    REMOTE = "remote"


class Health(StrEnum):
    """Status of a check, or the aggregate of several."""

    PASSING = "passing"
    WARNING = "warning"
    CRITICAL = "critical"
    MAINTENANCE = "maintenance"


class CheckKind(StrEnum):
    """The check types meshnode runs (Consul ``CheckType.Type()``); ``SERF`` is gossip-driven."""

    TCP = "tcp"
    HTTP = "http"
    TTL = "ttl"
    ALIAS = "alias"
    SERF = "serf"
    #: A command run every interval (``args``); its exit code is the status.
    SCRIPT = "script"
    #: Node or service maintenance mode: always critical, never run (``maintenance``).
    MAINTENANCE = "maintenance"


# Worst first: the aggregate of several checks is the worst of them (Consul api.AggregatedStatus).
_HEALTH_RANK = {Health.PASSING: 0, Health.WARNING: 1, Health.CRITICAL: 2, Health.MAINTENANCE: 3}


def aggregate_health(statuses: Iterable[Health]) -> Health:
    """The worst of ``statuses`` (maintenance > critical > warning > passing); passing if none."""
    worst = Health.PASSING
    for status in statuses:
        if _HEALTH_RANK[status] > _HEALTH_RANK[worst]:
            worst = status
    return worst


@dataclass(frozen=True, slots=True, kw_only=True)
class TaggedAddress:
    """A service's extra address (Consul ``ServiceAddress``), e.g. ``lan`` or ``wan``."""

    address: str
    port: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Weights:
    """DNS weights (Consul ``Weights``); kept and served, not otherwise used."""

    passing: int = 1
    warning: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Upstream:
    """One upstream of a connect proxy: a local listener that reaches a service."""

    destination_type: str = "service"
    destination_name: str
    destination_namespace: str = ""
    datacenter: str = ""
    local_bind_address: str = "127.0.0.1"
    local_bind_port: int
    mesh_gateway: MeshGatewayMode = MeshGatewayMode.DEFAULT
    config: Mapping[str, Any] = field(default_factory=_empty_map)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyConfig:
    """The ``Proxy`` block of a connect-proxy or mesh-gateway registration."""

    destination_service_name: str = ""
    destination_service_id: str = ""
    local_service_address: str = ""
    local_service_port: int = 0
    upstreams: tuple[Upstream, ...] = ()
    mesh_gateway: MeshGatewayMode = MeshGatewayMode.DEFAULT
    config: Mapping[str, Any] = field(default_factory=_empty_map)
    #: Consul 1.6 ``Expose`` block, kept verbatim (meshnode does not expose paths).
    expose: Mapping[str, Any] = field(default_factory=_empty_map)


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckDefinition:
    """A health check as registered: what to probe, how often, and its initial status."""

    id: str
    name: str
    service_id: str = ""
    kind: CheckKind
    tcp: str = ""
    http: str = ""
    method: str = ""
    header: Mapping[str, tuple[str, ...]] = field(default_factory=_empty_map)
    tls_skip_verify: bool = False
    alias_service: str = ""
    alias_node: str = ""
    interval: float = 0.0
    timeout: float = 0.0
    ttl: float = 0.0
    deregister_critical_service_after: float = 0.0
    status: Health = Health.CRITICAL
    notes: str = ""
    output_max_size: int = DEFAULT_OUTPUT_MAX_SIZE

    @property
    def effective_timeout(self) -> float:
        """Timeout for one TCP/HTTP probe (Consul default 10s)."""
        return self.timeout if self.timeout > 0 else DEFAULT_CHECK_TIMEOUT

    def to_raw(self) -> dict[str, Any]:
        """A snake_case mapping that ``parse_check`` turns back into an equal value."""
        raw: dict[str, Any] = {"id": self.id, "name": self.name, "status": str(self.status)}
        for key in ("service_id", "tcp", "http", "method", "alias_service", "alias_node", "notes"):
            if getattr(self, key):
                raw[key] = getattr(self, key)
        for key in ("interval", "timeout", "ttl", "deregister_critical_service_after"):
            if getattr(self, key):
                raw[key] = format_duration(getattr(self, key))
        if self.header:
            raw["header"] = {k: list(v) for k, v in self.header.items()}
        if self.tls_skip_verify:
            raw["tls_skip_verify"] = True
        if self.output_max_size != DEFAULT_OUTPUT_MAX_SIZE:
            raw["output_max_size"] = self.output_max_size
        return raw


@dataclass(frozen=True, slots=True, kw_only=True)
class SidecarSpec:
    """The content of ``connect { sidecar_service { } }``; unset fields take Consul's defaults."""

    name: str = ""
    kind: ServiceKind = ServiceKind.CONNECT_PROXY
    tags: tuple[str, ...] = ()
    meta: Mapping[str, str] = field(default_factory=_empty_map)
    address: str = ""
    port: int = 0
    tagged_addresses: Mapping[str, TaggedAddress] = field(default_factory=_empty_map)
    weights: Weights | None = None
    enable_tag_override: bool = False
    proxy: ProxyConfig | None = None
    #: Raw check mappings, parsed with IDs only once the sidecar's ID is known.
    checks: tuple[CheckDefinition, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceDefinition:
    """A service registration after parsing and validation (Consul ``ServiceDefinition``)."""

    id: str
    name: str
    kind: ServiceKind = ServiceKind.TYPICAL
    tags: tuple[str, ...] = ()
    meta: Mapping[str, str] = field(default_factory=_empty_map)
    address: str = ""
    port: int = 0
    tagged_addresses: Mapping[str, TaggedAddress] = field(default_factory=_empty_map)
    weights: Weights = field(default_factory=Weights)
    enable_tag_override: bool = False
    proxy: ProxyConfig | None = None
    connect_native: bool = False
    sidecar: SidecarSpec | None = None
    checks: tuple[CheckDefinition, ...] = ()

    def instance(self) -> ServiceInstance:
        """The catalog entry for this definition (no checks, no sidecar sugar)."""
        # Every ServiceInstance field is a ServiceDefinition field of the same name.
        return ServiceInstance(**{name: getattr(self, name) for name in _INSTANCE_FIELDS})

    def to_raw(self) -> dict[str, Any]:
        """A snake_case mapping that ``parse_service`` turns back into an equal value.

        Used for persistence; a definition with a ``sidecar`` is expanded before it is
        stored, so the sugar is not written out.
        """
        if self.sidecar is not None:
            raise ValueError("expand the sidecar before serialising a ServiceDefinition")
        raw = self.instance().to_wire()
        raw["checks"] = [check.to_raw() for check in self.checks]
        return raw


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceInstance:
    """A service as the catalog replicates and serves it."""

    id: str
    name: str
    kind: ServiceKind = ServiceKind.TYPICAL
    tags: tuple[str, ...] = ()
    meta: Mapping[str, str] = field(default_factory=_empty_map)
    address: str = ""
    port: int = 0
    tagged_addresses: Mapping[str, TaggedAddress] = field(default_factory=_empty_map)
    weights: Weights = field(default_factory=Weights)
    enable_tag_override: bool = False
    proxy: ProxyConfig | None = None
    connect_native: bool = False

    def connect_target(self) -> str | None:
        """The service name this instance accepts Connect traffic for, lowercased, if any."""
        if self.kind is ServiceKind.CONNECT_PROXY and self.proxy is not None:
            return self.proxy.destination_service_name.lower()
        if self.connect_native:
            return self.name.lower()
        return None

    def to_wire(self) -> dict[str, Any]:
        """A plain msgpack-able dict (snake_case keys, also accepted by ``parse_service``)."""
        raw: dict[str, Any] = {"id": self.id, "name": self.name}
        if self.kind is not ServiceKind.TYPICAL:
            raw["kind"] = str(self.kind)
        if self.tags:
            raw["tags"] = list(self.tags)
        if self.meta:
            raw["meta"] = dict(self.meta)
        if self.address:
            raw["address"] = self.address
        if self.port:
            raw["port"] = self.port
        if self.tagged_addresses:
            raw["tagged_addresses"] = {
                k: {"address": v.address, "port": v.port} for k, v in self.tagged_addresses.items()
            }
        if self.weights != Weights():
            raw["weights"] = {"passing": self.weights.passing, "warning": self.weights.warning}
        if self.enable_tag_override:
            raw["enable_tag_override"] = True
        if self.proxy is not None:
            raw["proxy"] = _proxy_to_raw(self.proxy)
        if self.connect_native:
            raw["connect"] = {"native": True}
        return raw

    @classmethod
    def from_wire(cls, raw: object) -> ServiceInstance:
        """Decode ``to_wire`` output from a peer; ``RemoteProtocolError`` on anything bad."""
        if not isinstance(raw, Mapping) or "checks" in raw or "check" in raw:
            raise RemoteProtocolError("service instance: expected an object without checks")
        # parse imports this module; importing it at call time keeps the two from a cycle.
        from node.catalog.parse import parse_service

        try:
            return parse_service(raw).instance()
        except InvalidRequest as exc:
            raise RemoteProtocolError(f"service instance: {exc}") from exc


#: The fields ``ServiceDefinition.instance`` copies (all of ServiceInstance's).
_INSTANCE_FIELDS: Final = tuple(f.name for f in fields(ServiceInstance))


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckState:
    """A check as the catalog replicates and serves it: definition summary plus status."""

    id: str
    name: str
    kind: CheckKind
    status: Health
    output: str = ""
    notes: str = ""
    service_id: str = ""
    service_name: str = ""
    service_tags: tuple[str, ...] = ()
    interval: float = 0.0
    timeout: float = 0.0

    def to_wire(self) -> dict[str, Any]:
        """A plain msgpack-able dict."""
        return {
            "id": self.id,
            "name": self.name,
            "kind": str(self.kind),
            "status": str(self.status),
            "output": self.output,
            "notes": self.notes,
            "service_id": self.service_id,
            "service_name": self.service_name,
            "service_tags": list(self.service_tags),
            "interval": self.interval,
            "timeout": self.timeout,
        }

    @classmethod
    def from_wire(cls, raw: object) -> CheckState:
        """Decode ``to_wire`` output from a peer; ``RemoteProtocolError`` on anything bad."""
        data = wire_map(raw, "check", 11)
        try:
            return cls(
                id=wire_str(data, "id"),
                name=wire_str(data, "name"),
                kind=CheckKind(wire_str(data, "kind")),
                status=Health(wire_str(data, "status")),
                output=wire_str(data, "output"),
                notes=wire_str(data, "notes"),
                service_id=wire_str(data, "service_id"),
                service_name=wire_str(data, "service_name"),
                service_tags=wire_strs(data, "service_tags"),
                interval=wire_float(data, "interval"),
                timeout=wire_float(data, "timeout"),
            )
        except ValueError as exc:
            raise RemoteProtocolError(f"check: {exc}") from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeRecord:
    """Everything one node publishes about itself; the unit of catalog replication.

    ``version`` grows with every change its owner makes; a replica keeps the highest.
    """

    name: str
    node_id: str = ""
    address: str = ""
    datacenter: str = ""
    tagged_addresses: Mapping[str, str] = field(default_factory=_empty_map)
    meta: Mapping[str, str] = field(default_factory=_empty_map)
    services: Mapping[str, ServiceInstance] = field(default_factory=_empty_map)
    checks: Mapping[str, CheckState] = field(default_factory=_empty_map)
    version: int = 0

    def to_wire(self) -> dict[str, Any]:
        """A plain msgpack-able dict."""
        return {
            "name": self.name,
            "node_id": self.node_id,
            "address": self.address,
            "datacenter": self.datacenter,
            "tagged_addresses": dict(self.tagged_addresses),
            "meta": dict(self.meta),
            "services": [svc.to_wire() for svc in self.services.values()],
            "checks": [chk.to_wire() for chk in self.checks.values()],
            "version": self.version,
        }

    @classmethod
    def from_wire(cls, raw: object) -> NodeRecord:
        """Decode ``to_wire`` output from a peer; ``RemoteProtocolError`` on anything bad."""
        data = wire_map(raw, "node record", 9)
        services = wire_list(data, "services")
        checks = wire_list(data, "checks")
        svc_values = [ServiceInstance.from_wire(item) for item in services]
        chk_values = [CheckState.from_wire(item) for item in checks]
        version = data.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise RemoteProtocolError("node record: version must be a non-negative integer")
        name = wire_str(data, "name")
        if not name:
            raise RemoteProtocolError("node record: empty node name")
        return cls(
            name=name,
            node_id=wire_str(data, "node_id"),
            address=wire_str(data, "address"),
            datacenter=wire_str(data, "datacenter"),
            tagged_addresses=wire_str_map(data, "tagged_addresses"),
            meta=wire_str_map(data, "meta"),
            services=MappingProxyType({s.id: s for s in svc_values}),
            checks=MappingProxyType({c.id: c for c in chk_values}),
            version=version,
        )


def _proxy_to_raw(proxy: ProxyConfig) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for key in ("destination_service_name", "destination_service_id", "local_service_address"):
        if getattr(proxy, key):
            raw[key] = getattr(proxy, key)
    if proxy.local_service_port:
        raw["local_service_port"] = proxy.local_service_port
    if proxy.upstreams:
        raw["upstreams"] = [_upstream_to_raw(u) for u in proxy.upstreams]
    if proxy.mesh_gateway:
        raw["mesh_gateway"] = {"mode": str(proxy.mesh_gateway)}
    if proxy.config:
        raw["config"] = thaw(proxy.config)
    if proxy.expose:
        raw["expose"] = thaw(proxy.expose)
    return raw


def _upstream_to_raw(up: Upstream) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "destination_type": up.destination_type,
        "destination_name": up.destination_name,
        "local_bind_address": up.local_bind_address,
        "local_bind_port": up.local_bind_port,
    }
    if up.destination_namespace:
        raw["destination_namespace"] = up.destination_namespace
    if up.datacenter:
        raw["datacenter"] = up.datacenter
    if up.mesh_gateway:
        raw["mesh_gateway"] = {"mode": str(up.mesh_gateway)}
    if up.config:
        raw["config"] = thaw(up.config)
    return raw


def format_duration(seconds: float) -> str:
    """Render seconds as a Go duration string that the parsers read back exactly."""
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{seconds!r}s"
