"""Typed keys for what the aiohttp application holds.

Rule: handler modules reach the agent only through ``request.app[AGENT]``; there are no
module-level singletons (STYLE §3.8, aiohttp ``AppKey``).
"""

from __future__ import annotations

import random
from typing import Any

from aiohttp import web

__all__ = ["AGENT", "RNG"]

# ``Any`` because the agent is the composition root above us; api/app.py documents the
# attributes handlers use (AgentAPI).
AGENT: web.AppKey[Any] = web.AppKey("agent", object)
RNG: web.AppKey[random.Random] = web.AppKey("rng", random.Random)
