"""Go-style durations ("10s", "1m30s", "72h", "500ms"), the one parser every layer uses.

Rule: this module knows the syntax and which values can be durations at all. Callers word
its ``TypeError`` (not a duration value) and ``ValueError`` (not a duration text) in the
error of their layer (``ConfigError`` with a key path, ``InvalidRequest`` with a field
name) and decide whether a negative duration is allowed. Pure: no I/O.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["parse_go_duration", "format_go_duration"]

_PART: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS: Final = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_go_duration(value: object, *, numbers_are_nanoseconds: bool = False) -> float:
    """Seconds in ``value``: a signed sequence of number+unit, or ``"0"``.

    With ``numbers_are_nanoseconds`` a number is read as nanoseconds, as Consul's JSON
    decoder reads one. Raises ``TypeError`` when ``value`` is of no duration type and
    ``ValueError`` naming the text when the text is not a duration.
    """
    if numbers_are_nanoseconds and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) * 1e-9
    if not isinstance(value, str):
        raise TypeError(f"expected a duration string, got {type(value).__name__}")
    text = value
    body = text.strip()
    sign = -1.0 if body.startswith("-") else 1.0
    body = body.lstrip("+-")
    if body == "0":
        return 0.0
    pos, total = 0, 0.0
    while pos < len(body):
        match = _PART.match(body, pos)
        if match is None:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if not body or pos != len(body):
        raise ValueError(f'invalid duration "{text}" (expected e.g. "10s", "1m30s", "72h")')
    return sign * total


def format_go_duration(seconds: float) -> str:
    """Render like Go's ``Duration.String`` for whole units: 259200 → ``"72h"``, 90 → ``"1m30s"``."""
    if seconds != int(seconds):
        return f"{seconds!r}s"
    total = int(seconds)
    sign = "-" if total < 0 else ""
    hours, rest = divmod(abs(total), 3600)
    minutes, secs = divmod(rest, 60)
    out = "".join(f"{n}{u}" for n, u in ((hours, "h"), (minutes, "m"), (secs, "s")) if n)
    return sign + (out or "0s")
