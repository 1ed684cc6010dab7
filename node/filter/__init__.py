"""Consul's filter expression language (go-bexpr): ``?filter=`` and resolver subsets.

``compile_filter(text, fields)`` parses an expression once, checks it against the field
spec of what it will filter (Consul refuses unknown selectors and operators that do not
fit a field's type) and returns a ``Filter`` whose ``matches(subject)`` evaluates it
against a nested mapping with Consul's field names. ``FilterError`` (an
``InvalidRequest``) carries go-bexpr's message: where parsing failed, or which selector,
operator or value is wrong. ``fields`` holds Consul's selector table of each endpoint.

Pure: no I/O.
"""

from node.filter.evaluate import Filter, compile_filter
from node.filter.fields import (
    CHECK,
    CHECK_SERVICE_NODE,
    NODE,
    SERVICE,
    SERVICE_NODE,
    FieldSpec,
    FieldType,
    Kind,
)
from node.filter.grammar import FilterError

__all__ = [
    "compile_filter",
    "Filter",
    "FilterError",
    "FieldSpec",
    "FieldType",
    "Kind",
    "SERVICE",
    "CHECK",
    "NODE",
    "SERVICE_NODE",
    "CHECK_SERVICE_NODE",
]
