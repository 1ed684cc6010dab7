"""Catalog values: service and check definitions, what a node replicates, and their parsers.

Rule: every value here is frozen and every raw mapping (HTTP JSON, config file, persisted
file) becomes one only through ``parse_service`` / ``parse_check``, which apply Consul 1.6's
validation (``agent/structs/structs.go:NodeService.Validate``, ``check_type.go:Validate``,
``agent/agent_endpoint.go:AgentRegisterService``) and reject unknown keys. Keys may be
snake_case, PascalCase or any other casing (Go's JSON decoder is case-insensitive); a
``None`` value means "not given". Replicated records (``ServiceInstance``, ``CheckState``,
``NodeRecord``) cross the wire only through ``to_wire``/``from_wire``; ``from_wire`` raises
``RemoteProtocolError`` on anything malformed. Durations are float seconds.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

from node.config.duration import parse_go_duration
from node.errors import InvalidRequest, RemoteProtocolError
from node.frozen import freeze, thaw

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
    "SidecarPorts",
    "SIDECAR_MIN_PORT",
    "SIDECAR_MAX_PORT",
    "DEFAULT_CHECK_TIMEOUT",
    "DEFAULT_OUTPUT_MAX_SIZE",
    "SERF_CHECK_ID",
    "parse_mesh_gateway_mode",
    "parse_service",
    "parse_check",
    "parse_duration",
    "format_duration",
    "expand_sidecar",
    "sidecar_id_for",
    "aggregate_health",
    "EMPTY_MAP",
]

#: Consul's default ``sidecar_min_port`` / ``sidecar_max_port`` (inclusive).
SIDECAR_MIN_PORT = 21000
SIDECAR_MAX_PORT = 21255
#: Timeout of TCP/HTTP checks that do not set one (Consul: 10s).
DEFAULT_CHECK_TIMEOUT = 10.0
#: Check output kept per check (Consul ``check_output_max_size`` default).
DEFAULT_OUTPUT_MAX_SIZE = 4096
#: The node-level check every node carries, driven by gossip membership.
SERF_CHECK_ID = "serfHealth"
# Consul's meta limits (agent/structs/structs.go: metaKeyMaxLength etc.).
_META_MAX_PAIRS = 64
_META_KEY_MAX = 128
_META_VALUE_MAX = 512
_META_KEY_RE = re.compile(r"^[a-zA-Z0-9_-]+$")

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


# Worst first: the aggregate of several checks is the worst of them (Consul api.AggregatedStatus).
_HEALTH_RANK = {Health.PASSING: 0, Health.WARNING: 1, Health.CRITICAL: 2, Health.MAINTENANCE: 3}


def aggregate_health(statuses: Iterable[Health]) -> Health:
    """The worst of ``statuses`` (maintenance > critical > warning > passing); passing if none."""
    worst = Health.PASSING
    for status in statuses:
        if _HEALTH_RANK[status] > _HEALTH_RANK[worst]:
            worst = status
    return worst


# ----------------------------------------------------------------------------- values


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
        data = _wire_map(raw, "check", 11)
        try:
            return cls(
                id=_wire_str(data, "id"),
                name=_wire_str(data, "name"),
                kind=CheckKind(_wire_str(data, "kind")),
                status=Health(_wire_str(data, "status")),
                output=_wire_str(data, "output"),
                notes=_wire_str(data, "notes"),
                service_id=_wire_str(data, "service_id"),
                service_name=_wire_str(data, "service_name"),
                service_tags=_wire_strs(data, "service_tags"),
                interval=_wire_float(data, "interval"),
                timeout=_wire_float(data, "timeout"),
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
        data = _wire_map(raw, "node record", 9)
        services = _wire_list(data, "services")
        checks = _wire_list(data, "checks")
        svc_values = [ServiceInstance.from_wire(item) for item in services]
        chk_values = [CheckState.from_wire(item) for item in checks]
        version = data.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise RemoteProtocolError("node record: version must be a non-negative integer")
        name = _wire_str(data, "name")
        if not name:
            raise RemoteProtocolError("node record: empty node name")
        return cls(
            name=name,
            node_id=_wire_str(data, "node_id"),
            address=_wire_str(data, "address"),
            datacenter=_wire_str(data, "datacenter"),
            tagged_addresses=_wire_str_map(data, "tagged_addresses"),
            meta=_wire_str_map(data, "meta"),
            services=MappingProxyType({s.id: s for s in svc_values}),
            checks=MappingProxyType({c.id: c for c in chk_values}),
            version=version,
        )


# ----------------------------------------------------------------------------- wire helpers


def _wire_map(raw: object, what: str, max_keys: int) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping) or len(raw) > max_keys:
        raise RemoteProtocolError(f"{what}: expected an object")
    return raw


def _wire_str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise RemoteProtocolError(f"{key}: expected a string")
    return value


def _wire_float(data: Mapping[str, Any], key: str) -> float:
    value = data.get(key, 0.0)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise RemoteProtocolError(f"{key}: expected a number")
    return float(value)


def _wire_strs(data: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = _wire_list(data, key)
    if not all(isinstance(v, str) for v in value):
        raise RemoteProtocolError(f"{key}: expected a list of strings")
    return tuple(value)


def _wire_list(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list | tuple):
        raise RemoteProtocolError(f"{key}: expected a list")
    return list(value)


def _wire_str_map(data: Mapping[str, Any], key: str) -> Mapping[str, str]:
    value = data.get(key, {})
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise RemoteProtocolError(f"{key}: expected a map of strings")
    return MappingProxyType(dict(value))


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


# ----------------------------------------------------------------------------- durations


def parse_duration(value: object, *, field: str) -> float:
    """Parse a Go duration ("10s", "1m30s", "500ms") or a number of nanoseconds into seconds.

    Numbers are nanoseconds because that is what Consul's JSON decoder does with them.
    """
    if isinstance(value, bool):
        raise InvalidRequest(f"{field}: expected a duration, got a boolean", field=field)
    if isinstance(value, int | float):
        seconds = float(value) * 1e-9
    elif isinstance(value, str):
        seconds = _parse_go_duration(value.strip(), field)
    else:
        raise InvalidRequest(
            f'{field}: expected a duration such as "10s", got {_type_name(value)}', field=field
        )
    if seconds < 0:
        raise InvalidRequest(f"{field}: duration must not be negative", field=field)
    return seconds


def _parse_go_duration(text: str, field: str) -> float:
    try:
        return parse_go_duration(text)
    except ValueError:
        raise InvalidRequest(
            f'{field}: invalid duration "{text}" (expected e.g. "10s", "1m30s", "500ms")',
            field=field,
        ) from None


def format_duration(seconds: float) -> str:
    """Render seconds as a Go duration string that ``parse_duration`` reads back exactly."""
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{seconds!r}s"


# ----------------------------------------------------------------------------- raw reader


def _canon(key: str) -> str:
    # Go's JSON decoder matches field names case-insensitively; config files use snake_case.
    return key.replace("_", "").replace("-", "").lower()


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f'a string ("{value}")'
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def _unwrap_block(value: object) -> object:
    # HCL parsers deliver a single block as a one-element list of objects.
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], Mapping):
        return value[0]
    return value


class _Raw:
    """A raw mapping being read: canonicalises keys, rejects unknown ones, reads typed values."""

    __slots__ = ("_path", "_values")

    def __init__(self, raw: object, path: str, fields: Iterable[str], aliases: Mapping[str, str]):
        raw = _unwrap_block(raw)
        where = path or "request body"
        if not isinstance(raw, Mapping):
            raise InvalidRequest(
                f"{where}: expected an object, got {_type_name(raw)}", field=path or None
            )
        names = {_canon(name): name for name in fields}
        names.update({_canon(alias): name for alias, name in aliases.items()})
        self._path = path
        self._values: dict[str, Any] = {}
        for key, value in raw.items():
            self._take(str(key), value, names)

    def _take(self, key: str, value: object, names: Mapping[str, str]) -> None:
        name = names.get(_canon(key))
        if name is None:
            hint = difflib.get_close_matches(_canon(key), list(names), n=1)
            suggestion = f' (did you mean "{names[hint[0]]}"?)' if hint else ""
            where = f" in {self._path}" if self._path else ""
            raise InvalidRequest(f'Unknown field "{key}"{where}{suggestion}', field=self.path(key))
        if value is None:
            return
        if name in self._values:
            raise InvalidRequest(f'Field "{key}" is given twice', field=self.path(name))
        self._values[name] = value

    def path(self, name: str) -> str:
        """The dotted path of field ``name`` for error messages."""
        return f"{self._path}.{name}" if self._path else name

    def has(self, name: str) -> bool:
        """Whether the field was given (and not null)."""
        return name in self._values

    def raw(self, name: str) -> Any:
        """The untouched value, or None."""
        return self._values.get(name)

    def error(self, name: str, expected: str) -> InvalidRequest:
        """An error for a field of the wrong type."""
        got = _type_name(self._values.get(name))
        return InvalidRequest(
            f"{self.path(name)}: expected {expected}, got {got}", field=self.path(name)
        )

    def get_str(self, name: str, default: str = "") -> str:
        value = self._values.get(name, default)
        if not isinstance(value, str):
            raise self.error(name, "a string")
        return value

    def get_bool(self, name: str) -> bool:
        value = self._values.get(name, False)
        if not isinstance(value, bool):
            raise self.error(name, "a boolean")
        return value

    def get_int(self, name: str, default: int = 0, *, lo: int = 0, hi: int = 2**31 - 1) -> int:
        value = self._values.get(name, default)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.error(name, "an integer")
        if not lo <= value <= hi:
            raise InvalidRequest(
                f"{self.path(name)}: {value} is out of range [{lo}, {hi}]", field=self.path(name)
            )
        return value

    def duration(self, name: str) -> float:
        return parse_duration(self._values[name], field=self.path(name)) if self.has(name) else 0.0

    def str_list(self, name: str) -> tuple[str, ...]:
        value = self._values.get(name, ())
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise self.error(name, "a list of strings")
        return tuple(value)

    def str_map(self, name: str) -> Mapping[str, str]:
        value = _unwrap_block(self._values.get(name, {}))
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise self.error(name, "an object of strings")
        return MappingProxyType(dict(value))

    def opaque_map(self, name: str) -> Mapping[str, Any]:
        value = _unwrap_block(self._values.get(name, {}))
        if not isinstance(value, Mapping):
            raise self.error(name, "an object")
        try:
            frozen: Mapping[str, Any] = freeze(value)
        except ValueError as exc:
            raise self.error(name, f"JSON-like data ({exc})") from None
        return frozen

    def get_list(self, name: str) -> list[Any]:
        value = self._values.get(name, [])
        if isinstance(value, Mapping):
            return [value]  # one HCL block where a list of blocks is expected
        if not isinstance(value, list | tuple):
            raise self.error(name, "a list")
        return list(value)


# ----------------------------------------------------------------------------- parsers


def parse_mesh_gateway_mode(value: object) -> MeshGatewayMode:
    """Parse a mesh-gateway mode exactly as Consul's ``ValidateMeshGatewayMode`` does."""
    if isinstance(value, str):
        try:
            return MeshGatewayMode(value)
        except ValueError:
            pass
    raise InvalidRequest(f'Invalid Mesh Gateway Mode: "{value}"')


def _parse_mesh_gateway(raw: object, path: str) -> MeshGatewayMode:
    obj = _Raw(raw, path, ("mode",), {})
    try:
        return parse_mesh_gateway_mode(obj.get_str("mode"))
    except InvalidRequest as exc:
        raise InvalidRequest(str(exc), field=obj.path("mode")) from None


_UPSTREAM_FIELDS = (
    "destination_type",
    "destination_name",
    "destination_namespace",
    "datacenter",
    "local_bind_address",
    "local_bind_port",
    "mesh_gateway",
    "config",
)


def _parse_upstream(raw: object, path: str) -> Upstream:
    obj = _Raw(raw, path, _UPSTREAM_FIELDS, {})
    dtype = obj.get_str("destination_type") or "service"
    if dtype == "prepared_query":
        raise InvalidRequest(
            f"{obj.path('destination_type')}: prepared_query upstreams are not supported by meshnode",
            field=obj.path("destination_type"),
        )
    if dtype != "service":
        msg = f'unknown upstream destination type: "{dtype}"'
        raise InvalidRequest(f"{path}: {msg}", field=obj.path("destination_type"))
    if not obj.get_str("destination_name"):
        msg = "upstream destination name cannot be empty"
        raise InvalidRequest(f"{path}: {msg}", field=obj.path("destination_name"))
    if not obj.get_int("local_bind_port", hi=65535):
        msg = "upstream local bind port cannot be zero"
        raise InvalidRequest(f"{path}: {msg}", field=obj.path("local_bind_port"))
    mode = MeshGatewayMode.DEFAULT
    if obj.has("mesh_gateway"):
        mode = _parse_mesh_gateway(obj.raw("mesh_gateway"), obj.path("mesh_gateway"))
    return Upstream(
        destination_type=dtype,
        destination_name=obj.get_str("destination_name"),
        destination_namespace=obj.get_str("destination_namespace"),
        datacenter=obj.get_str("datacenter"),
        local_bind_address=obj.get_str("local_bind_address") or "127.0.0.1",
        local_bind_port=obj.get_int("local_bind_port", hi=65535),
        mesh_gateway=mode,
        config=obj.opaque_map("config"),
    )


_PROXY_FIELDS = (
    "destination_service_name",
    "destination_service_id",
    "local_service_address",
    "local_service_port",
    "upstreams",
    "mesh_gateway",
    "config",
    "expose",
)


def _parse_proxy(raw: object, path: str) -> ProxyConfig:
    obj = _Raw(raw, path, _PROXY_FIELDS, {})
    ups_path = obj.path("upstreams")
    upstreams = tuple(
        _parse_upstream(item, f"{ups_path}[{i}]")
        for i, item in enumerate(obj.get_list("upstreams"))
    )
    mode = MeshGatewayMode.DEFAULT
    if obj.has("mesh_gateway"):
        mode = _parse_mesh_gateway(obj.raw("mesh_gateway"), obj.path("mesh_gateway"))
    return ProxyConfig(
        destination_service_name=obj.get_str("destination_service_name"),
        destination_service_id=obj.get_str("destination_service_id"),
        local_service_address=obj.get_str("local_service_address"),
        local_service_port=obj.get_int("local_service_port", hi=65535),
        upstreams=upstreams,
        mesh_gateway=mode,
        config=obj.opaque_map("config"),
        expose=obj.opaque_map("expose"),
    )


_CHECK_FIELDS = (
    "id",
    "name",
    "service_id",
    "tcp",
    "http",
    "method",
    "header",
    "tls_skip_verify",
    "alias_service",
    "alias_node",
    "interval",
    "timeout",
    "ttl",
    "deregister_critical_service_after",
    "status",
    "notes",
    "output_max_size",
    "script_args",
    "args",
    "docker_container_id",
    "shell",
    "grpc",
    "grpc_use_tls",
    "token",
)
_CHECK_ALIASES = {"check_id": "id", "CheckID": "id"}
_UNSUPPORTED_CHECK_FIELDS = {
    "script_args": "script checks",
    "args": "script checks",
    "docker_container_id": "docker checks",
    "shell": "docker checks",
    "grpc": "gRPC checks",
    "grpc_use_tls": "gRPC checks",
}


def parse_check(raw: Mapping[str, Any], *, path: str = "") -> CheckDefinition:
    """Parse a check registration (``/v1/agent/check/register`` or a config ``check {}``).

    The ID defaults to the name, and the name is required, as in Consul.
    """
    obj = _Raw(raw, path, _CHECK_FIELDS, _CHECK_ALIASES)
    name = obj.get_str("name")
    if not name:
        raise InvalidRequest("Missing check name", field=obj.path("name"))
    return _build_check(obj, check_id=obj.get_str("id") or name, name=name)


def _parse_service_check(
    raw: object, path: str, *, service_id: str, default_name: str, default_id: str
) -> CheckDefinition:
    obj = _Raw(raw, path, _CHECK_FIELDS, _CHECK_ALIASES)
    name = obj.get_str("name") or default_name
    check = _build_check(obj, check_id=obj.get_str("id") or default_id, name=name)
    return replace(check, service_id=service_id)


def _build_check(obj: _Raw, *, check_id: str, name: str) -> CheckDefinition:
    for key, what in _UNSUPPORTED_CHECK_FIELDS.items():
        if obj.has(key):
            raise InvalidRequest(
                f"{obj.path(key)}: {what} are not supported by meshnode "
                "(use tcp, http, ttl or alias_service)",
                field=obj.path(key),
            )
    kind = _check_kind(obj)
    status = Health.CRITICAL
    if obj.get_str("status"):
        status = _parse_status(obj.get_str("status"), obj.path("status"))
    return CheckDefinition(
        id=check_id,
        name=name,
        service_id=obj.get_str("service_id"),
        kind=kind,
        tcp=obj.get_str("tcp"),
        http=obj.get_str("http"),
        method=obj.get_str("method").upper(),
        header=_parse_header(obj),
        tls_skip_verify=obj.get_bool("tls_skip_verify"),
        alias_service=obj.get_str("alias_service"),
        alias_node=obj.get_str("alias_node"),
        interval=obj.duration("interval"),
        timeout=obj.duration("timeout"),
        ttl=obj.duration("ttl"),
        deregister_critical_service_after=obj.duration("deregister_critical_service_after"),
        status=status,
        notes=obj.get_str("notes"),
        output_max_size=obj.get_int("output_max_size", DEFAULT_OUTPUT_MAX_SIZE, lo=1),
    )


def _parse_status(value: str, path: str) -> Health:
    if value not in (Health.PASSING, Health.WARNING, Health.CRITICAL):
        raise InvalidRequest("Status for checks must 'passing', 'warning', 'critical'", field=path)
    return Health(value)


def _check_kind(obj: _Raw) -> CheckKind:
    """Consul ``CheckType.Validate`` + ``Type()`` for the kinds meshnode runs."""
    interval, ttl = obj.duration("interval"), obj.duration("ttl")
    interval_check = bool(obj.get_str("http") or obj.get_str("tcp"))
    alias = bool(obj.get_str("alias_service") or obj.get_str("alias_node"))
    rules: tuple[tuple[bool, str, str], ...] = (
        (interval > 0 and ttl > 0, "Interval and TTL cannot both be specified", "ttl"),
        (
            interval_check and interval <= 0,
            "Interval must be > 0 for Script, HTTP, or TCP checks",
            "interval",
        ),
        (interval_check and alias, "Interval cannot be set for Alias checks", "alias_service"),
        (alias and ttl > 0, "TTL must be not be set for Alias checks", "ttl"),
        (not interval_check and not alias and ttl <= 0, "TTL must be > 0 for TTL checks", "ttl"),
        (
            bool(obj.get_str("http") and obj.get_str("tcp")),
            "Only one of HTTP or TCP may be set",
            "tcp",
        ),
    )
    for failed, message, key in rules:
        if failed:
            raise InvalidRequest(f"Invalid check: {message}", field=obj.path(key))
    if obj.get_str("tcp"):
        _check_host_port(obj.get_str("tcp"), obj.path("tcp"))
        return CheckKind.TCP
    if obj.get_str("http"):
        if not re.match(r"^https?://[^/\s]+", obj.get_str("http")):
            raise InvalidRequest(
                f'{obj.path("http")}: "{obj.get_str("http")}" is not an http:// or https:// URL',
                field=obj.path("http"),
            )
        return CheckKind.HTTP
    return CheckKind.ALIAS if alias else CheckKind.TTL


def _check_host_port(value: str, path: str) -> None:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidRequest(f'{path}: "{value}" is not a host:port address', field=path)


def _parse_header(obj: _Raw) -> Mapping[str, tuple[str, ...]]:
    value = _unwrap_block(obj.raw("header") or {})
    if not isinstance(value, Mapping):
        raise obj.error("header", "an object of string lists")
    out: dict[str, tuple[str, ...]] = {}
    for key, values in value.items():
        items = [values] if isinstance(values, str) else values
        if not isinstance(items, list | tuple) or not all(isinstance(v, str) for v in items):
            raise obj.error("header", "an object of string lists")
        out[str(key)] = tuple(items)
    return MappingProxyType(out)


_SERVICE_FIELDS = (
    "id",
    "name",
    "kind",
    "tags",
    "meta",
    "address",
    "port",
    "tagged_addresses",
    "weights",
    "enable_tag_override",
    "proxy",
    "connect",
    "check",
    "checks",
    "token",
    "namespace",
)
_SIDECAR_FIELDS = tuple(f for f in _SERVICE_FIELDS if f != "namespace")


def parse_service(raw: Mapping[str, Any], *, path: str = "") -> ServiceDefinition:
    """Parse and validate a service registration (HTTP JSON, config file or persisted form).

    Raises ``InvalidRequest`` naming the first offending field; nothing is partially built.
    """
    obj = _Raw(raw, path, _SERVICE_FIELDS, {"service_id": "id"})
    name = obj.get_str("name")
    if not name:
        raise InvalidRequest("Missing service name", field=obj.path("name"))
    if obj.get_str("namespace") not in ("", "default"):
        raise InvalidRequest(
            f'{obj.path("namespace")}: only the "default" namespace exists',
            field=obj.path("namespace"),
        )
    svc_id = obj.get_str("id") or name
    common = _parse_common(obj)
    connect = _Raw(
        obj.raw("connect") or {}, obj.path("connect"), ("native", "sidecar_service", "proxy"), {}
    )
    if connect.has("proxy"):
        raise InvalidRequest(
            f"{connect.path('proxy')}: managed proxies were removed in Consul 1.6; use sidecar_service",
            field=connect.path("proxy"),
        )
    sidecar = None
    if connect.has("sidecar_service"):
        sidecar = _parse_sidecar(connect.raw("sidecar_service"), connect.path("sidecar_service"))
    checks = _parse_service_checks(obj, service_id=svc_id, service_name=name)
    service = ServiceDefinition(
        id=svc_id, name=name, connect_native=connect.get_bool("native"), sidecar=sidecar,
        checks=checks, **common,
    )  # fmt: skip
    _validate_service(service, obj)
    return service


def _parse_common(obj: _Raw) -> dict[str, Any]:
    """Fields shared by a service and its sidecar spec, with Consul's per-field rules."""
    kind_text = obj.get_str("kind")
    try:
        kind = ServiceKind(kind_text)
    except ValueError:
        raise InvalidRequest(
            f'{obj.path("kind")}: unknown service kind "{kind_text}" '
            '(expected "", "connect-proxy" or "mesh-gateway")',
            field=obj.path("kind"),
        ) from None
    address = obj.get_str("address")
    if _is_any_address(address):
        raise InvalidRequest("Invalid service address", field=obj.path("address"))
    proxy = None
    if obj.has("proxy"):
        proxy = _parse_proxy(obj.raw("proxy"), obj.path("proxy"))
    return {
        "kind": kind,
        "tags": obj.str_list("tags"),
        "meta": _validate_meta(obj.str_map("meta"), obj.path("meta")),
        "address": address,
        "port": obj.get_int("port", hi=65535),
        "tagged_addresses": _parse_tagged(obj),
        "weights": _parse_weights(obj),
        "enable_tag_override": obj.get_bool("enable_tag_override"),
        "proxy": proxy,
    }


def _is_any_address(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.strip("[]")).is_unspecified
    except ValueError:
        return False


def _validate_meta(meta: Mapping[str, str], path: str) -> Mapping[str, str]:
    """Consul ``ValidateMetadata`` (the ``consul-`` prefix is reserved)."""
    if len(meta) > _META_MAX_PAIRS:
        raise InvalidRequest(
            f"Invalid Service Meta: Node metadata cannot contain more than {_META_MAX_PAIRS} key/value pairs",
            field=path,
        )
    for key, value in meta.items():
        problem = _meta_pair_problem(key, value)
        if problem:
            raise InvalidRequest(
                f"Invalid Service Meta: Couldn't load metadata pair ('{key}', '{value}'): {problem}",
                field=f"{path}.{key}",
            )
    return meta


def _meta_pair_problem(key: str, value: str) -> str:
    if not key:
        return "Key cannot be blank"
    if not _META_KEY_RE.match(key):
        return "Key contains invalid characters"
    if len(key) > _META_KEY_MAX:
        return f"Key is too long (limit: {_META_KEY_MAX} characters)"
    if key.startswith("consul-"):
        return "Key prefix 'consul-' is reserved for internal use"
    if len(value) > _META_VALUE_MAX:
        return f"Value is too long (limit: {_META_VALUE_MAX} characters)"
    return ""


def _parse_tagged(obj: _Raw) -> Mapping[str, TaggedAddress]:
    value = _unwrap_block(obj.raw("tagged_addresses") or {})
    if not isinstance(value, Mapping):
        raise obj.error("tagged_addresses", "an object")
    out: dict[str, TaggedAddress] = {}
    for key, item in value.items():
        entry = _Raw(item, f"{obj.path('tagged_addresses')}.{key}", ("address", "port"), {})
        out[str(key)] = TaggedAddress(
            address=entry.get_str("address"), port=entry.get_int("port", hi=65535)
        )
    return MappingProxyType(out)


def _parse_weights(obj: _Raw) -> Weights:
    if not obj.has("weights"):
        return Weights()
    entry = _Raw(obj.raw("weights"), obj.path("weights"), ("passing", "warning"), {})
    passing = entry.get_int("passing", 1, lo=-(2**31))
    warning = entry.get_int("warning", 1, lo=-(2**31))
    problem = ""
    if passing < 1:
        problem = "Passing must be greater than 0"
    elif warning < 0:
        problem = "Warning must be greater or equal than 0"
    elif passing > 65535 or warning > 65535:
        problem = "DNS Weight must be between 0 and 65535"
    if problem:
        raise InvalidRequest(f"Invalid Weights: {problem}", field=obj.path("weights"))
    return Weights(passing=passing, warning=warning)


def _parse_service_checks(
    obj: _Raw, *, service_id: str, service_name: str
) -> tuple[CheckDefinition, ...]:
    """Consul's defaults: ID ``service:<id>`` (``:<n>`` when several), name ``Service '<name>' check``.

    With an empty ``service_id`` (a sidecar spec, whose ID is not known yet) unset IDs and
    names stay empty for ``expand_sidecar`` to fill.
    """
    raws: list[tuple[object, str]] = []
    if obj.has("check"):
        raws.append((obj.raw("check"), obj.path("check")))
    for i, item in enumerate(obj.get_list("checks")):
        raws.append((item, f"{obj.path('checks')}[{i}]"))
    checks = []
    for n, (item, item_path) in enumerate(raws, start=1):
        default_id = _default_check_id(service_id, n, len(raws)) if service_id else ""
        default_name = f"Service '{service_name}' check" if service_id else ""
        checks.append(
            _parse_service_check(
                item,
                item_path,
                service_id=service_id,
                default_name=default_name,
                default_id=default_id,
            )  # fmt: skip
        )
    if service_id:
        _reject_duplicate_checks(checks, obj.path("checks"))
    return tuple(checks)


def _default_check_id(service_id: str, n: int, total: int) -> str:
    return f"service:{service_id}" + (f":{n}" if total > 1 else "")


def _reject_duplicate_checks(checks: Iterable[CheckDefinition], path: str) -> None:
    seen: set[str] = set()
    for check in checks:
        if check.id in seen:
            raise InvalidRequest(f'Invalid check: duplicate check ID "{check.id}"', field=path)
        seen.add(check.id)


def _parse_sidecar(raw: object, path: str) -> SidecarSpec:
    obj = _Raw(raw, path, _SIDECAR_FIELDS, {"service_id": "id"})
    if obj.get_str("id"):
        raise InvalidRequest(
            "A SidecarService cannot specify an ID as this is managed by the agent",
            field=obj.path("id"),
        )
    connect = _Raw(obj.raw("connect") or {}, obj.path("connect"), ("native", "sidecar_service"), {})
    if connect.has("sidecar_service"):
        raise InvalidRequest(
            "A SidecarService cannot have a nested SidecarService",
            field=connect.path("sidecar_service"),
        )
    if connect.get_bool("native"):
        raise InvalidRequest(
            "A Proxy cannot also be Connect Native, only typical services",
            field=connect.path("native"),
        )
    common = _parse_common(obj)
    if common["kind"] is ServiceKind.TYPICAL:
        common["kind"] = ServiceKind.CONNECT_PROXY
    if common["kind"] is not ServiceKind.CONNECT_PROXY:
        raise InvalidRequest(
            f"{obj.path('kind')}: a sidecar_service must be a connect-proxy", field=obj.path("kind")
        )
    if not obj.has("weights"):
        common["weights"] = None
    # Check IDs depend on the sidecar's ID, known only at expansion; parse now to validate.
    checks = _parse_service_checks(obj, service_id="", service_name=obj.get_str("name"))
    spec = SidecarSpec(name=obj.get_str("name"), checks=checks, **common)
    if spec.proxy is not None:
        _validate_upstreams(spec.proxy.upstreams, f"{obj.path('proxy')}.upstreams")
    return spec


def _validate_service(svc: ServiceDefinition, obj: _Raw) -> None:
    """Consul ``NodeService.Validate`` for the kind, first error wins."""
    proxy = svc.proxy or ProxyConfig()
    if svc.kind is ServiceKind.CONNECT_PROXY:
        _validate_connect_proxy(svc, proxy, obj)
    elif svc.kind is ServiceKind.MESH_GATEWAY:
        _validate_mesh_gateway(svc, proxy, obj)
    elif svc.proxy is not None and svc.proxy != ProxyConfig():
        raise InvalidRequest(
            f"{obj.path('proxy')}: a proxy block is only valid for connect-proxy and mesh-gateway services",
            field=obj.path("proxy"),
        )


def _validate_connect_proxy(svc: ServiceDefinition, proxy: ProxyConfig, obj: _Raw) -> None:
    proxy_path = obj.path("proxy")
    if not proxy.destination_service_name.strip():
        raise InvalidRequest(
            "Proxy.DestinationServiceName must be non-empty for Connect proxy services",
            field=f"{proxy_path}.destination_service_name",
        )
    if svc.port == 0:
        raise InvalidRequest("Port must be set for a Connect proxy", field=obj.path("port"))
    if svc.connect_native:
        raise InvalidRequest(
            "A Proxy cannot also be Connect Native, only typical services",
            field=obj.path("connect.native"),
        )
    if svc.sidecar is not None:
        raise InvalidRequest(
            "A Connect proxy cannot have a sidecar service defined",
            field=obj.path("connect.sidecar_service"),
        )
    _validate_upstreams(proxy.upstreams, f"{proxy_path}.upstreams")


def _validate_upstreams(upstreams: tuple[Upstream, ...], path: str) -> None:
    keys: set[tuple[str, str, str, str]] = set()
    binds: set[str] = set()
    for i, up in enumerate(upstreams):
        key = (up.destination_type, up.destination_name, up.destination_namespace, up.datacenter)
        if key in keys:
            shown = '[type="{}", name="{}", namespace="{}", datacenter="{}"]'.format(*key)
            raise InvalidRequest(
                f"upstreams cannot contain duplicates of {shown}", field=f"{path}[{i}]"
            )
        keys.add(key)
        host = up.local_bind_address
        bind = f"[{host}]:{up.local_bind_port}" if ":" in host else f"{host}:{up.local_bind_port}"
        if bind in binds:
            raise InvalidRequest(
                "upstreams cannot contain duplicates by local bind address and port; "
                f'"{bind}" is specified twice',
                field=f"{path}[{i}].local_bind_port",
            )
        binds.add(bind)


def _validate_mesh_gateway(svc: ServiceDefinition, proxy: ProxyConfig, obj: _Raw) -> None:
    proxy_path = obj.path("proxy")
    rules: tuple[tuple[bool, str, str], ...] = (
        (svc.port == 0, "Port must be non-zero for a Mesh Gateway", obj.path("port")),
        (svc.sidecar is not None, "Mesh Gateways cannot have a sidecar service defined",
         obj.path("connect.sidecar_service")),
        (svc.connect_native, "Mesh Gateways cannot be Connect Native", obj.path("connect.native")),
        (bool(proxy.destination_service_name),
         "The Proxy.DestinationServiceName configuration is invalid for Mesh Gateways",
         f"{proxy_path}.destination_service_name"),
        (bool(proxy.destination_service_id),
         "The Proxy.DestinationServiceID configuration is invalid for Mesh Gateways",
         f"{proxy_path}.destination_service_id"),
        (bool(proxy.local_service_address),
         "The Proxy.LocalServiceAddress configuration is invalid for Mesh Gateways",
         f"{proxy_path}.local_service_address"),
        (proxy.local_service_port != 0,
         "The Proxy.LocalServicePort configuration is invalid for Mesh Gateways",
         f"{proxy_path}.local_service_port"),
        (bool(proxy.upstreams), "The Proxy.Upstreams configuration is invalid for Mesh Gateways",
         f"{proxy_path}.upstreams"),
    )  # fmt: skip
    for failed, message, path in rules:
        if failed:
            raise InvalidRequest(message, field=path)


# ----------------------------------------------------------------------------- sidecars


def sidecar_id_for(service_id: str) -> str:
    """The ID Consul gives the sidecar of ``service_id``."""
    return f"{service_id}-sidecar-proxy"


class SidecarPorts:
    """Pure allocator of sidecar ports in [lo, hi]: lowest free, stable per sidecar ID.

    ``in_use`` is every port local services hold (outside the range is ignored);
    ``assigned`` maps sidecar IDs to the port they had, so a re-registered sidecar gets
    it back while it is free (Consul reuses it only while the sidecar is registered; we
    also remember it across deregistration and restarts, which is kinder to firewalls).
    """

    __slots__ = ("_lo", "_hi", "_assigned", "_in_use")

    def __init__(
        self,
        *,
        lo: int = SIDECAR_MIN_PORT,
        hi: int = SIDECAR_MAX_PORT,
        assigned: Mapping[str, int] | None = None,
    ) -> None:
        self._lo, self._hi = lo, hi
        self._assigned: dict[str, int] = dict(assigned or {})
        self._in_use: dict[str, int] = {}

    @property
    def assigned(self) -> Mapping[str, int]:
        """Sidecar ID → port, for persistence."""
        return MappingProxyType(dict(self._assigned))

    def set_in_use(self, ports: Mapping[str, int]) -> None:
        """Declare which service (by ID) currently holds which port."""
        self._in_use = dict(ports)

    def allocate(self, sidecar_id: str) -> int:
        """The port for ``sidecar_id``; ``InvalidRequest`` when the range is exhausted."""
        taken = {p for sid, p in self._in_use.items() if sid != sidecar_id}
        current = self._in_use.get(sidecar_id) or self._assigned.get(sidecar_id)
        if current is not None and self._lo <= current <= self._hi and current not in taken:
            self._assigned[sidecar_id] = current
            return current
        # Ports remembered for other sidecars are avoided while alternatives exist.
        remembered = {p for sid, p in self._assigned.items() if sid != sidecar_id}
        for avoid in (taken | remembered, taken):
            for port in range(self._lo, self._hi + 1):
                if port not in avoid:
                    self._assigned[sidecar_id] = port
                    return port
        raise InvalidRequest(
            "Invalid SidecarService: no port provided for sidecar_service and none left in "
            f"the configured range [{self._lo}, {self._hi}]",
            field="connect.sidecar_service.port",
        )

    def forget(self, sidecar_id: str) -> None:
        """Drop what is remembered for ``sidecar_id``."""
        self._assigned.pop(sidecar_id, None)


def expand_sidecar(
    svc: ServiceDefinition,
    *,
    allocate_port: Callable[[str], int],
    node_address: str = "127.0.0.1",
) -> tuple[ServiceDefinition, ...]:
    """Split ``connect { sidecar_service {} }`` into (parent, sidecar) with Consul's defaults.

    Without a sidecar spec, returns ``(svc,)``. ``allocate_port(sidecar_id)`` is called
    only when the spec sets no port. The default "Connect Sidecar Listening" check dials
    the address the public listener binds: the sidecar's address, else ``node_address``.
    """
    spec = svc.sidecar
    if spec is None:
        return (svc,)
    parent = replace(svc, sidecar=None)
    sidecar_id = sidecar_id_for(svc.id)
    port = spec.port or allocate_port(sidecar_id)
    given = spec.proxy or ProxyConfig()
    proxy = replace(
        given,
        destination_service_name=given.destination_service_name or svc.name,
        destination_service_id=given.destination_service_id or svc.id,
        local_service_address=given.local_service_address or "127.0.0.1",
        local_service_port=given.local_service_port or svc.port,
    )
    name = spec.name or f"{svc.name}-sidecar-proxy"
    address = spec.address or svc.address
    checks = _sidecar_checks(spec, sidecar_id, name, address or node_address, port, svc.id)
    sidecar = ServiceDefinition(
        id=sidecar_id,
        name=name,
        kind=spec.kind,
        tags=spec.tags or svc.tags,
        meta=spec.meta or svc.meta,
        address=address,
        port=port,
        tagged_addresses=spec.tagged_addresses,
        weights=spec.weights or Weights(),
        enable_tag_override=spec.enable_tag_override,
        proxy=proxy,
        checks=checks,
    )
    return (parent, sidecar)


def _sidecar_checks(
    spec: SidecarSpec, sidecar_id: str, name: str, host: str, port: int, parent_id: str
) -> tuple[CheckDefinition, ...]:
    if spec.checks:
        total = len(spec.checks)
        checks = tuple(
            replace(
                check,
                id=check.id or _default_check_id(sidecar_id, n, total),
                name=check.name or f"Service '{name}' check",
                service_id=sidecar_id,
            )
            for n, check in enumerate(spec.checks, start=1)
        )
        _reject_duplicate_checks(checks, "connect.sidecar_service.checks")
        return checks
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    listening = CheckDefinition(
        id=f"service:{sidecar_id}:1",
        name="Connect Sidecar Listening",
        service_id=sidecar_id,
        kind=CheckKind.TCP,
        tcp=target,
        interval=10.0,
    )
    aliasing = CheckDefinition(
        id=f"service:{sidecar_id}:2",
        name=f"Connect Sidecar Aliasing {parent_id}",
        service_id=sidecar_id,
        kind=CheckKind.ALIAS,
        alias_service=parent_id,
    )
    return (listening, aliasing)
