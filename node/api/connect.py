"""``/v1/connect/*`` and ``/v1/agent/connect/*``: CA roots and configuration, leaves,
intentions, authorization and the resolved proxy configuration.

Rule: handlers read and write through ``agent.connect`` (``node.connect.service.
ConnectService``) and nothing else; bodies are parsed by the domain parsers, so a bad
field is a 400 naming it and nothing is applied. Global-state reads are served from this
node's copy (it is the same in every datacenter, so ``?dc=`` needs no forwarding, only a
known datacenter) and block on ``?index=`` like every other read. Signing keys never
appear here; the leaf endpoint returns the node's own leaf key, as Consul's does.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from node.api import codec
from node.api.blocking import consul_headers, jittered, parse_query_options, run_blocking
from node.api.read import ReadSpec, dump_json
from node.api.state import AGENT, RNG, AgentAPI
from node.catalog.values import ServiceKind
from node.connect.intentions import MatchBy, match_intentions, parse_intention
from node.connect.records import KIND_CA_CONFIG, KIND_CA_ROOTS, KIND_INTENTION
from node.errors import DatacenterUnavailable, InvalidRequest, NotFound

if TYPE_CHECKING:
    from node.connect.service import ConnectService

__all__ = ["routes", "serve_global_read"]

routes = web.RouteTableDef()

#: Longest the leaf endpoint waits for a service's first certificate.
FIRST_LEAF_WAIT_S = 30.0


def _connect(request: web.Request) -> ConnectService:
    return request.app[AGENT].connect


def _json(value: Any, *, index: int | None = None) -> web.Response:
    headers = {"Content-Type": "application/json"}
    if index is not None:
        headers["X-Consul-Index"] = str(max(index, 1))
    return web.Response(body=dump_json(value), headers=headers)


async def serve_global_read(
    request: web.Request, spec: ReadSpec, args: Mapping[str, Any], *, missing: str | None = None
) -> web.Response:
    """A (blocking) read of the global state from this node's copy.

    With ``missing``, a query answering ``None`` is a 404 with that text that still
    carries ``X-Consul-Index``, so a watcher can block until the thing appears (Consul's
    config-entry GET blocks the same way).
    """
    agent = request.app[AGENT]
    opts = parse_query_options(request.query)
    if opts.dc not in (None, agent.config.datacenter) and opts.dc not in agent.datacenters():
        raise DatacenterUnavailable(f"No path to datacenter {opts.dc!r}")

    def query() -> tuple[bytes | None, int]:
        value, index = spec.query(agent, **args)
        if value is None and missing is not None:
            return None, index
        return dump_json(spec.encode(agent, value)), index

    if opts.blocking:
        body, index = await run_blocking(
            query, opts, agent.notifier, rng=request.app[RNG], monotonic=agent.clock.monotonic
        )
    else:
        body, index = query()
    headers = consul_headers(max(index, 1), known_leader=bool(agent.leader()))
    if body is None:
        headers["Content-Type"] = "text/plain"
        return web.Response(status=404, text=f"{missing}\n", headers=headers)
    return web.Response(body=body, headers=headers)


# ---------------------------------------------------------------------------- CA


def _roots(agent: AgentAPI) -> tuple[Any, int]:
    connect = agent.connect
    return connect.roots(), connect.index_of(KIND_CA_ROOTS)


ROOTS = ReadSpec(
    name="connect.roots",
    query=_roots,
    encode=lambda a, v: codec.encode_ca_roots(v, a.connect.indexes(KIND_CA_ROOTS, "roots")),
)


@routes.get("/v1/connect/ca/roots")
async def ca_roots(request: web.Request) -> web.Response:
    """The trust bundle (blocking)."""
    return await serve_global_read(request, ROOTS, {})


@routes.get("/v1/agent/connect/ca/roots")
async def agent_ca_roots(request: web.Request) -> web.Response:
    """The same bundle from the agent's copy (Consul caches it there)."""
    return await serve_global_read(request, ROOTS, {})


def _ca_config(agent: AgentAPI) -> tuple[Any, int]:
    connect = agent.connect
    config = connect.ca_config()
    if config is None:
        raise NotFound("CA configuration not found: the CA is not bootstrapped yet")
    return config, connect.index_of(KIND_CA_CONFIG)


CA_CONFIG = ReadSpec(
    name="connect.ca_config",
    query=_ca_config,
    encode=lambda a, v: codec.encode_ca_config(v, a.connect.indexes(KIND_CA_CONFIG, "config")),
)


@routes.get("/v1/connect/ca/configuration")
async def ca_configuration(request: web.Request) -> web.Response:
    """Provider and durations; never the private key."""
    return await serve_global_read(request, CA_CONFIG, {})


@routes.put("/v1/connect/ca/configuration")
async def ca_set_configuration(request: web.Request) -> web.Response:
    """New TTLs, or a new root (``PrivateKey`` + ``RootCert``): applied in the primary."""
    body = codec.decode_object(await request.read(), what="CA configuration")
    await _connect(request).set_ca_configuration(body)
    return _json(True)


# ---------------------------------------------------------------------------- leaves


@routes.get("/v1/agent/connect/ca/leaf/{service}")
async def agent_leaf(request: web.Request) -> web.Response:
    """This node's leaf for a service (blocking on the leaf's own index, as Consul's cache)."""
    agent = request.app[AGENT]
    connect = agent.connect
    service = request.match_info["service"]
    opts = parse_query_options(request.query)
    connect.ensure_leaf(service)  # NotFound unless the service is registered here
    wait = jittered(opts.wait, request.app[RNG])
    if connect.leaf(service) is None:
        wait = min(wait, FIRST_LEAF_WAIT_S)
    leaf = await connect.wait_leaf(service, opts.index if opts.blocking else 0, wait)
    if leaf is None:
        return web.Response(
            status=500, text=f"leaf certificate for {service!r} is not available yet\n"
        )
    return _json(codec.encode_leaf(leaf), index=leaf.modify_index)


# ---------------------------------------------------------------------------- authorize


def _field(raw: Mapping[str, Any], name: str) -> Any:
    for key, value in raw.items():
        if str(key).replace("_", "").lower() == name.lower():
            return value
    return None


@routes.post("/v1/agent/connect/authorize")
@routes.put("/v1/agent/connect/authorize")
async def agent_authorize(request: web.Request) -> web.Response:
    """Would a client with this certificate URI be allowed to reach ``Target``?"""
    raw = codec.decode_object(await request.read(), what="authorize request")
    target, uri = _field(raw, "Target"), _field(raw, "ClientCertURI")
    if not isinstance(target, str) or not target:
        raise InvalidRequest("Target service must be specified", field="Target")
    if not isinstance(uri, str) or not uri:
        raise InvalidRequest("ClientCertURI must be given", field="ClientCertURI")
    allowed, reason = _connect(request).authorize_uri(target, uri)
    return _json({"Authorized": allowed, "Reason": reason})


# ---------------------------------------------------------------------------- intentions


def _intentions(agent: AgentAPI) -> tuple[Any, int]:
    connect = agent.connect
    return connect.intentions(), connect.index_of(KIND_INTENTION)


def _intention(agent: AgentAPI, intention_id: str) -> tuple[Any, int]:
    connect = agent.connect
    return connect.intention(intention_id), connect.index_of(KIND_INTENTION)


def _matches(agent: AgentAPI, by: str, names: tuple[str, ...]) -> tuple[Any, int]:
    connect = agent.connect
    current = connect.intentions()
    found = {name: match_intentions(current, by, name) for name in names}
    return found, connect.index_of(KIND_INTENTION)


INTENTIONS = ReadSpec(
    name="connect.intentions",
    query=_intentions,
    encode=lambda a, v: [codec.encode_intention(i) for i in v],
)
INTENTION = ReadSpec(
    name="connect.intention", query=_intention, encode=lambda a, v: codec.encode_intention(v)
)
MATCH = ReadSpec(
    name="connect.intention_match",
    query=_matches,
    encode=lambda a, v: {n: [codec.encode_intention(i) for i in ixns] for n, ixns in v.items()},
)


@routes.get("/v1/connect/intentions")
async def intentions_list(request: web.Request) -> web.Response:
    """Every intention, in precedence order (blocking)."""
    return await serve_global_read(request, INTENTIONS, {})


@routes.post("/v1/connect/intentions")
async def intentions_create(request: web.Request) -> web.Response:
    """Create an intention; answers ``{"ID": ...}``."""
    agent = request.app[AGENT]
    raw = codec.decode_object(await request.read(), what="intention")
    ixn = parse_intention(raw, intention_id=str(uuid.uuid4()), now=agent.clock.utcnow())
    created = await agent.connect.put_intention(ixn)
    return _json({"ID": created.id})


@routes.get("/v1/connect/intentions/check")
async def intentions_check(request: web.Request) -> web.Response:
    """``?source=&destination=`` → ``{"Allowed": bool}`` (intentions, then the default)."""
    source = request.query.get("source", "")
    destination = request.query.get("destination", "")
    if not source or not destination:
        raise InvalidRequest("required query parameters 'source' and 'destination' not set")
    allowed, _ = _connect(request).authorize(source, destination)
    return _json({"Allowed": allowed})


@routes.get("/v1/connect/intentions/match")
async def intentions_match(request: web.Request) -> web.Response:
    """``?by=source|destination&name=N`` (repeatable) → ``{N: [intentions]}``."""
    by = request.query.get("by", "")
    names = tuple(request.query.getall("name", ()))
    if by not in (MatchBy.SOURCE, MatchBy.DESTINATION):
        raise InvalidRequest("required query parameter 'by' must be 'source' or 'destination'")
    if not names or not all(names):
        raise InvalidRequest("required query parameter 'name' not set", field="name")
    return await serve_global_read(request, MATCH, {"by": by, "names": names})


def _exact(request: web.Request) -> Any:
    source = request.query.get("source", "")
    destination = request.query.get("destination", "")
    if not source or not destination:
        raise InvalidRequest("required query parameters 'source' and 'destination' not set")
    for ixn in _connect(request).intentions():
        if ixn.source_name == source and ixn.destination_name == destination:
            return ixn
    raise NotFound(f"Intention not found: {source} => {destination}")


@routes.get("/v1/connect/intentions/exact")
async def intentions_exact_get(request: web.Request) -> web.Response:
    """The intention for exactly ``?source=&destination=`` (Consul 1.9+ form; py-consul)."""
    ixn = _exact(request)
    return _json(codec.encode_intention(ixn), index=ixn.modify_index)


@routes.put("/v1/connect/intentions/exact")
async def intentions_exact_put(request: web.Request) -> web.Response:
    """Create or update the intention for ``?source=&destination=``."""
    agent = request.app[AGENT]
    raw = dict(codec.decode_object(await request.read(), what="intention"))
    raw.update(SourceName=request.query.get("source", ""))
    raw.update(DestinationName=request.query.get("destination", ""))
    try:
        previous = _exact(request)
    except NotFound:
        previous = None
    ixn_id = previous.id if previous is not None else str(uuid.uuid4())
    ixn = parse_intention(raw, intention_id=ixn_id, now=agent.clock.utcnow(), previous=previous)
    await agent.connect.put_intention(ixn)
    return _json(True)


@routes.delete("/v1/connect/intentions/exact")
async def intentions_exact_delete(request: web.Request) -> web.Response:
    """Delete the intention for ``?source=&destination=``."""
    await _connect(request).delete_intention(_exact(request).id)
    return _json(True)


@routes.get("/v1/connect/intentions/{id}")
async def intentions_get(request: web.Request) -> web.Response:
    """One intention by ID (blocking); 404 if unknown."""
    return await serve_global_read(request, INTENTION, {"intention_id": request.match_info["id"]})


@routes.put("/v1/connect/intentions/{id}")
async def intentions_update(request: web.Request) -> web.Response:
    """Replace an intention's fields, keeping its ID and creation time."""
    agent = request.app[AGENT]
    intention_id = request.match_info["id"]
    previous = agent.connect.intention(intention_id)  # 404 if unknown
    raw = codec.decode_object(await request.read(), what="intention")
    ixn = parse_intention(
        raw, intention_id=intention_id, now=agent.clock.utcnow(), previous=previous
    )
    await agent.connect.put_intention(ixn)
    return _json({"ID": intention_id})


@routes.delete("/v1/connect/intentions/{id}")
async def intentions_delete(request: web.Request) -> web.Response:
    """Delete an intention by ID; 404 if unknown."""
    await _connect(request).delete_intention(request.match_info["id"])
    return _json(True)


# ---------------------------------------------------------------------------- proxy config


@routes.get("/v1/agent/connect/proxy-config/{proxy_id}")
async def agent_proxy_config(request: web.Request) -> web.Response:
    """The resolved mesh-gateway mode of each upstream of a local proxy, and who decided it."""
    agent = request.app[AGENT]
    proxy = agent.local.service(request.match_info["proxy_id"])  # 404 if unknown
    if proxy.kind is not ServiceKind.CONNECT_PROXY:
        raise InvalidRequest(f"service {proxy.id!r} is not a connect-proxy")
    resolved = agent.connect.resolve(proxy)
    central = agent.config.enable_central_service_config
    body = codec.encode_proxy_config(proxy, resolved, central_config=central)
    return _json(body, index=agent.notifier.index)
