"""Fixtures for API tests: a real (not running) dev Agent and an aiohttp test client."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from node.agent.agent import Agent
from node.api.app import make_app
from node.config.agent import load


@pytest.fixture
def agent() -> Agent:
    """A dev-mode agent named n1 in dc1: built, not running (no sockets, no checks)."""
    return Agent(load([], dev=True, overrides={"node": "n1", "http-port": 0}))


@pytest.fixture
async def client(
    agent: Agent, aiohttp_client: Callable[[Any], Awaitable[TestClient[Any, Any]]]
) -> TestClient[Any, Any]:
    """An HTTP client talking to ``make_app(agent)``."""
    return await aiohttp_client(make_app(agent))
