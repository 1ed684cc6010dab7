"""``?filter=`` and ``?node-meta=`` on list endpoints: narrowing an encoded answer.

Rule: a handler asks ``refine(request, shape)`` for the refinement its query string
asks for (``None`` without one) and hands it to ``serve_read``, which applies it to the
Consul-shaped answer, local or forwarded, and caches the narrowed body apart. The filter
is evaluated on the JSON objects Consul's own filter sees (the same field names), with
the endpoint's selector table; each expression text is compiled once (bounded LRU). A bad
expression is a 400 with Consul's wording; a ``node-meta`` on an endpoint that cannot
apply it is refused, never ignored.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

from aiohttp import web

from node.errors import InvalidRequest
from node.filter import (
    CHECK,
    CHECK_SERVICE_NODE,
    NODE,
    SERVICE,
    SERVICE_NODE,
    FieldSpec,
    Filter,
    FilterError,
    compile_filter,
)

__all__ = ["Shape", "Refinement", "refine", "compiled_filter", "COMPILED_FILTERS"]

#: Distinct expression texts kept compiled, per selector table.
COMPILED_FILTERS: Final = 512


class Shape(enum.Enum):
    """What an endpoint returns, and so where its filter and node meta apply."""

    NODES = "nodes"  # [Node]
    SERVICE_NODES = "service nodes"  # [ServiceNode], node meta in NodeMeta
    HEALTH_ENTRIES = "health entries"  # [CheckServiceNode], node meta in Node.Meta
    CHECKS = "checks"  # [HealthCheck]
    CHECKS_BY_ID = "checks by id"  # {CheckID: HealthCheck}
    SERVICES_BY_ID = "services by id"  # {ID: AgentService}
    NODE_SERVICES = "node services"  # {"Node": Node, "Services": {ID: NodeService}}


_FIELDS: Final[Mapping[Shape, FieldSpec]] = {
    Shape.NODES: NODE,
    Shape.SERVICE_NODES: SERVICE_NODE,
    Shape.HEALTH_ENTRIES: CHECK_SERVICE_NODE,
    Shape.CHECKS: CHECK,
    Shape.CHECKS_BY_ID: CHECK,
    Shape.SERVICES_BY_ID: SERVICE,
    Shape.NODE_SERVICES: SERVICE,
}


def _nodes_meta(item: Any) -> Any:
    return item.get("Meta")


def _service_nodes_meta(item: Any) -> Any:
    return item.get("NodeMeta")


def _health_meta(item: Any) -> Any:
    node = item.get("Node")
    return node.get("Meta") if isinstance(node, Mapping) else None


_NODE_META: Final[Mapping[Shape, Callable[[Any], Any]]] = {
    Shape.NODES: _nodes_meta,
    Shape.SERVICE_NODES: _service_nodes_meta,
    Shape.HEALTH_ENTRIES: _health_meta,
}


@lru_cache(maxsize=COMPILED_FILTERS)
def compiled_filter(text: str, shape: Shape) -> Filter:
    """``text`` compiled against ``shape``'s selector table; 400 with Consul's words if bad."""
    try:
        return compile_filter(text, _FIELDS[shape])
    except FilterError as exc:
        raise InvalidRequest(f"Failed to create boolean expression evaluator: {exc}") from None


@dataclass(frozen=True, slots=True)
class Refinement:
    """A filter and node-meta pairs, applied to one shape of answer."""

    shape: Shape
    filter: Filter | None
    node_meta: tuple[tuple[str, str], ...]

    @property
    def key(self) -> Hashable:
        return (self.filter.text if self.filter else None, self.node_meta)

    def keeps(self, item: Any) -> bool:
        if self.node_meta:
            meta = _NODE_META[self.shape](item)
            if not isinstance(meta, Mapping) or any(meta.get(k) != v for k, v in self.node_meta):
                return False
        return self.filter is None or self.filter.matches(item)

    def __call__(self, encoded: Any) -> Any:
        if encoded is None:
            return None
        if self.shape is Shape.NODE_SERVICES:
            return {**encoded, "Services": self._values(encoded.get("Services") or {})}
        if self.shape in (Shape.SERVICES_BY_ID, Shape.CHECKS_BY_ID):
            return self._values(encoded)
        if self.filter is not None and not self.node_meta:
            return self.filter.select(encoded)
        return [item for item in encoded if self.keeps(item)]

    def _values(self, by_id: Mapping[str, Any]) -> dict[str, Any]:
        return {key: item for key, item in by_id.items() if self.keeps(item)}


def refine(request: web.Request, shape: Shape | None) -> Refinement | None:
    """The refinement ``request`` asks for on an endpoint returning ``shape`` (``None``:
    the endpoint takes neither parameter, and one given is refused)."""
    query = request.query
    if not request.query_string or ("filter" not in query and "node-meta" not in query):
        return None
    text = query.get("filter", "")
    node_meta = _node_meta(query.getall("node-meta", []))
    if shape is None:
        raise InvalidRequest(f"{request.path} does not take ?filter= or ?node-meta=")
    if node_meta and shape not in _NODE_META:
        raise InvalidRequest(f"{request.path} does not take ?node-meta=")
    if not text and not node_meta:
        return None  # Consul: an empty filter is no filter
    return Refinement(shape, compiled_filter(text, shape) if text else None, node_meta)


def _node_meta(values: list[str]) -> tuple[tuple[str, str], ...]:
    """``key:value`` pairs (a value may hold more colons; no colon means an empty value)."""
    pairs = []
    for value in values:
        key, _, wanted = value.partition(":")
        pairs.append((key, wanted))
    return tuple(sorted(pairs))
