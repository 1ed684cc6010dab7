"""``/v1/health/*``: service instances with their checks, and checks by node or state.

Rule: like ``catalog``, one ``ReadSpec`` per endpoint over ``node.catalog.queries``.
``?passing`` keeps only instances whose every check (node checks included) passes.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from node.api import codec
from node.api.filtering import Shape, refine
from node.api.read import ReadSpec, serve_read
from node.api.state import AgentAPI
from node.catalog import queries
from node.catalog.values import Health, ServiceKind
from node.errors import InvalidRequest
from node.rpc import reads as wire

__all__ = ["routes", "SERVICE", "SERVICE_KIND", "CHECKS", "NODE", "STATE"]

routes = web.RouteTableDef()

_STATES = frozenset({"any", *(h.value for h in Health if h is not Health.MAINTENANCE)})


def _result(result: queries.QueryResult[Any]) -> tuple[Any, int]:
    return result.value, result.index


def _entries(agent: AgentAPI, value: Any) -> list[dict[str, Any]]:
    del agent
    return [codec.encode_health_entry(e) for e in value]


def _checks(agent: AgentAPI, value: Any) -> list[dict[str, Any]]:
    del agent
    return [codec.encode_check_entry(c) for c in value]


def _health_service(
    agent: AgentAPI, name: str, tag: str | None, passing: bool, connect: bool
) -> tuple[Any, int]:
    return _result(
        queries.health_service(agent.store, name, tag=tag, passing=passing, connect=connect)
    )


def _service_kind(agent: AgentAPI, kind: str) -> tuple[Any, int]:
    try:
        parsed = ServiceKind(kind)
    except ValueError:
        raise InvalidRequest(f"unknown service kind {kind!r}", field="kind") from None
    return _result(queries.services_of_kind(agent.store, parsed))


SERVICE = ReadSpec(
    name=wire.READ_HEALTH_SERVICE,
    query=_health_service,
    encode=_entries,
    wire=wire.HEALTH_ENTRIES,
)
#: No HTTP route: other datacenters' proxies read mesh gateways by kind with it.
SERVICE_KIND = ReadSpec(
    name=wire.READ_SERVICE_KIND,
    query=_service_kind,
    encode=_entries,
    wire=wire.HEALTH_ENTRIES,
)
CHECKS = ReadSpec(
    name="health.checks",
    query=lambda a, name: _result(queries.checks_for_service(a.store, name)),
    encode=_checks,
    wire=wire.CHECK_ENTRIES,
)
NODE = ReadSpec(
    name="health.node",
    query=lambda a, node: _result(queries.node_checks(a.store, node)),
    encode=_checks,
    wire=wire.CHECK_ENTRIES,
)
STATE = ReadSpec(
    name="health.state",
    query=lambda a, state: _result(queries.checks_in_state(a.store, state)),
    encode=_checks,
    wire=wire.CHECK_ENTRIES,
)


def _passing(request: web.Request) -> bool:
    # Consul: a bare ``?passing`` or any value but "false"/"0" filters.
    if "passing" not in request.query:
        return False
    return request.query["passing"].lower() not in ("0", "false")


def _service_args(request: web.Request, *, connect: bool) -> dict[str, Any]:
    return {
        "name": request.match_info["name"],
        "tag": request.query.get("tag"),
        "passing": _passing(request),
        "connect": connect,
    }


@routes.get("/v1/health/service/{name}")
async def health_service(request: web.Request) -> web.Response:
    """Instances of a service with node and checks (``?passing``, ``?tag=``)."""
    args = _service_args(request, connect=False)
    return await serve_read(request, SERVICE, args, refine(request, Shape.HEALTH_ENTRIES))


@routes.get("/v1/health/connect/{name}")
async def health_connect(request: web.Request) -> web.Response:
    """Connect-capable instances for a service, with health."""
    args = _service_args(request, connect=True)
    return await serve_read(request, SERVICE, args, refine(request, Shape.HEALTH_ENTRIES))


@routes.get("/v1/health/checks/{name}")
async def health_checks(request: web.Request) -> web.Response:
    """The checks of every instance of a service."""
    args = {"name": request.match_info["name"]}
    return await serve_read(request, CHECKS, args, refine(request, Shape.CHECKS))


@routes.get("/v1/health/node/{node}")
async def health_node(request: web.Request) -> web.Response:
    """Every check of a node."""
    args = {"node": request.match_info["node"]}
    return await serve_read(request, NODE, args, refine(request, Shape.CHECKS))


@routes.get("/v1/health/state/{state}")
async def health_state(request: web.Request) -> web.Response:
    """Checks in a state: passing, warning, critical or any."""
    state = request.match_info["state"]
    if state not in _STATES:
        raise InvalidRequest(f"Unsupported state: {state}", field="state")
    return await serve_read(request, STATE, {"state": state}, refine(request, Shape.CHECKS))
