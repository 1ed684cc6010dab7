"""The discovery-chain compiler: (service, config entries, datacenter, options) → a chain.

Rule: this is a pure function of its inputs and follows Consul 1.6's compiler
(``agent/consul/discoverychain/compile.go``) step for step, so the chain a Consul user
reads from ``/v1/discovery-chain`` is the one meshnode's proxies render:

- a router (only the chain's own service's) → splitters → resolvers; a catch-all route
  to the service itself is always last; a route to a subset or namespace skips splitters;
- splitter → splitter edges are flattened (weights multiplied, rounded to 0.01) after
  cycles among them are refused (``detected circular reference``);
- a resolver node per target: redirects are followed (each target ID once, a loop is
  ``detected circular resolver redirect``), then the default subset; a subset the
  resolver does not define is an error; failover targets (``Failover[subset]``, else
  ``["*"]``; per listed datacenter, in order; never the target itself) are resolved the
  same way but their own failover is not followed;
- every service reached must share one protocol (service-defaults ``Protocol``, where an
  entry with none means tcp; else proxy-defaults ``Config.protocol``; else tcp); routers
  and splitters need http, http2 or grpc;
- each target's mesh-gateway mode: ``""`` in the compiling datacenter or for an external
  service, else service-defaults of the target service, else proxy-defaults, and a set
  override wins. The level that decided is kept (``ChainTarget.mode_set_by``).

Failures are ``ChainError`` (an ``InvalidRequest``) with Consul's message.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from node.catalog.values import MeshGatewayMode
from node.connect.chainentries import (
    SERVICE_RESOLVER,
    SERVICE_ROUTER,
    SERVICE_SPLITTER,
    HTTPMatch,
    Route,
    RouteDestination,
    ServiceResolver,
    ServiceRouter,
    ServiceSplitter,
)
from node.connect.entries import (
    PROXY_CONFIG_GLOBAL,
    PROXY_DEFAULTS,
    SERVICE_DEFAULTS,
    ConfigEntry,
    ProxyDefaults,
    ServiceDefaults,
)
from node.connect.names import DEFAULT_NAMESPACE, service_sni
from node.errors import InvalidRequest

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "L7_PROTOCOLS",
    "ChainError",
    "ChainRequest",
    "ChainTarget",
    "ChainRoute",
    "ChainSplit",
    "ChainResolver",
    "ChainNode",
    "CompiledChain",
    "compile_chain",
    "validate_proposed",
    "target_id",
]

#: seconds; what a resolver without ``ConnectTimeout`` compiles to
DEFAULT_CONNECT_TIMEOUT: Final = 5.0
L7_PROTOCOLS: Final = frozenset({"http", "http2", "grpc"})
#: the datacenter and trust domain a write is test-compiled in (Consul's choice too)
_VALIDATE_DC: Final = "dc1"
_VALIDATE_TD: Final = "11111111-2222-3333-4444-555555555555.consul"

Entries = Mapping[tuple[str, str], ConfigEntry]


class ChainError(InvalidRequest):
    """The entries cannot form a chain (Consul's ``ConfigEntryGraphError``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainRequest:
    """What to compile: Consul's ``CompileRequest``.

    ``datacenter`` is where the service is evaluated (``compile-dc``), ``use_in_datacenter``
    where the chain is used (targets there never use a gateway). An override that is
    empty / ``DEFAULT`` / 0 is not set; ``override_level`` names, for explanations, the
    level the mesh-gateway override came from.
    """

    service: str
    datacenter: str
    use_in_datacenter: str
    trust_domain: str
    override_protocol: str = ""
    override_connect_timeout: float = 0.0
    override_mesh_gateway: MeshGatewayMode = MeshGatewayMode.DEFAULT
    override_level: str = "override"


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainTarget:
    """Where traffic can go: a service (subset) in a datacenter, its SNI and gateway mode."""

    id: str
    service: str
    service_subset: str = ""
    namespace: str = DEFAULT_NAMESPACE
    datacenter: str
    #: ``""`` (no gateway / not set), ``none``, ``local`` or ``remote``
    mesh_gateway: str = ""
    #: which level set ``mesh_gateway``: same-datacenter, external, service-defaults,
    #: proxy-defaults, the override's level, or default
    mode_set_by: str = "default"
    subset_filter: str = ""
    only_passing: bool = False
    external: bool = False
    sni: str
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainRoute:
    """One compiled route: the route as configured and the node it leads to."""

    definition: Route
    next_node: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainSplit:
    """One compiled split."""

    weight: float
    next_node: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainResolver:
    """A resolver node's body: its target and, in order, its failover targets."""

    default: bool
    connect_timeout: float
    target: str
    failover: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainNode:
    """A router, splitter or resolver node (exactly one body is set)."""

    type: str
    name: str
    routes: tuple[ChainRoute, ...] = ()
    splits: tuple[ChainSplit, ...] = ()
    resolver: ChainResolver | None = None

    @property
    def key(self) -> str:
        """``<type>:<name>``, how nodes refer to each other."""
        return f"{self.type}:{self.name}"


def _no_nodes() -> Mapping[str, ChainNode]:
    return MappingProxyType({})


def _no_targets() -> Mapping[str, ChainTarget]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class CompiledChain:
    """Consul's ``CompiledDiscoveryChain``."""

    service_name: str
    namespace: str = DEFAULT_NAMESPACE
    datacenter: str
    protocol: str
    start_node: str
    nodes: Mapping[str, ChainNode] = field(default_factory=_no_nodes)
    targets: Mapping[str, ChainTarget] = field(default_factory=_no_targets)
    customization_hash: str = ""

    def resolver_of(self, node_key: str) -> ChainResolver | None:
        """The resolver body of a node key, or None."""
        node = self.nodes.get(node_key)
        return None if node is None else node.resolver

    def failover_order(self) -> tuple[ChainTarget, ...]:
        """For a resolver-only (L4) chain: the start target then its failover targets."""
        res = self.resolver_of(self.start_node)
        if res is None:
            return ()
        return tuple(self.targets[t] for t in (res.target, *res.failover))


def target_id(service: str, subset: str, namespace: str, datacenter: str) -> str:
    """``[<subset>.]<service>.<namespace>.<dc>``."""
    base = f"{service}.{namespace or DEFAULT_NAMESPACE}.{datacenter}"
    return f"{subset}.{base}" if subset else base


@dataclass(frozen=True, slots=True)
class _Target:
    service: str
    subset: str
    namespace: str
    datacenter: str

    @property
    def id(self) -> str:
        return target_id(self.service, self.subset, self.namespace, self.datacenter)

    def rewrite(self, service: str, subset: str, namespace: str, dc: str) -> _Target:
        """Consul's ``rewriteTarget``: a new service resets the subset; empty keeps."""
        out = self
        if service and service != out.service:
            out = _Target(service, "", out.namespace, out.datacenter)
        return _Target(
            out.service,
            subset or out.subset,
            namespace or out.namespace,
            dc or out.datacenter,
        )


def protocol_of(service: str, entries: Entries) -> str:
    """The protocol of a service: service-defaults (empty = tcp), else proxy-defaults, else tcp."""
    sd = entries.get((SERVICE_DEFAULTS, service))
    if isinstance(sd, ServiceDefaults):
        return sd.protocol.lower() or "tcp"
    pd = entries.get((PROXY_DEFAULTS, PROXY_CONFIG_GLOBAL))
    if isinstance(pd, ProxyDefaults):
        value = pd.config.get("protocol")
        if isinstance(value, str) and value:
            return value.lower()
    return "tcp"


class _Compiler:
    """One compile; holds the nodes and targets as they are found."""

    def __init__(self, req: ChainRequest, entries: Entries) -> None:
        self.req = req
        self.entries = entries
        self.protocol = ""
        self.uses_l7 = False
        self.disable_l7 = bool(req.override_protocol) and (
            req.override_protocol.lower() not in L7_PROTOCOLS
        )
        self.nodes: dict[str, ChainNode] = {}
        self.targets: dict[str, ChainTarget] = {}
        self.customized: dict[str, Any] = {}

    # -- lookups
    def _resolver(self, service: str) -> ServiceResolver:
        found = self.entries.get((SERVICE_RESOLVER, service))
        return found if isinstance(found, ServiceResolver) else ServiceResolver(name=service)

    def _splitter(self, service: str) -> ServiceSplitter | None:
        if self.disable_l7:
            return None
        found = self.entries.get((SERVICE_SPLITTER, service))
        return found if isinstance(found, ServiceSplitter) else None

    def _service_defaults(self, service: str) -> ServiceDefaults | None:
        found = self.entries.get((SERVICE_DEFAULTS, service))
        return found if isinstance(found, ServiceDefaults) else None

    def _record_protocol(self, service: str) -> None:
        protocol = protocol_of(service, self.entries)
        if not self.protocol:
            self.protocol = protocol
        elif protocol != self.protocol:
            raise ChainError(
                f'discovery chain "{self.req.service}" uses inconsistent protocols; service '
                f'"{service}" has "{protocol}" which is not "{self.protocol}"'
            )

    def _new_target(self, service: str, subset: str = "", namespace: str = "") -> _Target:
        return _Target(service, subset, namespace or DEFAULT_NAMESPACE, self.req.datacenter)

    # -- assembly
    def compile(self) -> CompiledChain:
        service = self.req.service
        router = None if self.disable_l7 else self.entries.get((SERVICE_ROUTER, service))
        if isinstance(router, ServiceRouter):
            start = self._router_node(router)
        else:
            start = self._splitter_or_resolver(self._new_target(service))
        if self.uses_l7 and self.protocol not in L7_PROTOCOLS:
            raise ChainError(
                f'discovery chain "{service}" uses a protocol "{self.protocol}" that does not '
                "permit advanced routing or splitting behavior"
            )
        self._check_splitter_cycles()
        self._flatten_splitters()
        protocol = self.protocol
        override = self.req.override_protocol.lower()
        if override and override != protocol:
            protocol = override
            self.customized["protocol"] = override
        return CompiledChain(
            service_name=service,
            datacenter=self.req.datacenter,
            protocol=protocol,
            start_node=start,
            nodes=MappingProxyType(self._reachable(start)),
            targets=MappingProxyType(dict(sorted(self.targets.items()))),
            customization_hash=self._customization_hash(),
        )

    def _router_node(self, router: ServiceRouter) -> str:
        service = self.req.service
        self._record_protocol(service)
        self.uses_l7 = True
        catch_all = Route(
            match=HTTPMatch(path_prefix="/"), destination=RouteDestination(service=service)
        )
        routes = []
        for route in (*router.routes, catch_all):
            dest = route.destination
            svc = dest.service or service
            if not dest.service_subset and not dest.namespace:
                nxt = self._splitter_or_resolver(self._new_target(svc))
            else:
                target = self._new_target(svc, dest.service_subset, dest.namespace)
                nxt = self._resolver_node(target, for_failover=False).key
            routes.append(ChainRoute(definition=route, next_node=nxt))
        node = ChainNode(type="router", name=service, routes=tuple(routes))
        self.nodes[node.key] = node
        return node.key

    def _splitter_or_resolver(self, target: _Target) -> str:
        key = self._splitter_node(target.service)
        if key is not None:
            return key
        return self._resolver_node(target, for_failover=False).key

    def _splitter_node(self, name: str) -> str | None:
        key = f"splitter:{name}"
        if key in self.nodes:
            return key
        splitter = self._splitter(name)
        if splitter is None:
            return None
        self._record_protocol(name)
        self.uses_l7 = True
        # Recorded before its splits are walked, so a loop closes instead of recursing.
        self.nodes[key] = ChainNode(type="splitter", name=name)
        splits = []
        for split in splitter.splits:
            svc = split.service or name
            nxt = None
            if svc != name and not split.service_subset and not split.namespace:
                nxt = self._splitter_node(svc)
            if nxt is None:
                target = self._new_target(svc, split.service_subset, split.namespace)
                nxt = self._resolver_node(target, for_failover=False).key
            splits.append(ChainSplit(weight=split.weight, next_node=nxt))
        self.nodes[key] = ChainNode(type="splitter", name=name, splits=tuple(splits))
        return key

    def _check_splitter_cycles(self) -> None:
        for key, node in self.nodes.items():
            if node.type == "splitter":
                self._walk_splitters(key, [key])

    def _walk_splitters(self, key: str, path: list[str]) -> None:
        for split in self.nodes[key].splits:
            nxt = split.next_node
            if not nxt.startswith("splitter:"):
                continue
            if nxt in path:
                loop = " -> ".join([*path[path.index(nxt) :], nxt])
                raise ChainError(f"detected circular reference: [{loop}]")
            self._walk_splitters(nxt, [*path, nxt])

    def _flatten_splitters(self) -> None:
        for key, node in list(self.nodes.items()):
            if node.type == "splitter":
                flat = tuple(self._flat_splits(key, 100.0))
                self.nodes[key] = ChainNode(type="splitter", name=node.name, splits=flat)

    def _flat_splits(self, key: str, scale: float) -> list[ChainSplit]:
        out = []
        for split in self.nodes[key].splits:
            weight = round(split.weight * scale / 100 * 100) / 100
            if split.next_node.startswith("splitter:"):
                out.extend(self._flat_splits(split.next_node, weight))
            else:
                out.append(ChainSplit(weight=weight, next_node=split.next_node))
        return out

    def _reachable(self, start: str) -> dict[str, ChainNode]:
        seen: dict[str, ChainNode] = {}
        todo = [start]
        while todo:
            key = todo.pop()
            if key in seen:
                continue
            node = self.nodes[key]
            seen[key] = node
            todo.extend(r.next_node for r in node.routes)
            todo.extend(s.next_node for s in node.splits)
        return dict(sorted(seen.items()))

    # -- resolvers
    def _resolver_node(self, target: _Target, *, for_failover: bool) -> ChainNode:
        history: list[str] = []
        while True:
            existing = self.nodes.get(f"resolver:{target.id}")
            if existing is not None:
                return existing
            if target.id in history:
                loop = " -> ".join([*history, target.id])
                raise ChainError(f"detected circular resolver redirect: [{loop}]")
            history.append(target.id)
            resolver = self._resolver(target.service)
            self._record_protocol(target.service)
            self._check_external(target.service, resolver)
            if resolver.redirect is not None:
                red = resolver.redirect
                moved = target.rewrite(
                    red.service, red.service_subset, red.namespace, red.datacenter
                )
                if moved.id != target.id:
                    target = moved
                    continue
            if not target.subset and resolver.default_subset:
                target = target.rewrite("", resolver.default_subset, "", "")
                continue
            break
        if target.subset and target.subset not in resolver.subsets:
            raise ChainError(
                f'service "{target.service}" does not have a subset named "{target.subset}"'
            )
        node = ChainNode(
            type="resolver",
            name=target.id,
            resolver=ChainResolver(
                default=resolver.is_default,
                connect_timeout=self._connect_timeout(resolver),
                target=target.id,
            ),
        )
        self.targets[target.id] = self._chain_target(target, resolver)
        if for_failover:
            return node
        self.nodes[node.key] = node
        failover = self._failover_targets(target, resolver)
        if failover:
            ids = tuple(self._resolver_node(t, for_failover=True).name for t in failover)
            assert node.resolver is not None
            res = ChainResolver(
                default=node.resolver.default,
                connect_timeout=node.resolver.connect_timeout,
                target=node.resolver.target,
                failover=ids,
            )
            node = ChainNode(type="resolver", name=node.name, resolver=res)
            self.nodes[node.key] = node
        return node

    def _check_external(self, service: str, resolver: ServiceResolver) -> None:
        sd = self._service_defaults(service)
        if sd is None or not sd.external_sni:
            return
        for what, used in (
            ("redirects", resolver.redirect is not None),
            ("subsets", bool(resolver.subsets)),
            ("failover", bool(resolver.failover)),
        ):
            if used:
                raise ChainError(
                    f'service "{service}" has an external SNI set; cannot define {what} for '
                    "external services"
                )

    def _connect_timeout(self, resolver: ServiceResolver) -> float:
        timeout = (
            resolver.connect_timeout if resolver.connect_timeout > 0 else DEFAULT_CONNECT_TIMEOUT
        )
        override = self.req.override_connect_timeout
        if override > 0:
            if override != timeout:
                self.customized["connect_timeout"] = override
            timeout = override
        return timeout

    def _failover_targets(self, target: _Target, resolver: ServiceResolver) -> list[_Target]:
        section = resolver.failover.get(target.subset) or resolver.failover.get("*")
        if section is None:
            return []
        dcs = section.datacenters or ("",)
        out = []
        for dc in dcs:
            cand = target.rewrite(section.service, section.service_subset, section.namespace, dc)
            if cand.id != target.id:
                out.append(cand)
        return out

    def _chain_target(self, target: _Target, resolver: ServiceResolver) -> ChainTarget:
        sni = service_sni(
            target.service,
            target.namespace,
            target.datacenter,
            self.req.trust_domain,
            subset=target.subset,
        )
        sd = self._service_defaults(target.service)
        external = sd is not None and bool(sd.external_sni)
        mode, level = self._mode(target, sd, external)
        subset = resolver.subsets.get(target.subset)
        return ChainTarget(
            id=target.id,
            service=target.service,
            service_subset=target.subset,
            namespace=target.namespace,
            datacenter=target.datacenter,
            mesh_gateway=mode,
            mode_set_by=level,
            subset_filter=subset.filter if subset is not None else "",
            only_passing=subset.only_passing if subset is not None else False,
            external=external,
            sni=sd.external_sni if sd is not None and external else sni,
            name=sni,
        )

    def _mode(self, target: _Target, sd: ServiceDefaults | None, external: bool) -> tuple[str, str]:
        if target.datacenter == self.req.use_in_datacenter:
            return "", "same-datacenter"
        if external:
            return "", "external"
        mode, level = MeshGatewayMode.DEFAULT, "default"
        if sd is not None and sd.mesh_gateway is not MeshGatewayMode.DEFAULT:
            mode, level = sd.mesh_gateway, "service-defaults"
        pd = self.entries.get((PROXY_DEFAULTS, PROXY_CONFIG_GLOBAL))
        unset = mode is MeshGatewayMode.DEFAULT
        if (
            unset
            and isinstance(pd, ProxyDefaults)
            and pd.mesh_gateway is not MeshGatewayMode.DEFAULT
        ):
            mode, level = pd.mesh_gateway, "proxy-defaults"
        override = self.req.override_mesh_gateway
        if override is not MeshGatewayMode.DEFAULT:
            if override is not mode:
                self.customized["mesh_gateway"] = override.value
            mode, level = override, self.req.override_level
        return mode.value, level

    def _customization_hash(self) -> str:
        if not self.customized:
            return ""
        text = repr(sorted(self.customized.items()))
        return hashlib.sha256(text.encode()).hexdigest()[:8]


def compile_chain(req: ChainRequest, entries: Entries) -> CompiledChain:
    """Compile the chain of ``req.service``; ``ChainError`` with Consul's message."""
    if not req.service:
        raise InvalidRequest("Missing chain name", field="service")
    return _Compiler(req, entries).compile()


def _references(entry: ConfigEntry) -> set[str]:
    """The services an entry sends traffic to (Consul's ``ListRelatedServices``)."""
    out: set[str] = set()
    if isinstance(entry, ServiceRouter):
        out.update(r.destination.service for r in entry.routes if r.destination.service)
    elif isinstance(entry, ServiceSplitter):
        out.update(s.service for s in entry.splits if s.service)
    elif isinstance(entry, ServiceResolver):
        if entry.redirect is not None and entry.redirect.service:
            out.add(entry.redirect.service)
        out.update(f.service for f in entry.failover.values() if f.service)
    out.discard(entry.name)
    return out


_CHAIN_KINDS: Final = (SERVICE_ROUTER, SERVICE_SPLITTER, SERVICE_RESOLVER)


def _reaches(start: str, goal: str, entries: Entries) -> bool:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name == goal:
            return True
        if name in seen:
            continue
        seen.add(name)
        for kind in _CHAIN_KINDS:
            entry = entries.get((kind, name))
            if entry is not None:
                todo.extend(_references(entry))
    return False


def validate_proposed(entries: Entries, kind: str, name: str) -> None:
    """Test-compile what a write of ``(kind, name)`` (already in ``entries``) affects.

    The chain named by the entry and every chain that links to it; after a proxy-defaults
    write every chain with a router, splitter or resolver. ``ChainError`` if any fails.
    """
    chains = {k[1] for k in entries if k[0] in _CHAIN_KINDS}
    if kind == PROXY_DEFAULTS:
        affected = chains
    else:
        affected = {name} | {c for c in chains if _reaches(c, name, entries)}
    for service in sorted(affected):
        req = ChainRequest(
            service=service,
            datacenter=_VALIDATE_DC,
            use_in_datacenter=_VALIDATE_DC,
            trust_domain=_VALIDATE_TD,
        )
        _Compiler(req, entries).compile()
