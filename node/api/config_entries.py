"""``/v1/config``: proxy-defaults and service-defaults config entries.

Rule: a body is parsed by ``node.connect.parse_config_entry`` (the one parser every entry
goes through) before anything travels, so a bad kind, key or mode is a 400 naming it
(Consul's ``Invalid Mesh Gateway Mode: "x"``) and nothing is applied. Writes are applied
by the primary datacenter (``ConnectService``); ``?cas=`` answers ``false`` when the
entry changed since the index given (0: only if absent). Reads are served from this
node's copy and block on ``?index=``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from node.api import codec
from node.api.connect import serve_global_read
from node.api.read import ReadSpec, dump_json
from node.api.state import AGENT, AgentAPI
from node.connect.entries import parse_config_entry, parse_config_entry_kind
from node.errors import InvalidRequest

__all__ = ["routes"]

routes = web.RouteTableDef()


def _cas(request: web.Request) -> int | None:
    raw = request.query.get("cas")
    if raw is None:
        return None
    if not raw.isdigit():
        raise InvalidRequest(f"Invalid cas index: {raw!r}", field="cas")
    return int(raw)


def _bool(value: bool) -> web.Response:
    return web.Response(body=dump_json(value), headers={"Content-Type": "application/json"})


def _entry(agent: AgentAPI, kind: str, name: str) -> tuple[Any, int]:
    connect = agent.connect
    found = connect.config_entries().get((kind, name))
    return found, connect.index_of(kind)


def _entries(agent: AgentAPI, kind: str) -> tuple[Any, int]:
    connect = agent.connect
    found = [e for (k, _), e in sorted(connect.config_entries().items()) if k == kind]
    return found, connect.index_of(kind)


ENTRY = ReadSpec(
    name="config.entry",
    query=_entry,
    encode=lambda a, e: codec.encode_config_entry(e, a.connect.indexes(e.kind, e.name)),
)
ENTRIES = ReadSpec(
    name="config.entries",
    query=_entries,
    encode=lambda a, es: [
        codec.encode_config_entry(e, a.connect.indexes(e.kind, e.name)) for e in es
    ],
)


@routes.put("/v1/config")
async def config_apply(request: web.Request) -> web.Response:
    """Create or replace an entry (the body's ``Kind``); ``true``/``false`` as Consul."""
    cas = _cas(request)
    entry = parse_config_entry(codec.decode_object(await request.read(), what="config entry"))
    applied = await request.app[AGENT].connect.put_config_entry(entry, cas=cas)
    return _bool(applied)


@routes.get("/v1/config/{kind}")
async def config_list(request: web.Request) -> web.Response:
    """Every entry of one kind (blocking)."""
    kind = parse_config_entry_kind(request.match_info["kind"])
    return await serve_global_read(request, ENTRIES, {"kind": kind})


@routes.get("/v1/config/{kind}/{name}")
async def config_get(request: web.Request) -> web.Response:
    """One entry (blocking); 404 ``Config entry not found for "kind" / "name"``."""
    kind = parse_config_entry_kind(request.match_info["kind"])
    name = request.match_info["name"]
    missing = f'Config entry not found for "{kind}" / "{name}"'
    return await serve_global_read(request, ENTRY, {"kind": kind, "name": name}, missing=missing)


@routes.delete("/v1/config/{kind}/{name}")
async def config_delete(request: web.Request) -> web.Response:
    """Delete an entry (absent is fine, as Consul); ``?cas=`` as for writes."""
    kind = parse_config_entry_kind(request.match_info["kind"])
    connect = request.app[AGENT].connect
    deleted = await connect.delete_config_entry(kind, request.match_info["name"], cas=_cas(request))
    return _bool(deleted)
