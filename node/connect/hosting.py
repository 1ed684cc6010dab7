"""Leaf hosting: the leaves a node keeps for its local Connect services.

Rule: a node keeps a leaf for every local service that a sidecar proxy fronts, every
Connect-native service, and every local service someone asked the leaf endpoint for
(``ensure_leaf``; kept while it stays registered). The ``LeafManager`` renews them; a
server of the node's own datacenter signs them, and the CSRs that are due together
travel in one ``CA.SignLeaves`` call (``SignBatcher``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Protocol

from node.catalog.values import ServiceDefinition, ServiceKind
from node.clock import Clock
from node.connect.leaf import Leaf, LeafManager
from node.connect.signbatch import SignBatcher
from node.errors import CAError, NotFound
from node.rpc.codec import error_from_wire
from node.state.writer import ServerCaller

__all__ = ["LeafHosting", "LocalServices", "SIGN_LEAVES_METHOD"]

SIGN_LEAVES_METHOD: Final = "CA.SignLeaves"


class LocalServices(Protocol):
    """The services registered on this node (``node.catalog.local.LocalState``)."""

    def services(self) -> Mapping[str, ServiceDefinition]:
        """Service id → definition."""
        ...


class LeafHosting:
    """One per node (see the module rule); call ``local_changed()`` on every registration change."""

    def __init__(
        self,
        *,
        local: LocalServices,
        rpc: ServerCaller,
        node_name: str,
        datacenter: str,
        enabled: bool,
        clock: Clock,
        rng: random.Random,
        rpc_timeout: float,
        on_change: Callable[[], None],
    ) -> None:
        self._local = local
        self._rpc = rpc
        self._node = node_name
        self._enabled = enabled
        self._timeout = rpc_timeout
        self._hosted: set[str] = set()
        self._on_demand: set[str] = set()
        self._batcher = SignBatcher(self._send_batch)
        self.leaves = LeafManager(
            datacenter=datacenter, sign=self.sign_csr, clock=clock, rng=rng, on_change=on_change
        )

    def leaf(self, service: str) -> Leaf | None:
        """The current leaf of a Connect service hosted here."""
        return self.leaves.get(service)

    def ensure_leaf(self, service: str) -> None:
        """Keep a leaf for ``service`` too (the leaf endpoint asks for any local service)."""
        if service in self._hosted:
            return
        if not self._locally_registered(service):
            raise NotFound(f"service {service!r} is not registered on this node")
        self._on_demand.add(service)
        self.local_changed()

    def local_changed(self) -> None:
        """Follow the local registrations: start and stop keeping leaves."""
        if not self._enabled:
            return
        self._on_demand = {s for s in self._on_demand if self._locally_registered(s)}
        wanted = set(self._on_demand)
        for svc in self._local.services().values():
            if svc.kind is ServiceKind.CONNECT_PROXY and svc.proxy is not None:
                wanted.add(svc.proxy.destination_service_name)
            elif svc.connect_native:
                wanted.add(svc.name)
        for service in wanted - self._hosted:
            self.leaves.add_service(service)
        for service in self._hosted - wanted:
            self.leaves.remove_service(service)
        self._hosted = wanted

    def _locally_registered(self, service: str) -> bool:
        wanted = service.lower()
        for svc in self._local.services().values():
            instance = svc.instance()
            if instance.connect_target() == wanted or svc.name.lower() == wanted:
                return True
        return False

    async def sign_csr(self, csr_pem: str, service: str) -> str:
        """Have a server of this datacenter sign a leaf CSR (batched with concurrent ones)."""
        return await self._batcher.sign(csr_pem, service)

    async def _send_batch(self, items: Sequence[tuple[str, str]]) -> list[str | BaseException]:
        args = {"node": self._node, "items": [{"csr": c, "service": s} for c, s in items]}
        reply = await self._rpc.call_server(SIGN_LEAVES_METHOD, args, timeout=self._timeout)
        results = reply.get("results") if isinstance(reply, Mapping) else None
        if not isinstance(results, list):
            raise CAError("CA.SignLeaves answered without results")
        return [_result(r) for r in results]


def _result(result: Any) -> str | BaseException:
    if isinstance(result, Mapping) and isinstance(result.get("cert_pem"), str):
        return str(result["cert_pem"])
    if isinstance(result, Mapping) and "error" in result:
        return error_from_wire(result["error"])
    return CAError("CA.SignLeaves answered a malformed result")
