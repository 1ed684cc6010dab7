"""Parsers of registrations: raw service and check mappings → validated catalog values.

Rule: every raw mapping (HTTP JSON, config file, persisted file) becomes a value only
through ``parse_service`` / ``parse_check``, which apply Consul 1.6's validation
(``agent/structs/structs.go:NodeService.Validate``, ``check_type.go:Validate``,
``agent/agent_endpoint.go:AgentRegisterService``) and reject unknown keys. Keys may be
snake_case, PascalCase or any other casing (Go's JSON decoder is case-insensitive); a
``None`` value means "not given". Errors are ``InvalidRequest`` naming the first
offending field; nothing is partially built. Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from node.catalog.values import (
    DEFAULT_OUTPUT_MAX_SIZE,
    CheckDefinition,
    CheckKind,
    Health,
    MeshGatewayMode,
    ProxyConfig,
    ServiceDefinition,
    ServiceKind,
    SidecarSpec,
    TaggedAddress,
    Upstream,
    Weights,
)
from node.config.reader import Fields, Names, unwrap_block
from node.errors import InvalidRequest

__all__ = [
    "parse_mesh_gateway_mode",
    "parse_service",
    "parse_check",
    "default_check_id",
    "reject_duplicate_checks",
]

# Consul's meta limits (agent/structs/structs.go: metaKeyMaxLength etc.).
_META_MAX_PAIRS = 64
_META_KEY_MAX = 128
_META_VALUE_MAX = 512
_META_KEY_RE = re.compile(r"^[a-zA-Z0-9_-]+$")


def parse_mesh_gateway_mode(value: object) -> MeshGatewayMode:
    """Parse a mesh-gateway mode exactly as Consul's ``ValidateMeshGatewayMode`` does."""
    if isinstance(value, str):
        try:
            return MeshGatewayMode(value)
        except ValueError:
            pass
    raise InvalidRequest(f'Invalid Mesh Gateway Mode: "{value}"')


_MODE = Names.loose(("mode",))


def _parse_mesh_gateway(raw: object, path: str) -> MeshGatewayMode:
    obj = Fields(raw, path, _MODE)
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
_UPSTREAM = Names.loose(_UPSTREAM_FIELDS)


def _parse_upstream(raw: object, path: str) -> Upstream:
    obj = Fields(raw, path, _UPSTREAM)
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
_PROXY = Names.loose(_PROXY_FIELDS)


def _parse_proxy(raw: object, path: str) -> ProxyConfig:
    obj = Fields(raw, path, _PROXY)
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
_CHECK = Names.loose(_CHECK_FIELDS, {"check_id": "id", "CheckID": "id"})
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
    obj = Fields(raw, path, _CHECK)
    name = obj.get_str("name")
    if not name:
        raise InvalidRequest("Missing check name", field=obj.path("name"))
    return _build_check(obj, check_id=obj.get_str("id") or name, name=name)


def _parse_service_check(
    raw: object, path: str, *, service_id: str, default_name: str, default_id: str
) -> CheckDefinition:
    obj = Fields(raw, path, _CHECK)
    name = obj.get_str("name") or default_name
    check = _build_check(obj, check_id=obj.get_str("id") or default_id, name=name)
    return replace(check, service_id=service_id)


def _build_check(obj: Fields, *, check_id: str, name: str) -> CheckDefinition:
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


def _check_kind(obj: Fields) -> CheckKind:
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


def _parse_header(obj: Fields) -> Mapping[str, tuple[str, ...]]:
    value = unwrap_block(obj.raw("header") or {})
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
_SERVICE = Names.loose(_SERVICE_FIELDS, {"service_id": "id"})
_SERVICE_CONNECT = Names.loose(("native", "sidecar_service", "proxy"))
_SIDECAR = Names.loose((f for f in _SERVICE_FIELDS if f != "namespace"), {"service_id": "id"})
_SIDECAR_CONNECT = Names.loose(("native", "sidecar_service"))
_TAGGED = Names.loose(("address", "port"))
_WEIGHTS = Names.loose(("passing", "warning"))


def parse_service(raw: Mapping[str, Any], *, path: str = "") -> ServiceDefinition:
    """Parse and validate a service registration (HTTP JSON, config file or persisted form).

    Raises ``InvalidRequest`` naming the first offending field; nothing is partially built.
    """
    obj = Fields(raw, path, _SERVICE)
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
    connect = Fields(obj.raw("connect") or {}, obj.path("connect"), _SERVICE_CONNECT)
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


def _parse_common(obj: Fields) -> dict[str, Any]:
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


def _parse_tagged(obj: Fields) -> Mapping[str, TaggedAddress]:
    value = unwrap_block(obj.raw("tagged_addresses") or {})
    if not isinstance(value, Mapping):
        raise obj.error("tagged_addresses", "an object")
    out: dict[str, TaggedAddress] = {}
    for key, item in value.items():
        entry = Fields(item, f"{obj.path('tagged_addresses')}.{key}", _TAGGED)
        out[str(key)] = TaggedAddress(
            address=entry.get_str("address"), port=entry.get_int("port", hi=65535)
        )
    return MappingProxyType(out)


def _parse_weights(obj: Fields) -> Weights:
    if not obj.has("weights"):
        return Weights()
    entry = Fields(obj.raw("weights"), obj.path("weights"), _WEIGHTS)
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
    obj: Fields, *, service_id: str, service_name: str
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
        default_id = default_check_id(service_id, n, len(raws)) if service_id else ""
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
        reject_duplicate_checks(checks, obj.path("checks"))
    return tuple(checks)


def default_check_id(service_id: str, n: int, total: int) -> str:
    return f"service:{service_id}" + (f":{n}" if total > 1 else "")


def reject_duplicate_checks(checks: Iterable[CheckDefinition], path: str) -> None:
    seen: set[str] = set()
    for check in checks:
        if check.id in seen:
            raise InvalidRequest(f'Invalid check: duplicate check ID "{check.id}"', field=path)
        seen.add(check.id)


def _parse_sidecar(raw: object, path: str) -> SidecarSpec:
    obj = Fields(raw, path, _SIDECAR)
    if obj.get_str("id"):
        raise InvalidRequest(
            "A SidecarService cannot specify an ID as this is managed by the agent",
            field=obj.path("id"),
        )
    connect = Fields(obj.raw("connect") or {}, obj.path("connect"), _SIDECAR_CONNECT)
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


def _validate_service(svc: ServiceDefinition, obj: Fields) -> None:
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


def _validate_connect_proxy(svc: ServiceDefinition, proxy: ProxyConfig, obj: Fields) -> None:
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


def _validate_mesh_gateway(svc: ServiceDefinition, proxy: ProxyConfig, obj: Fields) -> None:
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
