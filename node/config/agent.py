"""Agent configuration: Consul-style HCL/JSON files and flags → one frozen ``AgentConfig``.

Rule: configuration is parsed once, here, and every problem is a ``ConfigError`` whose text
names the file, the key path and what was expected (``cluster.hcl: ports.http: expected an
integer, got "abc"``). Nothing downstream re-reads files or re-validates values.

How sources combine (as in Consul): files are read in the order given, a directory
contributes its ``*.hcl`` and ``*.json`` files in lexical order, flags (``overrides``) come
last. A later scalar replaces an earlier one, lists append, sections (``ports { }``,
``connect { }``) merge key by key. Each file is checked on its own first, so an error
always names the file that holds the bad key.

Keys Consul knows but meshnode does not implement (``ui``, ``performance``, ``acl``,
``dns_config.use_cache``, ...) are accepted with one warning each, so real Consul files load.

Defaults worth knowing:
- ``bind_addr`` is ``0.0.0.0`` (``127.0.0.1`` with ``-dev``). ``advertise_addr`` defaults to
  ``bind_addr``, except that an unspecified bind address (``0.0.0.0`` / ``::``) advertises
  loopback: meshnode does not guess a private IP the way Consul does. Set it explicitly
  on a multi-host network.
- ``ports.grpc`` and ``ports.https`` are accepted and unused (Consul files set them for Envoy).
  Port ``0`` for ``http``, ``serf_lan``, ``serf_wan`` and ``server`` means "any free port".
- ``leave_on_terminate`` defaults to ``not server``, as in Consul.
"""

from __future__ import annotations

import base64
import binascii
import enum
import ipaddress
import json
import logging
import os
import platform
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from node.catalog.parse import parse_service
from node.catalog.sidecar import SIDECAR_MAX_PORT, SIDECAR_MIN_PORT
from node.config.duration import parse_go_duration
from node.config.hcl import load_document, normalize_blocks
from node.config.reader import Names, canonical_key
from node.connect.castate import MAX_LEAF_CERT_TTL, MIN_LEAF_CERT_TTL
from node.connect.entries import parse_config_entry
from node.errors import ConfigError, InvalidRequest
from node.frozen import freeze

__all__ = [
    "AgentConfig",
    "ConnectConfig",
    "DNSConfig",
    "TelemetryConfig",
    "IntentionPolicy",
    "Ports",
    "load",
    "load_config_entry_document",
    "load_services_document",
    "read_source",
    "validate",
]

log = logging.getLogger(__name__)

COMMAND_LINE: Final = "command line"
LOG_LEVELS: Final = ("TRACE", "DEBUG", "INFO", "WARN", "ERR")
_LOG_LEVEL_ALIASES: Final = {"WARNING": "WARN", "ERROR": "ERR"}
MIN_RECONNECT_TIMEOUT: Final = 8 * 3600.0  # Consul: "must be >= 8 hours"
GOSSIP_KEY_SIZES: Final = (16, 24, 32)
CONFIG_SUFFIXES: Final = (".hcl", ".json")


class IntentionPolicy(enum.StrEnum):
    """What happens when no intention matches a connection."""

    ALLOW = "allow"
    DENY = "deny"


def _empty_mapping() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class Ports:
    """Listening ports (``ports { }``); defaults follow Consul."""

    http: int = 8500
    serf_lan: int = 8301
    serf_wan: int = 8302
    server: int = 8300
    dns: int = 8600  # UDP and TCP; -1 disables
    grpc: int = -1  # accepted for Consul/Envoy files; meshnode has no gRPC listener
    https: int = -1  # accepted; meshnode serves the API over plain HTTP only
    sidecar_min_port: int = SIDECAR_MIN_PORT
    sidecar_max_port: int = SIDECAR_MAX_PORT


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectConfig:
    """``connect { }``: the Connect CA and the default intention policy."""

    enabled: bool = True
    ca_provider: str = "consul"
    ca_config: Mapping[str, Any] = field(default_factory=_empty_mapping)
    default_intention_policy: IntentionPolicy = IntentionPolicy.ALLOW


@dataclass(frozen=True, slots=True, kw_only=True)
class DNSConfig:
    """The DNS interface: ``domain``, ``alt_domain``, ``recursors`` and ``dns_config { }``.

    Names are lowercase and end with a dot; durations are seconds; recursors are
    ``(ip, port)``. ``service_ttl`` maps a service name, or a prefix ending in ``*``, to a TTL.
    """

    domain: str = "consul."
    alt_domain: str = ""
    recursors: tuple[tuple[str, int], ...] = ()
    recursor_timeout: float = 2.0
    recursor_strategy: str = "sequential"
    node_ttl: float = 0.0
    service_ttl: Mapping[str, float] = field(default_factory=_empty_mapping)
    only_passing: bool = False
    udp_answer_limit: int = 3
    enable_truncate: bool = False
    a_record_limit: int = 0
    enable_additional_node_meta_txt: bool = True
    soa_refresh: int = 3600
    soa_retry: int = 600
    soa_expire: int = 86400
    soa_min_ttl: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class TelemetryConfig:
    """``telemetry { }``: what ``/v1/agent/metrics`` names and serves."""

    #: Gauges are named without the host name (``consul.runtime.*``, not ``consul.<host>.…``).
    disable_hostname: bool = False
    #: How long Prometheus keeps a series that stopped changing; ``0`` leaves
    #: ``?format=prometheus`` disabled, as in Consul.
    prometheus_retention_time: float = 0.0
    metrics_prefix: str = "consul"


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentConfig:
    """The whole, validated agent configuration; durations are seconds (float)."""

    datacenter: str = "dc1"
    primary_datacenter: str = "dc1"
    node_name: str
    node_id: str | None = None
    data_dir: str | None = None
    server: bool = False
    bootstrap_expect: int = 0
    dev: bool = False
    bind_addr: str = "0.0.0.0"
    advertise_addr: str = "127.0.0.1"
    advertise_addr_wan: str = "127.0.0.1"
    client_addr: str = "127.0.0.1"
    ports: Ports = field(default_factory=Ports)
    retry_join: tuple[str, ...] = ()
    retry_join_wan: tuple[str, ...] = ()
    retry_interval: float = 30.0
    retry_interval_wan: float = 30.0
    encrypt: str | None = None
    encrypt_verify_incoming: bool = True
    encrypt_verify_outgoing: bool = True
    connect: ConnectConfig = field(default_factory=ConnectConfig)
    dns: DNSConfig = field(default_factory=DNSConfig)
    enable_central_service_config: bool = False
    log_level: str = "INFO"
    #: Parsed service definitions (``node.catalog.values.ServiceDefinition``).
    services: tuple[Any, ...] = ()
    #: Parsed config entries (``node.connect.entries.ConfigEntry``).
    config_entries_bootstrap: tuple[Any, ...] = ()
    leave_on_terminate: bool = True
    reconnect_timeout: float = 72 * 3600.0
    reconnect_timeout_wan: float = 72 * 3600.0
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    #: Script checks (``args``) from any source, or only from config files.
    enable_script_checks: bool = False
    enable_local_script_checks: bool = False
    #: One line per accepted-but-ignored Consul key.
    warnings: tuple[str, ...] = ()
    #: The files that were read, in merge order.
    sources: tuple[str, ...] = ()

    @property
    def encrypt_key(self) -> bytes | None:
        """The decoded gossip key (16, 24 or 32 bytes), or None when gossip is not encrypted."""
        return None if self.encrypt is None else base64.b64decode(self.encrypt)


# --- value checks -------------------------------------------------------------------------
# Each converter takes the raw value and the reading context and returns the checked value,
# or raises _Invalid(reason); the context adds file and key path.


class _Invalid(Exception):
    """A value failed a check; ``str()`` is the reason without file or key."""


_MAX_SHOWN: Final = 80  # longest string value quoted in an error message


def _describe(value: Any) -> str:
    """How a value is quoted in an error message."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        shown = value if len(value) <= _MAX_SHOWN else value[: _MAX_SHOWN - 3] + "..."
        return json.dumps(shown, ensure_ascii=False)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def _as_int(value: Any, lenient: bool) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if lenient and isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]+", value.strip()):
        return int(value)
    raise _Invalid(f"expected an integer, got {_describe(value)}")


def _as_bool(value: Any, lenient: bool) -> bool:
    if isinstance(value, bool):
        return value
    if lenient and isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    raise _Invalid(f"expected true or false, got {_describe(value)}")


def _as_str(value: Any, lenient: bool) -> str:
    if isinstance(value, str):
        return value
    raise _Invalid(f"expected a string, got {_describe(value)}")


def _as_nonempty_str(value: Any, lenient: bool) -> str:
    text = _as_str(value, lenient)
    if not text.strip():
        raise _Invalid(f"expected a non-empty string, got {_describe(value)}")
    return text


def _as_str_list(value: Any, lenient: bool) -> tuple[str, ...]:
    if lenient and isinstance(value, str):
        return (value,)
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise _Invalid(f"expected a list of strings, got {_describe(value)}")
    return tuple(value)


def _as_port(value: Any, lenient: bool) -> int:
    port = _as_int(value, lenient)
    if not 0 <= port <= 65535:
        raise _Invalid(f"expected a port number (0-65535), got {port}")
    return port


def _as_optional_port(value: Any, lenient: bool) -> int:
    port = _as_int(value, lenient)
    if not -1 <= port <= 65535:
        raise _Invalid(f"expected a port number (0-65535, or -1 to disable), got {port}")
    return port


def _as_sidecar_port(value: Any, lenient: bool) -> int:
    port = _as_int(value, lenient)
    if not 1 <= port <= 65535:
        raise _Invalid(f"expected a port number (1-65535), got {port}")
    return port


def _as_count(value: Any, lenient: bool) -> int:
    count = _as_int(value, lenient)
    if count < 0:
        raise _Invalid(f"expected a number of at least 0, got {count}")
    return count


_NAME_RE: Final = re.compile(r"[A-Za-z0-9_-]+")


def _as_datacenter(value: Any, lenient: bool) -> str:
    name = _as_str(value, lenient)
    if not _NAME_RE.fullmatch(name):
        raise _Invalid(f'expected a name of letters, digits, "-" and "_", got {_describe(name)}')
    return name.lower()  # Consul lowercases datacenter names


def _as_ip(value: Any, lenient: bool) -> str:
    text = _as_str(value, lenient)
    if "{{" in text:
        raise _Invalid(
            f"expected an IP address (templates are not supported), got {_describe(text)}"
        )
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise _Invalid(f"expected an IP address, got {_describe(text)}") from None


def _as_uuid(value: Any, lenient: bool) -> str:
    text = _as_str(value, lenient)
    try:
        parsed = uuid.UUID(text)
    except ValueError:
        parsed = None
    if parsed is None or str(parsed) != text.lower():
        raise _Invalid(
            f'expected a UUID like "adf4238a-882b-9ddc-4a9d-5b6758e4159e", got {_describe(text)}'
        )
    return text.lower()


def _as_duration(value: Any, lenient: bool, *, minimum: float = 0.0, shown: str = "0s") -> float:
    try:
        seconds = parse_go_duration(value)
    except (TypeError, ValueError):
        raise _Invalid(f'expected a duration like "30s" or "72h", got {_describe(value)}') from None
    if seconds < minimum:
        raise _Invalid(f"must be at least {shown}, got {_describe(value)}")
    return seconds


def _as_interval(value: Any, lenient: bool) -> float:
    seconds = _as_duration(value, lenient)
    if seconds <= 0:
        raise _Invalid(f"must be longer than 0s, got {_describe(value)}")
    return seconds


def _as_reconnect_timeout(value: Any, lenient: bool) -> float:
    return _as_duration(value, lenient, minimum=MIN_RECONNECT_TIMEOUT, shown="8h")


def _as_encrypt_key(value: Any, lenient: bool) -> str:
    # The key is a secret: errors describe it, never echo it.
    if not isinstance(value, str):
        raise _Invalid(f"expected a base64-encoded key (a string), got {_describe(value)}")
    try:
        key = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise _Invalid("expected a base64-encoded key, got text that is not valid base64") from None
    if len(key) not in GOSSIP_KEY_SIZES:
        raise _Invalid(f"expected a base64-encoded 16, 24 or 32 byte key, got {len(key)} bytes")
    return value.strip()


def _as_log_level(value: Any, lenient: bool) -> str:
    text = _as_str(value, lenient).strip().upper()
    level = _LOG_LEVEL_ALIASES.get(text, text)
    if level not in LOG_LEVELS:
        shown = ", ".join(f'"{name}"' for name in LOG_LEVELS)
        raise _Invalid(f"expected one of {shown}, got {_describe(value)}")
    return level


def _as_intention_policy(value: Any, lenient: bool) -> IntentionPolicy:
    text = _as_str(value, lenient)
    try:
        return IntentionPolicy(text.lower())
    except ValueError:
        raise _Invalid(f'expected "allow" or "deny", got {_describe(value)}') from None


def _as_ca_provider(value: Any, lenient: bool) -> str:
    text = _as_str(value, lenient)
    if text != "consul":
        raise _Invalid(
            f'unsupported CA provider {_describe(text)}; meshnode supports only "consul"'
        )
    return text


_DNS_LABEL_RE: Final = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def _as_domain(value: Any, lenient: bool) -> str:
    """A DNS domain such as ``consul`` → ``"consul."`` (lowercase, one trailing dot)."""
    text = _as_str(value, lenient).strip().lower()
    name = text[:-1] if text.endswith(".") else text
    if not name or len(name) > 253 or not all(_DNS_LABEL_RE.fullmatch(p) for p in name.split(".")):
        raise _Invalid(f'expected a domain name like "consul", got {_describe(value)}')
    return name + "."


def _as_recursors(value: Any, lenient: bool) -> tuple[tuple[str, int], ...]:
    """``["8.8.8.8", "10.0.0.1:5353", "[::1]:53"]`` → ``(ip, port)``; port 53 when missing."""
    return tuple(_as_recursor(item) for item in _as_str_list(value, lenient))


def _as_recursor(text: str) -> tuple[str, int]:
    host, port = text.strip(), 53
    if host.startswith("["):
        host, _, rest = host[1:].partition("]")
        if rest:
            port = _recursor_port(text, rest)
    elif host.count(":") == 1:
        host, _, rest = host.partition(":")
        port = _recursor_port(text, ":" + rest)
    try:
        return str(ipaddress.ip_address(host)), port
    except ValueError:
        reason = (
            f'expected a recursor address like "8.8.8.8" or "10.0.0.1:53", got {_describe(text)}'
        )
        raise _Invalid(reason) from None


def _recursor_port(text: str, rest: str) -> int:
    if not rest.startswith(":") or not rest[1:].isdigit() or not 1 <= int(rest[1:]) <= 65535:
        raise _Invalid(f"expected a recursor port (1-65535), got {_describe(text)}")
    return int(rest[1:])


def _as_allow_stale(value: Any, lenient: bool) -> bool:
    if not _as_bool(value, lenient):
        raise _Invalid(
            "false is not supported: meshnode replicates each datacenter's catalog by gossip, "
            "so every DNS answer is a stale read (allow_stale = true)"
        )
    return True


def _as_recursor_strategy(value: Any, lenient: bool) -> str:
    text = _as_str(value, lenient)
    if text not in ("sequential", "random"):
        raise _Invalid(f'expected "sequential" or "random", got {_describe(value)}')
    return text


def _as_soa_number(value: Any, lenient: bool) -> int:
    number = _as_count(value, lenient)
    if number > 0xFFFFFFFF:
        raise _Invalid(f"expected a number of seconds below 2^32, got {number}")
    return number


def _check_service_ttl(value: Any, source: _Source, path: str) -> dict[str, float]:
    """``service_ttl { "web" = "10s", "api-*" = "5s", "*" = "1s" }`` (names lowercased)."""
    if not isinstance(value, Mapping):
        raise _Invalid(f"expected a block of service name = duration, got {_describe(value)}")
    return {
        str(name).lower(): source.convert(_scalar(_as_duration), ttl, f"{path}.{name}")
        for name, ttl in value.items()
    }


Scalar = Callable[[Any, bool], Any]


# --- schema -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _Section:
    """The keys one level of config accepts: name → checker; other names are Consul-only."""

    checks: Mapping[str, Callable[[Any, _Source, str], Any]]
    names: Names  # every spelling of a checked or Consul-only name

    @classmethod
    def build(
        cls, keys: Mapping[str, Callable[[Any, _Source, str], Any]], consul_only: Sequence[str]
    ) -> _Section:
        return cls(checks=dict(keys), names=Names.loose([*sorted(consul_only), *keys]))


def _scalar(check: Scalar) -> Callable[[Any, _Source, str], Any]:
    def convert(value: Any, source: _Source, path: str) -> Any:
        return check(value, source.lenient)

    return convert


def _section(get: Callable[[], _Section]) -> Callable[[Any, _Source, str], Any]:
    def convert(value: Any, source: _Source, path: str) -> Any:
        return source.section(value, path, get())

    return convert


# Keys Consul 1.6 knows that meshnode accepts and ignores (one warning each).
_CONSUL_ONLY_TOP: Final = (
    "acl", "acl_agent_master_token", "acl_agent_token", "acl_datacenter", "acl_default_policy",
    "acl_down_policy", "acl_enable_key_list_policy", "acl_master_token",
    "acl_replication_token", "acl_token", "acl_ttl", "addresses", "advertise_addr_ipv4",
    "advertise_addr_ipv6", "advertise_addr_wan_ipv4", "advertise_addr_wan_ipv6",
    "advertise_reconnect_timeout", "audit", "auto_config", "auto_encrypt",
    "auto_reload_config", "autopilot", "bootstrap", "ca_file", "ca_path", "cache",
    "cert_file", "check", "check_output_max_size", "check_update_interval", "checks",
    "default_query_time", "disable_anonymous_signature", "disable_coordinates",
    "disable_host_node_id", "disable_http_unprintable_char_filter", "disable_keyring_file",
    "disable_remote_exec", "disable_update_check", "discard_check_output",
    "discovery_max_stale", "enable_acl_replication",
    "enable_agent_tls_for_checks", "enable_debug",
    "enable_syslog", "gossip_lan", "gossip_wan", "http_config",
    "key_file", "license_path", "limits", "log_file", "log_json", "log_rotate_bytes",
    "log_rotate_duration", "log_rotate_max_files", "max_query_time", "node_meta",
    "non_voting_server", "performance", "pid_file", "primary_gateways",
    "primary_gateways_interval", "protocol", "raft_protocol", "raft_snapshot_interval",
    "raft_snapshot_threshold", "raft_trailing_logs", "rejoin_after_leave",
    "retry_max", "retry_max_wan", "segment", "segments", "serf_lan", "serf_lan_allowed_cidrs",
    "serf_wan", "serf_wan_allowed_cidrs", "server_name", "session_ttl_min",
    "skip_leave_on_interrupt", "snapshot_agent", "start_join", "start_join_wan",
    "syslog_facility", "tagged_addresses", "tls", "tls_cipher_suites",
    "tls_min_version", "tls_prefer_server_cipher_suites", "translate_wan_addrs", "ui",
    "ui_config", "ui_content_path", "ui_dir", "unix_sockets", "verify_incoming",
    "verify_incoming_https", "verify_incoming_rpc", "verify_outgoing",
    "verify_server_hostname", "watches",
)  # fmt: skip
_CONSUL_ONLY_PORTS: Final = (
    "proxy_min_port", "proxy_max_port", "expose_min_port", "expose_max_port", "grpc_tls",
)  # fmt: skip
_CONSUL_ONLY_CONNECT: Final = ("proxy", "proxy_defaults", "enable_mesh_gateway_wan_federation")
_CONSUL_ONLY_TELEMETRY: Final = (
    "circonus_api_app", "circonus_api_token", "circonus_api_url", "circonus_broker_id",
    "circonus_broker_select_tag", "circonus_check_display_name", "circonus_check_force_metric_activation",
    "circonus_check_id", "circonus_check_instance_id", "circonus_check_search_tag",
    "circonus_check_tags", "circonus_submission_interval", "circonus_submission_url",
    "disable_compat_1.9", "dogstatsd_addr", "dogstatsd_tags", "filter_default", "prefix_filter",
    "statsd_address", "statsite_address", "retry_failed_connection",
)  # fmt: skip


def _telemetry_section() -> _Section:
    return _Section.build(
        {
            "disable_hostname": _scalar(_as_bool),
            "prometheus_retention_time": _scalar(_as_duration),
            "metrics_prefix": _scalar(_as_nonempty_str),
        },
        _CONSUL_ONLY_TELEMETRY,
    )


def _ports_section() -> _Section:
    return _Section.build(
        {
            "http": _scalar(_as_port),
            "serf_lan": _scalar(_as_port),
            "serf_wan": _scalar(_as_port),
            "server": _scalar(_as_port),
            "dns": _scalar(_as_optional_port),
            "grpc": _scalar(_as_optional_port),
            "https": _scalar(_as_optional_port),
            "sidecar_min_port": _scalar(_as_sidecar_port),
            "sidecar_max_port": _scalar(_as_sidecar_port),
        },
        _CONSUL_ONLY_PORTS,
    )


def _connect_section() -> _Section:
    return _Section.build(
        {
            "enabled": _scalar(_as_bool),
            "ca_provider": _scalar(_as_ca_provider),
            "ca_config": _check_ca_config,
            "default_intention_policy": _scalar(_as_intention_policy),
        },
        _CONSUL_ONLY_CONNECT,
    )


# dns_config keys Consul knows that meshnode accepts and ignores (one warning each).
_CONSUL_ONLY_DNS: Final = (
    "max_stale", "disable_compression", "use_cache", "cache_max_age", "prefer_namespace",
)  # fmt: skip


def _dns_section() -> _Section:
    return _Section.build(
        {
            "allow_stale": _scalar(_as_allow_stale),
            "node_ttl": _scalar(_as_duration),
            "service_ttl": _check_service_ttl,
            "only_passing": _scalar(_as_bool),
            "udp_answer_limit": _scalar(_as_count),
            "enable_truncate": _scalar(_as_bool),
            "a_record_limit": _scalar(_as_count),
            "recursor_timeout": _scalar(_as_interval),
            "recursor_strategy": _scalar(_as_recursor_strategy),
            "enable_additional_node_meta_txt": _scalar(_as_bool),
            "soa": _section(_soa_section),
        },
        _CONSUL_ONLY_DNS,
    )


def _soa_section() -> _Section:
    keys = ("refresh", "retry", "expire", "min_ttl")
    return _Section.build({k: _scalar(_as_soa_number) for k in keys}, ())


def _config_entries_section() -> _Section:
    return _Section.build({"bootstrap": _check_bootstrap_entries}, ())


def _agent_section() -> _Section:
    return _Section.build(
        {
            "datacenter": _scalar(_as_datacenter),
            "primary_datacenter": _scalar(_as_datacenter),
            "node_name": _scalar(_as_nonempty_str),
            "node_id": _scalar(_as_uuid),
            "data_dir": _scalar(_as_nonempty_str),
            "server": _scalar(_as_bool),
            "bootstrap_expect": _scalar(_as_count),
            "bind_addr": _scalar(_as_ip),
            "advertise_addr": _scalar(_as_ip),
            "advertise_addr_wan": _scalar(_as_ip),
            "client_addr": _scalar(_as_ip),
            "ports": _section(_ports_section),
            "retry_join": _scalar(_as_str_list),
            "retry_join_wan": _scalar(_as_str_list),
            "retry_interval": _scalar(_as_interval),
            "retry_interval_wan": _scalar(_as_interval),
            "encrypt": _scalar(_as_encrypt_key),
            "encrypt_verify_incoming": _scalar(_as_bool),
            "encrypt_verify_outgoing": _scalar(_as_bool),
            "connect": _section(_connect_section),
            "domain": _scalar(_as_domain),
            "alt_domain": _scalar(_as_domain),
            "recursors": _scalar(_as_recursors),
            "dns_config": _section(_dns_section),
            "enable_central_service_config": _scalar(_as_bool),
            "log_level": _scalar(_as_log_level),
            "service": _check_service_blocks,
            "services": _check_service_list,
            "config_entries": _section(_config_entries_section),
            "leave_on_terminate": _scalar(_as_bool),
            "reconnect_timeout": _scalar(_as_reconnect_timeout),
            "reconnect_timeout_wan": _scalar(_as_reconnect_timeout),
            "telemetry": _section(_telemetry_section),
            "enable_script_checks": _scalar(_as_bool),
            "enable_local_script_checks": _scalar(_as_bool),
        },
        _CONSUL_ONLY_TOP,
    )


#: Where ``service``/``services`` and ``bootstrap`` land in the merged tree.
_RENAMED: Final = {"service": "services"}


class _Source:
    """Checks one source (a file, or the command line) and collects its warnings.

    The config layer's error adapter: every problem, a request parser's ``InvalidRequest``
    included (``_request_error``), becomes a ``ConfigError`` naming this file and the key path.
    """

    __slots__ = ("file", "lenient", "warnings")

    def __init__(self, file: str, *, lenient: bool = False) -> None:
        self.file = file
        self.lenient = lenient  # flags arrive as strings: "8500", "true"
        self.warnings: list[tuple[str, str]] = []  # (key path, message)

    def fail(self, path: str, reason: str) -> ConfigError:
        """The error for a bad value at ``path`` in this source."""
        return ConfigError(reason, file=self.file, key=path)

    def section(self, raw: Any, path: str, schema: _Section) -> dict[str, Any]:
        """Check every key of one object against ``schema``; return name → checked value."""
        if isinstance(raw, list) and len(raw) > 1 and all(isinstance(v, Mapping) for v in raw):
            raise self.fail(path, f"expected one block, got {len(raw)}")
        if not isinstance(raw, Mapping):
            what = "a block" if path else "an object at the top level"
            raise self.fail(path, f"expected {what}, got {_describe(raw)}")
        out: dict[str, Any] = {}
        for key, value in raw.items():
            key_path = f"{path}.{key}" if path else str(key)
            name = schema.names.name_of(str(key))
            if name is None:
                raise self.fail(key_path, _unknown_key_reason(str(key), schema.names))
            check = schema.checks.get(name)
            if check is None:
                self.warnings.append((key_path, self._ignored(key_path)))
            else:
                _put(out, _RENAMED.get(name, name), self.convert(check, value, key_path))
        return out

    def convert(self, check: Callable[[Any, _Source, str], Any], value: Any, path: str) -> Any:
        """Run one checker; its ``_Invalid`` becomes a ``ConfigError`` at ``path``."""
        try:
            return check(value, self, path)
        except _Invalid as e:
            raise self.fail(path, str(e)) from None

    def _ignored(self, path: str) -> str:
        return (
            f"{self.file}: {path}: accepted for Consul compatibility but not implemented "
            "by meshnode; ignored"
        )


def _put(out: dict[str, Any], name: str, value: Any) -> None:
    """Store a checked value; ``service`` and ``services`` in one file both add services."""
    if isinstance(value, tuple) and isinstance(out.get(name), tuple):
        out[name] = out[name] + value
    else:
        out[name] = value


def _unknown_key_reason(key: str, names: Names) -> str:
    close = names.closest(key, cutoff=0.75)
    return f'unknown key (did you mean "{close}"?)' if close else "unknown key"


# --- services and config entries ----------------------------------------------------------


def _check_service_blocks(value: Any, source: _Source, path: str) -> tuple[Any, ...]:
    """``service { }``: one block is an object, repeated blocks (or a JSON list) a list."""
    if isinstance(value, list):
        return tuple(_parse_service(v, source, f"{path}[{i}]") for i, v in enumerate(value))
    return (_parse_service(value, source, path),)


def _check_service_list(value: Any, source: _Source, path: str) -> tuple[Any, ...]:
    """``services = [ ... ]``."""
    if not isinstance(value, list):
        raise _Invalid(f"expected a list of service definitions, got {_describe(value)}")
    return tuple(_parse_service(v, source, f"{path}[{i}]") for i, v in enumerate(value))


def _parse_service(raw: Any, source: _Source, path: str) -> Any:
    if not isinstance(raw, Mapping):
        raise source.fail(path, f"expected a service definition (an object), got {_describe(raw)}")
    try:
        return parse_service(raw, path=path)
    except InvalidRequest as e:
        raise _request_error(source, e, e.field or path) from None


def _check_bootstrap_entries(value: Any, source: _Source, path: str) -> tuple[Any, ...]:
    """``config_entries { bootstrap = [ { Kind = ... }, ... ] }``."""
    if not isinstance(value, list):
        raise _Invalid(f"expected a list of config entries, got {_describe(value)}")
    return tuple(_parse_entry(v, source, f"{path}[{i}]") for i, v in enumerate(value))


def _parse_entry(raw: Any, source: _Source, path: str) -> Any:
    if not isinstance(raw, Mapping):
        raise source.fail(path, f"expected a config entry (an object), got {_describe(raw)}")
    try:
        return parse_config_entry(raw)
    except InvalidRequest as e:
        raise _request_error(source, e, _field_path(path, e.field)) from None


def _request_error(source: _Source, error: InvalidRequest, key_path: str) -> ConfigError:
    """Re-home a parser's error under this file and key path (without repeating the path)."""
    reason = str(error)
    if error.field and reason.startswith(f"{error.field}: "):
        reason = reason[len(error.field) + 2 :]
    return source.fail(key_path, reason)


def _field_path(path: str, field_name: str | None) -> str:
    if not field_name:
        return path
    joiner = "" if field_name.startswith("[") else "."
    return f"{path}{joiner}{field_name}" if path else field_name


def _check_ca_config(value: Any, source: _Source, path: str) -> dict[str, Any]:
    """``connect { ca_config { } }`` is provider-specific; only ``leaf_cert_ttl`` is checked."""
    if not isinstance(value, Mapping):
        raise _Invalid(f"expected a block, got {_describe(value)}")
    for key, item in value.items():
        if canonical_key(str(key)) == "leafcertttl":
            ttl = source.convert(_scalar(_as_duration), item, f"{path}.{key}")
            if not MIN_LEAF_CERT_TTL.total_seconds() <= ttl < MAX_LEAF_CERT_TTL.total_seconds():
                reason = f"must be at least 1h and less than 8760h, got {_describe(item)}"
                raise source.fail(f"{path}.{key}", reason)
    return dict(value)


# --- documents: agent files, service files, config-entry files ----------------------------


def read_source(path: str) -> str:
    """Read one config file as UTF-8 text; errors name the file."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("no such file or directory", file=path) from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"not valid UTF-8 (byte {e.start})", file=path) from None
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror or e}", file=path) from None


def _read_document(text: str, filename: str) -> Any:
    return normalize_blocks(load_document(text, filename))


def load_services_document(text: str, filename: str) -> tuple[Any, ...]:
    """Parse a service file (``service { }`` and/or ``services = [ ]``) for ``services register``.

    Returns the parsed service definitions; any other key is an error.
    """
    raw = _read_document(text, filename)
    source = _Source(filename)
    schema = _Section.build({"service": _check_service_blocks, "services": _check_service_list}, ())
    checked = source.section(raw, "", schema)
    services: tuple[Any, ...] = checked.get("services", ())
    if not services:
        raise ConfigError(
            'no service definitions (expected "service { }" or "services = [ ]")', file=filename
        )
    return services


def load_config_entry_document(text: str, filename: str) -> Any:
    """Parse one config-entry file (``Kind = "proxy-defaults"`` ...) for ``config write``."""
    raw = _read_document(text, filename)
    return _parse_entry(raw, _Source(filename), "")


# --- loading and merging -------------------------------------------------------------------


def _expand_paths(paths: Sequence[str]) -> list[str]:
    """Files as given; a directory contributes its ``*.hcl``/``*.json`` files in lexical order."""
    files: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            names = sorted(n for n in os.listdir(path) if n.endswith(CONFIG_SUFFIXES))
            files.extend(
                os.path.join(path, n) for n in names if os.path.isfile(os.path.join(path, n))
            )
        else:
            files.append(path)
    return files


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Consul's merge: lists append, sections merge key by key, other values are replaced."""
    out = dict(base)
    for name, value in extra.items():
        old = out.get(name)
        if isinstance(old, tuple) and isinstance(value, tuple):
            out[name] = old + value
        elif isinstance(old, dict) and isinstance(value, dict):
            out[name] = _merge(old, value)
        else:
            out[name] = value
    return out


# Flag name (canonical) → key path in the merged tree.
_FLAGS: Final = {
    "node": ("node_name",),
    "nodename": ("node_name",),
    "nodeid": ("node_id",),
    "datacenter": ("datacenter",),
    "primarydatacenter": ("primary_datacenter",),
    "datadir": ("data_dir",),
    "bind": ("bind_addr",),
    "bindaddr": ("bind_addr",),
    "client": ("client_addr",),
    "clientaddr": ("client_addr",),
    "advertise": ("advertise_addr",),
    "advertiseaddr": ("advertise_addr",),
    "advertisewan": ("advertise_addr_wan",),
    "advertiseaddrwan": ("advertise_addr_wan",),
    "httpport": ("ports", "http"),
    "serflanport": ("ports", "serf_lan"),
    "serfwanport": ("ports", "serf_wan"),
    "serverport": ("ports", "server"),
    "dnsport": ("ports", "dns"),
    "recursor": ("recursors",),
    "domain": ("domain",),
    "altdomain": ("alt_domain",),
    "server": ("server",),
    "bootstrapexpect": ("bootstrap_expect",),
    "dev": ("dev",),
    "retryjoin": ("retry_join",),
    "retryjoinwan": ("retry_join_wan",),
    "encrypt": ("encrypt",),
    "loglevel": ("log_level",),
}


def _check_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Command-line flags → a partial tree like one file's; ``None`` means "flag not given"."""
    source = _Source(COMMAND_LINE, lenient=True)
    tree: dict[str, Any] = {}
    for flag, value in overrides.items():
        if value is None:
            continue
        shown = "-" + str(flag).lstrip("-").replace("_", "-")
        target = _FLAGS.get(canonical_key(str(flag)))
        if target is None:
            raise source.fail(shown, "unknown flag")
        if target == ("dev",):
            tree["dev"] = source.convert(_scalar(_as_bool), value, shown)
            continue
        schema = _agent_section() if len(target) == 1 else _ports_section()
        checked = source.convert(schema.checks[target[-1]], value, shown)
        tree = _merge(tree, _nest(target, checked))
    return tree


def _nest(path: Sequence[str], value: Any) -> dict[str, Any]:
    tree: dict[str, Any] = {path[-1]: value}
    for name in reversed(path[:-1]):
        tree = {name: tree}
    return tree


def load(
    paths: Sequence[str],
    *,
    dev: bool = False,
    overrides: Mapping[str, Any] = MappingProxyType({}),
    log_warnings: bool = True,
) -> AgentConfig:
    """Read, check and merge config files and flags into one ``AgentConfig``.

    ``paths`` are files or directories (``-config-dir``); ``overrides`` are flags
    (``node``, ``datacenter``, ``data-dir``, ``bind``, ``client``, ``http-port``, ``server``,
    ``dev``, ...; ``None`` values are ignored) and win over every file.
    Warnings for Consul-only keys are in ``AgentConfig.warnings`` and, unless
    ``log_warnings`` is false, logged once each.
    Raises ``ConfigError`` naming the file, the key path and what was expected.
    """
    tree: dict[str, Any] = {}
    warnings: dict[str, str] = {}  # key path → first warning, so each key warns once
    files = _expand_paths(paths)
    for file in files:
        source = _Source(file)
        tree = _merge(
            tree, source.section(_read_document(read_source(file), file), "", _agent_section())
        )
        for key_path, message in source.warnings:
            warnings.setdefault(key_path, message)
    tree = _merge(tree, _check_overrides(overrides))
    is_dev = bool(tree.pop("dev", False)) or dev
    for message in warnings.values() if log_warnings else ():
        log.warning(message)
    return _build(tree, dev=is_dev, warnings=tuple(warnings.values()), sources=tuple(files))


def validate(paths: Sequence[str]) -> AgentConfig:
    """Check config files without starting anything (``meshnode validate``).

    Returns the config, or raises ``ConfigError``. As with Consul's ``validate``, the
    files must stand on their own: ``data_dir`` is required. Warnings are returned in
    ``AgentConfig.warnings``, not logged: the caller prints them.
    """
    if not paths:
        raise ConfigError("no config files or directories given")
    return load(paths, log_warnings=False)


def _build(
    tree: dict[str, Any], *, dev: bool, warnings: tuple[str, ...], sources: tuple[str, ...]
) -> AgentConfig:
    """Apply defaults (dev-mode ones first) and cross-key rules to the merged tree."""
    datacenter = tree.get("datacenter", "dc1")
    server = tree.get("server", dev)
    data_dir = tree.get("data_dir")
    if data_dir is None and not dev:
        reason = "required: set data_dir in a config file, pass -data-dir, or use -dev"
        raise ConfigError(reason, key="data_dir")
    scalars = {k: v for k, v in tree.items() if k in _SCALAR_FIELDS}
    bind_addr, advertise_addr, advertise_addr_wan = _addresses(tree, dev=dev)
    return AgentConfig(
        **scalars,
        bind_addr=bind_addr,
        advertise_addr=advertise_addr,
        advertise_addr_wan=advertise_addr_wan,
        datacenter=datacenter,
        primary_datacenter=tree.get("primary_datacenter", datacenter),
        node_name=tree.get("node_name") or platform.node() or "meshnode",
        data_dir=data_dir,
        server=server,
        dev=dev,
        ports=_build_ports(tree.get("ports", {})),
        connect=_build_connect(tree.get("connect", {})),
        dns=_build_dns(tree, datacenter),
        services=tree.get("services", ()),
        config_entries_bootstrap=tree.get("config_entries", {}).get("bootstrap", ()),
        leave_on_terminate=tree.get("leave_on_terminate", not server),
        telemetry=TelemetryConfig(**tree.get("telemetry", {})),
        # Consul: enable_local_script_checks defaults to enable_script_checks.
        enable_local_script_checks=tree.get(
            "enable_local_script_checks", tree.get("enable_script_checks", False)
        ),
        warnings=warnings,
        sources=sources,
    )


def _addresses(tree: Mapping[str, Any], *, dev: bool) -> tuple[str, str, str]:
    """Bind, advertise and WAN advertise addresses; each defaults to the one before it."""
    bind_addr: str = tree.get("bind_addr", "127.0.0.1" if dev else "0.0.0.0")
    advertise: str = tree.get("advertise_addr", _advertisable(bind_addr))
    return bind_addr, advertise, tree.get("advertise_addr_wan", advertise)


def _build_ports(raw: Mapping[str, int]) -> Ports:
    ports = Ports(**raw)
    if ports.sidecar_min_port > ports.sidecar_max_port:
        reason = (
            f"must not be greater than ports.sidecar_max_port "
            f"({ports.sidecar_min_port} > {ports.sidecar_max_port})"
        )
        raise ConfigError(reason, key="ports.sidecar_min_port")
    return ports


def _build_connect(raw: Mapping[str, Any]) -> ConnectConfig:
    fields = dict(raw)
    fields["ca_config"] = freeze(fields.get("ca_config", {}))
    return ConnectConfig(**fields)


def _build_dns(tree: Mapping[str, Any], datacenter: str) -> DNSConfig:
    raw = dict(tree.get("dns_config", {}))
    raw.pop("allow_stale", None)  # only true is accepted: every read is a stale read
    soa = raw.pop("soa", {})
    fields = {f"soa_{k}": v for k, v in soa.items()}
    if "service_ttl" in raw:
        fields["service_ttl"] = MappingProxyType(raw.pop("service_ttl"))
    for key in ("domain", "alt_domain", "recursors"):
        if key in tree:
            fields[key] = tree[key]
    config = DNSConfig(**raw, **fields)
    first = config.alt_domain.split(".", 1)[0]
    if first in ("service", "connect", "node", "query", "addr", datacenter):
        reason = f"alt_domain cannot start with {{service,connect,node,query,addr,{datacenter}}}"
        raise ConfigError(reason, key="alt_domain")
    return config


#: Fields copied from the merged tree as they are (already checked, no default logic).
_SCALAR_FIELDS: Final = frozenset(
    {
        "node_id", "bootstrap_expect", "client_addr", "retry_join", "retry_join_wan",
        "retry_interval", "retry_interval_wan", "encrypt", "encrypt_verify_incoming",
        "encrypt_verify_outgoing", "enable_central_service_config", "log_level",
        "reconnect_timeout", "reconnect_timeout_wan", "enable_script_checks",
    }
)  # fmt: skip


def _advertisable(bind_addr: str) -> str:
    """The address to advertise for a bind address: loopback stands in for "any"."""
    if bind_addr == "0.0.0.0":
        return "127.0.0.1"
    if bind_addr == "::":
        return "::1"
    return bind_addr
