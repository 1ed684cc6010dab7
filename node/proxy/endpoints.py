"""Catalog instances → ``EndpointInfo``: which address a proxy dials and whether it may.

Rule: one function decides an instance's addresses and health for the data plane, used
for local catalog answers and for other datacenters' alike (those arrive over RPC as the
same typed health entries, ``node.rpc.reads``). Addresses follow Consul's ``BestAddress``: the LAN
address is the service address, else the node's; the WAN address is the service's
``wan`` tagged address, else (only when the service has no address of its own) the
node's ``wan`` tagged address. Health follows Consul's Envoy endpoints: any critical
(or maintenance) check makes an instance unhealthy, ``warning`` still counts as healthy
unless ``only_passing``. A mesh gateway's own checks count too, so a failing gateway or
one in maintenance is never chosen (Consul issue #15703). Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from node.catalog.queries import HealthEntry
from node.catalog.values import Health, TaggedAddress
from node.proxy.snapshot import EndpointInfo

__all__ = ["is_healthy", "make_endpoint", "endpoint_of"]

_UNHEALTHY = frozenset({Health.CRITICAL, Health.MAINTENANCE})


def is_healthy(statuses: Iterable[str], *, only_passing: bool = False) -> bool:
    """Whether an instance with checks in ``statuses`` may receive connections."""
    for status in statuses:
        if status in _UNHEALTHY or (only_passing and status != Health.PASSING):
            return False
    return True


def make_endpoint(
    *,
    service_address: str,
    service_port: int,
    service_wan: tuple[str, int] | None,
    node_address: str,
    node_wan: str,
    healthy: bool,
) -> EndpointInfo:
    """One endpoint from the raw fields of a health entry (Consul ``BestAddress``)."""
    if service_wan is not None and service_wan[0]:
        wan_address, wan_port = service_wan
    elif not service_address:
        wan_address, wan_port = node_wan, 0
    else:
        wan_address, wan_port = "", 0
    return EndpointInfo(
        address=service_address or node_address,
        port=service_port,
        healthy=healthy,
        wan_address=wan_address,
        wan_port=wan_port,
    )


def _wan_of(tagged: Mapping[str, TaggedAddress]) -> tuple[str, int] | None:
    wan = tagged.get("wan")
    return None if wan is None else (wan.address, wan.port)


def endpoint_of(entry: HealthEntry, *, only_passing: bool = False) -> EndpointInfo:
    """The endpoint of one health entry (of this datacenter or another)."""
    svc, node = entry.service, entry.node
    return make_endpoint(
        service_address=svc.address,
        service_port=svc.port,
        service_wan=_wan_of(svc.tagged_addresses),
        node_address=node.address,
        node_wan=node.tagged_addresses.get("wan", ""),
        healthy=is_healthy((c.check.status for c in entry.checks), only_passing=only_passing),
    )
