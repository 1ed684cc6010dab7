"""Raw input → named, typed values: the one reader of request bodies, config and state files.

Rule: every parser of a raw mapping (HTTP JSON, an HCL/JSON file, a persisted file) finds
its keys through ``Names`` and ``read_keys``, so spelling rules, aliases, ignored echo
fields, "unknown key", "did you mean" and "the same key given twice" mean one thing
everywhere. Two spelling rules exist, as in Consul: ``Names.loose`` (any casing, ``_`` and
``-`` ignored: Go's case-insensitive JSON decoder and the config loader) and
``Names.pascal_or_snake`` (exactly the PascalCase name or its snake_case twin: request
bodies decoded with Consul's ``mapstructure`` tables). ``Fields`` reads typed values of
one object and raises ``InvalidRequest`` naming the dotted field path; a layer that needs
another error (the config loader's ``ConfigError`` with file and key path) re-words it.
Pure: no I/O.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from node.config.duration import parse_go_duration
from node.errors import InvalidRequest
from node.frozen import freeze

__all__ = [
    "Fields",
    "KeyRead",
    "Names",
    "canonical_key",
    "read_duration",
    "read_keys",
    "type_name",
    "unwrap_block",
]


def canonical_key(key: str) -> str:
    """The form keys are compared in: ``mesh_gateway``, ``MeshGateway`` → ``meshgateway``."""
    return key.replace("_", "").replace("-", "").lower()


def _exact(key: str) -> str:
    return key


def unwrap_block(value: object) -> object:
    """A single HCL block arrives as a one-element list of objects; that object."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], Mapping):
        return value[0]
    return value


def type_name(value: object) -> str:
    """How a request-body value is named in an error message (``a string ("x")``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f'a string ("{value}")'
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


@dataclass(frozen=True, slots=True)
class Names:
    """The keys one object accepts: each spelling (after ``canon``) → the name it means."""

    by_spelling: Mapping[str, str]
    canon: Callable[[str], str]

    @classmethod
    def loose(cls, names: Iterable[str], aliases: Mapping[str, str] | None = None) -> Names:
        """``names`` and ``aliases`` (alias → name) in any casing, ``_`` and ``-`` ignored."""
        table = {canonical_key(name): name for name in names}
        table.update({canonical_key(alias): name for alias, name in (aliases or {}).items()})
        return cls(MappingProxyType(table), canonical_key)

    @classmethod
    def pascal_or_snake(cls, table: Mapping[str, str]) -> Names:
        """``table`` maps PascalCase names to their snake_case spelling; either is accepted."""
        spellings = {pascal: pascal for pascal in table} | {s: p for p, s in table.items()}
        return cls(MappingProxyType(spellings), _exact)

    def name_of(self, key: object) -> str | None:
        """The name ``key`` spells, or None for an unknown key."""
        return self.by_spelling.get(self.canon(key)) if isinstance(key, str) else None

    def closest(self, key: str, *, cutoff: float = 0.6) -> str | None:
        """The accepted name nearest to an unknown ``key``, for "did you mean"."""
        hint = difflib.get_close_matches(self.canon(key), list(self.by_spelling), 1, cutoff)
        return self.by_spelling[hint[0]] if hint else None


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyRead:
    """What ``read_keys`` found.

    ``values`` maps names to values; ``unknown`` holds, in input order, the keys that spell
    no name; ``twice`` is ``(key as given, name)`` of the first name given a second time,
    where reading stopped (so every unknown key listed came before it).
    """

    values: dict[str, Any]
    unknown: tuple[object, ...] = ()
    twice: tuple[str, str] | None = None


def read_keys(
    raw: Mapping[Any, Any],
    names: Names,
    *,
    ignored: frozenset[str] = frozenset(),
    skip_none: bool = False,
) -> KeyRead:
    """Read ``raw`` through ``names``, skipping ``ignored`` keys (output-only fields a client
    may echo back from a GET) and, with ``skip_none``, known keys whose value is null."""
    values: dict[str, Any] = {}
    unknown: list[object] = []
    for key, value in raw.items():
        if key in ignored:
            continue
        name = names.name_of(key)
        if name is None:
            unknown.append(key)
        elif value is None and skip_none:
            continue
        elif name in values:
            return KeyRead(values=values, unknown=tuple(unknown), twice=(key, name))
        else:
            values[name] = value
    return KeyRead(values=values, unknown=tuple(unknown))


def read_duration(value: object, *, field: str) -> float:
    """A request's Go duration ("10s", "1m30s", "500ms") or number of nanoseconds, in seconds.

    Numbers are nanoseconds because that is what Consul's JSON decoder does with them.
    """
    if isinstance(value, bool):
        raise InvalidRequest(f"{field}: expected a duration, got a boolean", field=field)
    text = value.strip() if isinstance(value, str) else value
    try:
        seconds = parse_go_duration(text, numbers_are_nanoseconds=True)
    except TypeError:
        raise InvalidRequest(
            f'{field}: expected a duration such as "10s", got {type_name(value)}', field=field
        ) from None
    except ValueError:
        raise InvalidRequest(
            f'{field}: invalid duration "{text}" (expected e.g. "10s", "1m30s", "500ms")',
            field=field,
        ) from None
    if seconds < 0:
        raise InvalidRequest(f"{field}: duration must not be negative", field=field)
    return seconds


class Fields:
    """One raw object being read: rejects unknown keys, reads typed values by name.

    A null value means "not given". Every error is an ``InvalidRequest`` whose field is
    the dotted path of the offending key under ``path``.
    """

    __slots__ = ("_path", "_values")

    def __init__(self, raw: object, path: str, names: Names) -> None:
        raw = unwrap_block(raw)
        if not isinstance(raw, Mapping):
            where = path or "request body"
            raise InvalidRequest(
                f"{where}: expected an object, got {type_name(raw)}", field=path or None
            )
        self._path = path
        read = read_keys(raw, names, skip_none=True)
        if read.unknown:
            raise self._unknown(str(read.unknown[0]), names)
        if read.twice is not None:
            key, name = read.twice
            raise InvalidRequest(f'Field "{key}" is given twice', field=self.path(name))
        self._values = read.values

    def _unknown(self, key: str, names: Names) -> InvalidRequest:
        hint = names.closest(key)
        suggestion = f' (did you mean "{hint}"?)' if hint else ""
        where = f" in {self._path}" if self._path else ""
        return InvalidRequest(f'Unknown field "{key}"{where}{suggestion}', field=self.path(key))

    def path(self, name: str) -> str:
        """The dotted path of field ``name`` for error messages."""
        return f"{self._path}.{name}" if self._path else name

    def has(self, name: str) -> bool:
        """Whether the field was given (and not null)."""
        return name in self._values

    def raw(self, name: str) -> Any:
        """The untouched value, or None."""
        return self._values.get(name)

    def error(self, name: str, expected: str) -> InvalidRequest:
        """An error for a field of the wrong type."""
        got = type_name(self._values.get(name))
        return InvalidRequest(
            f"{self.path(name)}: expected {expected}, got {got}", field=self.path(name)
        )

    def get_str(self, name: str, default: str = "") -> str:
        value = self._values.get(name, default)
        if not isinstance(value, str):
            raise self.error(name, "a string")
        return value

    def get_bool(self, name: str) -> bool:
        value = self._values.get(name, False)
        if not isinstance(value, bool):
            raise self.error(name, "a boolean")
        return value

    def get_int(self, name: str, default: int = 0, *, lo: int = 0, hi: int = 2**31 - 1) -> int:
        value = self._values.get(name, default)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.error(name, "an integer")
        if not lo <= value <= hi:
            raise InvalidRequest(
                f"{self.path(name)}: {value} is out of range [{lo}, {hi}]", field=self.path(name)
            )
        return value

    def duration(self, name: str) -> float:
        return read_duration(self._values[name], field=self.path(name)) if self.has(name) else 0.0

    def str_list(self, name: str) -> tuple[str, ...]:
        value = self._values.get(name, ())
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise self.error(name, "a list of strings")
        return tuple(value)

    def str_map(self, name: str) -> Mapping[str, str]:
        value = unwrap_block(self._values.get(name, {}))
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise self.error(name, "an object of strings")
        return MappingProxyType(dict(value))

    def opaque_map(self, name: str) -> Mapping[str, Any]:
        value = unwrap_block(self._values.get(name, {}))
        if not isinstance(value, Mapping):
            raise self.error(name, "an object")
        try:
            frozen: Mapping[str, Any] = freeze(value)
        except ValueError as exc:
            raise self.error(name, f"JSON-like data ({exc})") from None
        return frozen

    def get_list(self, name: str) -> list[Any]:
        value = self._values.get(name, [])
        if isinstance(value, Mapping):
            return [value]  # one HCL block where a list of blocks is expected
        if not isinstance(value, list | tuple):
            raise self.error(name, "a list")
        return list(value)
