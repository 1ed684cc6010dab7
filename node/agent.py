"""The composition root: builds every component of a node and runs them together.

Rule: this is the only module that constructs components and owns their lifetime.
Construction is a chain of small ``build_*`` functions; ``Agent.components()`` lists
what runs, and ``Agent.run()`` starts them all in one ``asyncio.TaskGroup``. Shutdown is
the cancellation of that group (SIGINT/SIGTERM or ``Agent.stop()``), followed by
flushing what must survive a restart. Later issues add gossip pools, node RPC, the CA,
the leaf manager, global state and the proxy manager as one ``build_*`` call and one row
in ``components()`` each.

What other components (and the HTTP API) ask the agent goes through methods here —
``members()``, ``leader()``, ``datacenters()``, ``forward_read()`` — so that gossip and
RPC can replace today's single-node answers without touching their callers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node import __version__
from node.api.app import HTTPServer, make_app
from node.api.read import ResponseCache
from node.catalog.checks import CheckRunner
from node.catalog.local import LocalState, NodeIdentity
from node.catalog.store import CatalogStore
from node.catalog.watch import IndexNotifier
from node.clock import Clock, MonotonicClock
from node.config import AgentConfig
from node.errors import ConfigError, DatacenterUnavailable
from node.persist import atomic_write

__all__ = ["Agent", "Component", "run_agent", "PORTS_FILE"]

log = logging.getLogger(__name__)

PORTS_FILE = "ports.json"  # the ports actually bound (for -http-port 0 in tests)
PROTOCOL = {"min": 1, "max": 5, "cur": 2}  # serf protocol versions Consul 1.6 reports
DELEGATE = {"min": 2, "max": 5, "cur": 4}
MEMBER_ALIVE = 1  # serf.StatusAlive, as /v1/agent/members encodes it


@dataclass(frozen=True, slots=True, kw_only=True)
class Component:
    """One long-running part of the node: ``run()`` serves until cancelled."""

    name: str
    run: Callable[[], Awaitable[None]]


# ---------------------------------------------------------------------------- builders


def build_store() -> tuple[CatalogStore, IndexNotifier]:
    """The catalog of this datacenter and the notifier blocking queries wait on."""
    store = CatalogStore()
    notifier = IndexNotifier(store.index)
    store.set_on_change(notifier.notify)
    return store, notifier


def build_local_state(config: AgentConfig, store: CatalogStore, clock: Clock) -> LocalState:
    """The node's own services and checks, restored from ``data_dir`` unless dev.

    Services from config files are (re-)registered on every start, as Consul does.
    """
    identity = NodeIdentity(
        name=config.node_name,
        datacenter=config.datacenter,
        address=advertise_address(config),
        node_id=config.node_id or "",
        tagged_addresses={"lan": advertise_address(config), "wan": config.advertise_addr_wan},
    )
    local = LocalState(
        identity=identity,
        store=store,
        data_dir=None if config.dev else config.data_dir,
        clock=clock,
        sidecar_ports=(config.ports.sidecar_min_port, config.ports.sidecar_max_port),
    )
    for definition in config.services:
        local.register_service(definition)
    return local


def build_check_runner(
    local: LocalState,
    store: CatalogStore,
    notifier: IndexNotifier,
    clock: Clock,
    rng: random.Random,
) -> CheckRunner:
    """Runs HTTP/TCP/TTL/alias checks of the local services on the event loop."""
    return CheckRunner(local, store, notifier, clock=clock, rng=rng)


def advertise_address(config: AgentConfig) -> str:
    """The address other nodes should use for us (config resolves advertise vs bind)."""
    return config.advertise_addr


# ---------------------------------------------------------------------------- agent


class Agent:
    """One meshnode node: catalog, local state, checks and the HTTP API."""

    def __init__(
        self, config: AgentConfig, *, clock: Clock | None = None, rng: random.Random | None = None
    ) -> None:
        self.config = config
        self.clock: Clock = clock or MonotonicClock()
        self.rng = rng or random.Random()
        self.store, self.notifier = build_store()
        self.local = build_local_state(config, self.store, self.clock)
        self.node_id = self.local.node_id
        self.checks = build_check_runner(
            self.local, self.store, self.notifier, self.clock, random.Random(self.rng.random())
        )
        self.response_cache = ResponseCache()
        self.app = make_app(self, rng=random.Random(self.rng.random()))
        self.http = HTTPServer(self.app, config.client_addr, config.ports.http)
        self.bound: dict[str, tuple[str, int]] = {}
        # Not bound to a loop until awaited (3.10+), so stop() works even before run().
        self._stop = asyncio.Event()

    # -- lifecycle

    def components(self) -> list[Component]:
        """Everything that runs for the node's lifetime, in start order."""
        return [
            Component(name="http", run=self.http.serve),
            Component(name="checks", run=self.checks.run),
        ]

    async def run(self) -> None:
        """Start every component; return after ``stop()`` or SIGINT/SIGTERM, cleanly."""
        self._install_signal_handlers()
        await self._bind_listeners()
        log.info(
            "agent started", extra={"node": self.config.node_name, "dc": self.config.datacenter}
        )
        try:
            async with asyncio.TaskGroup() as group:
                for component in self.components():
                    group.create_task(self._supervise(component), name=component.name)
                group.create_task(self._wait_stop(), name="stop")
        except* _Shutdown:
            pass
        finally:
            await self._shutdown()

    def stop(self) -> None:
        """Ask ``run()`` to finish (safe to call from a signal handler)."""
        self._stop.set()

    async def _bind_listeners(self) -> None:
        try:
            host, port = await self.http.start()
        except OSError as exc:
            where = f"{self.config.client_addr}:{self.config.ports.http}"
            raise ConfigError(
                f"cannot listen on {where}: {exc.strerror or exc}", key="ports.http"
            ) from None
        self.bound["http"] = (host, port)
        # The file first, then the log line: whoever saw the line can read the file.
        if self.config.data_dir and not self.config.dev:
            ports = {name: addr[1] for name, addr in self.bound.items()}
            atomic_write(Path(self.config.data_dir) / PORTS_FILE, json.dumps(ports).encode())
        log.info("http server listening", extra={"addr": f"{host}:{port}"})

    async def _supervise(self, component: Component) -> None:
        # A component that fails takes the node down (TaskGroup), but says why first.
        try:
            await component.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("component failed", extra={"component": component.name})
            raise

    async def _wait_stop(self) -> None:
        await self._stop.wait()
        log.info("shutting down", extra={"node": self.config.node_name})
        raise _Shutdown

    async def _shutdown(self) -> None:
        # LocalState persists every acknowledged write synchronously (atomic_write), so
        # closing the listener is all that is left: no request can start a new write.
        await self.http.aclose()
        self._remove_signal_handlers()
        log.info("agent stopped", extra={"node": self.config.node_name})

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.stop)

    def _remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)

    # -- what the API and later components ask

    def members(self, *, wan: bool = False) -> list[dict[str, Any]]:
        """Gossip members as /v1/agent/members shows them; today only this node."""
        cfg = self.config
        if wan and not cfg.server:
            return []
        name = f"{cfg.node_name}.{cfg.datacenter}" if wan else cfg.node_name
        port = cfg.ports.serf_wan if wan else cfg.ports.serf_lan
        addr = (cfg.advertise_addr_wan or advertise_address(cfg)) if wan else advertise_address(cfg)
        tags = {
            "dc": cfg.datacenter,
            "id": self.node_id,
            "role": "consul" if cfg.server else "node",
            "port": str(cfg.ports.server),
            "build": __version__,
            "vsn": str(PROTOCOL["cur"]),
            "segment": "",
        }
        return [{"name": name, "addr": addr, "port": port, "tags": tags, "status": MEMBER_ALIVE}]

    def leader(self) -> str:
        """RPC address of the datacenter's leader; we are it when we are a server."""
        if not self.config.server:
            return ""
        return f"{advertise_address(self.config)}:{self.config.ports.server}"

    def peers(self) -> list[str]:
        """RPC addresses of the datacenter's servers known to this node."""
        leader = self.leader()
        return [leader] if leader else []

    def datacenters(self) -> list[str]:
        """Known datacenters, nearest first; WAN gossip will add the others."""
        return [self.config.datacenter]

    async def forward_read(
        self, dc: str, name: str, args: dict[str, Any], opts: Any
    ) -> tuple[Any, int]:
        """Run read ``name`` in datacenter ``dc``; the single seam for cross-DC reads."""
        del name, args, opts  # node RPC (a later issue) sends these to a server of ``dc``
        raise DatacenterUnavailable(f"No path to datacenter {dc!r}")


class _Shutdown(Exception):
    """Raised inside the root TaskGroup to cancel every component."""


def run_agent(config: AgentConfig) -> None:
    """Run an agent to completion on a fresh event loop (uvloop when available)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a Linux-only dependency
        asyncio.run(_main(config))
        return
    uvloop.run(_main(config))


async def _main(config: AgentConfig) -> None:
    agent = Agent(config)
    await agent.run()
