"""Consul 1.6 JSON shapes, in and out.

Rule: every Consul JSON shape lives here and nowhere else. Out: domain values → plain
dicts with PascalCase keys, as Consul's ``api`` structs marshal them. In: request bodies
are decoded to dicts and handed to the domain parsers (``parse_service``,
``parse_check``), which accept PascalCase, snake_case or any casing, as Go's decoder
does; anything malformed becomes ``InvalidRequest`` naming what was wrong.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from node.api.chaincodec import encode_chain_entry
from node.catalog.parse import parse_check, parse_service
from node.catalog.queries import CheckEntry, HealthEntry, NodeInfo, NodeServices, ServiceNode
from node.catalog.values import (
    CheckDefinition,
    CheckKind,
    CheckState,
    MeshGatewayMode,
    ProxyConfig,
    ServiceDefinition,
    ServiceInstance,
    ServiceKind,
    TaggedAddress,
    Upstream,
)
from node.connect.chainentries import CHAIN_KINDS
from node.errors import InvalidRequest
from node.frozen import thaw

__all__ = [
    "KeyringReport",
    "encode_ca_roots",
    "encode_ca_config",
    "encode_leaf",
    "encode_intention",
    "encode_config_entry",
    "encode_proxy_config",
    "decode_object",
    "decode_json",
    "decode_service",
    "decode_check",
    "decode_check_update",
    "encode_agent_service",
    "encode_node_service",
    "encode_check",
    "encode_check_entry",
    "encode_node",
    "encode_node_services",
    "encode_catalog_services",
    "encode_catalog_service",
    "encode_health_entry",
    "encode_member",
    "encode_tagged_addresses",
    "decode_keyring_request",
    "encode_keyring_response",
    "encode_proxy_metrics",
]

# ---------------------------------------------------------------------------- in


def decode_json(body: bytes, *, what: str) -> Any:
    """Parse a request body; 400 naming ``what`` and the position on bad JSON."""
    if not body.strip():
        raise InvalidRequest(f"Request decode failed: {what}: empty body")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"Request decode failed: {what}: {exc}") from None


def _require_object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequest(
            f"Request decode failed: {what}: expected a JSON object, got {type(value).__name__}"
        )
    return value


def decode_service(body: bytes) -> ServiceDefinition:
    """A /v1/agent/service/register body → a validated ServiceDefinition."""
    return parse_service(_require_object(decode_json(body, what="service"), "service"))


def decode_check(body: bytes) -> CheckDefinition:
    """A /v1/agent/check/register body → a validated CheckDefinition."""
    return parse_check(_require_object(decode_json(body, what="check"), "check"))


def decode_check_update(body: bytes) -> tuple[str, str]:
    """A /v1/agent/check/update body ``{"Status", "Output"}`` → (status, output)."""
    raw = _require_object(decode_json(body, what="check update"), "check update")
    fields = {k.replace("_", "").lower(): v for k, v in raw.items()}
    unknown = sorted(
        k for k, v in raw.items() if k.replace("_", "").lower() not in ("status", "output")
    )
    if unknown:
        raise InvalidRequest(
            f"Request decode failed: unknown field {unknown[0]!r}", field=unknown[0]
        )
    status, output = fields.get("status", ""), fields.get("output", "")
    if not isinstance(status, str) or not isinstance(output, str):
        raise InvalidRequest("Status and Output must be strings", field="Status")
    return status, output


# ---------------------------------------------------------------------------- out: services


def encode_tagged_addresses(tagged: Mapping[str, TaggedAddress]) -> dict[str, Any]:
    """Service tagged addresses: ``{"lan": {"Address", "Port"}}``."""
    return {k: {"Address": v.address, "Port": v.port} for k, v in tagged.items()}


def _mesh_gateway(mode: MeshGatewayMode) -> dict[str, str]:
    # Consul marshals the unset mode as an empty object.
    return {"Mode": str(mode)} if mode is not MeshGatewayMode.DEFAULT else {}


def _upstream(up: Upstream) -> dict[str, Any]:
    out: dict[str, Any] = {
        "DestinationType": up.destination_type,
        "DestinationName": up.destination_name,
        "Datacenter": up.datacenter,
        "LocalBindAddress": up.local_bind_address,
        "LocalBindPort": up.local_bind_port,
        "Config": dict(up.config),
        "MeshGateway": _mesh_gateway(up.mesh_gateway),
    }
    if up.destination_namespace:
        out["DestinationNamespace"] = up.destination_namespace
    return out


def encode_proxy(proxy: ProxyConfig) -> dict[str, Any]:
    """The ``Proxy`` block of a connect-proxy or mesh-gateway."""
    out: dict[str, Any] = {
        "DestinationServiceName": proxy.destination_service_name,
        "DestinationServiceID": proxy.destination_service_id,
        "LocalServiceAddress": proxy.local_service_address,
        "LocalServicePort": proxy.local_service_port,
        "Config": thaw(proxy.config),
        "Upstreams": [_upstream(up) for up in proxy.upstreams],
        "MeshGateway": _mesh_gateway(proxy.mesh_gateway),
        "Expose": thaw(proxy.expose),
    }
    return out


def _service_body(svc: ServiceInstance) -> dict[str, Any]:
    """Fields shared by AgentService and NodeService (``Service`` is the name)."""
    out: dict[str, Any] = {
        "Kind": str(svc.kind),
        "ID": svc.id,
        "Service": svc.name,
        "Tags": list(svc.tags),
        "Meta": dict(svc.meta),
        "Port": svc.port,
        "Address": svc.address,
        "Weights": {"Passing": svc.weights.passing, "Warning": svc.weights.warning},
        "EnableTagOverride": svc.enable_tag_override,
    }
    if svc.tagged_addresses:
        out["TaggedAddresses"] = encode_tagged_addresses(svc.tagged_addresses)
    if svc.kind is not ServiceKind.TYPICAL and svc.proxy is not None:
        out["Proxy"] = encode_proxy(svc.proxy)
    if svc.connect_native:
        out["Connect"] = {"Native": True}
    return out


def encode_agent_service(svc: ServiceInstance) -> dict[str, Any]:
    """/v1/agent/services values and /v1/agent/service/:id (Consul ``AgentService``)."""
    return _service_body(svc)


def encode_node_service(svc: ServiceInstance, create: int, modify: int) -> dict[str, Any]:
    """A service inside /v1/catalog/node/:node and /v1/health/* (``NodeService``)."""
    out = _service_body(svc)
    out["CreateIndex"] = create
    out["ModifyIndex"] = modify
    return out


# ---------------------------------------------------------------------------- out: checks, nodes


def encode_check(node: str, check: CheckState, create: int = 0, modify: int = 0) -> dict[str, Any]:
    """Consul ``HealthCheck`` (agent/checks values, health endpoints)."""
    definition: dict[str, Any] = {}
    if check.interval:
        definition["Interval"] = _go_duration(check.interval)
    if check.timeout:
        definition["Timeout"] = _go_duration(check.timeout)
    return {
        "Node": node,
        "CheckID": check.id,
        "Name": check.name,
        "Status": str(check.status),
        "Notes": check.notes,
        "Output": check.output,
        "ServiceID": check.service_id,
        "ServiceName": check.service_name,
        "ServiceTags": list(check.service_tags),
        "Type": "" if check.kind is CheckKind.SERF else str(check.kind),
        "Definition": definition,
        "CreateIndex": create,
        "ModifyIndex": modify,
    }


def encode_check_entry(entry: CheckEntry) -> dict[str, Any]:
    """A check from a catalog query, with its own indexes."""
    return encode_check(entry.node, entry.check, entry.create_index, entry.modify_index)


def _go_duration(seconds: float) -> str:
    # Consul prints durations with Go's time.Duration.String: "10s", "1m30s", "500ms".
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    text = f"{secs:g}s"
    if minutes or hours:
        text = f"{minutes}m{text}"
    if hours:
        text = f"{hours}h{text}"
    return text


def _node_tagged(node: NodeInfo) -> dict[str, str]:
    # Consul always fills lan and wan for a node (wan defaults to the lan address).
    tagged = {"lan": node.address, "wan": node.address}
    tagged.update(node.tagged_addresses)
    return tagged


def encode_node(node: NodeInfo) -> dict[str, Any]:
    """Consul ``Node`` (catalog/nodes entries, the Node of a health entry)."""
    return {
        "ID": node.node_id,
        "Node": node.name,
        "Address": node.address,
        "Datacenter": node.datacenter,
        "TaggedAddresses": _node_tagged(node),
        "Meta": dict(node.meta),
        "CreateIndex": node.create_index,
        "ModifyIndex": node.modify_index,
    }


def encode_catalog_service(entry: ServiceNode) -> dict[str, Any]:
    """One entry of /v1/catalog/service/:name (Consul ``ServiceNode``)."""
    node, svc = entry.node, entry.service
    return {
        "ID": node.node_id,
        "Node": node.name,
        "Address": node.address,
        "Datacenter": node.datacenter,
        "TaggedAddresses": _node_tagged(node),
        "NodeMeta": dict(node.meta),
        "ServiceKind": str(svc.kind),
        "ServiceID": svc.id,
        "ServiceName": svc.name,
        "ServiceTags": list(svc.tags),
        "ServiceAddress": svc.address,
        "ServiceTaggedAddresses": encode_tagged_addresses(svc.tagged_addresses),
        "ServiceWeights": {"Passing": svc.weights.passing, "Warning": svc.weights.warning},
        "ServiceMeta": dict(svc.meta),
        "ServicePort": svc.port,
        "ServiceEnableTagOverride": svc.enable_tag_override,
        "ServiceProxy": encode_proxy(svc.proxy or ProxyConfig()),
        "ServiceConnect": {"Native": True} if svc.connect_native else {},
        "CreateIndex": entry.create_index,
        "ModifyIndex": entry.modify_index,
    }


def encode_catalog_services(value: Mapping[str, tuple[str, ...]]) -> dict[str, list[str]]:
    """/v1/catalog/services: ``{"name": ["tag", ...]}``."""
    return {name: list(tags) for name, tags in value.items()}


def encode_node_services(value: NodeServices) -> dict[str, Any]:
    """/v1/catalog/node/:node: ``{Node, Services: {id: NodeService}}``."""
    return {
        "Node": encode_node(value.node),
        "Services": {
            sn.service.id: encode_node_service(sn.service, sn.create_index, sn.modify_index)
            for sn in value.services
        },
    }


def encode_health_entry(entry: HealthEntry) -> dict[str, Any]:
    """One entry of /v1/health/service/:name: ``{Node, Service, Checks}``."""
    return {
        "Node": encode_node(entry.node),
        "Service": encode_node_service(entry.service, entry.create_index, entry.modify_index),
        "Checks": [encode_check_entry(c) for c in entry.checks],
    }


def encode_member(member: Mapping[str, Any]) -> dict[str, Any]:
    """One /v1/agent/members entry (serf member + protocol versions Consul 1.6 reports)."""
    return {
        "Name": member["name"],
        "Addr": member["addr"],
        "Port": member["port"],
        "Tags": dict(member["tags"]),
        "Status": member["status"],
        "ProtocolMin": 1,
        "ProtocolMax": 5,
        "ProtocolCur": 2,
        "DelegateMin": 2,
        "DelegateMax": 5,
        "DelegateCur": 4,
    }


# ---------------------------------------------------------------------------- keyring


def decode_keyring_request(body: bytes) -> str:
    """``{"Key": "<base64>"}`` of POST/PUT/DELETE /v1/operator/keyring → the key."""
    raw = _require_object(decode_json(body, what="keyring request"), "keyring request")
    key = raw.get("Key")
    if not isinstance(key, str) or not key:
        raise InvalidRequest(
            "Request decode failed: keyring request: 'Key' must be a non-empty string", field="Key"
        )
    return key


class KeyringReport(Protocol):
    """One pool's outcome of a keyring operation, as the encoder reads it."""

    @property
    def wan(self) -> bool: ...
    @property
    def datacenter(self) -> str: ...
    @property
    def keys(self) -> Mapping[str, int]:
        """Key (base64) → how many responding nodes hold it."""
        ...

    @property
    def num_nodes(self) -> int: ...
    @property
    def messages(self) -> Mapping[str, str]:
        """Node name → error text."""
        ...


def encode_keyring_response(report: KeyringReport) -> dict[str, Any]:
    """One pool's entry of GET /v1/operator/keyring (Consul's KeyringResponse)."""
    return {
        "WAN": report.wan,
        "Datacenter": report.datacenter,
        "Segment": "",
        "Messages": dict(report.messages),
        "Keys": dict(report.keys),
        "NumNodes": report.num_nodes,
    }


# ---------------------------------------------------------------------------- out: connect


def _rfc3339(when: datetime | None) -> str:
    """Go's ``time.Time`` JSON form, in UTC (``2026-11-26T07:00:00Z``)."""
    if when is None:
        return "0001-01-01T00:00:00Z"
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def encode_ca_roots(roots: Any, indexes: tuple[int, int]) -> dict[str, Any]:
    """/v1/connect/ca/roots (Consul ``IndexedCARoots``); never a signing key.

    ``roots`` is a ``node.connect.CARoots`` or ``None`` before the CA exists (then an
    empty bundle, as Consul answers before its leader initialised the CA).
    """
    if roots is None:
        return {"ActiveRootID": "", "TrustDomain": "", "Roots": []}
    create, modify = indexes
    return {
        "ActiveRootID": roots.active_root_id,
        "TrustDomain": roots.trust_domain,
        "Roots": [
            {
                "ID": r.id,
                "Name": r.name,
                "SerialNumber": r.serial_number,
                "SigningKeyID": r.signing_key_id,
                "ExternalTrustDomain": roots.cluster_id,
                "NotBefore": _rfc3339(r.not_before),
                "NotAfter": _rfc3339(r.not_after),
                "RootCert": r.root_cert,
                "IntermediateCerts": None,
                "Active": r.id == roots.active_root_id,
                "PrivateKeyType": r.private_key_type,
                "PrivateKeyBits": r.private_key_bits,
                "CreateIndex": create,
                "ModifyIndex": modify,
            }
            for r in roots.roots
        ],
    }


def _go_hours(seconds: float) -> str:
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes}m{secs}s"


def encode_ca_config(config: Any, indexes: tuple[int, int]) -> dict[str, Any]:
    """/v1/connect/ca/configuration: provider and durations; ``PrivateKey`` never."""
    create, modify = indexes
    return {
        "Provider": config.provider,
        "Config": {
            "LeafCertTTL": _go_hours(config.leaf_cert_ttl.total_seconds()),
            "RotationPeriod": _go_hours(config.rotation_period.total_seconds()),
        },
        "ClusterID": config.cluster_id,
        "CreateIndex": create,
        "ModifyIndex": modify,
    }


def encode_leaf(leaf: Any) -> dict[str, Any]:
    """/v1/agent/connect/ca/leaf/:service (Consul ``IssuedCert``); the key is the node's own."""
    return {
        "SerialNumber": leaf.serial_number,
        "CertPEM": leaf.cert_pem,
        "PrivateKeyPEM": leaf.private_key_pem,
        "Service": leaf.service,
        "ServiceURI": leaf.service_uri,
        "ValidAfter": _rfc3339(leaf.valid_after),
        "ValidBefore": _rfc3339(leaf.valid_before),
        "CreateIndex": leaf.create_index,
        "ModifyIndex": leaf.modify_index,
    }


def _intention_hash(ixn: Any) -> str:
    # Consul's Hash: blake2b-256 over the identifying and behavioural fields, base64.
    fields = (ixn.id, *ixn.pair, ixn.source_type, str(ixn.action), ixn.description)
    digest = hashlib.blake2b("\x00".join(fields).encode(), digest_size=32).digest()
    return base64.b64encode(digest).decode()


def encode_intention(ixn: Any) -> dict[str, Any]:
    """One intention as Consul 1.6 marshals it."""
    return {
        "ID": ixn.id,
        "Description": ixn.description,
        "SourceNS": ixn.source_ns,
        "SourceName": ixn.source_name,
        "DestinationNS": ixn.destination_ns,
        "DestinationName": ixn.destination_name,
        "SourceType": ixn.source_type,
        "Action": str(ixn.action),
        "DefaultAddr": "",
        "DefaultPort": 0,
        "Meta": dict(ixn.meta),
        "Precedence": ixn.precedence,
        "CreatedAt": _rfc3339(ixn.created_at),
        "UpdatedAt": _rfc3339(ixn.updated_at),
        "Hash": _intention_hash(ixn),
        "CreateIndex": ixn.create_index,
        "ModifyIndex": ixn.modify_index,
    }


def encode_config_entry(entry: Any, indexes: tuple[int, int]) -> dict[str, Any]:
    """A config entry of any kind as ``GET /v1/config`` shows it."""
    create, modify = indexes
    if entry.kind in CHAIN_KINDS:
        return {**encode_chain_entry(entry), "CreateIndex": create, "ModifyIndex": modify}
    out: dict[str, Any] = {"Kind": entry.kind, "Name": entry.name}
    if entry.kind == "proxy-defaults":
        out["Config"] = thaw(entry.config)
    else:
        out["Protocol"] = entry.protocol
    out["MeshGateway"] = _mesh_gateway(entry.mesh_gateway)
    out["Expose"] = thaw(entry.expose)
    if getattr(entry, "external_sni", ""):
        out["ExternalSNI"] = entry.external_sni
    out["CreateIndex"] = create
    out["ModifyIndex"] = modify
    return out


def encode_proxy_config(
    proxy: ServiceDefinition, resolved: Any, *, central_config: bool
) -> dict[str, Any]:
    """/v1/agent/connect/proxy-config/:id: each upstream's mode and the level that set it."""
    conf = proxy.proxy or ProxyConfig()
    return {
        "ProxyServiceID": proxy.id,
        "DestinationServiceName": conf.destination_service_name,
        "EnableCentralServiceConfig": central_config,
        "MeshGateway": _mesh_gateway(conf.mesh_gateway),
        "Upstreams": [
            {
                "DestinationName": r.upstream.destination_name,
                "Datacenter": r.upstream.datacenter,
                "LocalBindPort": r.upstream.local_bind_port,
                "MeshGatewayMode": str(r.mode),
                "DecidedBy": str(r.decided_by),
                "SameDatacenter": r.same_datacenter,
                "UsesGateway": r.uses_gateway,
            }
            for r in resolved
        ],
    }


def decode_object(body: bytes, *, what: str) -> Mapping[str, Any]:
    """A request body that must be one JSON object (config entry, intention, CA config)."""
    return _require_object(decode_json(body, what=what), what)


# ---------------------------------------------------------------------------- proxies


def encode_proxy_metrics(rows: Any, statuses: Mapping[str, Any]) -> dict[str, Any]:
    """/v1/agent/metrics: per listener counters, and each proxy's state.

    ``rows`` are ``(ListenerStats, "ip:port", proxy id)``; ``statuses`` the manager's
    ``ProxyStatus`` by proxy id.
    """
    listeners = [
        {
            "Name": stats.name,
            "Kind": stats.kind,
            "Proxy": proxy_id,
            "Address": address,
            "ConnectionsOpened": stats.opened,
            "ConnectionsActive": stats.active,
            "ConnectionsClosed": stats.closed,
            "BytesIn": stats.bytes_in,
            "BytesOut": stats.bytes_out,
            "Rejections": dict(sorted(stats.rejected.items())),
        }
        for stats, address, proxy_id in rows
    ]
    proxies = [
        {
            "ID": pid,
            "Ready": st.ready,
            "Listeners": list(st.listeners),
            "Errors": list(st.errors),
        }
        for pid, st in sorted(statuses.items())
    ]
    return {"Listeners": listeners, "Proxies": proxies}


def encode_dns_metrics(metrics: Any) -> dict[str, Any]:
    """/v1/agent/metrics ``"DNS"``: the DNS listener's counters (``dns.server.DNSMetrics``)."""
    return {
        "QueriesUDP": metrics.queries_udp,
        "QueriesTCP": metrics.queries_tcp,
        "CacheHits": metrics.cache_hits,
        "Recursed": metrics.recursed,
        "Forwarded": metrics.forwarded,
        "Replies": dict(sorted(metrics.replies.items())),
        "Rejected": dict(sorted(metrics.rejected.items())),
    }
