"""Leaf signing on a server: ``CA.SignLeaf`` and ``CA.SignLeaves`` for nodes of its datacenter.

Rule: a server signs a service's leaf only for a node on which that service (or a
proxy for it) is registered in the catalog; a registration still on its way by gossip
gets ``registration_wait`` seconds to arrive. A batch (``CA.SignLeaves``, at most
``MAX_BATCH`` CSRs from one node) answers each item with its certificate or its own
error. Keys stay in ``authority.Authority``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from node.clock import Clock
from node.connect.authority import Authority
from node.connect.signbatch import MAX_BATCH
from node.errors import InvalidRequest, NodeError
from node.rpc.codec import error_to_wire

__all__ = ["LeafSigning", "NodeLookup", "IndexWaiter", "registered_in"]


class _Service(Protocol):
    @property
    def name(self) -> str: ...

    def connect_target(self) -> str | None: ...


class _Record(Protocol):
    @property
    def services(self) -> Mapping[str, _Service]: ...


class _Entry(Protocol):
    @property
    def record(self) -> _Record: ...


class NodeLookup(Protocol):
    """The catalog's nodes by name (``node.catalog.store.CatalogStore``)."""

    def entry(self, name: str) -> _Entry | None:
        """The node named ``name``, or None."""
        ...


class IndexWaiter(Protocol):
    """The catalog's change index (``node.catalog.watch.IndexNotifier``)."""

    @property
    def index(self) -> int:
        """The latest index."""
        ...

    async def wait(self, index_above: int, timeout: float) -> int:
        """Wait until the index exceeds ``index_above`` or ``timeout`` passes."""
        ...


def registered_in(catalog: NodeLookup) -> Callable[[str, str], bool]:
    """``is_registered(node, service)``: the service or a proxy for it is on that node."""

    def is_registered(node: str, service: str) -> bool:
        entry = catalog.entry(node)
        if entry is None:
            return False
        wanted = service.lower()
        for svc in entry.record.services.values():
            if svc.connect_target() == wanted or svc.name.lower() == wanted:
                return True
        return False

    return is_registered


class LeafSigning:
    """One per server (see the module rule)."""

    def __init__(
        self,
        authority: Authority,
        *,
        is_registered: Callable[[str, str], bool],
        catalog_index: IndexWaiter,
        clock: Clock,
        registration_wait: float,
    ) -> None:
        self._authority = authority
        self._is_registered = is_registered
        self._index = catalog_index
        self._clock = clock
        self._wait = registration_wait

    def rpc_handlers(self) -> dict[str, Callable[[Any], Any]]:
        """``CA.SignLeaf`` and ``CA.SignLeaves``."""
        return {"CA.SignLeaf": self._rpc_sign_leaf, "CA.SignLeaves": self._rpc_sign_leaves}

    async def _rpc_sign_leaf(self, args: Any) -> dict[str, str]:
        if not isinstance(args, Mapping):
            raise InvalidRequest("CA.SignLeaf: args must be a map")
        csr, node, service = args.get("csr"), args.get("node"), args.get("service")
        if not all(isinstance(v, str) and v for v in (csr, node, service)):
            raise InvalidRequest("CA.SignLeaf: csr, node and service must be strings")
        await self._await_registration(str(node), str(service))
        issued = self._authority.sign_leaf(str(csr), str(node), self._clock.utcnow())
        return {"cert_pem": issued.cert_pem}

    async def _rpc_sign_leaves(self, args: Any) -> dict[str, Any]:
        """A batch of CSRs from one node; each item answers ``cert_pem`` or its ``error``."""
        node = args.get("node") if isinstance(args, Mapping) else None
        items = args.get("items") if isinstance(args, Mapping) else None
        if not isinstance(node, str) or not node or not isinstance(items, list):
            raise InvalidRequest("CA.SignLeaves: node and items must be given")
        if len(items) > MAX_BATCH:
            raise InvalidRequest(f"CA.SignLeaves: at most {MAX_BATCH} items per call")
        results: list[dict[str, Any]] = []
        for item in items:
            try:
                results.append(await self._sign_item(node, item))
            except NodeError as exc:
                results.append({"error": error_to_wire(exc)})
        return {"results": results}

    async def _sign_item(self, node: str, item: Any) -> dict[str, str]:
        csr = item.get("csr") if isinstance(item, Mapping) else None
        service = item.get("service") if isinstance(item, Mapping) else None
        if not isinstance(csr, str) or not isinstance(service, str) or not service:
            raise InvalidRequest("CA.SignLeaves: each item needs a csr and a service")
        return await self._rpc_sign_leaf({"csr": csr, "node": node, "service": service})

    async def _await_registration(self, node: str, service: str) -> None:
        # The registration may still be on its way here by gossip: give it a moment.
        deadline = self._clock.monotonic() + self._wait
        while not self._is_registered(node, service):
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                return  # sign_leaf refuses it with a clear TrustError
            await self._index.wait(self._index.index, min(remaining, 0.5))
