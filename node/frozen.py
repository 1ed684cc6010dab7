"""Deep freezing of JSON-like data (opaque ``Config`` maps, ``Meta``), and back.

Rule: values crossing task boundaries are immutable (STYLE.md §3.3), so opaque user
data is stored frozen — dicts as read-only mappings, lists as tuples — and thawed only
where it leaves the node as JSON or msgpack. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

__all__ = ["MAX_DEPTH", "freeze", "thaw"]

#: Deepest nesting accepted in opaque user data.
MAX_DEPTH: Final = 32
_SCALARS: Final = (str, int, float, bool)


def freeze(value: Any, *, _depth: int = 0) -> Any:
    """Dicts → read-only mappings, lists → tuples, recursively.

    Raises ``ValueError`` for nesting deeper than ``MAX_DEPTH`` or a non-JSON value.
    """
    if _depth > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): freeze(v, _depth=_depth + 1) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v, _depth=_depth + 1) for v in value)
    if value is None or isinstance(value, _SCALARS):
        return value
    raise ValueError(f"holds a value of unsupported type {type(value).__name__}")


def thaw(value: Any) -> Any:
    """Inverse of ``freeze``: plain dicts and lists, ready for JSON or msgpack."""
    if isinstance(value, Mapping):
        return {str(k): thaw(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [thaw(v) for v in value]
    return value
