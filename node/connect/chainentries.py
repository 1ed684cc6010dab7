"""The discovery-chain config entries: ``service-resolver``, ``service-router``, ``service-splitter``.

Rule: these three kinds are parsed and validated here, each into a frozen value, with
Consul 1.6's per-entry ``Validate`` rules and messages (``agent/structs/
config_entry_discoverychain.go``); every message names the field. Rules that need the
other entries (protocols, redirect loops, missing subsets) belong to the compiler
(``node.connect.chain``), which the write path runs on the proposed set. Keys are read
through ``node.config.reader`` (PascalCase or snake_case); ``*_to_wire`` gives the
snake_case replication form that the parser reads back unchanged.

A subset ``Filter`` is checked by the ``check_filter`` the caller passes, so a bad
expression can be refused when written rather than when traffic needs it.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Final

from node.config.duration import format_go_duration
from node.config.reader import Fields, Names, read_duration, type_name, unwrap_block
from node.errors import InvalidRequest

__all__ = [
    "SERVICE_RESOLVER",
    "SERVICE_ROUTER",
    "SERVICE_SPLITTER",
    "CHAIN_KINDS",
    "ResolverSubset",
    "ResolverRedirect",
    "ResolverFailover",
    "ServiceResolver",
    "HeaderMatch",
    "QueryParamMatch",
    "HTTPMatch",
    "RouteDestination",
    "Route",
    "ServiceRouter",
    "Split",
    "ServiceSplitter",
    "ChainEntry",
    "parse_chain_entry",
    "chain_entry_to_wire",
]

SERVICE_RESOLVER: Final = "service-resolver"
SERVICE_ROUTER: Final = "service-router"
SERVICE_SPLITTER: Final = "service-splitter"
CHAIN_KINDS: Final = (SERVICE_ROUTER, SERVICE_SPLITTER, SERVICE_RESOLVER)

_SUBSET_NAME: Final = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_MAX_SUBSET_NAME: Final = 63
_IGNORED_KEYS: Final = frozenset({"CreateIndex", "ModifyIndex", "create_index", "modify_index"})


def _names(*pascal: str) -> Names:
    return Names.pascal_or_snake({p: _snake(p) for p in pascal})


def _snake(pascal: str) -> str:
    special = {"HTTP": "http", "ExternalSNI": "external_sni"}
    if pascal in special:
        return special[pascal]
    return re.sub(r"(?<!^)(?=[A-Z])", "_", pascal).lower()


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


# ================================================================ service-resolver


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolverSubset:
    """A named subset: instances matching ``filter``; ``only_passing`` drops warning ones."""

    filter: str = ""
    only_passing: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolverRedirect:
    """Resolve another service/subset/datacenter instead (empty parts keep theirs)."""

    service: str = ""
    service_subset: str = ""
    namespace: str = ""
    datacenter: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolverFailover:
    """Where to go when the primary target has no healthy instance, in order."""

    service: str = ""
    service_subset: str = ""
    namespace: str = ""
    datacenters: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceResolver:
    """``service-resolver``: subsets, a redirect or failover, and the connect timeout."""

    kind: ClassVar[str] = SERVICE_RESOLVER
    name: str
    default_subset: str = ""
    subsets: Mapping[str, ResolverSubset] = field(default_factory=_empty)
    redirect: ResolverRedirect | None = None
    failover: Mapping[str, ResolverFailover] = field(default_factory=_empty)
    #: seconds; 0 means the default (5s once compiled)
    connect_timeout: float = 0.0

    @property
    def is_default(self) -> bool:
        """Consul's ``IsDefault``: nothing but the name is set."""
        return (
            not self.default_subset
            and not self.subsets
            and self.redirect is None
            and not self.failover
            and self.connect_timeout == 0
        )

    def __post_init__(self) -> None:
        _validate_resolver(self)


def _validate_resolver(r: ServiceResolver) -> None:
    for name in r.subsets:
        _check_subset_name(name)
    if r.default_subset and r.default_subset not in r.subsets:
        raise InvalidRequest(
            f"DefaultSubset {_quote(r.default_subset)} is not a valid subset", field="DefaultSubset"
        )
    if r.redirect is not None:
        _validate_redirect(r)
    for key, fo in r.failover.items():
        _validate_failover(r, key, fo)
    if r.connect_timeout < 0:
        raise InvalidRequest(
            f"Bad ConnectTimeout '{format_go_duration(r.connect_timeout)}', must be >= 0",
            field="ConnectTimeout",
        )


def _check_subset_name(name: str) -> None:
    if not name:
        raise InvalidRequest("Subset defined with empty name", field="Subsets")
    if len(name) > _MAX_SUBSET_NAME or not _SUBSET_NAME.match(name):
        raise InvalidRequest(
            f"Subset {_quote(name)} is invalid: must be 63 characters or fewer, begin or end "
            "with lower case alphanumeric characters, and contain lower case alphanumeric "
            "characters or '-' in between",
            field=f"Subsets.{name}",
        )


def _validate_redirect(r: ServiceResolver) -> None:
    red = r.redirect
    assert red is not None
    if r.failover:
        raise InvalidRequest("Redirect and Failover cannot both be set", field="Redirect")
    if not (red.service or red.service_subset or red.namespace or red.datacenter):
        raise InvalidRequest("Redirect is empty", field="Redirect")
    if not red.service:
        if red.service_subset:
            raise InvalidRequest(
                "Redirect.ServiceSubset defined without Redirect.Service",
                field="Redirect.ServiceSubset",
            )
        if red.namespace:
            raise InvalidRequest(
                "Redirect.Namespace defined without Redirect.Service", field="Redirect.Namespace"
            )
    elif red.service == r.name and red.service_subset and red.service_subset not in r.subsets:
        raise InvalidRequest(
            f"Redirect.ServiceSubset {_quote(red.service_subset)} is not a valid subset of "
            f"{_quote(r.name)}",
            field="Redirect.ServiceSubset",
        )


def _validate_failover(r: ServiceResolver, key: str, fo: ResolverFailover) -> None:
    where = f"Failover[{_quote(key)}]"
    if key != "*" and key not in r.subsets:
        raise InvalidRequest(f"Bad {where}: not a valid subset", field=where)
    if not (fo.service or fo.service_subset or fo.namespace or fo.datacenters):
        raise InvalidRequest(
            f"Bad {where} one of Service, ServiceSubset, Namespace, or Datacenters is required",
            field=where,
        )
    if fo.service_subset and fo.service in ("", r.name) and fo.service_subset not in r.subsets:
        raise InvalidRequest(
            f"Bad {where}.ServiceSubset {_quote(fo.service_subset)} is not a valid subset of "
            f"{_quote(fo.service or r.name)}",
            field=f"{where}.ServiceSubset",
        )
    if any(not dc for dc in fo.datacenters):
        raise InvalidRequest(
            f"Bad {where}.Datacenters: found empty datacenter", field=f"{where}.Datacenters"
        )


_RESOLVER_KEYS: Final = _names(
    "Kind", "Name", "DefaultSubset", "Subsets", "Redirect", "Failover", "ConnectTimeout"
)
_SUBSET_KEYS: Final = _names("Filter", "OnlyPassing")
_REDIRECT_KEYS: Final = _names("Service", "ServiceSubset", "Namespace", "Datacenter")
_FAILOVER_KEYS: Final = _names("Service", "ServiceSubset", "Namespace", "Datacenters")


def _object_map(value: object, path: str) -> Mapping[str, Any]:
    """A map of name → object (HCL may hand a one-element list of blocks)."""
    value = unwrap_block(value)
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise InvalidRequest(f"{path}: expected an object, got {type_name(value)}", field=path)
    return value


def _parse_resolver(f: Fields, check_filter: Callable[[str, str], None] | None) -> ServiceResolver:
    subsets = {}
    for name, raw in _object_map(f.raw("Subsets") or {}, "Subsets").items():
        sf = Fields(raw, f"Subsets.{name}", _SUBSET_KEYS)
        flt = sf.get_str("Filter")
        if flt and check_filter is not None:
            check_filter(flt, f"Subsets.{name}.Filter")
        subsets[name] = ResolverSubset(filter=flt, only_passing=sf.get_bool("OnlyPassing"))
    redirect = None
    if f.has("Redirect"):
        rf = Fields(f.raw("Redirect"), "Redirect", _REDIRECT_KEYS)
        redirect = ResolverRedirect(
            service=rf.get_str("Service"),
            service_subset=rf.get_str("ServiceSubset"),
            namespace=rf.get_str("Namespace"),
            datacenter=rf.get_str("Datacenter"),
        )
    failover = {}
    for key, raw in _object_map(f.raw("Failover") or {}, "Failover").items():
        ff = Fields(raw, f"Failover[{_quote(key)}]", _FAILOVER_KEYS)
        failover[key] = ResolverFailover(
            service=ff.get_str("Service"),
            service_subset=ff.get_str("ServiceSubset"),
            namespace=ff.get_str("Namespace"),
            datacenters=ff.str_list("Datacenters"),
        )
    return ServiceResolver(
        name=_name(f),
        default_subset=f.get_str("DefaultSubset"),
        subsets=MappingProxyType(subsets),
        redirect=redirect,
        failover=MappingProxyType(failover),
        connect_timeout=_duration_allow_negative(f, "ConnectTimeout"),
    )


def _duration_allow_negative(f: Fields, name: str) -> float:
    """A duration where a negative value reaches the entry's own ``must be >= 0`` check."""
    raw = f.raw(name)
    if isinstance(raw, str) and raw.strip().startswith("-"):
        return -read_duration(raw.strip()[1:], field=f.path(name))
    if isinstance(raw, int | float) and not isinstance(raw, bool) and raw < 0:
        return -read_duration(-raw, field=f.path(name))
    return f.duration(name)


def _resolver_to_wire(r: ServiceResolver) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": r.kind, "name": r.name}
    if r.default_subset:
        out["default_subset"] = r.default_subset
    if r.subsets:
        out["subsets"] = {
            n: {"filter": s.filter, "only_passing": s.only_passing} for n, s in r.subsets.items()
        }
    if r.redirect is not None:
        red = r.redirect
        out["redirect"] = {
            "service": red.service,
            "service_subset": red.service_subset,
            "namespace": red.namespace,
            "datacenter": red.datacenter,
        }
    if r.failover:
        out["failover"] = {
            k: {
                "service": f.service,
                "service_subset": f.service_subset,
                "namespace": f.namespace,
                "datacenters": list(f.datacenters),
            }
            for k, f in r.failover.items()
        }
    if r.connect_timeout:
        out["connect_timeout"] = format_go_duration(r.connect_timeout)
    return out


# ================================================================ service-splitter


@dataclass(frozen=True, slots=True, kw_only=True)
class Split:
    """One weighted share; an empty ``service`` means the splitter's own service."""

    weight: float
    service: str = ""
    service_subset: str = ""
    namespace: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceSplitter:
    """``service-splitter``: weights (rounded to 0.01) that sum to 100."""

    kind: ClassVar[str] = SERVICE_SPLITTER
    name: str
    splits: tuple[Split, ...]

    def __post_init__(self) -> None:
        if not self.splits:
            raise InvalidRequest("no splits configured", field="Splits")
        seen: set[tuple[str, str, str]] = set()
        total = 0
        for i, s in enumerate(self.splits):
            key = (s.service or self.name, s.service_subset, s.namespace)
            if key in seen:
                raise InvalidRequest(
                    f"split destination occurs more than once: service={_quote(key[0])}, "
                    f"subset={_quote(key[1])}, namespace={_quote(key[2])}",
                    field=f"Splits[{i}]",
                )
            seen.add(key)
            total += round(s.weight * 100)
        if total != 10000:
            raise InvalidRequest(
                f"the sum of all split weights must be 100, not {total / 100:f}",
                field="Splits",
            )


_SPLITTER_KEYS: Final = _names("Kind", "Name", "Splits")
_SPLIT_KEYS: Final = _names("Weight", "Service", "ServiceSubset", "Namespace")


def _parse_splitter(f: Fields) -> ServiceSplitter:
    splits = []
    for i, raw in enumerate(f.get_list("Splits")):
        sf = Fields(raw, f"Splits[{i}]", _SPLIT_KEYS)
        weight = sf.raw("Weight")
        if weight is None:
            weight = 0.0
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise sf.error("Weight", "a number")
        if not math.isfinite(weight) or not 0 <= weight <= 100:
            raise InvalidRequest(
                f"Splits[{i}].Weight: {weight} is out of range [0, 100]",
                field=f"Splits[{i}].Weight",
            )
        splits.append(
            Split(
                weight=round(float(weight) * 100) / 100,
                service=sf.get_str("Service"),
                service_subset=sf.get_str("ServiceSubset"),
                namespace=sf.get_str("Namespace"),
            )
        )
    return ServiceSplitter(name=_name(f), splits=tuple(splits))


def _splitter_to_wire(s: ServiceSplitter) -> dict[str, Any]:
    splits = [
        {
            "weight": sp.weight,
            "service": sp.service,
            "service_subset": sp.service_subset,
            "namespace": sp.namespace,
        }
        for sp in s.splits
    ]
    return {"kind": s.kind, "name": s.name, "splits": splits}


# ================================================================ service-router


@dataclass(frozen=True, slots=True, kw_only=True)
class HeaderMatch:
    """One header condition: exactly one of present/exact/prefix/suffix/regex."""

    name: str
    present: bool = False
    exact: str = ""
    prefix: str = ""
    suffix: str = ""
    regex: str = ""
    invert: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryParamMatch:
    """One query-parameter condition: exactly one of present/exact/regex."""

    name: str
    present: bool = False
    exact: str = ""
    regex: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class HTTPMatch:
    """The HTTP conditions of one route (all must hold)."""

    path_exact: str = ""
    path_prefix: str = ""
    path_regex: str = ""
    header: tuple[HeaderMatch, ...] = ()
    query_param: tuple[QueryParamMatch, ...] = ()
    methods: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteDestination:
    """Where a matched request goes; an empty ``service`` means the router's own."""

    service: str = ""
    service_subset: str = ""
    namespace: str = ""
    prefix_rewrite: str = ""
    request_timeout: float = 0.0
    num_retries: int = 0
    retry_on_connect_failure: bool = False
    retry_on_status_codes: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """One route: ``match`` (None = everything) → ``destination``."""

    match: HTTPMatch | None = None
    destination: RouteDestination = field(default_factory=RouteDestination)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceRouter:
    """``service-router``: first matching route wins; a catch-all is implied last."""

    kind: ClassVar[str] = SERVICE_ROUTER
    name: str
    routes: tuple[Route, ...] = ()

    def __post_init__(self) -> None:
        for i, route in enumerate(self.routes):
            _validate_route(i, route)


def _validate_route(i: int, route: Route) -> None:
    where = f"Route[{i}]"
    m = route.match
    if m is not None:
        for attr, label in (("path_exact", "PathExact"), ("path_prefix", "PathPrefix")):
            value = getattr(m, attr)
            if value and not value.startswith("/"):
                raise InvalidRequest(
                    f"{where} {label} doesn't start with '/': {_quote(value)}",
                    field=f"Routes[{i}].Match.HTTP.{label}",
                )
        if sum(1 for v in (m.path_exact, m.path_prefix, m.path_regex) if v) > 1:
            raise InvalidRequest(
                f"{where} should only contain at most one of PathExact, PathPrefix, or PathRegex",
                field=f"Routes[{i}].Match.HTTP",
            )
        _validate_header_params(i, m)
    if route.destination.prefix_rewrite and (m is None or not (m.path_exact or m.path_prefix)):
        raise InvalidRequest(
            f"{where} cannot make use of PrefixRewrite without configuring either PathExact "
            "or PathPrefix",
            field=f"Routes[{i}].Destination.PrefixRewrite",
        )


def _validate_header_params(i: int, m: HTTPMatch) -> None:
    where = f"Route[{i}]"
    for j, h in enumerate(m.header):
        path = f"Routes[{i}].Match.HTTP.Header[{j}]"
        if not h.name:
            raise InvalidRequest(f"{where} Header[{j}] missing required Name field", field=path)
        if sum(1 for v in (h.present, h.exact, h.prefix, h.suffix, h.regex) if v) != 1:
            raise InvalidRequest(
                f"{where} Header[{j}] should only contain one of Present, Exact, Prefix, "
                "Suffix, or Regex",
                field=path,
            )
    for j, q in enumerate(m.query_param):
        path = f"Routes[{i}].Match.HTTP.QueryParam[{j}]"
        if not q.name:
            raise InvalidRequest(f"{where} QueryParam[{j}] missing required Name field", field=path)
        if sum(1 for v in (q.present, q.exact, q.regex) if v) != 1:
            raise InvalidRequest(
                f"{where} QueryParam[{j}] should only contain one of Present, Exact, or Regex",
                field=path,
            )
    seen: set[str] = set()
    for method in m.methods:
        if method in seen:
            raise InvalidRequest(
                f"{where} Methods contains {_quote(method)} more than once",
                field=f"Routes[{i}].Match.HTTP.Methods",
            )
        seen.add(method)


_ROUTER_KEYS: Final = _names("Kind", "Name", "Routes")
_ROUTE_KEYS: Final = _names("Match", "Destination")
_MATCH_KEYS: Final = _names("HTTP")
_HTTP_KEYS: Final = _names(
    "PathExact", "PathPrefix", "PathRegex", "Header", "QueryParam", "Methods"
)
_HEADER_KEYS: Final = _names("Name", "Present", "Exact", "Prefix", "Suffix", "Regex", "Invert")
_PARAM_KEYS: Final = _names("Name", "Present", "Exact", "Regex")
_DEST_KEYS: Final = _names(
    "Service",
    "ServiceSubset",
    "Namespace",
    "PrefixRewrite",
    "RequestTimeout",
    "NumRetries",
    "RetryOnConnectFailure",
    "RetryOnStatusCodes",
)


def _parse_http(raw: object, path: str) -> HTTPMatch:
    hf = Fields(raw, path, _HTTP_KEYS)
    headers = []
    for j, h in enumerate(hf.get_list("Header")):
        f = Fields(h, f"{path}.Header[{j}]", _HEADER_KEYS)
        headers.append(
            HeaderMatch(
                name=f.get_str("Name"),
                present=f.get_bool("Present"),
                exact=f.get_str("Exact"),
                prefix=f.get_str("Prefix"),
                suffix=f.get_str("Suffix"),
                regex=f.get_str("Regex"),
                invert=f.get_bool("Invert"),
            )
        )
    params = []
    for j, q in enumerate(hf.get_list("QueryParam")):
        f = Fields(q, f"{path}.QueryParam[{j}]", _PARAM_KEYS)
        params.append(
            QueryParamMatch(
                name=f.get_str("Name"),
                present=f.get_bool("Present"),
                exact=f.get_str("Exact"),
                regex=f.get_str("Regex"),
            )
        )
    return HTTPMatch(
        path_exact=hf.get_str("PathExact"),
        path_prefix=hf.get_str("PathPrefix"),
        path_regex=hf.get_str("PathRegex"),
        header=tuple(headers),
        query_param=tuple(params),
        methods=tuple(m.upper() for m in hf.str_list("Methods")),
    )


def _parse_destination(raw: object, path: str) -> RouteDestination:
    df = Fields(raw, path, _DEST_KEYS)
    codes = []
    for code in df.get_list("RetryOnStatusCodes"):
        if isinstance(code, bool) or not isinstance(code, int) or not 100 <= code <= 599:
            raise df.error("RetryOnStatusCodes", "a list of HTTP status codes")
        codes.append(code)
    return RouteDestination(
        service=df.get_str("Service"),
        service_subset=df.get_str("ServiceSubset"),
        namespace=df.get_str("Namespace"),
        prefix_rewrite=df.get_str("PrefixRewrite"),
        request_timeout=df.duration("RequestTimeout"),
        num_retries=df.get_int("NumRetries", hi=2**32 - 1),
        retry_on_connect_failure=df.get_bool("RetryOnConnectFailure"),
        retry_on_status_codes=tuple(codes),
    )


def _parse_router(f: Fields) -> ServiceRouter:
    routes = []
    for i, raw in enumerate(f.get_list("Routes")):
        rf = Fields(raw, f"Routes[{i}]", _ROUTE_KEYS)
        match = None
        if rf.has("Match"):
            mf = Fields(rf.raw("Match"), f"Routes[{i}].Match", _MATCH_KEYS)
            if mf.has("HTTP"):
                match = _parse_http(mf.raw("HTTP"), f"Routes[{i}].Match.HTTP")
        dest = RouteDestination()
        if rf.has("Destination"):
            dest = _parse_destination(rf.raw("Destination"), f"Routes[{i}].Destination")
        routes.append(Route(match=match, destination=dest))
    return ServiceRouter(name=_name(f), routes=tuple(routes))


def _http_to_wire(m: HTTPMatch) -> dict[str, Any]:
    return {
        "path_exact": m.path_exact,
        "path_prefix": m.path_prefix,
        "path_regex": m.path_regex,
        "header": [
            {
                "name": h.name,
                "present": h.present,
                "exact": h.exact,
                "prefix": h.prefix,
                "suffix": h.suffix,
                "regex": h.regex,
                "invert": h.invert,
            }
            for h in m.header
        ],
        "query_param": [
            {"name": q.name, "present": q.present, "exact": q.exact, "regex": q.regex}
            for q in m.query_param
        ],
        "methods": list(m.methods),
    }


def _router_to_wire(r: ServiceRouter) -> dict[str, Any]:
    routes = []
    for route in r.routes:
        d = route.destination
        out: dict[str, Any] = {
            "destination": {
                "service": d.service,
                "service_subset": d.service_subset,
                "namespace": d.namespace,
                "prefix_rewrite": d.prefix_rewrite,
                "request_timeout": format_go_duration(d.request_timeout),
                "num_retries": d.num_retries,
                "retry_on_connect_failure": d.retry_on_connect_failure,
                "retry_on_status_codes": list(d.retry_on_status_codes),
            }
        }
        if route.match is not None:
            out["match"] = {"http": _http_to_wire(route.match)}
        routes.append(out)
    return {"kind": r.kind, "name": r.name, "routes": routes}


# ================================================================ shared

ChainEntry = ServiceResolver | ServiceRouter | ServiceSplitter


def _name(f: Fields) -> str:
    name = f.get_str("Name")
    if not name:
        raise InvalidRequest("Name is required", field="Name")
    if len(name) > 256 or any(c.isspace() or c == "/" for c in name):
        raise InvalidRequest(
            f"Name {_quote(name)} is invalid (no whitespace or '/', at most 256 characters)",
            field="Name",
        )
    return name


def parse_chain_entry(
    kind: str,
    raw: Mapping[str, Any],
    *,
    check_filter: Callable[[str, str], None] | None = None,
) -> ChainEntry:
    """Parse a resolver, router or splitter; ``InvalidRequest`` names the field.

    ``check_filter(expression, field)`` raises ``InvalidRequest`` for a bad subset filter.
    """
    body = {k: v for k, v in raw.items() if k not in _IGNORED_KEYS}
    if kind == SERVICE_RESOLVER:
        return _parse_resolver(Fields(body, "", _RESOLVER_KEYS), check_filter)
    if kind == SERVICE_SPLITTER:
        return _parse_splitter(Fields(body, "", _SPLITTER_KEYS))
    return _parse_router(Fields(body, "", _ROUTER_KEYS))


def chain_entry_to_wire(entry: ChainEntry) -> dict[str, Any]:
    """The snake_case replication form (``parse_chain_entry`` reads it back)."""
    if isinstance(entry, ServiceResolver):
        return _resolver_to_wire(entry)
    if isinstance(entry, ServiceSplitter):
        return _splitter_to_wire(entry)
    return _router_to_wire(entry)
