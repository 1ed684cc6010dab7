"""The proxy feed: keeps one snapshot per local connect-proxy and mesh-gateway current.

Rule: the feed drives, ``gather`` builds, the manager runs. For every ``connect-proxy``
and ``mesh-gateway`` registered on this node the feed rebuilds the proxy's whole
``ConfigSnapshot`` with the pure ``gather.gather`` and hands it to the manager only
when it differs from the one it has; ``health.ListenerHealth`` then publishes the
manager's status as each proxy's checks.

Nothing polls. Local inputs wake the feed through the catalog's index notifier and
Connect's change listener; each other-DC input ``gather`` names is one blocking read
loop (``index``/``wait`` forwarded to that DC, exponential backoff on errors, last answer
kept meanwhile), started and stopped as the set of needed inputs changes. Bursts are
coalesced by the manager (``COALESCE_DELAY``). Time comes from the injected clock and
sleep, so tests run the loops on fake time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from node.catalog.queries import HealthEntry, QueryResult
from node.catalog.values import ServiceDefinition
from node.clock import Clock, MonotonicClock
from node.errors import NodeError
from node.proxy.gather import PROXY_KINDS, ConnectReads, RemoteKey, gather
from node.proxy.health import CHECK_TTL, ListenerHealth, LocalView
from node.proxy.manager import ProxyManager
from node.proxy.snapshot import EndpointInfo

__all__ = ["ConnectView", "FeedSources", "ProxyFeed"]

log = logging.getLogger(__name__)

REMOTE_WAIT = 30.0  # seconds a blocking read in another DC waits for a change
LOCAL_WAIT = 60.0  # seconds between wake-ups when nothing changes locally
BACKOFF_MIN = 0.2  # seconds after the first failed remote read
BACKOFF_MAX = 10.0  # cap of the exponential backoff
FAST_RETURN = 0.05  # a blocking read answering faster than this with no change is throttled
RETRY_FAILED = 5.0  # seconds between retries of listeners that failed to start


class ConnectView(ConnectReads, Protocol):
    """What the feed uses of ``ConnectService``: the gather step's reads and changes."""

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after every change of roots, leaves or config entries."""


RemoteRead = Callable[[str, str, int, float], Awaitable[tuple[tuple[EndpointInfo, ...], int]]]


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedSources:
    """The query callables the agent passes in (the feed never sees the store)."""

    local_dc: str
    node_address: str
    local: LocalView
    connect: ConnectView
    #: Connect-capable instances of a service in this DC (health, ``connect=True``).
    connect_health: Callable[[str], QueryResult[tuple[HealthEntry, ...]]]
    #: This DC's mesh gateways with health.
    gateways: Callable[[], QueryResult[tuple[HealthEntry, ...]]]
    #: Every service name in this DC.
    service_names: Callable[[], Iterable[str]]
    datacenters: Callable[[], Sequence[str]]
    #: Blocks until the local index exceeds the argument (or the timeout); returns it.
    wait_local: Callable[[int, float], Awaitable[int]]
    local_index: Callable[[], int]
    #: (dc, service, index, wait) → Connect instances of ``service`` in ``dc`` + index.
    remote_connect: RemoteRead
    #: (dc, "", index, wait) → the mesh gateways of ``dc`` + index.
    remote_gateways: RemoteRead


class ProxyFeed:
    """Builds and refreshes the snapshots of this node's proxies and gateways."""

    def __init__(
        self,
        sources: FeedSources,
        manager: ProxyManager,
        *,
        clock: Clock | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.sources = sources
        self.manager = manager
        self.health = ListenerHealth(sources.local, manager)
        self._clock: Clock = clock if clock is not None else MonotonicClock()
        self._sleep = sleep
        self._wake = asyncio.Event()
        self._health_due = asyncio.Event()
        self._remote: dict[RemoteKey, tuple[EndpointInfo, ...]] = {}
        self._watches: dict[RemoteKey, asyncio.Task[None]] = {}
        self._group: asyncio.TaskGroup | None = None
        self._proxies: dict[str, ServiceDefinition] = {}
        self._warned: set[tuple[str, str]] = set()
        self.syncs = 0  # how many times the inputs were gathered (tests, debugging)
        sources.connect.add_listener(self.wake)

    # ------------------------------------------------------------------ running
    def wake(self) -> None:
        """Something the snapshots depend on changed: gather again (cheap, coalesced)."""
        self._wake.set()

    async def run(self) -> None:
        """Feed the manager until cancelled; closes every listener on the way out."""
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                group.create_task(self._watch_local(), name="proxy-feed-local")
                group.create_task(self._health_loop(), name="proxy-feed-health")
                await self._main_loop()
        finally:
            self._group = None
            self._watches.clear()
            await self.manager.aclose()

    async def _main_loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                self.sync()
            except Exception:  # a task boundary: one bad input must not stop the feed
                log.exception("proxy feed sync failed")
            await self._wake.wait()

    async def _watch_local(self) -> None:
        seen = self.sources.local_index()
        while True:
            index = await self.sources.wait_local(seen, LOCAL_WAIT)
            if index != seen:
                seen = index
                self._wake.set()

    # ------------------------------------------------------------------ gathering
    def sync(self) -> None:
        """Gather every input once and push the snapshots that changed."""
        self.syncs += 1
        services = self.sources.local.services()
        proxies = {sid: svc for sid, svc in services.items() if svc.kind in PROXY_KINDS}
        for pid in [p for p in self._proxies if p not in proxies]:
            self.manager.remove(pid)
            self.health.forget(pid)
        self._proxies = proxies
        wanted: set[RemoteKey] = set()
        changed = False
        for pid, svc in proxies.items():
            gathered = gather(svc, self.sources, self._remote)
            wanted |= gathered.wanted
            for message in gathered.warnings:
                self._warn_once(svc.id, message)
            snap = gathered.snapshot
            if snap is not None and snap != self.manager.snapshot(pid):
                self.manager.set_snapshot(snap)
                changed = True
        self._reconcile_watches(wanted)
        if changed or proxies.keys() != self.health.reported():
            self._health_due.set()

    def _warn_once(self, proxy_id: str, message: str) -> None:
        if (proxy_id, message) not in self._warned:
            self._warned.add((proxy_id, message))
            log.warning(message, extra={"proxy": proxy_id})

    # ------------------------------------------------------------------ other datacenters
    def _reconcile_watches(self, wanted: set[RemoteKey]) -> None:
        for key in [k for k in self._watches if k not in wanted]:
            self._watches.pop(key).cancel()
            self._remote.pop(key, None)
        if self._group is None:
            return  # sync() called outside run() (tests): no background reads
        for key in sorted(wanted - self._watches.keys()):
            name = f"proxy-feed-remote:{'/'.join(key)}"
            self._watches[key] = self._group.create_task(self._watch_remote(key), name=name)

    async def _watch_remote(self, key: RemoteKey) -> None:
        kind, dc, service = key
        read = self.sources.remote_gateways if kind == "gateways" else self.sources.remote_connect
        index, failures = 0, 0
        while True:
            started = self._clock.monotonic()
            try:
                eps, new_index = await read(dc, service, index, REMOTE_WAIT)
            except NodeError as exc:
                failures += 1
                delay = min(BACKOFF_MAX, BACKOFF_MIN * 2 ** (failures - 1))
                log.info("remote proxy input unavailable, retrying",
                         extra={"input": "/".join(key), "error": str(exc), "retry_in": delay})  # fmt: skip
                await self._sleep(delay)
                continue
            failures = 0
            if self._remote.get(key) != eps or key not in self._remote:
                self._remote[key] = eps
                self._wake.set()
            unchanged = new_index == index
            index = new_index if new_index >= index else 0  # a restarted DC starts over
            if unchanged and self._clock.monotonic() - started < FAST_RETURN:
                await self._sleep(BACKOFF_MIN)  # never spin on a DC that will not block

    # ------------------------------------------------------------------ health
    async def _health_loop(self) -> None:
        while True:
            await self._until_set(self._health_due, min(CHECK_TTL / 3, RETRY_FAILED))
            self._health_due.clear()
            await self.manager.wait_idle()
            try:
                self.health.report(self._proxies)
            except Exception:  # a task boundary
                log.exception("proxy health update failed")

    async def _until_set(self, event: asyncio.Event, seconds: float) -> None:
        """Return once ``event`` is set or ``seconds`` of clock time have passed."""
        waiter = asyncio.ensure_future(event.wait())
        timer = asyncio.ensure_future(self._sleep(seconds))
        try:
            await asyncio.wait((waiter, timer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            timer.cancel()
            await asyncio.gather(waiter, timer, return_exceptions=True)
