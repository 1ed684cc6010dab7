"""Catalog reads between datacenters: the request, the reply, and each answer's wire form.

Rule: a read travels as ``ReadRequest`` (the read's name, its arguments and the blocking
``index``/``wait``) and comes back as ``ReadReply`` (the answer in wire form and its
index). Answers are the catalog queries' own typed values; each kind has one
``ValueCodec`` here, so the serving side ships ``codec.to_wire(value)`` and the asking
side rebuilds the same value with ``codec.from_wire`` — exactly, so whatever renders it
(the HTTP API's Consul JSON, the proxies' endpoints) sees what a local read would give.
No JSON is built here. Pure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from node.catalog.queries import CheckEntry, HealthEntry, NodeInfo, NodeServices, ServiceNode
from node.catalog.values import CheckState, Health, ServiceInstance
from node.catalog.wire import wire_str, wire_str_map
from node.errors import InvalidRequest, RemoteProtocolError

__all__ = [
    "CATALOG_READ",
    "READ_HEALTH_SERVICE",
    "READ_SERVICE_KIND",
    "ReadRequest",
    "ReadReply",
    "ValueCodec",
    "STRINGS",
    "SERVICE_TAGS",
    "NODES",
    "SERVICE_NODES",
    "NODE_SERVICES",
    "CHECK_ENTRIES",
    "HEALTH_ENTRIES",
]

#: The RPC method that runs a read in another datacenter.
CATALOG_READ = "Catalog.Read"
#: Instances of a service with their health (``/v1/health/service``).
READ_HEALTH_SERVICE = "health.service"
#: Every instance of a service kind with its health (Consul ``Internal.ServiceDump``).
READ_SERVICE_KIND = "health.service_kind"

T = TypeVar("T")
_REQUEST_SHAPE = "Catalog.Read needs {'name', 'args', 'index', 'wait'}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadRequest:
    """Run read ``name(**args)``; with ``index`` > 0, wait up to ``wait`` s for a change."""

    name: str
    args: Mapping[str, Any] = field(default_factory=dict)
    index: int = 0
    wait: float = 0.0

    def to_wire(self) -> dict[str, Any]:
        """The msgpack-able form."""
        return {"name": self.name, "args": dict(self.args), "index": self.index, "wait": self.wait}

    @classmethod
    def from_wire(cls, raw: Any) -> ReadRequest:
        """Parse a peer's request; ``InvalidRequest`` (sent back to it) names the bad part."""
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise InvalidRequest(_REQUEST_SHAPE, field="name")
        args = raw.get("args") or {}
        if not isinstance(args, dict):
            raise InvalidRequest("Catalog.Read args must be a map", field="args")
        wait = raw.get("wait") or 0.0
        if isinstance(wait, bool) or not isinstance(wait, int | float) or wait < 0:
            raise InvalidRequest("Catalog.Read 'wait' must be a non-negative number", field="wait")
        index = raw.get("index", 0)
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise InvalidRequest("'index' must be a non-negative integer", field="index")
        return cls(name=raw["name"], args=args, index=index, wait=float(wait))


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadReply:
    """A read's answer in wire form (decode it with the read's ``ValueCodec``) and index."""

    value: Any
    index: int

    def to_wire(self) -> dict[str, Any]:
        """The msgpack-able form."""
        return {"value": self.value, "index": self.index}

    @classmethod
    def from_wire(cls, raw: Any) -> ReadReply:
        """Parse a server's reply; ``RemoteProtocolError`` when it is not one."""
        index = raw.get("index") if isinstance(raw, dict) else None
        if not isinstance(index, int) or isinstance(index, bool) or index < 0 or "value" not in raw:
            raise RemoteProtocolError("Catalog.Read reply must be {'value', 'index'}")
        return cls(value=raw["value"], index=index)


@dataclass(frozen=True, slots=True)
class ValueCodec(Generic[T]):
    """The wire form of one kind of read answer."""

    what: str
    encode: Callable[[T], Any]
    decode: Callable[[Any], T]

    def to_wire(self, value: T) -> Any:
        """The msgpack-able form of ``value``."""
        return self.encode(value)

    def from_wire(self, raw: Any) -> T:
        """Rebuild the value; ``RemoteProtocolError`` naming ``what`` when ``raw`` is not one."""
        try:
            return self.decode(raw)
        except RemoteProtocolError as exc:
            raise RemoteProtocolError(f"{self.what}: {exc}") from None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RemoteProtocolError(f"{self.what}: malformed answer: {exc!r}") from None


# ---------------------------------------------------------------------------- checked fields


def _int(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise RemoteProtocolError(f"{key}: expected an integer")
    return value


def _tuple_of(item: Callable[[Any], T]) -> Callable[[Any], tuple[T, ...]]:
    def decode(raw: Any) -> tuple[T, ...]:
        if not isinstance(raw, list):
            raise RemoteProtocolError(f"expected a list, got {type(raw).__name__}")
        return tuple(item(r) for r in raw)

    return decode


# ---------------------------------------------------------------------------- values


def _node_to_wire(node: NodeInfo) -> dict[str, Any]:
    return {
        "name": node.name,
        "node_id": node.node_id,
        "address": node.address,
        "datacenter": node.datacenter,
        "tagged_addresses": dict(node.tagged_addresses),
        "meta": dict(node.meta),
        "create_index": node.create_index,
        "modify_index": node.modify_index,
    }


def _node_from_wire(raw: Any) -> NodeInfo:
    return NodeInfo(
        name=wire_str(raw, "name"),
        node_id=wire_str(raw, "node_id"),
        address=wire_str(raw, "address"),
        datacenter=wire_str(raw, "datacenter"),
        tagged_addresses=wire_str_map(raw, "tagged_addresses"),
        meta=wire_str_map(raw, "meta"),
        create_index=_int(raw, "create_index"),
        modify_index=_int(raw, "modify_index"),
    )


def _service_node_to_wire(entry: ServiceNode) -> dict[str, Any]:
    return {
        "node": _node_to_wire(entry.node),
        "service": entry.service.to_wire(),
        "create_index": entry.create_index,
        "modify_index": entry.modify_index,
    }


def _service_node_from_wire(raw: Any) -> ServiceNode:
    return ServiceNode(
        node=_node_from_wire(raw["node"]),
        service=ServiceInstance.from_wire(raw["service"]),
        create_index=_int(raw, "create_index"),
        modify_index=_int(raw, "modify_index"),
    )


def _check_entry_to_wire(entry: CheckEntry) -> dict[str, Any]:
    return {
        "node": entry.node,
        "check": entry.check.to_wire(),
        "create_index": entry.create_index,
        "modify_index": entry.modify_index,
    }


def _check_entry_from_wire(raw: Any) -> CheckEntry:
    return CheckEntry(
        node=wire_str(raw, "node"),
        check=CheckState.from_wire(raw["check"]),
        create_index=_int(raw, "create_index"),
        modify_index=_int(raw, "modify_index"),
    )


def _health_entry_to_wire(entry: HealthEntry) -> dict[str, Any]:
    return {
        "node": _node_to_wire(entry.node),
        "service": entry.service.to_wire(),
        "checks": [_check_entry_to_wire(c) for c in entry.checks],
        "status": str(entry.status),
        "create_index": entry.create_index,
        "modify_index": entry.modify_index,
    }


def _health_entry_from_wire(raw: Any) -> HealthEntry:
    return HealthEntry(
        node=_node_from_wire(raw["node"]),
        service=ServiceInstance.from_wire(raw["service"]),
        checks=_tuple_of(_check_entry_from_wire)(raw["checks"]),
        status=Health(wire_str(raw, "status")),
        create_index=_int(raw, "create_index"),
        modify_index=_int(raw, "modify_index"),
    )


def _node_services_to_wire(value: NodeServices | None) -> Any:
    if value is None:
        return None
    return {
        "node": _node_to_wire(value.node),
        "services": [_service_node_to_wire(s) for s in value.services],
    }


def _node_services_from_wire(raw: Any) -> NodeServices | None:
    if raw is None:
        return None
    return NodeServices(
        node=_node_from_wire(raw["node"]),
        services=_tuple_of(_service_node_from_wire)(raw["services"]),
    )


def _strings(raw: Any) -> list[str]:
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        raise RemoteProtocolError("expected a list of strings")
    return list(raw)


def _service_tags_from_wire(raw: Any) -> Mapping[str, tuple[str, ...]]:
    if not isinstance(raw, Mapping) or not all(isinstance(name, str) for name in raw):
        raise RemoteProtocolError("expected a map of service names")
    return MappingProxyType({name: tuple(_strings(tags)) for name, tags in raw.items()})


#: Names (datacenters).
STRINGS: ValueCodec[list[str]] = ValueCodec("names", list, _strings)
#: Service name → its tags (``catalog.services``).
SERVICE_TAGS: ValueCodec[Mapping[str, tuple[str, ...]]] = ValueCodec(
    "service tags", lambda v: {k: list(t) for k, t in v.items()}, _service_tags_from_wire
)
#: Nodes (``catalog.nodes``).
NODES: ValueCodec[tuple[NodeInfo, ...]] = ValueCodec(
    "nodes", lambda v: [_node_to_wire(n) for n in v], _tuple_of(_node_from_wire)
)
#: Service instances with their nodes (``catalog.service``, ``catalog.connect``).
SERVICE_NODES: ValueCodec[tuple[ServiceNode, ...]] = ValueCodec(
    "service nodes",
    lambda v: [_service_node_to_wire(e) for e in v],
    _tuple_of(_service_node_from_wire),
)
#: A node with its services (``catalog.node``).
NODE_SERVICES: ValueCodec[NodeServices | None] = ValueCodec(
    "node services", _node_services_to_wire, _node_services_from_wire
)
#: Checks with their nodes (``health.checks``, ``health.node``, ``health.state``).
CHECK_ENTRIES: ValueCodec[tuple[CheckEntry, ...]] = ValueCodec(
    "checks", lambda v: [_check_entry_to_wire(c) for c in v], _tuple_of(_check_entry_from_wire)
)
#: Instances with node and checks (``health.service``, ``health.service_kind``).
HEALTH_ENTRIES: ValueCodec[tuple[HealthEntry, ...]] = ValueCodec(
    "health entries",
    lambda v: [_health_entry_to_wire(e) for e in v],
    _tuple_of(_health_entry_from_wire),
)
