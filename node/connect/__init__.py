"""Connect: identities, intentions, config entries, CA state and Connect's global records.

This package face re-exports its pure parts only:

- ``spiffe`` (SPIFFE ids), ``names`` (SNI names), ``entries`` (config entries),
  ``intentions``, ``resolve`` (mesh-gateway mode per upstream), ``castate`` (public CA
  state: roots, CA config), ``records`` (Connect's kinds in ``node.state``), ``carole``
  (the CA role's decisions).

Everything else is imported by explicit submodule: ``ca`` and ``authority``
(certificates and keys, with ``cryptography``), ``tls`` (ssl contexts), and the asyncio
drivers ``leaf``, ``signbatch``, ``hosting``, ``leafsign``, ``cadriver``,
``federation`` and ``service`` (the facade and its wiring).
"""

from __future__ import annotations

from node.connect.carole import Need
from node.connect.castate import (
    CAConfig,
    CAConfigRequest,
    CARoot,
    CARoots,
    format_duration,
    merge_roots,
    note_leaf_expiry,
    parse_ca_configuration,
    parse_duration,
    prune_roots,
    retire_inactive,
    rotate_roots,
)
from node.connect.entries import (
    CONFIG_ENTRY_KINDS,
    PROXY_CONFIG_GLOBAL,
    PROXY_DEFAULTS,
    SERVICE_DEFAULTS,
    ConfigEntry,
    ProxyDefaults,
    ServiceDefaults,
    entry_to_wire,
    parse_config_entry,
    parse_config_entry_kind,
)
from node.connect.intentions import (
    Intention,
    IntentionAction,
    MatchBy,
    authorize,
    check,
    check_unique,
    match_intentions,
    parse_intention,
    sort_intentions,
)
from node.connect.names import DEFAULT_NAMESPACE, ParsedSNI, datacenter_sni, parse_sni, service_sni
from node.connect.records import (
    CA_CONFIG_NAME,
    CA_ROOTS_NAME,
    CONNECT_SCHEMA,
    KIND_CA_CONFIG,
    KIND_CA_ROOTS,
    KIND_INTENTION,
    KIND_PROXY_DEFAULTS,
    KIND_SERVICE_DEFAULTS,
    KINDS,
)
from node.connect.resolve import DecidedBy, ResolvedUpstream, resolve_upstreams
from node.connect.spiffe import (
    SigningID,
    SpiffeID,
    parse_any_spiffe_id,
    parse_spiffe_id,
    trust_domain_for,
)

__all__ = [
    # the CA role's vocabulary
    "Need",
    # spiffe / names
    "SpiffeID",
    "SigningID",
    "parse_spiffe_id",
    "parse_any_spiffe_id",
    "trust_domain_for",
    "DEFAULT_NAMESPACE",
    "ParsedSNI",
    "service_sni",
    "datacenter_sni",
    "parse_sni",
    # config entries / resolution
    "CONFIG_ENTRY_KINDS",
    "PROXY_CONFIG_GLOBAL",
    "PROXY_DEFAULTS",
    "SERVICE_DEFAULTS",
    "ConfigEntry",
    "ProxyDefaults",
    "ServiceDefaults",
    "parse_config_entry",
    "parse_config_entry_kind",
    "entry_to_wire",
    "DecidedBy",
    "ResolvedUpstream",
    "resolve_upstreams",
    # intentions
    "Intention",
    "IntentionAction",
    "MatchBy",
    "parse_intention",
    "check_unique",
    "sort_intentions",
    "match_intentions",
    "check",
    "authorize",
    # CA state
    "CAConfig",
    "CAConfigRequest",
    "CARoot",
    "CARoots",
    "parse_ca_configuration",
    "parse_duration",
    "format_duration",
    "merge_roots",
    "rotate_roots",
    "prune_roots",
    "retire_inactive",
    "note_leaf_expiry",
    # Connect's records in the global state
    "KIND_CA_ROOTS",
    "KIND_CA_CONFIG",
    "KIND_INTENTION",
    "KIND_PROXY_DEFAULTS",
    "KIND_SERVICE_DEFAULTS",
    "KINDS",
    "CA_ROOTS_NAME",
    "CA_CONFIG_NAME",
    "CONNECT_SCHEMA",
]
