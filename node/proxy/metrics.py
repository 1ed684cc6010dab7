"""Per-listener traffic counters, rendered as JSON or Prometheus text.

Rule: the hot path only adds to plain integer attributes of a ``ListenerStats``
(no locks: one event loop owns them); rendering reads them. The mesh gateway's relays
keep their byte counts and add them here from the listener's sweep (every 0.25 s) and
at close, so its byte counters may trail live traffic by that much. Counters survive a
listener being reconfigured in place; a stopped listener's stats are dropped by
the registry.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

__all__ = ["ListenerStats", "MetricsRegistry", "render_prometheus", "escape_label"]


class ListenerStats:
    """Counters of one listener: connections, bytes each way, rejections by reason."""

    __slots__ = (
        "name",
        "kind",
        "opened",
        "active",
        "closed",
        "bytes_in",
        "bytes_out",
        "rejected",
    )

    def __init__(self, name: str, kind: str) -> None:
        self.name = name
        self.kind = kind
        self.opened = 0
        self.active = 0
        self.closed = 0
        # in = downstream (accepting side) → upstream; out = the reverse
        self.bytes_in = 0
        self.bytes_out = 0
        self.rejected: Counter[str] = Counter()

    def reject(self, reason: str) -> None:
        """Count a connection refused for ``reason`` (a short snake_case label)."""
        self.rejected[reason] += 1

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy of the counters."""
        return {
            "name": self.name,
            "kind": self.kind,
            "connections_opened": self.opened,
            "connections_active": self.active,
            "connections_closed": self.closed,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "rejected": dict(sorted(self.rejected.items())),
        }


class MetricsRegistry:
    """The listeners' stats by name; one per agent, owned by the proxy manager."""

    __slots__ = ("_stats",)

    def __init__(self) -> None:
        self._stats: dict[str, ListenerStats] = {}

    def get(self, name: str, kind: str) -> ListenerStats:
        """The stats for ``name``, created on first use."""
        stats = self._stats.get(name)
        if stats is None:
            stats = self._stats[name] = ListenerStats(name, kind)
        return stats

    def drop(self, name: str) -> None:
        """Forget a listener that no longer exists."""
        self._stats.pop(name, None)

    def all(self) -> list[ListenerStats]:
        """Every listener's stats, sorted by name."""
        return [self._stats[k] for k in sorted(self._stats)]

    def as_json(self) -> dict[str, Any]:
        """``{"listeners": [...]}`` for ``/v1/agent/metrics``."""
        return {"listeners": [s.as_dict() for s in self.all()]}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


#: A Prometheus label value, escaped (for other renderers of the same exposition).
escape_label = _escape


_SERIES = (
    ("meshnode_proxy_connections_opened_total", "counter", "opened", "Connections accepted."),
    ("meshnode_proxy_connections_active", "gauge", "active", "Connections open now."),
    ("meshnode_proxy_connections_closed_total", "counter", "closed", "Connections closed."),
    ("meshnode_proxy_bytes_in_total", "counter", "bytes_in", "Bytes downstream to upstream."),
    ("meshnode_proxy_bytes_out_total", "counter", "bytes_out", "Bytes upstream to downstream."),
)


def render_prometheus(stats: Iterable[ListenerStats]) -> str:
    """Prometheus text exposition format 0.0.4 for the given listeners."""
    items = list(stats)
    lines: list[str] = []
    for metric, mtype, attr, help_text in _SERIES:
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} {mtype}"]
        for s in items:
            labels = f'listener="{_escape(s.name)}",kind="{_escape(s.kind)}"'
            lines.append(f"{metric}{{{labels}}} {getattr(s, attr)}")
    metric = "meshnode_proxy_connections_rejected_total"
    lines += [f"# HELP {metric} Connections refused, by reason.", f"# TYPE {metric} counter"]
    for s in items:
        for reason, count in sorted(s.rejected.items()):
            labels = (
                f'listener="{_escape(s.name)}",kind="{_escape(s.kind)}",reason="{_escape(reason)}"'
            )
            lines.append(f"{metric}{{{labels}}} {count}")
    return "\n".join(lines) + "\n"
