"""Field specs: what a filter may select on a subject, with each field's type.

Rule: a ``FieldSpec`` maps Consul's field names to ``FieldType``s; the types decide which
operators a selector allows and how a literal is coerced (go-bexpr's field configuration).
The specs of the endpoints that take ``?filter=`` are the selector tables of Consul's
documentation, defined here once: the API and the discovery chain's subsets validate
against the same tables.

Pure: no I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, TypeAlias

from node.filter.grammar import Op

__all__ = [
    "Kind",
    "FieldType",
    "FieldSpec",
    "STRING",
    "INT",
    "FLOAT",
    "BOOL",
    "STRINGS",
    "STRING_MAP",
    "list_of",
    "map_of",
    "struct",
    "struct_list",
    "OPERATORS",
    "SERVICE",
    "CHECK",
    "NODE",
    "SERVICE_NODE",
    "CHECK_SERVICE_NODE",
]


class Kind(enum.Enum):
    STRING = "string"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    LIST = "list"  # of primitives
    MAP = "map"  # string keys
    STRUCT = "struct"
    STRUCT_LIST = "struct list"  # a selector below it matches when ANY element matches


@dataclass(frozen=True, slots=True)
class FieldType:
    kind: Kind
    #: The element type of a LIST, the value type of a MAP.
    element: FieldType | None = None
    #: The fields of a STRUCT or of each element of a STRUCT_LIST.
    fields: Mapping[str, FieldType] | None = None


FieldSpec: TypeAlias = Mapping[str, FieldType]

_ALL_STRING_OPS: Final = frozenset(
    {Op.EQUAL, Op.NOT_EQUAL, Op.IN, Op.NOT_IN, Op.MATCHES, Op.NOT_MATCHES}
)
_EQUALITY: Final = frozenset({Op.EQUAL, Op.NOT_EQUAL})
_EMPTINESS: Final = frozenset({Op.IS_EMPTY, Op.IS_NOT_EMPTY})
_MEMBERSHIP: Final = _EMPTINESS | {Op.IN, Op.NOT_IN}

#: The operators each kind of field allows (go-bexpr's field configurations).
OPERATORS: Final[Mapping[Kind, frozenset[Op]]] = MappingProxyType(
    {
        Kind.STRING: _ALL_STRING_OPS,
        Kind.INT: _EQUALITY,
        Kind.FLOAT: _EQUALITY,
        Kind.BOOL: _EQUALITY,
        Kind.LIST: _MEMBERSHIP,
        Kind.MAP: _MEMBERSHIP,
        Kind.STRUCT: frozenset(),
        Kind.STRUCT_LIST: _EMPTINESS,
    }
)

STRING: Final = FieldType(Kind.STRING)
INT: Final = FieldType(Kind.INT)
FLOAT: Final = FieldType(Kind.FLOAT)
BOOL: Final = FieldType(Kind.BOOL)


def list_of(element: FieldType) -> FieldType:
    return FieldType(Kind.LIST, element=element)


def map_of(value: FieldType) -> FieldType:
    return FieldType(Kind.MAP, element=value)


def struct(fields: Mapping[str, FieldType]) -> FieldType:
    return FieldType(Kind.STRUCT, fields=MappingProxyType(dict(fields)))


def struct_list(fields: Mapping[str, FieldType]) -> FieldType:
    return FieldType(Kind.STRUCT_LIST, fields=MappingProxyType(dict(fields)))


STRINGS: Final = list_of(STRING)
STRING_MAP: Final = map_of(STRING)


def _spec(fields: Mapping[str, FieldType]) -> FieldSpec:
    return MappingProxyType(dict(fields))


# -- Consul's selector tables ------------------------------------------------------------

_MESH_GATEWAY: Final = struct({"Mode": STRING})

_UPSTREAM: Final = {
    "DestinationType": STRING,
    "DestinationNamespace": STRING,
    "DestinationName": STRING,
    "Datacenter": STRING,
    "LocalBindAddress": STRING,
    "LocalBindPort": INT,
    "MeshGateway": _MESH_GATEWAY,
}

_PROXY: Final = struct(
    {
        "DestinationServiceName": STRING,
        "DestinationServiceID": STRING,
        "LocalServiceAddress": STRING,
        "LocalServicePort": INT,
        "MeshGateway": _MESH_GATEWAY,
        "Upstreams": struct_list(_UPSTREAM),
    }
)
_WEIGHTS: Final = struct({"Passing": INT, "Warning": INT})
_CONNECT: Final = struct({"Native": BOOL})
_SERVICE_ADDRESSES: Final = map_of(struct({"Address": STRING, "Port": INT}))

#: A service as ``/v1/agent/services`` and ``/v1/catalog/node/:node`` return it.
SERVICE: Final = _spec(
    {
        "Kind": STRING,
        "ID": STRING,
        "Service": STRING,
        "Tags": STRINGS,
        "Address": STRING,
        "TaggedAddresses": _SERVICE_ADDRESSES,
        "Meta": STRING_MAP,
        "Port": INT,
        "Weights": _WEIGHTS,
        "EnableTagOverride": BOOL,
        "Proxy": _PROXY,
        "Connect": _CONNECT,
    }
)

#: A health check (``/v1/agent/checks``, ``/v1/health/{node,checks,state}``).
CHECK: Final = _spec(
    {
        "Node": STRING,
        "CheckID": STRING,
        "Name": STRING,
        "Status": STRING,
        "Notes": STRING,
        "Output": STRING,
        "ServiceID": STRING,
        "ServiceName": STRING,
        "ServiceTags": STRINGS,
    }
)

#: A node (``/v1/catalog/nodes``).
NODE: Final = _spec(
    {
        "ID": STRING,
        "Node": STRING,
        "Address": STRING,
        "Datacenter": STRING,
        "TaggedAddresses": STRING_MAP,
        "Meta": STRING_MAP,
    }
)

#: A service instance with its node, flat (``/v1/catalog/service/:service``).
SERVICE_NODE: Final = _spec(
    {
        "ID": STRING,
        "Node": STRING,
        "Address": STRING,
        "Datacenter": STRING,
        "TaggedAddresses": STRING_MAP,
        "NodeMeta": STRING_MAP,
        "ServiceKind": STRING,
        "ServiceID": STRING,
        "ServiceName": STRING,
        "ServiceTags": STRINGS,
        "ServiceAddress": STRING,
        "ServiceTaggedAddresses": _SERVICE_ADDRESSES,
        "ServiceMeta": STRING_MAP,
        "ServicePort": INT,
        "ServiceWeights": _WEIGHTS,
        "ServiceEnableTagOverride": BOOL,
        "ServiceProxy": _PROXY,
        "ServiceConnect": _CONNECT,
    }
)

#: A service instance with its node and checks (``/v1/health/service/:service``, and the
#: subsets of a service-resolver).
CHECK_SERVICE_NODE: Final = _spec(
    {
        "Node": struct(NODE),
        "Service": struct(SERVICE),
        "Checks": struct_list(CHECK),
    }
)
