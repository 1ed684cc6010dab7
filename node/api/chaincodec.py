"""Consul's JSON shapes of the discovery chain: its three config entries and the compiled chain.

Rule: Go's ``omitempty`` is followed field by field (empty strings, false, zero and empty
maps or lists are left out; empty structs such as ``"MeshGateway": {}`` stay), durations
are Go duration strings, as Consul 1.6's ``MarshalJSON`` writes them
(``agent/structs/config_entry_discoverychain.go``, ``structs/discovery_chain.go``).
Nothing here decodes: entries are read by ``node.connect.entries``.
"""

from __future__ import annotations

from typing import Any

from node.config.duration import format_go_duration
from node.connect.chain import ChainNode, ChainTarget, CompiledChain
from node.connect.chainentries import (
    HTTPMatch,
    Route,
    ServiceResolver,
    ServiceRouter,
    ServiceSplitter,
)

__all__ = ["encode_chain_entry", "encode_chain", "encode_route"]


def _pick(**fields: Any) -> dict[str, Any]:
    """The fields Go would keep under ``omitempty``, PascalCase keys given as written."""
    return {k: v for k, v in fields.items() if v not in ("", False, 0, None, [], {})}


def _resolver(r: ServiceResolver) -> dict[str, Any]:
    out: dict[str, Any] = {"Kind": r.kind, "Name": r.name}
    if r.default_subset:
        out["DefaultSubset"] = r.default_subset
    if r.subsets:
        out["Subsets"] = {
            n: _pick(Filter=s.filter, OnlyPassing=s.only_passing) for n, s in r.subsets.items()
        }
    if r.redirect is not None:
        red = r.redirect
        out["Redirect"] = _pick(
            Service=red.service,
            ServiceSubset=red.service_subset,
            Namespace=red.namespace,
            Datacenter=red.datacenter,
        )
    if r.failover:
        out["Failover"] = {
            k: _pick(
                Service=f.service,
                ServiceSubset=f.service_subset,
                Namespace=f.namespace,
                Datacenters=list(f.datacenters),
            )
            for k, f in r.failover.items()
        }
    if r.connect_timeout:
        out["ConnectTimeout"] = format_go_duration(r.connect_timeout)
    return out


def _http(m: HTTPMatch) -> dict[str, Any]:
    return _pick(
        PathExact=m.path_exact,
        PathPrefix=m.path_prefix,
        PathRegex=m.path_regex,
        Header=[
            _pick(
                Name=h.name,
                Present=h.present,
                Exact=h.exact,
                Prefix=h.prefix,
                Suffix=h.suffix,
                Regex=h.regex,
                Invert=h.invert,
            )
            for h in m.header
        ],
        QueryParam=[
            _pick(Name=q.name, Present=q.present, Exact=q.exact, Regex=q.regex)
            for q in m.query_param
        ],
        Methods=list(m.methods),
    )


def _weight(weight: float) -> float | int:
    """Go prints a float32 90 as ``90``."""
    return int(weight) if float(weight).is_integer() else weight


def encode_route(route: Route) -> dict[str, Any]:
    """One ``Routes[]`` element, as configured."""
    d = route.destination
    out: dict[str, Any] = {}
    if route.match is not None:
        out["Match"] = {"HTTP": _http(route.match)}
    out["Destination"] = _pick(
        Service=d.service,
        ServiceSubset=d.service_subset,
        Namespace=d.namespace,
        PrefixRewrite=d.prefix_rewrite,
        RequestTimeout=format_go_duration(d.request_timeout) if d.request_timeout else "",
        NumRetries=d.num_retries,
        RetryOnConnectFailure=d.retry_on_connect_failure,
        RetryOnStatusCodes=list(d.retry_on_status_codes),
    )
    return out


def _router(r: ServiceRouter) -> dict[str, Any]:
    out: dict[str, Any] = {"Kind": r.kind, "Name": r.name}
    if r.routes:
        out["Routes"] = [encode_route(route) for route in r.routes]
    return out


def _splitter(s: ServiceSplitter) -> dict[str, Any]:
    splits = [
        {
            "Weight": _weight(sp.weight),
            **_pick(Service=sp.service, ServiceSubset=sp.service_subset, Namespace=sp.namespace),
        }
        for sp in s.splits
    ]
    return {"Kind": s.kind, "Name": s.name, "Splits": splits}


def encode_chain_entry(entry: ServiceResolver | ServiceRouter | ServiceSplitter) -> dict[str, Any]:
    """A resolver, router or splitter as ``GET /v1/config/:kind/:name`` shows it (no indexes)."""
    if isinstance(entry, ServiceResolver):
        return _resolver(entry)
    if isinstance(entry, ServiceRouter):
        return _router(entry)
    return _splitter(entry)


def _node(node: ChainNode) -> dict[str, Any]:
    out: dict[str, Any] = {"Type": node.type, "Name": node.name}
    if node.routes:
        out["Routes"] = [
            {"Definition": encode_route(r.definition), "NextNode": r.next_node} for r in node.routes
        ]
    if node.splits:
        out["Splits"] = [
            {"Weight": _weight(s.weight), "NextNode": s.next_node} for s in node.splits
        ]
    if node.resolver is not None:
        res = node.resolver
        body: dict[str, Any] = {}
        if res.default:
            body["Default"] = True
        body["ConnectTimeout"] = format_go_duration(res.connect_timeout)
        body["Target"] = res.target
        if res.failover:
            body["Failover"] = {"Targets": list(res.failover)}
        out["Resolver"] = body
    return out


def _target(t: ChainTarget) -> dict[str, Any]:
    out: dict[str, Any] = {"ID": t.id, "Service": t.service}
    if t.service_subset:
        out["ServiceSubset"] = t.service_subset
    out["Namespace"] = t.namespace
    out["Datacenter"] = t.datacenter
    out["MeshGateway"] = _pick(Mode=t.mesh_gateway)
    out["Subset"] = _pick(Filter=t.subset_filter, OnlyPassing=t.only_passing)
    if t.external:
        out["External"] = True
    out["SNI"] = t.sni
    out["Name"] = t.name
    return out


def encode_chain(chain: CompiledChain) -> dict[str, Any]:
    """``{"Chain": ...}`` of ``/v1/discovery-chain/:service``."""
    body: dict[str, Any] = {
        "ServiceName": chain.service_name,
        "Namespace": chain.namespace,
        "Datacenter": chain.datacenter,
    }
    if chain.customization_hash:
        body["CustomizationHash"] = chain.customization_hash
    body["Protocol"] = chain.protocol
    body["StartNode"] = chain.start_node
    body["Nodes"] = {key: _node(node) for key, node in chain.nodes.items()}
    body["Targets"] = {tid: _target(t) for tid, t in chain.targets.items()}
    return {"Chain": body}
