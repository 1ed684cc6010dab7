"""``/v1/agent/{join,leave,force-leave}`` and ``/v1/operator/keyring``: cluster membership.

Rule: every route here is a thin call into the agent (``agent.join``, ``leave``,
``force_leave``, ``keyring_op``); the agent owns the pools and the RPC fan-out, the codec
owns the JSON shapes. Keyring operations apply to the LAN and WAN keyrings of every node
in every datacenter at once, as Consul's do.
"""

from __future__ import annotations

from aiohttp import web

from node.api import codec
from node.api.read import dump_json
from node.api.state import AGENT
from node.errors import InvalidRequest

__all__ = ["routes"]

routes = web.RouteTableDef()


def _wan(request: web.Request) -> bool:
    return request.query.get("wan", "") not in ("", "0", "false")


@routes.put("/v1/agent/join/{address}")
async def agent_join(request: web.Request) -> web.Response:
    """Join the LAN (or, on a server with ``?wan=1``, the WAN) pool through ``address``."""
    agent = request.app[AGENT]
    wan = _wan(request)
    if wan and not agent.is_server:
        raise InvalidRequest("Must be a server to join WAN cluster", field="wan")
    address = request.match_info["address"]
    joined = await agent.join([address], wan=wan)
    if joined == 0:
        # Consul reports the serf error text; ours names the address that did not answer.
        raise InvalidRequest(f"Failed to join {address}: no answer", field="address")
    return web.Response(status=200)


@routes.put("/v1/agent/leave")
async def agent_leave(request: web.Request) -> web.Response:
    """Leave every pool gracefully, then shut the agent down."""
    await request.app[AGENT].leave()
    return web.Response(status=200)


@routes.put("/v1/agent/force-leave/{node}")
async def agent_force_leave(request: web.Request) -> web.Response:
    """Mark a failed member as left (its catalog entries disappear everywhere)."""
    request.app[AGENT].force_leave(request.match_info["node"])
    return web.Response(status=200)


@routes.get("/v1/operator/keyring")
async def keyring_list(request: web.Request) -> web.Response:
    """Per-pool key counts: how many nodes hold each key (WAN first, then each LAN)."""
    reports = await request.app[AGENT].keyring_op("list")
    body = dump_json([codec.encode_keyring_response(r) for r in reports])
    return web.Response(body=body, content_type="application/json")


async def _keyring_write(request: web.Request, op: str) -> web.Response:
    key = codec.decode_keyring_request(await request.read())
    reports = await request.app[AGENT].keyring_op(op, key)
    failed = [f"{r.datacenter or 'WAN'}: {n}: {m}" for r in reports for n, m in r.messages.items()]
    if failed:
        # Consul answers a partly failed operation with 500 and the nodes' errors.
        return web.Response(status=500, text="\n".join(failed) + "\n")
    return web.Response(status=200)


@routes.post("/v1/operator/keyring")
async def keyring_install(request: web.Request) -> web.Response:
    """Install a new key on every node (it may decrypt; the primary still encrypts)."""
    return await _keyring_write(request, "install")


@routes.put("/v1/operator/keyring")
async def keyring_use(request: web.Request) -> web.Response:
    """Make an installed key the primary everywhere."""
    return await _keyring_write(request, "use")


@routes.delete("/v1/operator/keyring")
async def keyring_remove(request: web.Request) -> web.Response:
    """Remove a (non-primary) key everywhere."""
    return await _keyring_write(request, "remove")
