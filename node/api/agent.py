"""``/v1/agent/*``: this node's own services, checks, membership and identity.

Rule: writes go to ``agent.local`` (LocalState), which validates, applies all-or-nothing
and persists; a rejected write changes nothing. Reads go through ``serve_read`` like
every other GET, so they block on ``?index=`` too.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from node.api import codec
from node.api.filtering import Shape, refine
from node.api.read import ReadSpec, serve_read
from node.api.selfinfo import encode_self
from node.api.state import AGENT, AgentAPI
from node.catalog.values import Health
from node.errors import InvalidRequest

__all__ = ["routes"]

routes = web.RouteTableDef()


def _ok() -> web.Response:
    return web.Response(status=200)


# ---------------------------------------------------------------------------- reads


def _services(agent: AgentAPI) -> tuple[Any, int]:
    services = {sid: d.instance() for sid, d in agent.local.services().items()}
    return services, agent.notifier.index


def _service(agent: AgentAPI, service_id: str) -> tuple[Any, int]:
    return agent.local.service(service_id).instance(), agent.notifier.index  # NotFound → 404


def _checks(agent: AgentAPI) -> tuple[Any, int]:
    local = agent.local
    return {cid: local.check_state(cid) for cid in local.checks()}, agent.notifier.index


def _members(agent: AgentAPI, wan: bool) -> tuple[Any, int]:
    return agent.members(wan=wan), agent.notifier.index


def _self(agent: AgentAPI) -> tuple[Any, int]:
    return agent, agent.notifier.index


def _encode_self(agent: AgentAPI, value: Any) -> Any:
    del value
    return encode_self(agent, agent.members()[0])


SERVICES = ReadSpec(
    name="agent.services",
    query=_services,
    encode=lambda a, v: {sid: codec.encode_agent_service(s) for sid, s in v.items()},
)
SERVICE = ReadSpec(
    name="agent.service", query=_service, encode=lambda a, v: codec.encode_agent_service(v)
)
CHECKS = ReadSpec(
    name="agent.checks",
    query=_checks,
    encode=lambda a, v: {c.id: codec.encode_check(a.config.node_name, c) for c in v.values()},
)
MEMBERS = ReadSpec(
    name="agent.members",
    query=_members,
    encode=lambda a, v: [codec.encode_member(m) for m in v],
    cacheable=False,
)
SELF = ReadSpec(name="agent.self", query=_self, encode=_encode_self, cacheable=False)


@routes.get("/v1/agent/self")
async def agent_self(request: web.Request) -> web.Response:
    """Configuration and member record of this node."""
    return await serve_read(request, SELF, {})


@routes.get("/v1/agent/services")
async def agent_services(request: web.Request) -> web.Response:
    """Every service registered on this node, keyed by ID."""
    return await serve_read(request, SERVICES, {}, refine(request, Shape.SERVICES_BY_ID))


@routes.get("/v1/agent/service/{service_id}")
async def agent_service(request: web.Request) -> web.Response:
    """One local service by ID; 404 when unknown."""
    if request.match_info["service_id"] == "register":
        # As in Consul, the fixed path wins over the ID: a GET of it is a wrong method.
        raise web.HTTPMethodNotAllowed(request.method, ["PUT"])
    return await serve_read(request, SERVICE, {"service_id": request.match_info["service_id"]})


@routes.get("/v1/agent/checks")
async def agent_checks(request: web.Request) -> web.Response:
    """Every check on this node, keyed by check ID."""
    return await serve_read(request, CHECKS, {}, refine(request, Shape.CHECKS_BY_ID))


@routes.get("/v1/agent/members")
async def agent_members(request: web.Request) -> web.Response:
    """Gossip members (LAN, or WAN with ``?wan=1``)."""
    wan = request.query.get("wan", "") not in ("", "0", "false")
    return await serve_read(request, MEMBERS, {"wan": wan})


# ---------------------------------------------------------------------------- writes


def _flag(request: web.Request, name: str) -> bool:
    # Consul treats a bare ``?replace-existing-checks`` or any non-false value as set.
    if name not in request.query:
        return False
    return request.query[name].lower() not in ("0", "false")


@routes.put("/v1/agent/service/register")
async def service_register(request: web.Request) -> web.Response:
    """Register (or replace) a local service with its checks and sidecar."""
    definition = codec.decode_service(await request.read())
    request.app[AGENT].local.register_service(
        definition, replace_existing_checks=_flag(request, "replace-existing-checks")
    )
    return _ok()


@routes.put("/v1/agent/service/deregister/{service_id}")
async def service_deregister(request: web.Request) -> web.Response:
    """Remove a local service, its checks and its sidecar; 404 when unknown."""
    request.app[AGENT].local.deregister_service(request.match_info["service_id"])
    return _ok()


@routes.put("/v1/agent/check/register")
async def check_register(request: web.Request) -> web.Response:
    """Add a check to this node (optionally bound to a local service)."""
    definition = codec.decode_check(await request.read())
    request.app[AGENT].local.register_check(definition)
    return _ok()


@routes.put("/v1/agent/check/deregister/{check_id}")
async def check_deregister(request: web.Request) -> web.Response:
    """Remove a check; 404 when unknown."""
    request.app[AGENT].local.deregister_check(request.match_info["check_id"])
    return _ok()


async def _ttl(request: web.Request, status: Health) -> web.Response:
    note = request.query.get("note", "")
    request.app[AGENT].local.update_ttl(request.match_info["check_id"], status, note)
    return _ok()


@routes.put("/v1/agent/check/pass/{check_id}")
async def check_pass(request: web.Request) -> web.Response:
    """Mark a TTL check passing (``?note=`` becomes its output)."""
    return await _ttl(request, Health.PASSING)


@routes.put("/v1/agent/check/warn/{check_id}")
async def check_warn(request: web.Request) -> web.Response:
    """Mark a TTL check warning."""
    return await _ttl(request, Health.WARNING)


@routes.put("/v1/agent/check/fail/{check_id}")
async def check_fail(request: web.Request) -> web.Response:
    """Mark a TTL check critical."""
    return await _ttl(request, Health.CRITICAL)


@routes.put("/v1/agent/check/update/{check_id}")
async def check_update(request: web.Request) -> web.Response:
    """Set a TTL check's status and output from ``{"Status", "Output"}``."""
    status_text, output = codec.decode_check_update(await request.read())
    try:
        status = Health(status_text)
    except ValueError:
        raise InvalidRequest(f"Invalid Status: {status_text!r}", field="Status") from None
    if status is Health.MAINTENANCE:
        raise InvalidRequest(f"Invalid Status: {status_text!r}", field="Status")
    request.app[AGENT].local.update_ttl(request.match_info["check_id"], status, output)
    return _ok()
