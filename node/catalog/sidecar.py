"""Sidecar expansion: ``connect { sidecar_service { } }`` → a parent and its proxy.

Rule: the sugar is expanded once, on registration, with Consul's defaults (ID, name,
proxy destination, checks); the port comes from ``SidecarPorts``, a pure allocator whose
remembered assignments the caller persists.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from types import MappingProxyType

from node.catalog.parse import default_check_id, reject_duplicate_checks
from node.catalog.values import (
    CheckDefinition,
    CheckKind,
    ProxyConfig,
    ServiceDefinition,
    SidecarSpec,
    Weights,
)
from node.errors import InvalidRequest

__all__ = [
    "SIDECAR_MIN_PORT",
    "SIDECAR_MAX_PORT",
    "SidecarPorts",
    "expand_sidecar",
    "sidecar_id_for",
]

#: Consul's default ``sidecar_min_port`` / ``sidecar_max_port`` (inclusive).
SIDECAR_MIN_PORT = 21000
SIDECAR_MAX_PORT = 21255


def sidecar_id_for(service_id: str) -> str:
    """The ID Consul gives the sidecar of ``service_id``."""
    return f"{service_id}-sidecar-proxy"


class SidecarPorts:
    """Pure allocator of sidecar ports in [lo, hi]: lowest free, stable per sidecar ID.

    ``in_use`` is every port local services hold (outside the range is ignored);
    ``assigned`` maps sidecar IDs to the port they had, so a re-registered sidecar gets
    it back while it is free (Consul reuses it only while the sidecar is registered; we
    also remember it across deregistration and restarts, which is kinder to firewalls).
    """

    __slots__ = ("_lo", "_hi", "_assigned", "_in_use")

    def __init__(
        self,
        *,
        lo: int = SIDECAR_MIN_PORT,
        hi: int = SIDECAR_MAX_PORT,
        assigned: Mapping[str, int] | None = None,
    ) -> None:
        self._lo, self._hi = lo, hi
        self._assigned: dict[str, int] = dict(assigned or {})
        self._in_use: dict[str, int] = {}

    @property
    def assigned(self) -> Mapping[str, int]:
        """Sidecar ID → port, for persistence."""
        return MappingProxyType(dict(self._assigned))

    def set_in_use(self, ports: Mapping[str, int]) -> None:
        """Declare which service (by ID) currently holds which port."""
        self._in_use = dict(ports)

    def allocate(self, sidecar_id: str) -> int:
        """The port for ``sidecar_id``; ``InvalidRequest`` when the range is exhausted."""
        taken = {p for sid, p in self._in_use.items() if sid != sidecar_id}
        current = self._in_use.get(sidecar_id) or self._assigned.get(sidecar_id)
        if current is not None and self._lo <= current <= self._hi and current not in taken:
            self._assigned[sidecar_id] = current
            return current
        # Ports remembered for other sidecars are avoided while alternatives exist.
        remembered = {p for sid, p in self._assigned.items() if sid != sidecar_id}
        for avoid in (taken | remembered, taken):
            for port in range(self._lo, self._hi + 1):
                if port not in avoid:
                    self._assigned[sidecar_id] = port
                    return port
        raise InvalidRequest(
            "Invalid SidecarService: no port provided for sidecar_service and none left in "
            f"the configured range [{self._lo}, {self._hi}]",
            field="connect.sidecar_service.port",
        )

    def forget(self, sidecar_id: str) -> None:
        """Drop what is remembered for ``sidecar_id``."""
        self._assigned.pop(sidecar_id, None)


def expand_sidecar(
    svc: ServiceDefinition,
    *,
    allocate_port: Callable[[str], int],
    node_address: str = "127.0.0.1",
) -> tuple[ServiceDefinition, ...]:
    """Split ``connect { sidecar_service {} }`` into (parent, sidecar) with Consul's defaults.

    Without a sidecar spec, returns ``(svc,)``. ``allocate_port(sidecar_id)`` is called
    only when the spec sets no port. The default "Connect Sidecar Listening" check dials
    the address the public listener binds: the sidecar's address, else ``node_address``.
    """
    spec = svc.sidecar
    if spec is None:
        return (svc,)
    parent = replace(svc, sidecar=None)
    sidecar_id = sidecar_id_for(svc.id)
    port = spec.port or allocate_port(sidecar_id)
    given = spec.proxy or ProxyConfig()
    proxy = replace(
        given,
        destination_service_name=given.destination_service_name or svc.name,
        destination_service_id=given.destination_service_id or svc.id,
        local_service_address=given.local_service_address or "127.0.0.1",
        local_service_port=given.local_service_port or svc.port,
    )
    name = spec.name or f"{svc.name}-sidecar-proxy"
    address = spec.address or svc.address
    checks = _sidecar_checks(spec, sidecar_id, name, address or node_address, port, svc.id)
    sidecar = ServiceDefinition(
        id=sidecar_id,
        name=name,
        kind=spec.kind,
        tags=spec.tags or svc.tags,
        meta=spec.meta or svc.meta,
        address=address,
        port=port,
        tagged_addresses=spec.tagged_addresses,
        weights=spec.weights or Weights(),
        enable_tag_override=spec.enable_tag_override,
        proxy=proxy,
        checks=checks,
    )
    return (parent, sidecar)


def _sidecar_checks(
    spec: SidecarSpec, sidecar_id: str, name: str, host: str, port: int, parent_id: str
) -> tuple[CheckDefinition, ...]:
    if spec.checks:
        total = len(spec.checks)
        checks = tuple(
            replace(
                check,
                id=check.id or default_check_id(sidecar_id, n, total),
                name=check.name or f"Service '{name}' check",
                service_id=sidecar_id,
            )
            for n, check in enumerate(spec.checks, start=1)
        )
        reject_duplicate_checks(checks, "connect.sidecar_service.checks")
        return checks
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    listening = CheckDefinition(
        id=f"service:{sidecar_id}:1",
        name="Connect Sidecar Listening",
        service_id=sidecar_id,
        kind=CheckKind.TCP,
        tcp=target,
        interval=10.0,
    )
    aliasing = CheckDefinition(
        id=f"service:{sidecar_id}:2",
        name=f"Connect Sidecar Aliasing {parent_id}",
        service_id=sidecar_id,
        kind=CheckKind.ALIAS,
        alias_service=parent_id,
    )
    return (listening, aliasing)
