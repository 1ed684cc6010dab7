"""A catalog for the DNS tests: healthy, warning, critical, IPv6, Connect and many instances."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from node.catalog.parse import parse_service
from node.catalog.sidecar import expand_sidecar
from node.catalog.store import CatalogStore
from node.catalog.values import CheckKind, CheckState, Health, NodeRecord

#: How many instances of "many" the catalog holds (one per node m0..).
MANY = 40


def add_node(
    store: CatalogStore,
    name: str,
    address: str,
    services: Sequence[Mapping[str, Any]] = (),
    status: Mapping[str, Health] | None = None,
    meta: Mapping[str, str] | None = None,
) -> None:
    """Register ``name`` with ``services``; ``status`` gives a TTL check per service id."""
    instances = [
        d.instance()
        for s in services
        for d in expand_sidecar(parse_service(dict(s)), allocate_port=lambda sid: 21999)
    ]
    checks = {
        f"chk-{sid}": CheckState(id=f"chk-{sid}", name=sid, kind=CheckKind.TTL, status=health,
                                 service_id=sid)
        for sid, health in (status or {}).items()
    }  # fmt: skip
    store.upsert_node(NodeRecord(
        name=name, node_id="", address=address, datacenter="dc1",
        meta=MappingProxyType(dict(meta or {})),
        services=MappingProxyType({i.id: i for i in instances}),
        checks=MappingProxyType(checks), version=1,
    ))  # fmt: skip


def fill(store: CatalogStore) -> CatalogStore:
    """web on n1 (passing, tags v1/blue), n2 (warning), n3 (critical); web6 on an IPv6
    node; api with a sidecar on n1; db native with its own address on n2; many."""
    add_node(store, "n1", "10.0.0.1", [
        {"name": "web", "id": "web1", "port": 80, "tags": ["v1", "Blue"],
         "weights": {"passing": 5, "warning": 2}},
        {"name": "api", "id": "api1", "port": 90,
         "connect": {"sidecar_service": {"port": 21000}}},
    ], {"web1": Health.PASSING}, meta={"rack": "r1", "rfc1035-x": "plain"})  # fmt: skip
    add_node(store, "n2", "10.0.0.2", [
        {"name": "web", "id": "web2", "port": 81, "tags": ["v2"],
         "weights": {"passing": 5, "warning": 2}},
        {"name": "db", "id": "db1", "port": 5432, "address": "10.0.0.50",
         "connect": {"native": True}},
    ], {"web2": Health.WARNING})  # fmt: skip
    add_node(store, "n3", "10.0.0.3", [{"name": "web", "id": "web3", "port": 82}],
             {"web3": Health.CRITICAL})  # fmt: skip
    add_node(store, "n6", "2001:db8::6", [{"name": "web6", "id": "web6", "port": 86}])
    add_node(store, "Mixed-Case", "10.0.0.9", [{"name": "Shout", "id": "shout", "port": 9}])
    for i in range(MANY):
        add_node(
            store, f"m{i}", f"10.1.0.{i + 1}", [{"name": "many", "id": "many", "port": 7000 + i}]
        )
    return store
