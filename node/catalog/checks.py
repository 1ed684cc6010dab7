"""Health-check runner: TCP, HTTP, TTL and alias checks on the node's event loop.

Rule: one task per interval check (TCP/HTTP) and per alias check, plus one timer task for
TTL expiry and ``deregister_critical_service_after``, all inside the ``TaskGroup`` of
``run()``. Probes are non-blocking (asyncio streams, aiohttp) and bounded by the check's
timeout; a failing probe becomes a critical status with its error as output, never an
exception out of the loop. Results go to ``LocalState.set_check_status``. When checks
are added or removed, ``run()`` reconciles: tasks of removed or changed checks are
cancelled, new ones started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from node.catalog.local import LocalState
from node.catalog.store import CatalogStore
from node.catalog.values import CheckDefinition, CheckKind, Health, aggregate_health
from node.catalog.watch import IndexNotifier
from node.clock import Clock, MonotonicClock

__all__ = ["CheckRunner", "probe_tcp", "probe_http", "alias_status", "http_status_health"]

log = logging.getLogger(__name__)

#: Longest the timer task sleeps without re-checking (covers clock drift and wake-ups).
_MAX_TIMER_SLEEP = 1.0
#: Upper bound of the random delay before a check's first probe (spreads load, like Consul).
_MAX_STAGGER = 1.0
_BODY_READ_LIMIT = 4096
#: Kinds with no probe: TTL checks are set from outside, maintenance checks are fixed.
_NOT_RUN = frozenset({CheckKind.TTL, CheckKind.MAINTENANCE})
_DEFAULT_HEADERS = (("User-Agent", "Consul Health Check"), ("Accept", "text/plain, text/*, */*"))


def http_status_health(status: int) -> Health:
    """Consul's HTTP rule: 2xx passing, 429 warning, anything else critical."""
    if 200 <= status < 300:
        return Health.PASSING
    if status == 429:
        return Health.WARNING
    return Health.CRITICAL


async def probe_tcp(target: str, timeout: float) -> tuple[Health, str]:
    """Connect to ``host:port``; passing when the connection is accepted."""
    host, _, port = target.rpartition(":")
    host = host.strip("[]")
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, int(port))
    except TimeoutError:
        return Health.CRITICAL, f"dial tcp {target}: i/o timeout"
    except OSError as exc:
        return Health.CRITICAL, f"dial tcp {target}: {exc.strerror or exc}"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return Health.PASSING, f"TCP connect {target}: Success"


async def probe_http(session: aiohttp.ClientSession, check: CheckDefinition) -> tuple[Health, str]:
    """Request ``check.http``; the status code decides, the body is kept as output."""
    method = check.method or "GET"
    headers = [(k, v) for k, values in check.header.items() for v in values]
    given = {k.lower() for k, _ in headers}
    # Consul's defaults, so services that log or filter on them see the same requests.
    headers += [(k, v) for k, v in _DEFAULT_HEADERS if k.lower() not in given]
    try:
        async with asyncio.timeout(check.effective_timeout):
            async with session.request(
                method, check.http, headers=headers, ssl=not check.tls_skip_verify,
                allow_redirects=True,
            ) as resp:  # fmt: skip
                body = await resp.content.read(_BODY_READ_LIMIT)
                status = resp.status
                reason = resp.reason or ""
    except TimeoutError:
        return Health.CRITICAL, f"{method} {check.http}: timeout after {check.effective_timeout}s"
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        return Health.CRITICAL, f"{method} {check.http}: {exc}"
    text = body.decode("utf-8", "replace")
    return (
        http_status_health(status),
        f"HTTP {method} {check.http}: {status} {reason} Output: {text}",
    )


def alias_status(store: CatalogStore, node: str, service_id: str) -> tuple[Health, str]:
    """The aggregated health of ``service_id`` on ``node`` (node checks included)."""
    entry = store.entry(node)
    if entry is None or service_id not in entry.record.services:
        return Health.CRITICAL, f'Service "{service_id}" not found on node "{node}"'
    relevant = [
        chk for chk in entry.checks.values() if not chk.service_id or chk.service_id == service_id
    ]
    status = aggregate_health(chk.status for chk in relevant)
    if status is Health.PASSING:
        return status, "All checks passing."
    worst = next(c for c in relevant if c.status is status)
    return status, f'Aliased check "{worst.name}" failing: {worst.output}'


class CheckRunner:
    """Runs the checks of a ``LocalState`` until cancelled."""

    __slots__ = ("_local", "_store", "_notifier", "_clock", "_rng", "_changed", "_tasks",
                 "_session", "_sleep", "_timer_wake")  # fmt: skip

    def __init__(
        self,
        local: LocalState,
        store: CatalogStore,
        notifier: IndexNotifier,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self._local = local
        self._store = store
        self._notifier = notifier
        self._clock = clock or MonotonicClock()
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._changed = asyncio.Event()
        self._timer_wake = asyncio.Event()
        self._tasks: dict[str, tuple[CheckDefinition, asyncio.Task[None]]] = {}
        self._session: aiohttp.ClientSession | None = None
        local.add_listener(self._on_checks_changed)

    def _on_checks_changed(self) -> None:
        self._changed.set()
        self._timer_wake.set()  # a new TTL check may expire before the timer's next wake-up

    @property
    def running(self) -> frozenset[str]:
        """IDs of checks that have a probe task."""
        return frozenset(self._tasks)

    async def run(self) -> None:
        """Run until cancelled, reconciling probe tasks whenever checks change."""
        async with aiohttp.ClientSession() as session, asyncio.TaskGroup() as group:
            self._session = session
            group.create_task(self._timer_loop())
            try:
                while True:
                    self._changed.clear()
                    self._reconcile(group)
                    await self._changed.wait()
            finally:
                for _, task in self._tasks.values():
                    task.cancel()
                self._tasks.clear()

    def _reconcile(self, group: asyncio.TaskGroup) -> None:
        wanted = {cid: chk for cid, chk in self._local.checks().items() if chk.kind not in _NOT_RUN}
        for cid, (chk, task) in list(self._tasks.items()):
            if wanted.get(cid) != chk:
                task.cancel()
                del self._tasks[cid]
        for cid, chk in wanted.items():
            if cid not in self._tasks:
                task = group.create_task(self._guarded(chk), name=f"check:{cid}")
                self._tasks[cid] = (chk, task)

    async def _guarded(self, check: CheckDefinition) -> None:
        # A task boundary: one broken check must not take the TaskGroup (and the node) down.
        try:
            if check.kind is CheckKind.ALIAS:
                await self._alias_loop(check)
            else:
                await self._interval_loop(check)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("health check task failed", extra={"check_id": check.id})

    async def _interval_loop(self, check: CheckDefinition) -> None:
        await self._sleep(self._rng.uniform(0, min(check.interval, _MAX_STAGGER)))
        while True:
            status, output = await self._probe(check)
            self._local.set_check_status(check.id, status, output)
            await self._sleep(check.interval)

    async def _probe(self, check: CheckDefinition) -> tuple[Health, str]:
        if check.kind is CheckKind.TCP:
            return await probe_tcp(check.tcp, check.effective_timeout)
        assert self._session is not None
        return await probe_http(self._session, check)

    async def _alias_loop(self, check: CheckDefinition) -> None:
        node = check.alias_node or self._local.identity.name
        seen = 0
        while True:
            status, output = alias_status(self._store, node, check.alias_service)
            self._local.set_check_status(check.id, status, output)
            # Our own status change bumps the index too; the next pass then sees no change.
            seen = max(seen, self._notifier.index, self._store.index)
            await self._notifier.wait(seen, timeout=60.0)

    async def _timer_loop(self) -> None:
        while True:
            self._timer_wake.clear()
            now = self._clock.monotonic()
            self._local.expire_ttls(now)
            self._local.reap_critical(now)
            deadline = self._local.next_deadline()
            delay = _MAX_TIMER_SLEEP if deadline is None else deadline - self._clock.monotonic()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(max(delay, 0.0), _MAX_TIMER_SLEEP)):
                    await self._timer_wake.wait()
