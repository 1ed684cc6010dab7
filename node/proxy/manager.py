"""Run the listeners the plans ask for: start, reconfigure in place, stop.

Rule: the manager is the only code that creates or destroys proxy listeners. It holds
one ``ConfigSnapshot`` per proxy, applies updates to it through the pure
``handle_update``, coalesces bursts (``COALESCE_DELAY``), renders plans and reconciles:

- a listener whose key (kind, address, port) is unchanged is updated in place: new
  connections follow the new plan at once, open ones are untouched;
- a listener no longer planned stops accepting; its open connections run to their end;
- a listener that cannot start (port in use, bad certificate) is recorded as an error
  in ``status()`` for the proxy's health and retried on the next reconcile; it never
  raises out of the manager.

Wiring it into the agent means: create snapshots for the node's proxies and gateways,
feed catalog/CA/intention changes as ``Update`` values, and serve ``metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from node.errors import NodeError
from node.proxy.gateway import GatewayListener
from node.proxy.metrics import ListenerStats, MetricsRegistry
from node.proxy.plan import GatewayPlan, ListenerPlan, ProxyPlan, PublicPlan, UpstreamPlan, render
from node.proxy.relay import SPLICE_SUPPORTED, PipePool
from node.proxy.sidecar import Authorizer, PublicListener, TLSState, UpstreamListener
from node.proxy.snapshot import ConfigSnapshot, Update, handle_update

__all__ = ["COALESCE_DELAY", "ProxyStatus", "ProxyManager"]

log = logging.getLogger(__name__)

COALESCE_DELAY = 0.2  # seconds: bursts of updates become one reconcile (Consul: 200 ms)

_Listener = GatewayListener | UpstreamListener | PublicListener
_Key = tuple[str, tuple[str, str, int]]


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyStatus:
    """What a proxy is running; ``errors`` non-empty means its health is critical."""

    proxy_id: str
    ready: bool
    listeners: tuple[str, ...]
    errors: tuple[str, ...]


class ProxyManager:
    """Owns every proxy and gateway listener of one node."""

    def __init__(
        self,
        *,
        authorizer_for: Callable[[str], Authorizer],
        metrics: MetricsRegistry | None = None,
        rng: random.Random | None = None,
        use_splice: bool = SPLICE_SUPPORTED,
        coalesce_delay: float = COALESCE_DELAY,
    ) -> None:
        self.metrics = metrics or MetricsRegistry()
        self._authorizer_for = authorizer_for
        self._rng = rng or random.Random()
        self._use_splice = use_splice
        self._pool = PipePool() if use_splice else None
        self._delay = coalesce_delay
        self._snapshots: dict[str, ConfigSnapshot] = {}
        self._plans: dict[str, ProxyPlan] = {}
        self._tls: dict[str, TLSState] = {}
        self._running: dict[_Key, _Listener] = {}
        self._draining: list[_Listener] = []
        self._errors: dict[str, list[str]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._reconciling: asyncio.Task[None] | None = None
        self._dirty = False

    # --- inputs ------------------------------------------------------------------
    def set_snapshot(self, snapshot: ConfigSnapshot) -> None:
        """Add or replace a proxy's snapshot (registration or re-registration)."""
        self._snapshots[snapshot.proxy_id] = snapshot
        self._schedule()

    def remove(self, proxy_id: str) -> None:
        """The proxy was deregistered: its listeners stop accepting."""
        self._snapshots.pop(proxy_id, None)
        self._schedule()

    def update(self, proxy_id: str, update: Update) -> None:
        """Apply one update to a proxy's snapshot; ``InvalidRequest`` for a wrong kind."""
        snap = self._snapshots.get(proxy_id)
        if snap is None:
            return  # an update racing a deregistration: nothing to do
        self._snapshots[proxy_id] = handle_update(snap, update)
        self._schedule()

    def snapshot(self, proxy_id: str) -> ConfigSnapshot | None:
        """The current snapshot of a proxy (for the API and tests)."""
        return self._snapshots.get(proxy_id)

    def _schedule(self) -> None:
        self._dirty = True
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if self._reconciling is None or self._reconciling.done():
            self._reconciling = asyncio.get_running_loop().create_task(self._run_reconcile())
        # else: the running reconcile loops again because _dirty is set

    async def _run_reconcile(self) -> None:
        while self._dirty:
            self._dirty = False
            plans = {}
            for pid, snap in self._snapshots.items():
                plan = render(snap)
                if plan is not None:
                    plans[pid] = plan
            try:
                await self.apply(plans)
            except Exception:  # a task boundary: log, keep the manager alive
                log.exception("proxy reconcile failed", extra={"proxies": len(plans)})

    async def wait_idle(self) -> None:
        """Wait until pending updates are applied (tests and shutdown)."""
        for _ in range(1000):
            if self._timer is None and (self._reconciling is None or self._reconciling.done()):
                return
            if self._reconciling is not None and not self._reconciling.done():
                await asyncio.shield(self._reconciling)
            else:
                await asyncio.sleep(self._delay / 2)

    # --- reconcile ---------------------------------------------------------------
    async def apply(self, plans: dict[str, ProxyPlan]) -> None:
        """Make the running listeners match ``plans`` (by value)."""
        wanted: dict[_Key, tuple[ProxyPlan, ListenerPlan]] = {}
        self._errors = {pid: [] for pid in plans}
        for pid, plan in plans.items():
            if not self._ensure_tls(plan):
                continue
            for lp in plan.listeners:
                wanted[(pid, lp.key)] = (plan, lp)
        for key in [k for k in self._running if k not in wanted]:
            self._stop(key)
        for key, (plan, lp) in wanted.items():
            await self._start_or_update(key, plan, lp)
        self._plans = dict(plans)
        for pid in [p for p in self._tls if p not in plans]:
            del self._tls[pid]
        self._draining = [ls for ls in self._draining if _has_connections(ls)]

    def _ensure_tls(self, plan: ProxyPlan) -> bool:
        if plan.tls is None:
            return True
        try:
            state = self._tls.get(plan.proxy_id)
            if state is None:
                self._tls[plan.proxy_id] = TLSState(plan.tls)
            else:
                state.update(plan.tls)
        except NodeError as exc:
            self._error(plan.proxy_id, f"TLS material unusable: {exc}")
            return False
        return True

    async def _start_or_update(self, key: _Key, plan: ProxyPlan, lp: ListenerPlan) -> None:
        running = self._running.get(key)
        if running is not None:
            _update(running, lp, self._authorizer_for(plan.service))
            return
        listener = self._make(plan, lp)
        try:
            if isinstance(listener, GatewayListener):
                listener.start()
            else:
                await listener.start()
        except NodeError as exc:
            self._error(plan.proxy_id, str(exc))
            self.metrics.drop(lp.name)
            return
        self._running[key] = listener
        log.info("proxy listener started", extra={"listener": lp.name})

    def _make(self, plan: ProxyPlan, lp: ListenerPlan) -> _Listener:
        if isinstance(lp, GatewayPlan):
            stats = self.metrics.get(lp.name, "mesh-gateway")
            return GatewayListener(
                lp, stats=stats, pool=self._pool, rng=self._rng, use_splice=self._use_splice
            )
        tls = self._tls[plan.proxy_id]
        if isinstance(lp, UpstreamPlan):
            stats = self.metrics.get(lp.name, "upstream")
            return UpstreamListener(lp, tls=tls, stats=stats, rng=self._rng)
        stats = self.metrics.get(lp.name, "public")
        return PublicListener(
            lp, tls=tls, stats=stats, authorize=self._authorizer_for(plan.service)
        )

    def _stop(self, key: _Key) -> None:
        listener = self._running.pop(key)
        listener.stop_accepting()
        if _has_connections(listener):
            self._draining.append(listener)
        log.info("proxy listener stopped", extra={"listener": listener.plan.name})

    def _error(self, proxy_id: str, message: str) -> None:
        self._errors.setdefault(proxy_id, []).append(message)
        log.warning("proxy listener failed", extra={"proxy": proxy_id, "error": message})

    # --- outputs -----------------------------------------------------------------
    def status(self) -> dict[str, ProxyStatus]:
        """Per proxy: rendered or not, listeners running, errors (for its health check)."""
        out = {}
        for pid in sorted(set(self._snapshots) | set(self._plans)):
            names = tuple(sorted(ls.plan.name for (p, _), ls in self._running.items() if p == pid))
            out[pid] = ProxyStatus(
                proxy_id=pid,
                ready=pid in self._plans,
                listeners=names,
                errors=tuple(self._errors.get(pid, ())),
            )
        return out

    def listener(self, name: str) -> _Listener | None:
        """The running listener with this plan name (tests, the API)."""
        for ls in self._running.values():
            if ls.plan.name == name:
                return ls
        return None

    def listener_rows(self) -> list[tuple[ListenerStats, str, str]]:
        """Per listener with counters: (stats, "ip:port" or "", proxy id)."""
        owners = {n: pid for pid, st in self.status().items() for n in st.listeners}
        rows = []
        for stats in self.metrics.all():
            listener = self.listener(stats.name)
            address = ""
            if listener is not None:
                with contextlib.suppress(AssertionError, OSError):  # not bound (any more)
                    host, port = listener.address
                    address = f"{host}:{port}"
            pid = owners.get(stats.name) or stats.name.split(":", 1)[0]
            rows.append((stats, address, pid))
        return rows

    async def aclose(self) -> None:
        """Stop everything now, open connections included."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._reconciling is not None:
            self._reconciling.cancel()
        for ls in [*self._running.values(), *self._draining]:
            ls.close()
        self._running.clear()
        self._draining.clear()
        if self._pool is not None:
            self._pool.close()


def _update(listener: _Listener, lp: ListenerPlan, authorize: Authorizer) -> None:
    if isinstance(listener, GatewayListener):
        assert isinstance(lp, GatewayPlan)
        listener.update(lp)
    elif isinstance(listener, UpstreamListener):
        assert isinstance(lp, UpstreamPlan)
        listener.update(lp)
    else:
        assert isinstance(lp, PublicPlan)
        listener.update(lp, authorize)


def _has_connections(listener: _Listener) -> bool:
    if isinstance(listener, GatewayListener):
        return listener.connections > 0
    return bool(listener.halves or listener.tasks)
