"""``/v1/status/*``: who leads this datacenter and who its servers are.

Rule: answers come from agent methods (``leader()``, ``peers()``) so that the gossip
layer can replace the single-node answers without touching this module.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from node.api.read import ReadSpec, serve_read
from node.api.state import AgentAPI

__all__ = ["routes", "LEADER", "PEERS"]

routes = web.RouteTableDef()


def _identity(agent: AgentAPI, value: Any) -> Any:
    del agent
    return value


LEADER = ReadSpec(
    name="status.leader",
    query=lambda a: (a.leader(), a.notifier.index),
    encode=_identity,
    cacheable=False,
)
PEERS = ReadSpec(
    name="status.peers",
    query=lambda a: (a.peers(), a.notifier.index),
    encode=_identity,
    cacheable=False,
)


@routes.get("/v1/status/leader")
async def leader(request: web.Request) -> web.Response:
    """The leader's RPC address as a JSON string (empty when there is none)."""
    return await serve_read(request, LEADER, {})


@routes.get("/v1/status/peers")
async def peers(request: web.Request) -> web.Response:
    """The RPC addresses of this datacenter's servers."""
    return await serve_read(request, PEERS, {})
