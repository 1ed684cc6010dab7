"""RPC routing: which server answers a call, forwarding between datacenters, remote reads.

Rule: ``Router.call_server`` is the one way a component calls a server. Own
datacenter: a server dispatches to its own handlers without a socket, a client picks
an alive server of its LAN. Another datacenter: a server calls an alive WAN member of
it, a client asks a server of its own datacenter to forward (``Forward.Call``). Every
call is bounded: a datacenter whose servers are all down answers
``DatacenterUnavailable`` within the timeout, never hangs. RPC is sealed with the LAN
keyring, so datacenters that talk RPC must share a key.

Reads of another datacenter (``Catalog.Read``) travel as ``node.rpc.reads`` values: the
serving side runs the read, blocking on its own index as a local blocking query would,
and ships the typed answer; ``forward_read`` rebuilds it with the read's codec.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from node.agent.cluster import ClusterView, Pools
from node.api.blocking import MAX_WAIT, Notifier, QueryOptions, run_blocking
from node.errors import DatacenterUnavailable, InvalidRequest, NodeError, RemoteProtocolError
from node.rpc.client import RPCClient, call_datacenter
from node.rpc.codec import RPCUnreachable
from node.rpc.reads import CATALOG_READ, ReadReply, ReadRequest, ValueCodec
from node.rpc.server import Handler

__all__ = [
    "RPC_TIMEOUT",
    "FORWARD_METHOD",
    "DATACENTERS_METHOD",
    "RAFT_STATUS_METHOD",
    "raft_status",
    "take_datacenters",
    "take_raft_status",
    "Router",
    "ServedRead",
    "ReadServer",
    "follow_server",
    "sync_handler",
]

T = TypeVar("T")

#: Default bound of one server call.
RPC_TIMEOUT = 5.0
#: Longest a forwarded call may be given (a blocking read's longest wait plus jitter).
MAX_FORWARD_TIMEOUT = 660.0
FORWARD_METHOD: Final = "Forward.Call"
DATACENTERS_METHOD: Final = "Catalog.Datacenters"
RAFT_STATUS_METHOD: Final = "Status.Raft"
_FORWARD_SHAPE = "Forward.Call needs {'dc', 'method', 'args', 'timeout'}"


class Router:
    """Calls servers of this or another datacenter; dispatches this server's own calls."""

    __slots__ = ("_dc", "_node", "_is_server", "_client", "_pools", "_datacenters", "_rng",
                 "_serve", "_handlers")  # fmt: skip

    def __init__(
        self,
        *,
        datacenter: str,
        node_name: str,
        is_server: bool,
        client: RPCClient,
        pools: Pools,
        datacenters: Callable[[], list[str]],
        serve: Callable[[str, Handler], None],
        rng: random.Random,
    ) -> None:
        self._dc = datacenter
        self._node = node_name
        self._is_server = is_server
        self._client = client
        self._pools = pools
        self._datacenters = datacenters
        self._serve = serve
        self._rng = rng
        self._handlers: dict[str, Handler] = {}
        self.register_rpc(FORWARD_METHOD, self._forward_call)

    def register_rpc(self, method: str, handler: Handler) -> None:
        """Serve ``method`` ("Area.Verb") over node RPC; call before the node runs."""
        self._handlers[method] = handler
        self._serve(method, handler)

    def datacenters(self) -> list[str]:
        """The datacenters calls can be routed to, ours first."""
        return self._datacenters()

    async def call_server(self, method: str, args: Any = None, *, dc: str | None = None,
                          timeout: float = RPC_TIMEOUT) -> Any:  # fmt: skip
        """Call ``method`` on a server of ``dc`` (default: our own datacenter).

        Raises ``DatacenterUnavailable`` (unknown datacenter, or no server answered within
        ``timeout``), ``RPCUnreachable``, or the remote ``NodeError`` class.
        """
        own = dc is None or dc == self._dc
        if own and self._is_server:
            return await self._call_local(method, args, timeout)
        if not own and self._is_server and dc not in self._datacenters():
            raise DatacenterUnavailable(f"No path to datacenter {dc!r}")
        lan = self._pools.lan
        if lan is None:
            where = "a server" if own else f"datacenter {dc!r}"
            raise DatacenterUnavailable(f"No path to {where}: the agent's pools are not running")
        if own:
            return await call_datacenter(self._client, lan.members(), self._dc, method, args,
                                         timeout=timeout, rng=self._rng)  # fmt: skip
        assert dc is not None
        wan = self._pools.wan
        if wan is not None:
            return await call_datacenter(self._client, wan.members(), dc, method, args,
                                         timeout=timeout, rng=self._rng)  # fmt: skip
        forward = {"dc": dc, "method": method, "args": args, "timeout": timeout}
        # The server needs the whole bound for its own attempts; we add a margin for the hop.
        return await call_datacenter(self._client, lan.members(), self._dc, FORWARD_METHOD,
                                     forward, timeout=timeout + 1.0, rng=self._rng)  # fmt: skip

    async def call_peer_server(
        self, method: str, args: Any = None, *, timeout: float = RPC_TIMEOUT
    ) -> Any:
        """Call another alive server of our own datacenter, never this node."""
        lan, me = self._pools.lan, self._node
        peers = [m for m in lan.members() if m.name != me] if lan is not None else []
        return await call_datacenter(self._client, peers, self._dc, method, args,
                                     timeout=timeout, rng=self._rng)  # fmt: skip

    async def forward_read(self, dc: str, read: ReadRequest, wire: ValueCodec[T]) -> tuple[T, int]:
        """Run ``read`` in datacenter ``dc``: its answer (rebuilt with ``wire``) and index.

        The call's bound is the read's wait plus its jitter plus ``RPC_TIMEOUT``.
        """
        timeout = read.wait + read.wait / 16 + RPC_TIMEOUT
        raw = await self.call_server(CATALOG_READ, read.to_wire(), dc=dc, timeout=timeout)
        try:
            reply = ReadReply.from_wire(raw)
            return wire.from_wire(reply.value), reply.index
        except RemoteProtocolError as exc:
            raise RPCUnreachable(
                f"malformed {CATALOG_READ} reply from datacenter {dc!r}: {exc}"
            ) from None

    async def _call_local(self, method: str, args: Any, timeout: float) -> Any:
        handler = self._handlers.get(method)
        if handler is None:
            raise InvalidRequest(f"unknown RPC method {method!r}", field="method")
        try:
            async with asyncio.timeout(timeout):
                return await handler(args)
        except TimeoutError:
            raise RPCUnreachable(
                f"{method} on this server did not finish within {timeout:g}s"
            ) from None

    async def _forward_call(self, args: Any) -> Any:
        if not self._is_server:
            raise InvalidRequest("Forward.Call must be sent to a server", field="method")
        if (
            not isinstance(args, dict)
            or not isinstance(args.get("dc"), str)
            or not isinstance(args.get("method"), str)
        ):
            raise InvalidRequest(_FORWARD_SHAPE, field="dc")
        timeout = min(float(args.get("timeout") or RPC_TIMEOUT), MAX_FORWARD_TIMEOUT)
        return await self.call_server(
            args["method"], args.get("args"), dc=args["dc"], timeout=timeout
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ServedRead:
    """A read other datacenters may run here: ``query(**args) -> (value, index)``."""

    query: Callable[..., tuple[Any, int]]
    wire: ValueCodec[Any]


class ReadServer:
    """Answers ``Catalog.Read``: runs a listed read, blocking as a local query would."""

    __slots__ = ("_reads", "_notifier", "_monotonic", "_rng")

    def __init__(
        self,
        reads: Mapping[str, ServedRead],
        notifier: Notifier,
        *,
        monotonic: Callable[[], float],
        rng: random.Random,
    ) -> None:
        self._reads = reads
        self._notifier = notifier
        self._monotonic = monotonic
        self._rng = rng

    async def handle(self, args: Any) -> Any:
        """The RPC handler: a ``ReadRequest`` in, a ``ReadReply`` out (wire forms)."""
        read = ReadRequest.from_wire(args)
        served = self._reads.get(read.name)
        if served is None:
            raise InvalidRequest(f"unknown or non-forwardable read {read.name!r}", field="name")
        opts = QueryOptions(index=read.index, wait=min(read.wait, MAX_WAIT))

        def query() -> tuple[Any, int]:
            return served.query(**read.args)

        rng = random.Random(self._rng.random())
        value, index = await run_blocking(
            query, opts, self._notifier, rng=rng, monotonic=self._monotonic
        )
        return ReadReply(value=served.wire.to_wire(value), index=index).to_wire()


def sync_handler(answer: Callable[[], Any]) -> Handler:
    """An RPC handler that ignores its arguments and returns ``answer()``."""

    async def handle(args: Any) -> Any:
        del args
        return answer()

    return handle


async def follow_server(
    call_server: Callable[..., Awaitable[Any]],
    method: str,
    take: Callable[[Any], bool],
    on_change: Callable[[], object],
    *,
    interval: float,
    when: Callable[[], bool] = lambda: True,
) -> None:
    """A client keeps a server's answer to ``method`` (it is in no WAN pool and no Raft
    group): every ``interval``, while ``when()``, ``take`` stores it; a change is told."""
    while True:
        if when():
            with contextlib.suppress(NodeError):
                got = await call_server(method, None, timeout=RPC_TIMEOUT)
                if take(got):
                    on_change()
        await asyncio.sleep(interval)


def raft_status(view: ClusterView) -> dict[str, Any]:
    """``Status.Raft``'s answer on a server: the leader and voters as it knows them."""
    return {"leader": view.leader(), "peers": view.peers()}


def take_datacenters(view: ClusterView, got: Any) -> bool:
    """Store a server's ``Catalog.Datacenters`` answer; whether it changed."""
    return isinstance(got, list) and view.set_remote_datacenters([str(dc) for dc in got])


def take_raft_status(view: ClusterView, got: Any) -> bool:
    got = got if isinstance(got, Mapping) else {}
    peers, leader = got.get("peers"), got.get("leader")
    if not (isinstance(peers, list) and isinstance(leader, str)):
        return False
    return view.set_remote_raft(leader, [str(p) for p in peers])
