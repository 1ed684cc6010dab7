"""Replication by pull: ``State.Pull`` served by servers, asked by secondaries and fetchers.

Rule: copies converge inside a datacenter by LAN gossip (``statesync``) and across
datacenters by the secondary servers pulling from the primary with *blocking*
``State.Pull`` calls (``Replicator``): "the changes since my index, or wait up to
``wait`` seconds for one". An index is only meaningful to the server that gave it
(``origin``); any other server answers a full snapshot. Every pull names the asker's
primary datacenter, and both sides refuse to exchange state with a node that names
another (``ConfigError``: the node must stop). A gossip digest of a record too big to
broadcast makes the ``Fetcher`` pull its own datacenter's copy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

from node.errors import ConfigError, DatacenterUnavailable, InvalidRequest, NodeError
from node.state.globalstate import Delta
from node.state.hlc import Stamp
from node.state.primary import check_peer_primary, mismatch_message
from node.state.replica import Replica
from node.state.retry import Retry, Uniform
from node.state.writer import ServerCaller

__all__ = ["PullService", "Replicator", "Fetcher", "PeerCaller", "PULL_METHOD", "MAX_PULL_WAIT_S"]

log = logging.getLogger(__name__)

PULL_METHOD: Final = "State.Pull"
#: Longest a ``State.Pull`` may block on the server.
MAX_PULL_WAIT_S: Final = 60.0
#: Failures to reach the primary tolerated quietly (before the WAN join it is unknown).
QUIET_FAILURES: Final = 5


class PeerCaller(ServerCaller, Protocol):
    """RPC to servers, including another server of this datacenter than this one."""

    async def call_peer_server(self, method: str, args: Any, *, timeout: float = ...) -> Any:
        """Call another server of this datacenter (not this node)."""
        ...


def pull_args(*, since: int, wait: float, origin: str | None, identity: Mapping[str, str]) -> Any:
    """A ``State.Pull`` request; ``identity`` names the asker (``pdc``, ``dc``, ``node``)."""
    return {"since": since, "wait": wait, "origin": origin, **identity}


class PullService:
    """Serves ``State.Pull`` from this server's copy (blocking until a change or ``wait``)."""

    def __init__(self, replica: Replica, *, dc: str, primary: str) -> None:
        self._replica = replica
        self._dc = dc
        self._primary = primary

    def rpc_handlers(self) -> dict[str, Callable[[Any], Any]]:
        """``State.Pull``."""
        return {PULL_METHOD: self._rpc_pull}

    async def _rpc_pull(self, args: Any) -> dict[str, Any]:
        if not isinstance(args, Mapping):
            raise InvalidRequest("State.Pull: args must be a map")
        check_peer_primary(args, dc=self._dc, primary=self._primary)
        since = args.get("since", 0)
        wait = args.get("wait", 0)
        if not isinstance(since, int) or not isinstance(wait, int | float) or since < 0:
            raise InvalidRequest("State.Pull: since must be an index and wait seconds")
        state = self._replica.state
        if args.get("origin") != state.node_id:
            since = 0  # that index was another server's: send everything
        wait_s = min(float(wait), MAX_PULL_WAIT_S)
        await self._replica.wait_until(lambda: state.index > since, wait_s)
        delta = state.entries_since(since)
        return {
            "delta": delta.to_wire(state.schema), "origin": state.node_id, "pdc": self._primary
        }  # fmt: skip


class Replicator:
    """A secondary server's blocking pulls from the primary, merged and gossiped on."""

    def __init__(
        self,
        replica: Replica,
        *,
        rpc: ServerCaller,
        identity: Mapping[str, str],
        pull_wait: float,
        rpc_timeout: float,
        retry: Retry,
        rng: Uniform,
        fail: Callable[[ConfigError], None],
    ) -> None:
        self._replica = replica
        self._rpc = rpc
        self._identity = dict(identity)
        self._primary = identity["pdc"]
        self._wait = pull_wait
        self._timeout = rpc_timeout
        self._retry = retry
        self._rng = rng
        self._fail = fail

    async def run(self) -> None:
        """Pull until cancelled; stops (after ``fail``) if the primary names another."""
        since, origin, failures = 0, None, 0
        while True:
            args = pull_args(since=since, wait=self._wait, origin=origin, identity=self._identity)
            try:
                reply = await self._rpc.call_server(
                    PULL_METHOD, args, dc=self._primary, timeout=self._wait + self._timeout
                )
                delta, origin = self._take(reply)
                since, failures = delta.index, 0
            except ConfigError as exc:
                self._fail(exc)
                return
            except NodeError as exc:
                failures += 1
                delay = self._retry.delay(failures, self._rng)
                quiet = isinstance(exc, DatacenterUnavailable) and failures < QUIET_FAILURES
                log.log(
                    logging.DEBUG if quiet else logging.WARNING,
                    "replication from %s failed: %s",
                    self._primary,
                    exc,
                    extra={"retry_in_s": round(delay, 2)},
                )
                await asyncio.sleep(delay)

    def _take(self, reply: Any) -> tuple[Delta, str]:
        if not isinstance(reply, Mapping) or not isinstance(reply.get("origin"), str):
            raise InvalidRequest("State.Pull answer is malformed")
        peer = reply.get("pdc")
        if peer != self._primary:
            who = f"datacenter {self._primary!r}"
            raise ConfigError(mismatch_message(who, peer, self._identity["dc"], self._primary))
        delta = Delta.from_wire(reply.get("delta"), self._replica.state.schema)
        self._replica.apply_delta(delta)
        return delta, str(reply["origin"])


class Fetcher:
    """Pulls this datacenter's copy when a gossip digest named a newer record than ours."""

    def __init__(
        self,
        replica: Replica,
        *,
        rpc: PeerCaller,
        identity: Mapping[str, str],
        is_server: bool,
        rpc_timeout: float,
        retry: Retry,
        rng: Uniform,
    ) -> None:
        self._replica = replica
        self._rpc = rpc
        self._identity = dict(identity)
        self._server = is_server
        self._timeout = rpc_timeout
        self._retry = retry
        self._rng = rng
        self._wanted = asyncio.Event()

    def want(self, kind: str, name: str, stamp: Stamp) -> None:
        """A digest named a newer record (``statesync`` ``on_want``): fetch soon."""
        del kind, name, stamp
        self._wanted.set()

    async def run(self) -> None:
        """Fetch each time something is wanted, retrying until it arrives."""
        failures = 0
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            args = pull_args(since=0, wait=0, origin=None, identity=self._identity)
            try:
                # A server would answer itself through call_server: ask a peer instead.
                call = self._rpc.call_peer_server if self._server else self._rpc.call_server
                reply = await call(PULL_METHOD, args, timeout=self._timeout)
                raw = reply.get("delta") if isinstance(reply, Mapping) else None
                delta = Delta.from_wire(raw, self._replica.state.schema)
                self._replica.merge_records(delta.records, announce=True)
                failures = 0
            except NodeError as exc:
                failures += 1
                self._wanted.set()
                await asyncio.sleep(self._retry.delay(failures, self._rng))
                log.debug("fetching global state failed", extra={"error": str(exc)})
