"""``/v1/agent/maintenance`` and ``/v1/agent/service/maintenance/:id``: drain a node or
one service.

Rule: the handlers only read Consul's query parameters (``enable`` parsed like Go's
``strconv.ParseBool``, ``reason``) and hand over to ``LocalState.enable_maintenance`` /
``disable_maintenance``, which add or remove the critical maintenance check and persist
it; the wording of every refusal is Consul's.
"""

from __future__ import annotations

from aiohttp import web

from node.api.state import AGENT
from node.errors import InvalidRequest

__all__ = ["routes", "parse_go_bool"]

routes = web.RouteTableDef()

_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def parse_go_bool(text: str) -> bool | None:
    """Go's ``strconv.ParseBool``: the value, or ``None`` when ``text`` is not a bool."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return None


def _enable(request: web.Request) -> bool:
    if "enable" not in request.query:
        raise InvalidRequest("Missing value for enable", field="enable")
    raw = request.query["enable"]
    enable = parse_go_bool(raw)
    if enable is None:
        raise InvalidRequest(f'Invalid value for enable: "{raw}"', field="enable")
    return enable


@routes.put("/v1/agent/maintenance")
async def node_maintenance(request: web.Request) -> web.Response:
    """Put this node into maintenance (``?enable=true&reason=``) or take it out."""
    local = request.app[AGENT].local
    if _enable(request):
        local.enable_maintenance("", request.query.get("reason", ""))
    else:
        local.disable_maintenance("")
    return web.Response(status=200)


@routes.put("/v1/agent/service/maintenance/{service_id}")
async def service_maintenance(request: web.Request) -> web.Response:
    """Put one local service into maintenance or take it out; 404 when unknown."""
    service_id = request.match_info["service_id"]
    enable = _enable(request)
    local = request.app[AGENT].local
    if enable:
        local.enable_maintenance(service_id, request.query.get("reason", ""))
    else:
        local.disable_maintenance(service_id)
    return web.Response(status=200)


@routes.put("/v1/agent/service/maintenance/")
async def service_maintenance_no_id(request: web.Request) -> web.Response:
    """Consul's answer to a missing service ID."""
    del request
    raise InvalidRequest("Missing service ID")
