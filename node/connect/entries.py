"""Config entries: every kind Consul 1.6 has, parsed into frozen values.

Rule: every config entry that enters meshnode (an HCL file through ``meshnode config write``,
a JSON body of ``PUT /v1/config``, a ``config_entries { bootstrap = [...] }`` block, a
replicated copy) goes through ``parse_config_entry`` and nothing else. It accepts Consul's
PascalCase keys and their snake_case spellings, rejects unknown kinds and keys by name, and
returns a frozen value; no half-parsed entry ever exists. The Consul JSON shape is built
only in ``node/api``; ``entry_to_wire`` here is the internal replication form, which
``parse_config_entry`` reads back unchanged.

``proxy-defaults`` and ``service-defaults`` are parsed here; the discovery-chain kinds
(``service-resolver``, ``service-router``, ``service-splitter``) in
``node.connect.chainentries``. A ``Protocol`` is stored lowercased and, as in Consul, not
checked against a list: the discovery chain gives ``http``, ``http2`` and ``grpc`` their
routing features and treats every other protocol as tcp. A subset ``Filter`` is compiled
in Consul's filter language (``node.filter``) against a health entry's fields, so a bad
expression is refused when written.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Final

from node.catalog.parse import parse_mesh_gateway_mode
from node.catalog.values import MeshGatewayMode
from node.config.reader import Names, read_keys
from node.connect.chainentries import (
    CHAIN_KINDS,
    SERVICE_RESOLVER,
    SERVICE_ROUTER,
    SERVICE_SPLITTER,
    ChainEntry,
    ServiceResolver,
    ServiceRouter,
    ServiceSplitter,
    chain_entry_to_wire,
    parse_chain_entry,
)
from node.errors import InvalidRequest
from node.filter import CHECK_SERVICE_NODE, FilterError, compile_filter
from node.frozen import freeze, thaw

__all__ = [
    "PROXY_DEFAULTS",
    "SERVICE_DEFAULTS",
    "SERVICE_RESOLVER",
    "SERVICE_ROUTER",
    "SERVICE_SPLITTER",
    "ServiceResolver",
    "ServiceRouter",
    "ServiceSplitter",
    "PROXY_CONFIG_GLOBAL",
    "CONFIG_ENTRY_KINDS",
    "ConfigEntry",
    "ProxyDefaults",
    "ServiceDefaults",
    "parse_config_entry",
    "parse_config_entry_kind",
    "entry_to_wire",
    "freeze_value",
]

PROXY_DEFAULTS: Final = "proxy-defaults"
SERVICE_DEFAULTS: Final = "service-defaults"
#: Consul forces the one proxy-defaults entry to this name (``structs.ProxyConfigGlobal``).
PROXY_CONFIG_GLOBAL: Final = "global"
CONFIG_ENTRY_KINDS: Final = (PROXY_DEFAULTS, SERVICE_DEFAULTS, *CHAIN_KINDS)

#: Index fields that ``consul config read`` prints; a file written back from that output
#: carries them, and Consul's decoder ignores them, so we do too.
_IGNORED_KEYS: Final = frozenset({"CreateIndex", "ModifyIndex", "create_index", "modify_index"})

MAX_NAME_LENGTH: Final = 256


def _quote(text: str) -> str:
    """Quote like Go's ``%q`` so our messages read as Consul's do."""
    return json.dumps(text)


def freeze_value(value: Any) -> Any:
    """``node.frozen.freeze`` with its errors as ``InvalidRequest`` naming ``Config``."""
    try:
        return freeze(value)
    except ValueError as exc:
        raise InvalidRequest(f"Config {exc}") from None


def _empty_config() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyDefaults:
    """The ``proxy-defaults`` entry; its name is always ``global``.

    ``config`` is opaque proxy configuration (deep-frozen), ``mesh_gateway`` the global
    mesh-gateway mode (``MeshGatewayMode.DEFAULT`` means not set).
    """

    kind: ClassVar[str] = PROXY_DEFAULTS
    name: str = PROXY_CONFIG_GLOBAL
    config: Mapping[str, Any] = field(default_factory=_empty_config)
    mesh_gateway: MeshGatewayMode = MeshGatewayMode.DEFAULT
    #: Consul 1.6 ``Expose`` block, kept verbatim (meshnode exposes no paths); accepted so
    #: that the output of ``consul config read`` can be written back.
    expose: Mapping[str, Any] = field(default_factory=_empty_config)

    def __post_init__(self) -> None:
        if self.name != PROXY_CONFIG_GLOBAL:
            raise InvalidRequest(
                f"invalid name ({_quote(self.name)}), only {_quote(PROXY_CONFIG_GLOBAL)} is "
                f"supported for {PROXY_DEFAULTS}",
                field="Name",
            )
        for attr in ("config", "expose"):
            if not isinstance(getattr(self, attr), MappingProxyType):
                object.__setattr__(self, attr, freeze_value(getattr(self, attr)))


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceDefaults:
    """The ``service-defaults`` entry of one service.

    ``protocol`` is lowercased; ``""`` means not set (inherit from proxy-defaults ``Config``),
    exactly as Consul stores it.
    """

    kind: ClassVar[str] = SERVICE_DEFAULTS
    name: str
    protocol: str = ""
    mesh_gateway: MeshGatewayMode = MeshGatewayMode.DEFAULT
    #: Kept verbatim, as for ``ProxyDefaults.expose``.
    expose: Mapping[str, Any] = field(default_factory=_empty_config)
    #: Consul's ``ExternalSNI`` (external services only); stored, not used by meshnode.
    external_sni: str = ""

    def __post_init__(self) -> None:
        _check_name(self.name, SERVICE_DEFAULTS)
        if not isinstance(self.expose, MappingProxyType):
            object.__setattr__(self, "expose", freeze_value(self.expose))
        if self.protocol != self.protocol.lower():
            object.__setattr__(self, "protocol", self.protocol.lower())


ConfigEntry = ProxyDefaults | ServiceDefaults | ChainEntry


# --- key spelling -------------------------------------------------------------------------
# Canonical (PascalCase) key -> its snake_case spelling. Both are accepted; the config loader
# hands us HCL keys verbatim and py-consul/curl send PascalCase JSON.
_PROXY_KEYS: Final = {
    "Kind": "kind",
    "Name": "name",
    "Config": "config",
    "MeshGateway": "mesh_gateway",
    "Expose": "expose",
}
_SERVICE_KEYS: Final = {
    "Kind": "kind",
    "Name": "name",
    "Protocol": "protocol",
    "MeshGateway": "mesh_gateway",
    "Expose": "expose",
    "ExternalSNI": "external_sni",
}
_MESH_GATEWAY_KEYS: Final = {"Mode": "mode"}


def _canonical(raw: Mapping[Any, Any], table: Mapping[str, str], where: str) -> dict[str, Any]:
    """Map each key of ``raw`` to its PascalCase name; reject unknown or doubled keys."""
    read = read_keys(
        raw, Names.pascal_or_snake(table), ignored=_IGNORED_KEYS if where == "" else frozenset()
    )
    if read.twice is not None:
        canon = read.twice[1]
        raise InvalidRequest(
            f"config key {_quote(where + canon)} is given twice", field=where + canon
        )
    if read.unknown:
        unknown = [str(key) for key in read.unknown]
        names = ", ".join(_quote(where + k) for k in sorted(unknown))
        raise InvalidRequest(f"invalid config key {names}", field=where + unknown[0])
    return read.values


def _check_name(name: object, kind: str) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"{kind} entry requires a Name (a non-empty string)", field="Name")
    if len(name) > MAX_NAME_LENGTH or any(c.isspace() or c == "/" for c in name):
        raise InvalidRequest(
            f"{kind} Name {name!r} is invalid (no whitespace or '/', at most "
            f"{MAX_NAME_LENGTH} characters)",
            field="Name",
        )
    return name


def _parse_mesh_gateway(value: object) -> MeshGatewayMode:
    """``MeshGateway { Mode = "local" }`` → mode; a one-element list of blocks is tolerated."""
    if isinstance(value, Sequence) and not isinstance(value, str | bytes) and len(value) == 1:
        value = value[0]
    if not isinstance(value, Mapping):
        raise InvalidRequest(
            f'MeshGateway must be an object like {{"Mode": "local"}}, got {type(value).__name__}',
            field="MeshGateway",
        )
    fields = _canonical(value, _MESH_GATEWAY_KEYS, "MeshGateway.")
    mode = fields.get("Mode", "")
    if not isinstance(mode, str):
        raise InvalidRequest(
            f"Invalid Mesh Gateway Mode: {_quote(str(mode))}", field="MeshGateway.Mode"
        )
    return parse_mesh_gateway_mode(mode)


def parse_config_entry_kind(value: object) -> str:
    """Validate a kind name (also used for ``GET /v1/config/:kind``)."""
    if not isinstance(value, str) or not value:
        raise InvalidRequest("Payload does not contain a Kind key at the top level", field="Kind")
    kind = value.lower()
    if kind not in CONFIG_ENTRY_KINDS:
        supported = ", ".join(CONFIG_ENTRY_KINDS)
        raise InvalidRequest(
            f"invalid config entry kind: {_quote(value)} (supported: {supported})", field="Kind"
        )
    return kind


def _raw_kind(raw: Mapping[str, Any]) -> object:
    if "Kind" in raw and "kind" in raw:
        raise InvalidRequest("config key Kind is given twice", field="Kind")
    return raw.get("Kind", raw.get("kind"))


def parse_config_entry(raw: Mapping[str, Any]) -> ConfigEntry:
    """Parse one config entry (HCL already block-flattened, or a JSON body).

    Raises ``InvalidRequest`` naming the offending kind, key or value; Consul's exact
    ``Invalid Mesh Gateway Mode: "x"`` for a bad mode.
    """
    if not isinstance(raw, Mapping):
        raise InvalidRequest(f"config entry must be an object, got {type(raw).__name__}")
    kind = parse_config_entry_kind(_raw_kind(raw))
    if kind in CHAIN_KINDS:
        return parse_chain_entry(kind, raw, check_filter=_check_filter)
    if kind == PROXY_DEFAULTS:
        return _parse_proxy_defaults(_canonical(raw, _PROXY_KEYS, ""))
    return _parse_service_defaults(_canonical(raw, _SERVICE_KEYS, ""))


def _parse_proxy_defaults(fields: Mapping[str, Any]) -> ProxyDefaults:
    name = fields.get("Name", PROXY_CONFIG_GLOBAL)
    if not isinstance(name, str):
        raise InvalidRequest(f"{PROXY_DEFAULTS} Name must be a string", field="Name")
    config = fields.get("Config") or {}
    if not isinstance(config, Mapping):
        raise InvalidRequest(
            f"{PROXY_DEFAULTS} Config must be an object, got {type(config).__name__}",
            field="Config",
        )
    mode = _parse_mesh_gateway(fields["MeshGateway"]) if "MeshGateway" in fields else None
    return ProxyDefaults(
        name=name,
        config=freeze_value(config),
        mesh_gateway=MeshGatewayMode.DEFAULT if mode is None else mode,
        expose=_parse_expose(fields.get("Expose")),
    )


def _parse_expose(value: object) -> Mapping[str, Any]:
    if value is None:
        return _empty_config()
    if isinstance(value, Sequence) and not isinstance(value, str | bytes) and len(value) == 1:
        value = value[0]  # an HCL block list of one
    if not isinstance(value, Mapping):
        raise InvalidRequest(
            f"Expose must be an object, got {type(value).__name__}", field="Expose"
        )
    frozen: Mapping[str, Any] = freeze_value(value)
    return frozen


def _parse_service_defaults(fields: Mapping[str, Any]) -> ServiceDefaults:
    name = _check_name(fields.get("Name"), SERVICE_DEFAULTS)
    protocol = fields.get("Protocol", "")
    if not isinstance(protocol, str) or any(c.isspace() for c in protocol):
        raise InvalidRequest(
            f'{SERVICE_DEFAULTS} Protocol must be a word like "http" or "tcp", got {protocol!r}',
            field="Protocol",
        )
    external_sni = fields.get("ExternalSNI", "")
    if not isinstance(external_sni, str):
        raise InvalidRequest(
            f"{SERVICE_DEFAULTS} ExternalSNI must be a string", field="ExternalSNI"
        )
    mode = _parse_mesh_gateway(fields["MeshGateway"]) if "MeshGateway" in fields else None
    return ServiceDefaults(
        name=name,
        protocol=protocol,
        mesh_gateway=MeshGatewayMode.DEFAULT if mode is None else mode,
        expose=_parse_expose(fields.get("Expose")),
        external_sni=external_sni,
    )


def _check_filter(expression: str, where: str) -> None:
    """A subset ``Filter`` must compile against a health entry (Node, Service, Checks)."""
    try:
        compile_filter(expression, CHECK_SERVICE_NODE)
    except FilterError as exc:
        raise InvalidRequest(f"{where}: {exc}", field=where) from None


def entry_to_wire(entry: ConfigEntry) -> dict[str, Any]:
    """Plain snake_case dict for replication/persistence; ``parse_config_entry`` reads it back."""
    if isinstance(entry, ServiceResolver | ServiceRouter | ServiceSplitter):
        return chain_entry_to_wire(entry)
    out: dict[str, Any] = {"kind": entry.kind, "name": entry.name}
    if isinstance(entry, ProxyDefaults):
        out["config"] = thaw(entry.config)
    else:
        out["protocol"] = entry.protocol
        out["external_sni"] = entry.external_sni
    out["mesh_gateway"] = {"mode": entry.mesh_gateway.value}
    out["expose"] = thaw(entry.expose)
    return out
