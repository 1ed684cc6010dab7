"""The node's gossip pools once bound, and what an operator does with them.

Rule: every node has a LAN pool; servers also have a WAN pool whose members are named
``<node>.<dc>``. Both are ``None`` until the composition root binds them, and whatever
reads them (the cluster view, routing, keyring fan-out) reads them through this holder,
so nothing keeps a stale pool. Joins, leaves and force-leaves act on the running pools.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from node.agent.cluster import parse_join_addr
from node.errors import InvalidRequest, NotFound
from node.gossip.runtime import GossipRuntime

__all__ = ["GossipPools"]

log = logging.getLogger(__name__)


class GossipPools:
    """The LAN pool and (servers) the WAN pool; ``None`` before they are bound."""

    __slots__ = ("lan", "wan", "left", "_lan_port", "_wan_port")

    def __init__(self, *, lan_port: int, wan_port: int) -> None:
        self.lan: GossipRuntime | None = None
        self.wan: GossipRuntime | None = None
        #: Whether a graceful leave went out (shutdown then need not send another).
        self.left = False
        self._lan_port = lan_port
        self._wan_port = wan_port

    def running(self) -> list[GossipRuntime]:
        """The pools that are bound."""
        return [p for p in (self.lan, self.wan) if p is not None]

    def num_lan_nodes(self) -> int:
        """Live members of the LAN pool (1, this node, before it runs)."""
        return self.lan.protocol.num_live() if self.lan is not None else 1

    async def join(self, addrs: Sequence[str], *, wan: bool = False) -> int:
        """Join the LAN (or WAN) pool through ``addrs``; how many answered."""
        pool = self.wan if wan else self.lan
        if pool is None:
            what = "WAN pool: this agent is not a server" if wan else "LAN pool: agent not running"
            raise InvalidRequest(f"cannot join the {what}", field="wan" if wan else "address")
        port = self._wan_port if wan else self._lan_port
        return await pool.join([parse_join_addr(a, port) for a in addrs])

    async def leave(self, timeout: float) -> None:
        """Broadcast a graceful leave on every pool (waits at most ``timeout``)."""
        self.left = True
        await asyncio.gather(*(p.leave(timeout) for p in self.running()))

    def force_leave(self, node: str) -> None:
        """Mark a failed member left (in the WAN pool too for ``<node>.<dc>`` names)."""
        done = False
        for pool in self.running():
            if pool.protocol.member(node) is not None:
                pool.force_leave(node)
                done = True
        if not done:
            raise NotFound(f"No node {node!r} in the member list")

    async def retry_join(self, addrs: Sequence[str], interval: float, *, wan: bool = False) -> None:
        """Join through ``addrs`` until one answers (``retry_join``/``retry_join_wan``)."""
        pool = self.wan if wan else self.lan
        if pool is None or not addrs:
            return
        port = self._wan_port if wan else self._lan_port
        what = "WAN" if wan else "LAN"
        targets = [parse_join_addr(a, port) for a in addrs]
        log.info("retry_join: joining", extra={"pool": what, "addrs": ",".join(addrs)})
        joined = await pool.retry_join(targets, interval)
        log.info("retry_join: joined", extra={"pool": what, "answered": joined})

    async def aclose(self) -> None:
        """Close the pools' sockets (after their ``run()`` was cancelled)."""
        for pool in self.running():
            await pool.transport.close()
