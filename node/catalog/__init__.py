"""node.catalog: the datacenter's catalog of nodes, services and health checks.

Pure layer: ``model`` (values, parsers, sidecar expansion), ``store`` (replicated node
records with modify indexes), ``queries`` (the reads behind the HTTP API). asyncio layer:
``local`` (this node's own registrations and their persistence), ``checks`` (the health
check runner) and ``watch`` (the index notifier behind blocking queries). ``sync`` (pure)
is the gossip delegate that replicates node records across the datacenter.
"""

from node.catalog.checks import CheckRunner
from node.catalog.local import LocalState, NodeIdentity, ServiceSource, load_node_id
from node.catalog.model import (
    DEFAULT_CHECK_TIMEOUT,
    DEFAULT_OUTPUT_MAX_SIZE,
    SERF_CHECK_ID,
    SIDECAR_MAX_PORT,
    SIDECAR_MIN_PORT,
    CheckDefinition,
    CheckKind,
    CheckState,
    Health,
    MeshGatewayMode,
    NodeRecord,
    ProxyConfig,
    ServiceDefinition,
    ServiceInstance,
    ServiceKind,
    SidecarPorts,
    SidecarSpec,
    TaggedAddress,
    Upstream,
    Weights,
    aggregate_health,
    expand_sidecar,
    format_duration,
    parse_check,
    parse_duration,
    parse_mesh_gateway_mode,
    parse_service,
    sidecar_id_for,
)
from node.catalog.queries import (
    CheckEntry,
    HealthEntry,
    NodeInfo,
    NodeServices,
    QueryResult,
    ServiceNode,
)
from node.catalog.store import CatalogStore, ItemIndex, NodeEntry
from node.catalog.sync import CatalogSync, SyncMessage, encode_update
from node.catalog.watch import IndexNotifier

__all__ = [
    "DEFAULT_CHECK_TIMEOUT",
    "DEFAULT_OUTPUT_MAX_SIZE",
    "SERF_CHECK_ID",
    "SIDECAR_MAX_PORT",
    "SIDECAR_MIN_PORT",
    "CheckDefinition",
    "CheckKind",
    "CheckState",
    "Health",
    "MeshGatewayMode",
    "NodeRecord",
    "ProxyConfig",
    "ServiceDefinition",
    "ServiceInstance",
    "ServiceKind",
    "SidecarPorts",
    "SidecarSpec",
    "TaggedAddress",
    "Upstream",
    "Weights",
    "aggregate_health",
    "expand_sidecar",
    "format_duration",
    "parse_check",
    "parse_duration",
    "parse_mesh_gateway_mode",
    "parse_service",
    "sidecar_id_for",
    "CheckEntry",
    "HealthEntry",
    "NodeInfo",
    "NodeServices",
    "QueryResult",
    "ServiceNode",
    "CatalogStore",
    "ItemIndex",
    "NodeEntry",
    "IndexNotifier",
    "LocalState",
    "NodeIdentity",
    "ServiceSource",
    "load_node_id",
    "CheckRunner",
    "CatalogSync",
    "SyncMessage",
    "encode_update",
]
