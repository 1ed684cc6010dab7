"""Fixtures for the operator endpoints: a built (not running) dev agent behind a client."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from node.agent.agent import Agent
from node.api.app import make_app
from node.config.agent import load


@pytest.fixture
async def client(aiohttp_client: Any) -> TestClient[Any, Any]:
    """An HTTP client of ``make_app`` for a dev agent named m1."""
    agent = Agent(load([], dev=True, overrides={"node": "m1", "http-port": 0}))
    c: TestClient[Any, Any] = await aiohttp_client(make_app(agent))
    return c
