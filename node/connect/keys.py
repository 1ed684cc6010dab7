"""Request-body key spellings: Consul's PascalCase names and their snake_case twins.

Rule: every connect parser that accepts both spellings (CA configuration, intentions,
config entries) reads its keys through ``read_keys``, so "unknown key", "ignored echo
field" and "the same key given twice" mean one thing everywhere; each caller only words
its own error. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["KeyRead", "read_keys"]


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyRead:
    """What ``read_keys`` found.

    ``values`` maps PascalCase names to values; ``unknown`` holds, in input order, the keys
    that are neither spelling of any name; ``twice`` is ``(key as given, PascalCase name)``
    of the first name given a second time, where reading stopped (so every unknown key
    listed came before it).
    """

    values: dict[str, Any]
    unknown: tuple[object, ...] = ()
    twice: tuple[str, str] | None = None


def read_keys(
    raw: Mapping[Any, Any], table: Mapping[str, str], *, ignored: frozenset[str] = frozenset()
) -> KeyRead:
    """Read ``raw`` through ``table`` (PascalCase name → snake_case spelling), skipping
    ``ignored`` keys (output-only fields a client may echo back from a GET)."""
    spellings = {pascal: pascal for pascal in table} | {snake: p for p, snake in table.items()}
    values: dict[str, Any] = {}
    unknown: list[object] = []
    for key, value in raw.items():
        if key in ignored:
            continue
        canon = spellings.get(key) if isinstance(key, str) else None
        if canon is None:
            unknown.append(key)
        elif canon in values:
            return KeyRead(values=values, unknown=tuple(unknown), twice=(key, canon))
        else:
            values[canon] = value
    return KeyRead(values=values, unknown=tuple(unknown))
