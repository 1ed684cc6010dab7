"""Proxy test fixtures: two unrelated test CAs, and both event loops for async tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.helpers.ca import TD, MeshTestCA


@pytest.fixture(scope="session")
def ca() -> MeshTestCA:
    return MeshTestCA(TD)


@pytest.fixture(scope="session")
def other_ca() -> MeshTestCA:
    return MeshTestCA(TD)  # same trust domain, different key: must not be trusted


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Every async proxy test runs on both loops: the agent may run either."""
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "asyncio": asyncio.new_event_loop
    }
    try:
        import uvloop
    except ImportError:
        return factories
    factories["uvloop"] = uvloop.new_event_loop
    return factories
