"""Wires the data plane: the proxy manager and the feed that drives it.

Rule: this is where the proxy feed's query callables are made from the node's parts
(DESIGN §8: ``proxy`` sees catalog and Connect queries, never the store). Local inputs
are the catalog queries over the store and the node's own registrations; other
datacenters' inputs are blocking remote reads (``health.service`` with ``connect`` for
Connect instances, ``health.service_kind`` for mesh gateways — Consul's
``Internal.ServiceDump`` by kind), whose typed health entries become endpoints exactly
as local ones do.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from node.catalog import queries
from node.catalog.queries import HealthEntry
from node.catalog.store import CatalogStore
from node.catalog.values import ServiceKind
from node.catalog.watch import IndexNotifier
from node.proxy.endpoints import endpoint_of
from node.proxy.feed import ConnectView, FeedSources, ProxyFeed, RemoteRead
from node.proxy.health import LocalView
from node.proxy.manager import ProxyManager
from node.proxy.snapshot import EndpointInfo
from node.rpc.reads import (
    HEALTH_ENTRIES,
    READ_HEALTH_SERVICE,
    READ_SERVICE_KIND,
    ReadRequest,
    ValueCodec,
)

__all__ = ["ForwardRead", "ProxyConnect", "build_proxy_feed"]

T = TypeVar("T")


class ForwardRead(Protocol):
    """Runs a read in another datacenter: its answer (rebuilt with ``wire``) and index."""

    def __call__(
        self, dc: str, read: ReadRequest, wire: ValueCodec[T]
    ) -> Awaitable[tuple[T, int]]: ...


class ProxyConnect(ConnectView, Protocol):
    """What the proxies use of Connect: the feed's view plus intention checks."""

    def authorize(self, source_service: str, destination: str) -> tuple[bool, str]:
        """Intentions first, then the default policy: (allowed, reason)."""
        ...


def _endpoints(entries: tuple[HealthEntry, ...]) -> tuple[EndpointInfo, ...]:
    return tuple(endpoint_of(e) for e in entries)


def _remote_reads(forward_read: ForwardRead) -> tuple[RemoteRead, RemoteRead]:
    async def connect(dc: str, service: str, index: int, wait: float) -> Any:
        args = {"name": service, "tag": None, "passing": False, "connect": True}
        read = ReadRequest(name=READ_HEALTH_SERVICE, args=args, index=index, wait=wait)
        entries, new_index = await forward_read(dc, read, HEALTH_ENTRIES)
        return _endpoints(entries), new_index

    async def gateways(dc: str, service: str, index: int, wait: float) -> Any:
        del service
        args = {"kind": str(ServiceKind.MESH_GATEWAY)}
        read = ReadRequest(name=READ_SERVICE_KIND, args=args, index=index, wait=wait)
        entries, new_index = await forward_read(dc, read, HEALTH_ENTRIES)
        return _endpoints(entries), new_index

    return connect, gateways


def build_proxy_feed(
    *,
    datacenter: str,
    node_address: str,
    store: CatalogStore,
    notifier: IndexNotifier,
    local: LocalView,
    connect: ProxyConnect,
    datacenters: Callable[[], Sequence[str]],
    forward_read: ForwardRead,
    rng: random.Random,
) -> ProxyFeed:
    """The node's proxy manager and its feed (run ``feed.run()`` as a component)."""

    def authorizer_for(service: str) -> Callable[[str], bool]:
        return lambda source: connect.authorize(source, service)[0]

    manager = ProxyManager(authorizer_for=authorizer_for, rng=rng)
    remote_connect, remote_gateways = _remote_reads(forward_read)
    sources = FeedSources(
        local_dc=datacenter,
        node_address=node_address,
        local=local,
        connect=connect,
        connect_health=lambda name: queries.health_service(store, name, connect=True),
        gateways=lambda: queries.services_of_kind(store, ServiceKind.MESH_GATEWAY),
        service_names=lambda: queries.services(store).value.keys(),
        datacenters=datacenters,
        wait_local=notifier.wait,
        local_index=lambda: notifier.index,
        remote_connect=remote_connect,
        remote_gateways=remote_gateways,
    )
    return ProxyFeed(sources, manager)
