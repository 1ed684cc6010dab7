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
    if not isinstance(raw, Mapping) or len(raw) > max_keys:
        raise RemoteProtocolError(f"{what}: expected an object")
    return raw


def wire_str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise RemoteProtocolError(f"{key}: expected a string")
    return value


def wire_float(data: Mapping[str, Any], key: str) -> float:
    value = data.get(key, 0.0)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise RemoteProtocolError(f"{key}: expected a number")
    return float(value)


def wire_strs(data: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = wire_list(data, key)
    if not all(isinstance(v, str) for v in value):
        raise RemoteProtocolError(f"{key}: expected a list of strings")
    return tuple(value)


def wire_list(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list | tuple):
        raise RemoteProtocolError(f"{key}: expected a list")
    return list(value)


def wire_str_map(data: Mapping[str, Any], key: str) -> Mapping[str, str]:
    value = data.get(key, {})
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise RemoteProtocolError(f"{key}: expected a map of strings")
    return MappingProxyType(dict(value))
