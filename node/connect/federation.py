"""The primary-datacenter guard: a node never joins a trust domain split (Consul #6847).

Rule: a node whose ``primary_datacenter`` differs from the cluster's stops with an error
naming both values instead of silently forming its own trust domain. A LAN peer naming
another primary stops a node that has no CA of its own (a client, or a server before the
CA exists); a server that has one logs it, once per value. Servers also ask every other
datacenter which primary it names (``State.Info``, answered with the age of the local
CA): when two sides disagree, the younger CA (or none) is the one that split off, and
that side stops. ``fail`` is how any component stops Connect; ``watch`` raises the
error in the running task group.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

from node.connect.castate import CARoots
from node.connect.records import roots_created
from node.errors import ConfigError, NodeError
from node.state.primary import mismatch_message
from node.state.writer import ServerCaller

__all__ = ["FederationGuard", "Datacenters", "INFO_METHOD"]

log = logging.getLogger(__name__)

INFO_METHOD: Final = "State.Info"
#: Longest pause between two rounds of asking datacenters (``datacenters()`` is cheap).
ROUND_S: Final = 1.0


class Datacenters(Protocol):
    """The datacenters this node knows of (``node.agent.Agent``)."""

    def datacenters(self) -> list[str]:
        """Known datacenters, sorted."""
        ...


class FederationGuard:
    """One per node (see the module rule)."""

    def __init__(
        self,
        *,
        rpc: ServerCaller,
        cluster: Datacenters,
        roots: Callable[[], CARoots | None],
        dc: str,
        primary: str,
        is_server: bool,
        rpc_timeout: float,
        interval: float,
    ) -> None:
        self._rpc = rpc
        self._cluster = cluster
        self._roots = roots
        self._dc = dc
        self._primary = primary
        self._server = is_server
        self._timeout = rpc_timeout
        self._interval = min(interval, ROUND_S)
        self._fatal: ConfigError | None = None
        self._fatal_set = asyncio.Event()
        self._logged: set[str] = set()

    # --- stopping -----------------------------------------------------------------------

    def fail(self, error: ConfigError) -> None:
        """Stop Connect with ``error`` (the first one wins)."""
        if self._fatal is None:
            log.error("connect cannot run", extra={"error": str(error)})
            self._fatal = error
            self._fatal_set.set()

    async def watch(self) -> None:
        """Raise the error given to ``fail``, once it is."""
        await self._fatal_set.wait()
        assert self._fatal is not None
        raise self._fatal

    # --- LAN peers ----------------------------------------------------------------------

    def on_lan_mismatch(self, peer_primary: str) -> None:
        """A LAN peer names another primary (``statesync`` ``on_mismatch``)."""
        who = f"datacenter {self._dc!r} peers"
        message = mismatch_message(who, peer_primary, self._dc, self._primary)
        if not self._server or self._roots() is None:
            self.fail(ConfigError(message, key="primary_datacenter"))
        elif peer_primary not in self._logged:
            self._logged.add(peer_primary)
            log.error("primary datacenter mismatch", extra={"error": message})

    # --- other datacenters (servers) ----------------------------------------------------

    async def run(self) -> None:
        """Ask each other datacenter once which primary it names."""
        checked: set[str] = set()
        while True:
            for dc in self._cluster.datacenters():
                if dc == self._dc or dc in checked:
                    continue
                try:
                    info = await self._rpc.call_server(
                        INFO_METHOD, {}, dc=dc, timeout=self._timeout
                    )
                except ConfigError:
                    raise
                except NodeError:
                    continue  # not reachable now; asked again next round
                self._judge(dc, info)
                checked.add(dc)
            await asyncio.sleep(self._interval)

    def _judge(self, dc: str, info: Any) -> None:
        if not isinstance(info, Mapping) or info.get("pdc") == self._primary:
            return
        who = f"datacenter {dc!r}"
        message = mismatch_message(who, info.get("pdc"), self._dc, self._primary)
        theirs, mine = info.get("created"), roots_created(self._roots())
        # The younger CA (or none) is the one that split off: that side stops.
        if mine is None or (isinstance(theirs, str) and theirs < mine):
            raise ConfigError(message, key="primary_datacenter")
        log.error(
            "primary datacenter mismatch; the other side's CA is younger, it must stop",
            extra={"error": message},
        )

    def rpc_handlers(self) -> dict[str, Callable[[Any], Any]]:
        """``State.Info``: this datacenter, its primary and the age of its CA."""
        return {INFO_METHOD: self._rpc_info}

    async def _rpc_info(self, args: Any) -> dict[str, Any]:
        del args
        roots = self._roots()
        return {"dc": self._dc, "pdc": self._primary, "created": roots_created(roots),
                "cluster_id": None if roots is None else roots.cluster_id}  # fmt: skip
