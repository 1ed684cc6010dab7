"""Each local proxy's health, as the catalog sees it: the ``Proxy Listeners`` TTL check.

Rule: the manager's status is the truth; this module only publishes it. Each proxy
gets a TTL check ``service:<id>:listeners``: critical with the manager's error (a port
in use, unusable TLS material) or while the proxy waits for its roots/leaf, passing
once its listeners run. A proxy whose listeners failed is handed its snapshot again, so
the manager's next reconcile retries the bind. When a gateway's (or sidecar's)
listener comes up, its TCP checks aimed at that port are set passing at once, so a
gateway is healthy as soon as it listens even with no services behind it (Consul issue
#6543) instead of one check interval later.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from typing import Protocol

from node.catalog.values import CheckDefinition, CheckKind, Health, ServiceDefinition
from node.errors import NodeError
from node.proxy.manager import ProxyManager, ProxyStatus

__all__ = ["CHECK_NAME", "CHECK_TTL", "ListenerHealth", "LocalView", "listeners_check_id"]

CHECK_TTL = 90.0  # the listeners check's TTL; refreshed every CHECK_TTL / 3
CHECK_NAME = "Proxy Listeners"


class LocalView(Protocol):
    """What the proxies use from the node's ``LocalState`` (its own registrations)."""

    def services(self) -> Mapping[str, ServiceDefinition]:
        """Registered services by ID."""

    def checks(self) -> Mapping[str, CheckDefinition]:
        """Registered checks by ID."""

    def register_check(self, check: CheckDefinition) -> None:
        """Register (or replace) a check."""

    def update_ttl(self, check_id: str, status: Health, output: str = "") -> None:
        """Set a TTL check's status and restart its timer."""

    def set_check_status(self, check_id: str, status: Health, output: str) -> bool:
        """Publish a check result; whether anything changed."""


def listeners_check_id(proxy_id: str) -> str:
    """ID of the TTL check that carries a proxy's health."""
    return f"service:{proxy_id}:listeners"


class ListenerHealth:
    """Publishes the manager's status of each proxy as its checks."""

    def __init__(self, local: LocalView, manager: ProxyManager) -> None:
        self.local = local
        self.manager = manager
        self._reported: set[str] = set()
        self._listening: dict[str, frozenset[str]] = {}

    def reported(self) -> frozenset[str]:
        """The proxies whose check this has set."""
        return frozenset(self._reported)

    def forget(self, proxy_id: str) -> None:
        """``proxy_id`` is gone: drop what was kept about it."""
        self._reported.discard(proxy_id)
        self._listening.pop(proxy_id, None)

    def report(self, proxy_ids: Iterable[str]) -> None:
        """Set each proxy's listeners check from the manager's status; retry failures."""
        statuses = self.manager.status()
        for pid in proxy_ids:
            status = statuses.get(pid)
            health, output = _health_of(status)
            try:
                self._ensure_check(pid)
                self.local.update_ttl(listeners_check_id(pid), health, output)
            except NodeError:  # deregistered since the last sync: the next sync forgets it
                continue
            self._reported.add(pid)
            if status is not None and status.errors:
                snap = self.manager.snapshot(pid)
                if snap is not None:
                    self.manager.set_snapshot(snap)  # the next reconcile retries the bind
            self._mark_listening(pid, status)

    def _ensure_check(self, pid: str) -> None:
        cid = listeners_check_id(pid)
        if cid in self.local.checks():
            return
        self.local.register_check(
            CheckDefinition(
                id=cid, name=CHECK_NAME, service_id=pid, kind=CheckKind.TTL, ttl=CHECK_TTL,
                notes="Set by meshnode's proxy manager: are this proxy's listeners running?",
            )
        )  # fmt: skip

    def _mark_listening(self, pid: str, status: ProxyStatus | None) -> None:
        names = frozenset(status.listeners) if status is not None else frozenset()
        if names == self._listening.get(pid):
            return
        self._listening[pid] = names
        ports = set()
        for name in names:
            listener = self.manager.listener(name)
            if listener is not None:
                with contextlib.suppress(AssertionError, OSError):  # not bound (any more)
                    ports.add(listener.address)
        for cid, check in self.local.checks().items():
            if check.service_id == pid and check.kind is CheckKind.TCP:
                target = _split_target(check.tcp)
                if target is not None and _listens_on(ports, target):
                    self.local.set_check_status(
                        cid, Health.PASSING, f"TCP connect {check.tcp}: listener started"
                    )


def _health_of(status: ProxyStatus | None) -> tuple[Health, str]:
    if status is None or not status.ready:
        return Health.CRITICAL, "waiting for CA roots and the proxy's leaf certificate"
    if status.errors:
        return Health.CRITICAL, "; ".join(status.errors)
    if not status.listeners:
        return Health.CRITICAL, "no listener is running"
    return Health.PASSING, "listening: " + ", ".join(status.listeners)


def _split_target(target: str) -> tuple[str, int] | None:
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _listens_on(bound: set[tuple[str, int]], target: tuple[str, int]) -> bool:
    host, port = target
    return any(p == port and h in (host, "0.0.0.0", "::") for h, p in bound)
