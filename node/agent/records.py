"""How node records reach the other members beyond gossip's own broadcasts.

Rule: gossip carries every record (``node.catalog.sync``); this closes its gaps. A member
that (re)joins has its record passed on at once, as memberlist re-broadcasts the alive
state it merged from a push-pull, so members that never push-pulled with it need not
wait for anti-entropy (30 s+). A member reaped from the pool is forgotten. A record sync
heard of (digest or delta) but cannot build is fetched from its owner over RPC
(``Catalog.NodeRecord``), a few at a time, every ``FETCH_INTERVAL``. This node's own
record is ``LocalState``'s business: gossip about us never removes it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

from node.agent.cluster import Pools
from node.catalog.store import CatalogStore
from node.catalog.sync import CatalogSync
from node.catalog.values import NodeRecord
from node.errors import InvalidRequest, NodeError
from node.gossip.messages import Address, MemberStatus
from node.gossip.state import Member
from node.rpc.client import RPCClient
from node.rpc.routing import rpc_address

__all__ = ["RECORD_METHOD", "FETCH_INTERVAL", "RecordExchange"]

log = logging.getLogger(__name__)

RECORD_METHOD: Final = "Catalog.NodeRecord"
#: Pause between rounds fetching records CatalogSync.missing() asked for.
FETCH_INTERVAL = 0.5
#: Records fetched per round at most.
FETCH_BATCH = 16
#: Bound of one fetch.
FETCH_TIMEOUT = 5.0
_BACK = (None, MemberStatus.DEAD, MemberStatus.LEFT)  # a member in these states came back


class RecordExchange:
    """Passes records on when members come and go, fetches and serves missing ones."""

    __slots__ = ("_node", "_store", "_sync", "_client", "_pools")

    def __init__(
        self,
        *,
        node_name: str,
        store: CatalogStore,
        sync: CatalogSync,
        client: RPCClient,
        pools: Pools,
    ) -> None:
        self._node = node_name
        self._store = store
        self._sync = sync
        self._client = client
        self._pools = pools

    def on_member_change(self, member: Member, old: MemberStatus | None) -> None:
        """A LAN member changed state (the pool's callback)."""
        if member.name == self._node:
            return
        self._sync.on_member_change(member, old)
        if member.status is MemberStatus.ALIVE and old in _BACK:
            self._regossip(member.name)

    def on_member_reaped(self, member: Member) -> None:
        """A LAN member was reaped from the pool: forget its record."""
        if member.name != self._node:
            self._sync.member_left(member.name)

    def announce(self, own: NodeRecord) -> None:
        """Gossip our record once the pool runs: it was published before the pool existed,
        and peers that did not push-pull with us would wait for a periodic push-pull."""
        self._sync.local_record_changed(None, own)

    def _regossip(self, name: str) -> None:
        # The runtime reports a push-pull's member changes after merging its catalog
        # state, so the newcomer's record is already here when it came along.
        entry = self._store.entry(name)
        if entry is not None:
            self._sync.local_record_changed(None, entry.record)

    async def serve_record(self, args: Any) -> Any:
        """The ``Catalog.NodeRecord`` handler: ``{"node"}`` → its record's wire form."""
        name = args.get("node") if isinstance(args, dict) else None
        if not isinstance(name, str):
            raise InvalidRequest("Catalog.NodeRecord needs {'node': name}", field="node")
        entry = self._store.entry(name)
        return entry.record.to_wire() if entry is not None else None

    async def fetch_missing(self) -> None:
        """Fetch, every ``FETCH_INTERVAL``, records sync heard of but cannot build."""
        while True:
            await asyncio.sleep(FETCH_INTERVAL)
            wanted = dict(self._sync.missing())
            lan = self._pools.lan
            if wanted and lan is not None:
                targets = {m.name: rpc_address(m) for m in lan.members()}
                found = [(n, targets.get(n)) for n in wanted]
                batch = [(n, addr) for n, addr in found if addr is not None][:FETCH_BATCH]
                await asyncio.gather(*(self._fetch(n, addr) for n, addr in batch))

    async def _fetch(self, name: str, addr: Address) -> None:
        try:
            raw = await self._client.call(
                addr, RECORD_METHOD, {"node": name}, timeout=FETCH_TIMEOUT
            )
            if raw is not None:
                self._sync.apply_fetched(NodeRecord.from_wire(raw))
        except (NodeError, ValueError, TypeError) as exc:
            log.warning(
                "catalog fetch failed",
                extra={"node": name, "from": f"{addr[0]}:{addr[1]}", "error": str(exc)},
            )
