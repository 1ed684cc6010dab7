"""Constants and the fake registration check shared by tests/connect (imported via conftest)."""

from __future__ import annotations

from datetime import UTC, datetime

CLUSTER_ID = "11111111-2222-3333-4444-555555555555"
TD = f"{CLUSTER_ID}.consul"
NOW = datetime(2026, 11, 26, 7, 0, tzinfo=UTC)
#: (node, service) pairs the fake catalog says are registered.
REGISTERED = frozenset({("node-a", "web"), ("node-a", "db"), ("node-b", "api")})


def is_registered(node: str, service: str) -> bool:
    return (node, service) in REGISTERED
