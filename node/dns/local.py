"""A lookup answered from this datacenter's catalog, with what the answer depends on.

Rule: one function maps a parsed ``Lookup`` and the store to a ``packet.Prepared`` and
the catalog topic (and its index) it was read from, so the listener can reuse the
rendered answer until that topic changes. Zone questions (SOA, NS) pick servers at
random per query and are never reused. Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from node.catalog import queries
from node.catalog.queries import NodeInfo
from node.catalog.store import TOPIC_NODES, CatalogStore, topic_connect, topic_service
from node.dns import records
from node.dns.names import Kind, Lookup
from node.dns.packet import Prepared

__all__ = ["Answer", "answer_local", "find_node", "CATALOG_KINDS"]

#: Lookups that read the catalog (of this datacenter, or of the one named).
CATALOG_KINDS = frozenset({Kind.SERVICE, Kind.CONNECT, Kind.NODE})


@dataclass(frozen=True, slots=True)
class Answer:
    """A prepared answer; reusable while ``topic``'s index is ``index`` (``topic`` None:
    for ever), never when ``reusable`` is false."""

    prepared: Prepared
    topic: str | None = None
    index: int = 0
    reusable: bool = True


def answer_local(
    zone: records.Zone,
    store: CatalogStore,
    lookup: Lookup,
    qtype: int,
    servers: Sequence[tuple[str, str]],
) -> Answer:
    """The answer to ``lookup`` from ``store``; ``servers`` are ``(node, address)`` for NS."""
    kind = lookup.kind
    if kind is Kind.NS:
        return Answer(records.ns_answer(zone, servers), reusable=False)
    if kind is Kind.SOA:
        return Answer(records.soa_question_answer(zone, servers), reusable=False)
    if kind is Kind.AXFR:
        return Answer(records.NOTIMP)
    if kind is Kind.ADDR:
        return Answer(records.addr_answer(zone, lookup.name))
    if kind is Kind.NODE:
        index = store.topic_index(TOPIC_NODES)
        node = find_node(queries.nodes(store).value, lookup.name)
        return Answer(records.node_answer(zone, qtype, node), TOPIC_NODES, index)
    if kind in (Kind.SERVICE, Kind.CONNECT):
        connect = kind is Kind.CONNECT
        topic = topic_connect(lookup.name) if connect else topic_service(lookup.name)
        result = queries.health_service(store, lookup.name, tag=lookup.tag, connect=connect)
        prepared = records.service_answer(zone, qtype, lookup.name, result.value, zone.datacenter)
        return Answer(prepared, topic, store.topic_index(topic))
    # Invalid names; and ``.query.``: meshnode has no prepared queries, so none is known.
    return Answer(records.NXDOMAIN)


def find_node(nodes: Sequence[NodeInfo], name: str) -> NodeInfo | None:
    """The node named ``name`` (lowercase), matched case-insensitively as Consul does."""
    for node in nodes:
        if node.name.lower() == name:
            return node
    return None
