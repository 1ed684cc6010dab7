"""Connect: identities, the certificate authority, intentions and the shared global state.

Layers (imports go down only):

- pure values and rules: ``spiffe`` (SPIFFE ids), ``names`` (SNI names), ``entries``
  (config entries), ``intentions``, ``resolve`` (mesh-gateway mode per upstream),
  ``castate`` (public CA state: roots, CA config), ``hlc`` + ``globalstate`` (the
  replicated last-writer-wins map);
- ``ca``: certificates with ``cryptography`` (roots, intermediates, leaves, verification),
  no asyncio;
- ``leaf``: the asyncio ``LeafManager`` that keeps each local service's leaf fresh;
- ``tls`` (owned by the proxy): ssl contexts built from leaves and roots.

Callers import from here.
"""

from __future__ import annotations

from node.connect.authority import Authority, Need
from node.connect.ca import (
    CAChange,
    CAServer,
    IssuedCert,
    RootMaterial,
    TrustBundle,
    bootstrap_ca,
    cert_fingerprint,
    colon_hex,
    generate_private_key,
    generate_root,
    key_id,
    load_certificates,
    load_private_key,
    load_root,
    make_intermediate_csr,
    make_leaf_csr,
    private_key_to_pem,
    reconfigure_ca,
    root_info,
    serial_hex,
    spiffe_id_from_cert,
    verify_leaf,
)
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
from node.connect.resolve import DecidedBy, ResolvedUpstream, resolve_upstreams
from node.connect.spiffe import (
    SigningID,
    SpiffeID,
    parse_any_spiffe_id,
    parse_spiffe_id,
    trust_domain_for,
)
from node.state.globalstate import (
    CA_CONFIG_NAME,
    CA_ROOTS_NAME,
    KIND_CA_CONFIG,
    KIND_CA_ROOTS,
    KIND_INTENTION,
    KIND_PROXY_DEFAULTS,
    KIND_SERVICE_DEFAULTS,
    KINDS,
    Delta,
    GlobalState,
    Record,
)
from node.state.hlc import HybridClock, Stamp
from node.state.statesync import GLOBAL_STATE_CHANNEL, StateSync

__all__ = [
    # asyncio parts (imported lazily, see __getattr__)
    "Leaf",
    "LeafManager",
    "ConnectService",
    "Timing",
    "SignBatcher",
    # server-side signing material, gossip sync of the global state
    "Authority",
    "Need",
    "StateSync",
    "GLOBAL_STATE_CHANNEL",
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
    # CA
    "CAChange",
    "bootstrap_ca",
    "reconfigure_ca",
    "serial_hex",
    "CAServer",
    "IssuedCert",
    "RootMaterial",
    "TrustBundle",
    "colon_hex",
    "key_id",
    "cert_fingerprint",
    "generate_private_key",
    "private_key_to_pem",
    "load_private_key",
    "generate_root",
    "load_root",
    "root_info",
    "make_leaf_csr",
    "make_intermediate_csr",
    "verify_leaf",
    "spiffe_id_from_cert",
    "load_certificates",
    # global state
    "KIND_CA_ROOTS",
    "KIND_CA_CONFIG",
    "KIND_INTENTION",
    "KIND_PROXY_DEFAULTS",
    "KIND_SERVICE_DEFAULTS",
    "KINDS",
    "CA_ROOTS_NAME",
    "CA_CONFIG_NAME",
    "Record",
    "Delta",
    "GlobalState",
    "Stamp",
    "HybridClock",
]


def __getattr__(name: str) -> object:
    # The asyncio parts are imported on first use so that pure modules importing
    # ``node.connect.<x>`` (which runs this file) do not pull asyncio in with it.
    if name in ("Leaf", "LeafManager"):
        from node.connect import leaf

        return getattr(leaf, name)
    if name in ("ConnectService", "Timing"):
        from node.connect import service

        return getattr(service, name)
    if name == "SignBatcher":
        from node.connect import signbatch

        return signbatch.SignBatcher
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
