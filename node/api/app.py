"""The HTTP API application: ``make_app(agent)`` and the server that runs it.

Rule: this module only assembles — routes come from one module per area (agent,
catalog, health, status), errors go through ``errors.error_middleware``, Consul's JSON
shapes live in ``codec``. The agent passed in must offer what ``state.AgentAPI`` lists;
``node.agent.Agent`` is the real one, tests may build it without running it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Final

from aiohttp import web

from node.api import agent as agent_routes
from node.api import catalog as catalog_routes
from node.api import chain as chain_routes
from node.api import cluster as cluster_routes
from node.api import config_entries as config_entry_routes
from node.api import connect as connect_routes
from node.api import events as event_routes
from node.api import health as health_routes
from node.api import maint as maint_routes
from node.api import metrics as metrics_routes
from node.api import monitor as monitor_routes
from node.api import operator as operator_routes
from node.api import status as status_routes
from node.api.errors import error_middleware
from node.api.read import read_table
from node.api.state import AGENT, RNG, AgentAPI

__all__ = ["AgentAPI", "make_app", "HTTPServer", "MAX_BODY_BYTES", "FORWARDABLE_READS"]

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 4 * 1024 * 1024  # a registration bigger than this is a mistake, not data
SHUTDOWN_GRACE = 2.0  # seconds in-flight requests get when the server stops
#: The catalog and health reads another datacenter may run here (``?dc=`` forwarding,
#: and the proxies' reads of other datacenters' instances and gateways).
FORWARDABLE_READS: Final = read_table(
    catalog_routes.SERVICES,
    catalog_routes.SERVICE,
    catalog_routes.CONNECT,
    catalog_routes.NODES,
    catalog_routes.NODE,
    catalog_routes.DATACENTERS,
    health_routes.SERVICE,
    health_routes.SERVICE_KIND,
    health_routes.CHECKS,
    health_routes.NODE,
    health_routes.STATE,
)


def make_app(agent: AgentAPI, *, rng: random.Random | None = None) -> web.Application:
    """Build the aiohttp application serving Consul's HTTP API for ``agent``."""
    app = web.Application(middlewares=[error_middleware], client_max_size=MAX_BODY_BYTES)
    app[AGENT] = agent
    app[RNG] = rng or random.Random()
    for module in (agent_routes, catalog_routes, health_routes, status_routes, cluster_routes):
        app.router.add_routes(module.routes)
    app.router.add_routes(connect_routes.routes)
    app.router.add_routes(config_entry_routes.routes)
    app.router.add_routes(chain_routes.routes)
    app.router.add_routes(metrics_routes.routes)
    app[metrics_routes.RETENTION] = metrics_routes.Retention()
    app.router.add_routes(operator_routes.routes)
    app.router.add_routes(maint_routes.routes)
    app.router.add_routes(monitor_routes.routes)
    monitor_routes.setup(app)
    app.router.add_routes(event_routes.routes)
    event_routes.setup(app)
    return app


class HTTPServer:
    """Runs an application on ``host:port``; ``port`` 0 picks a free one."""

    __slots__ = ("_app", "_host", "_port", "_runner", "_stopped")

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self._stopped = asyncio.Event()

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)``; only valid after ``start``."""
        if self._runner is None or not self._runner.addresses:
            raise RuntimeError("HTTP server is not listening")
        host, port = self._runner.addresses[0][:2]
        return str(host), int(port)

    async def start(self) -> tuple[str, int]:
        """Bind and start accepting; return the bound address."""
        self._runner = web.AppRunner(
            self._app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
        await site.start()
        return self.address

    async def serve(self) -> None:
        """Serve until cancelled (starting first if needed), then close and drain."""
        if self._runner is None:
            await self.start()
        try:
            await self._stopped.wait()
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Stop listening and finish in-flight requests (bounded by SHUTDOWN_GRACE)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await asyncio.shield(runner.cleanup())
