"""What the aiohttp application holds: the agent's face to the API, and typed keys.

Rule: handler modules reach the agent only through ``request.app[AGENT]``; there are no
module-level singletons (STYLE §3.8, aiohttp ``AppKey``). ``AgentAPI`` lists everything
the handlers use, typed with the components' own classes; the API never imports the
agent package, which satisfies this Protocol structurally.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from aiohttp import web

if TYPE_CHECKING:
    from node.api.codec import KeyringReport
    from node.api.read import ResponseCache
    from node.catalog.local import LocalState
    from node.catalog.store import CatalogStore
    from node.catalog.watch import IndexNotifier
    from node.clock import Clock
    from node.config.agent import AgentConfig
    from node.connect.service import ConnectService
    from node.dns.server import DNSServer
    from node.proxy.feed import ProxyFeed
    from node.rpc.reads import ReadRequest, ValueCodec
    from node.userevents import EventDelegate, UserEvent

__all__ = ["AGENT", "RNG", "AgentAPI"]

T = TypeVar("T")


class AgentAPI(Protocol):
    """What the handlers use from the agent (attributes and methods)."""

    config: AgentConfig
    store: CatalogStore
    local: LocalState
    notifier: IndexNotifier
    clock: Clock
    response_cache: ResponseCache
    connect: ConnectService
    proxies: ProxyFeed  # its manager's metrics and status
    dns: DNSServer | None  # None when ports.dns is -1
    node_id: str
    is_server: bool
    events: EventDelegate  # user events kept on this node

    @property
    def bound(self) -> Mapping[str, tuple[str, int]]:
        """Listener name → bound (host, port), filled once listening."""
        ...

    def members(self, *, wan: bool = False) -> Sequence[Mapping[str, Any]]:
        """Gossip members of the LAN (or WAN) pool, as ``/v1/agent/members`` shows them."""
        ...

    def leader(self) -> str:
        """The leader's RPC address, or ``""`` when there is none."""
        ...

    def peers(self) -> list[str]:
        """RPC addresses of this datacenter's servers."""
        ...

    def datacenters(self) -> list[str]:
        """Known datacenters, sorted."""
        ...

    async def join(self, addrs: Sequence[str], *, wan: bool = False) -> int:
        """Join the LAN (or WAN) pool through ``addrs``; how many answered."""
        ...

    async def leave(self) -> None:
        """Leave every pool gracefully, then shut the agent down."""
        ...

    def force_leave(self, node: str) -> None:
        """Mark a failed member left."""
        ...

    async def keyring_op(self, op: str, key: str | None = None) -> Sequence[KeyringReport]:
        """A keyring operation on every node of every datacenter: one report per pool."""
        ...

    async def forward_read(self, dc: str, read: ReadRequest, wire: ValueCodec[T]) -> tuple[T, int]:
        """Run ``read`` in datacenter ``dc``: its answer (decoded with ``wire``) and index."""
        ...

    async def fire_event(self, event: UserEvent, dc: str | None) -> UserEvent:
        """Validate and broadcast a user event here, or in datacenter ``dc``."""
        ...

    async def raft_configuration(self, *, stale: bool, dc: str | None) -> Any:
        """A server's Raft configuration ``{"servers": [...], "index"}`` (through the
        leader unless ``stale``)."""
        ...

    async def raft_remove_peer(self, *, server_id: str, address: str, dc: str | None) -> None:
        """Remove a server from the Raft configuration (by id or address)."""
        ...

    async def raft_transfer_leader(self, *, server_id: str, dc: str | None) -> None:
        """Hand Raft leadership to ``server_id`` (``""``: the most caught-up server)."""
        ...


AGENT: web.AppKey[AgentAPI] = web.AppKey("agent", AgentAPI)
RNG: web.AppKey[random.Random] = web.AppKey("rng", random.Random)
