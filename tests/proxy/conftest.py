"""Proxy test fixtures; makes ``proxy_helpers`` importable (pytest runs with importlib mode)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from proxy_helpers import TD, MeshTestCA  # noqa: E402


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
