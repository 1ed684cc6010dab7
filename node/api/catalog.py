"""``/v1/catalog/*``: the services and nodes of a datacenter.

Rule: each endpoint is one ``ReadSpec`` over a ``node.catalog.queries`` function; the
index a query reports is the last change of what it read, so blocking watchers wake
only when their answer changed.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from node.api import codec
from node.api.filtering import Shape, refine
from node.api.read import ReadSpec, serve_read
from node.api.state import AgentAPI
from node.catalog import queries
from node.errors import NotFound
from node.rpc import reads as wire

__all__ = ["routes", "SERVICES", "SERVICE", "CONNECT", "NODES", "NODE", "DATACENTERS"]

routes = web.RouteTableDef()


def _result(result: queries.QueryResult[Any]) -> tuple[Any, int]:
    return result.value, result.index


def _node(agent: AgentAPI, node: str) -> tuple[Any, int]:
    value, index = _result(queries.node_services(agent.store, node))
    if value is None:
        # Consul answers an unknown node with 200 and ``null``; we say so explicitly.
        raise NotFound(f"Unknown node: {node}")
    return value, index


SERVICES = ReadSpec(
    name="catalog.services",
    query=lambda a: _result(queries.services(a.store)),
    encode=lambda a, v: codec.encode_catalog_services(v),
    wire=wire.SERVICE_TAGS,
)
SERVICE = ReadSpec(
    name="catalog.service",
    query=lambda a, name, tag: _result(queries.service_nodes(a.store, name, tag=tag)),
    encode=lambda a, v: [codec.encode_catalog_service(e) for e in v],
    wire=wire.SERVICE_NODES,
)
CONNECT = ReadSpec(
    name="catalog.connect",
    query=lambda a, name, tag: _result(queries.service_nodes(a.store, name, tag=tag, connect=True)),
    encode=lambda a, v: [codec.encode_catalog_service(e) for e in v],
    wire=wire.SERVICE_NODES,
)
NODES = ReadSpec(
    name="catalog.nodes",
    query=lambda a: _result(queries.nodes(a.store)),
    encode=lambda a, v: [codec.encode_node(n) for n in v],
    wire=wire.NODES,
)
NODE = ReadSpec(
    name="catalog.node",
    query=_node,
    encode=lambda a, v: codec.encode_node_services(v),
    wire=wire.NODE_SERVICES,
)
DATACENTERS = ReadSpec(
    name="catalog.datacenters",
    query=lambda a: (a.datacenters(), a.notifier.index),
    encode=lambda a, v: list(v),
    cacheable=False,
    wire=wire.STRINGS,
)


@routes.get("/v1/catalog/services")
async def catalog_services(request: web.Request) -> web.Response:
    """Every service name with its tags."""
    return await serve_read(request, SERVICES, {}, refine(request, None))


@routes.get("/v1/catalog/service/{name}")
async def catalog_service(request: web.Request) -> web.Response:
    """Instances of a service (``?tag=`` filters)."""
    args = {"name": request.match_info["name"], "tag": request.query.get("tag")}
    return await serve_read(request, SERVICE, args, refine(request, Shape.SERVICE_NODES))


@routes.get("/v1/catalog/connect/{name}")
async def catalog_connect(request: web.Request) -> web.Response:
    """Connect-capable instances (proxies and native) for a service."""
    args = {"name": request.match_info["name"], "tag": request.query.get("tag")}
    return await serve_read(request, CONNECT, args, refine(request, Shape.SERVICE_NODES))


@routes.get("/v1/catalog/nodes")
async def catalog_nodes(request: web.Request) -> web.Response:
    """Every node of the datacenter."""
    return await serve_read(request, NODES, {}, refine(request, Shape.NODES))


@routes.get("/v1/catalog/node/{node}")
async def catalog_node(request: web.Request) -> web.Response:
    """A node and its services; 404 when unknown."""
    args = {"node": request.match_info["node"]}
    return await serve_read(request, NODE, args, refine(request, Shape.NODE_SERVICES))


@routes.get("/v1/catalog/datacenters")
async def catalog_datacenters(request: web.Request) -> web.Response:
    """Known datacenters, nearest first."""
    return await serve_read(request, DATACENTERS, {})
