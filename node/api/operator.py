"""``/v1/operator/raft/*``: the servers' Raft configuration, removing a peer, moving the leader.

Rule: thin calls into the agent (``raft_configuration``, ``raft_remove_peer``,
``raft_transfer_leader``), which asks a server of the datacenter (``?dc=``) over RPC;
this module owns the Consul JSON shapes and status codes. As Consul: the configuration
goes through the leader unless ``?stale``; ``DELETE /peer`` needs exactly one of ``?id``
or ``?address`` (400 otherwise); what the Raft group refuses (an unknown peer, a group
of one) is a 500 with the group's error text; no leader is Consul's
``500 No cluster leader``. ``Index`` is 0, as modern Consul answers (py-consul checks it).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

from aiohttp import web

from node.api.read import dump_json
from node.api.state import AGENT
from node.errors import InvalidRequest, NoClusterLeader, NodeError

__all__ = ["routes", "encode_configuration"]

routes = web.RouteTableDef()
T = TypeVar("T")


def _flag(request: web.Request, name: str) -> bool:
    """A Consul boolean query flag: present (``?stale``, ``?stale=true``) unless ``false``/``0``."""
    return name in request.query and request.query[name].lower() not in ("false", "0")


def _dc(request: web.Request) -> str | None:
    return request.query.get("dc") or None


def encode_configuration(reply: Any) -> dict[str, Any]:
    """Consul's ``RaftConfigurationResponse`` from a server's answer."""
    servers = reply.get("servers") if isinstance(reply, dict) else None
    if not isinstance(servers, list):
        raise NoClusterLeader("malformed Raft configuration answer")
    return {
        "Servers": [
            {"ID": s.get("id", ""), "Node": s.get("node", ""), "Address": s.get("address", ""),
             "Leader": bool(s.get("leader")), "Voter": bool(s.get("voter", True)),
             "ProtocolVersion": s.get("protocol", "")}
            for s in servers if isinstance(s, dict)
        ],
        "Index": 0,
    }  # fmt: skip


async def _as_consul(call: Awaitable[T]) -> T:
    """What the group refuses becomes Consul's 500 with its text (no leader stays 500)."""
    try:
        return await call
    except NodeError as exc:
        raise web.HTTPInternalServerError(text=f"{exc}\n", content_type="text/plain") from None


@routes.get("/v1/operator/raft/configuration")
async def raft_configuration(request: web.Request) -> web.Response:
    """The servers of the datacenter's Raft group, the leader marked."""
    agent = request.app[AGENT]
    stale = _flag(request, "stale")
    reply = await agent.raft_configuration(stale=stale, dc=_dc(request))
    return web.Response(body=dump_json(encode_configuration(reply)),
                        content_type="application/json")  # fmt: skip


@routes.delete("/v1/operator/raft/peer")
async def raft_remove_peer(request: web.Request) -> web.Response:
    """Remove a (failed) server from the Raft configuration, by ``?id`` or ``?address``."""
    server_id = request.query.get("id", "")
    address = request.query.get("address", "")
    if not server_id and not address:
        raise InvalidRequest(
            "Must specify either ?id with the server's ID or ?address with IP:port of peer to remove"
        )
    if server_id and address:
        raise InvalidRequest("Must specify only one of ?id or ?address")
    agent = request.app[AGENT]
    await _as_consul(agent.raft_remove_peer(server_id=server_id, address=address, dc=_dc(request)))
    return web.Response(status=200)


@routes.post("/v1/operator/raft/transfer-leader")
async def raft_transfer_leader(request: web.Request) -> web.Response:
    """Hand leadership to ``?id`` (or to the most caught-up server)."""
    agent = request.app[AGENT]
    server_id = request.query.get("id", "")
    await _as_consul(agent.raft_transfer_leader(server_id=server_id, dc=_dc(request)))
    return web.Response(body=dump_json({"Success": True}), content_type="application/json")
