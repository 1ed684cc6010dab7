"""Typed fields of a map decoded from a peer's msgpack bytes.

Rule: each reader returns the field's value (or its zero value when absent) or raises
``RemoteProtocolError`` naming the field; a peer's bad record is dropped, never trusted.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from node.errors import RemoteProtocolError

__all__ = ["wire_map", "wire_str", "wire_float", "wire_strs", "wire_list", "wire_str_map"]


def wire_map(raw: object, what: str, max_keys: int) -> Mapping[str, Any]:
    """``raw`` as a map of at most ``max_keys`` keys (``what`` names it in the error)."""
    if not isinstance(raw, Mapping) or len(raw) > max_keys:
        raise RemoteProtocolError(f"{what}: expected an object")
    return raw


def wire_str(data: Mapping[str, Any], key: str) -> str:
    """A string field; ``""`` when absent."""
    value = data.get(key, "")
    if not isinstance(value, str):
        raise RemoteProtocolError(f"{key}: expected a string")
    return value


def wire_float(data: Mapping[str, Any], key: str) -> float:
    """A number field as a float; ``0.0`` when absent."""
    value = data.get(key, 0.0)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise RemoteProtocolError(f"{key}: expected a number")
    return float(value)


def wire_strs(data: Mapping[str, Any], key: str) -> tuple[str, ...]:
    """A list-of-strings field; empty when absent."""
    value = wire_list(data, key)
    if not all(isinstance(v, str) for v in value):
        raise RemoteProtocolError(f"{key}: expected a list of strings")
    return tuple(value)


def wire_list(data: Mapping[str, Any], key: str) -> list[Any]:
    """A list field (items unchecked); empty when absent."""
    value = data.get(key, [])
    if not isinstance(value, list | tuple):
        raise RemoteProtocolError(f"{key}: expected a list")
    return list(value)


def wire_str_map(data: Mapping[str, Any], key: str) -> Mapping[str, str]:
    """A string-to-string map field, frozen; empty when absent."""
    value = data.get(key, {})
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise RemoteProtocolError(f"{key}: expected a map of strings")
    return MappingProxyType(dict(value))
