"""Wires the data plane into the agent: the proxy manager and the feed that drives it.

Rule: this is where the proxy feed's query callables are made from the agent's parts
(DESIGN §8: ``proxy`` sees catalog and Connect queries, never the store). Local inputs
are the catalog queries over ``agent.store`` and ``agent.local``; other datacenters'
inputs are blocking ``forward_read`` calls (``health.service`` with ``connect`` for
Connect instances, ``health.service_kind`` for mesh gateways — Consul's
``Internal.ServiceDump`` by kind, registered here as a forwardable read with no HTTP
route), decoded by ``api/codec``.
"""

from __future__ import annotations

import random
from typing import Any

from node.api import codec
from node.api.blocking import QueryOptions
from node.api.read import ForwardedBody, ReadSpec
from node.catalog import queries
from node.catalog.values import ServiceKind
from node.errors import InvalidRequest, RemoteProtocolError
from node.proxy.feed import FeedSources, ProxyFeed
from node.proxy.manager import ProxyManager
from node.proxy.snapshot import EndpointInfo

__all__ = ["build_proxy_feed", "SERVICE_KIND"]


def _service_kind(agent: Any, kind: str) -> tuple[Any, int]:
    try:
        parsed = ServiceKind(kind)
    except ValueError:
        raise InvalidRequest(f"unknown service kind {kind!r}", field="kind") from None
    result = queries.services_of_kind(agent.store, parsed)
    return result.value, result.index


SERVICE_KIND = ReadSpec(
    name="health.service_kind",
    query=_service_kind,
    encode=lambda a, v: [codec.encode_health_entry(e) for e in v],
)


def _decode(value: Any, what: str) -> tuple[EndpointInfo, ...]:
    if not isinstance(value, ForwardedBody):
        raise RemoteProtocolError(f"{what}: expected an encoded answer, got {type(value).__name__}")
    return codec.decode_health_endpoints(value.body, what=what)


def _remote_reads(agent: Any) -> tuple[Any, Any]:
    async def connect(dc: str, service: str, index: int, wait: float) -> Any:
        args = {"name": service, "tag": None, "passing": False, "connect": True}
        opts = QueryOptions(index=index, wait=wait)
        value, new_index = await agent.forward_read(dc, "health.service", args, opts)
        return _decode(value, f"Connect instances of {service!r} in {dc!r}"), new_index

    async def gateways(dc: str, service: str, index: int, wait: float) -> Any:
        del service
        opts = QueryOptions(index=index, wait=wait)
        args = {"kind": str(ServiceKind.MESH_GATEWAY)}
        value, new_index = await agent.forward_read(dc, SERVICE_KIND.name, args, opts)
        return _decode(value, f"mesh gateways of {dc!r}"), new_index

    return connect, gateways


def build_proxy_feed(agent: Any) -> ProxyFeed:
    """The node's proxy manager and its feed (run ``feed.run()`` as a component)."""
    connect = agent.connect
    store = agent.store

    def authorizer_for(service: str) -> Any:
        return lambda source: connect.authorize(source, service)[0]

    manager = ProxyManager(authorizer_for=authorizer_for, rng=random.Random(agent.rng.random()))
    remote_connect, remote_gateways = _remote_reads(agent)
    sources = FeedSources(
        local_dc=agent.config.datacenter,
        node_address=agent.local.identity.address,
        local=agent.local,
        connect=connect,
        connect_health=lambda name: queries.health_service(store, name, connect=True),
        gateways=lambda: queries.services_of_kind(store, ServiceKind.MESH_GATEWAY),
        service_names=lambda: queries.services(store).value.keys(),
        datacenters=agent.datacenters,
        wait_local=agent.notifier.wait,
        local_index=lambda: agent.notifier.index,
        remote_connect=remote_connect,
        remote_gateways=remote_gateways,
    )
    return ProxyFeed(sources, manager)
