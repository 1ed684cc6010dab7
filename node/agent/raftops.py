"""The servers' Raft group as an operator drives it: configuration, remove, transfer, leave.

Rule: the HTTP API asks through ``call`` (``Operator.Raft*`` RPCs to a server of the
datacenter; a client forwards, a server answers itself). Changes run on the leader: a
server that is not the leader forwards the RPC to the leader's RPC address, at most
twice while leadership moves. The leader also keeps the membership in line with the
LAN pool (``run``: ``node.state.membership.reconcile``: a server that joins is added, a
server that left gracefully is removed), and a server that leaves gracefully hands
leadership over if it leads, leaves the pool, then asks the leader to remove it
(``hand_over`` then ``leave_group``).

Where the datacenter runs no Raft group of several voters (a server alone, ``-dev``,
a secondary datacenter's servers), the answer is Consul's for a group of one: this
server (or the datacenter's servers, the stand-in leader among them), and no change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, Protocol

from node.agent.cluster import ClusterView, advertise_address
from node.config.agent import AgentConfig
from node.errors import InvalidRequest, NoClusterLeader, NodeError
from node.gossip.messages import MemberStatus
from node.gossip.state import Member
from node.rpc.routing import RAFT_TAG, ROLE_SERVER, TAG_DC, TAG_ROLE, rpc_address
from node.state.membership import RaftServer, ServerInfo, describe, find_voter, reconcile
from node.state.raft import RaftOperations, SoloGroup

__all__ = [
    "RaftOperator",
    "CONFIGURATION_METHOD",
    "REMOVE_PEER_METHOD",
    "TRANSFER_LEADER_METHOD",
    "servers_of",
]

log = logging.getLogger(__name__)

CONFIGURATION_METHOD: Final = "Operator.RaftGetConfiguration"
REMOVE_PEER_METHOD: Final = "Operator.RaftRemovePeer"
TRANSFER_LEADER_METHOD: Final = "Operator.RaftTransferLeader"
#: How often the leader compares the membership with the LAN pool (seconds).
RECONCILE_EVERY: Final = 1.0
#: Forwarding hops to the leader while leadership moves.
_MAX_HOPS: Final = 2
_CALL_TIMEOUT: Final = 15.0


class ServerCall(Protocol):
    """RPC to a server of a datacenter (``forward.Router.call_server``)."""

    async def __call__(
        self, method: str, args: Any = None, *, dc: str | None = None, timeout: float = ...
    ) -> Any: ...


class AddressCall(Protocol):
    """RPC to one node by address (``node.rpc.client.RPCClient.call``)."""

    async def __call__(
        self, addr: tuple[str, int], method: str, args: Any = None, *, timeout: float
    ) -> Any: ...


def servers_of(members: Iterable[Member], dc: str) -> dict[str, ServerInfo]:
    """The servers of ``dc`` that announce a Raft address, keyed by it (any status)."""
    known: dict[str, ServerInfo] = {}
    for m in members:
        raft = m.tags.get(RAFT_TAG)
        if m.tags.get(TAG_ROLE) != ROLE_SERVER or m.tags.get(TAG_DC) != dc or not raft:
            continue
        rpc = rpc_address(m)
        known[raft] = ServerInfo(
            node=m.name, node_id=m.tags.get("id", ""), rpc=f"{rpc[0]}:{rpc[1]}" if rpc else raft,
            raft=raft, alive=m.status in (MemberStatus.ALIVE, MemberStatus.SUSPECT),
            left=m.status is MemberStatus.LEFT,
        )  # fmt: skip
    return known


class RaftOperator:
    """See the module rule."""

    def __init__(
        self,
        *,
        config: AgentConfig,
        node_id: str,
        view: ClusterView,
        members: Callable[[], Iterable[Member]],
        group: Callable[[], RaftOperations | None],
        call_server: ServerCall,
        call_address: AddressCall,
        rpc_port: Callable[[], int],
    ) -> None:
        self._config = config
        self._node_id = node_id
        self._view = view
        self._members = members
        self._group = group
        self._call_server = call_server
        self._call_address = call_address
        self._rpc_port = rpc_port

    # --- the API's side -----------------------------------------------------------------

    async def call(self, method: str, args: Mapping[str, Any], dc: str | None) -> Any:
        """An ``Operator.Raft*`` RPC answered by a server of ``dc`` (default: ours)."""
        return await self._call_server(method, dict(args), dc=dc, timeout=_CALL_TIMEOUT)

    def handlers(self) -> dict[str, Callable[[Any], Any]]:
        """The RPCs a server answers."""
        return {
            CONFIGURATION_METHOD: self._configuration,
            REMOVE_PEER_METHOD: self._remove_peer,
            TRANSFER_LEADER_METHOD: self._transfer_leader,
        }

    # --- configuration ------------------------------------------------------------------

    def _voting_group(self) -> RaftOperations | None:
        """This server's group of several voters, if it runs one."""
        group = self._group()
        return None if group is None or isinstance(group, SoloGroup) else group

    def _known(self) -> dict[str, ServerInfo]:
        return servers_of(self._members(), self._config.datacenter)

    def rows(self) -> list[RaftServer]:
        """The configuration as this server knows it now."""
        group = self._voting_group()
        if group is None:
            return self._rows_without_group()
        return describe(group.voters(), group.leader(), self._known())

    def _rows_without_group(self) -> list[RaftServer]:
        servers = self._view.alive_servers()
        leader = self._view.leader()
        if not servers:  # the pools do not run yet: this server alone
            own = f"{advertise_address(self._config)}:{self._rpc_port()}"
            return [RaftServer(id=self._node_id, node=self._config.node_name, address=own,
                               raft=own, leader=True)]  # fmt: skip
        rows = []
        for m in servers:
            rpc = rpc_address(m)
            addr = f"{rpc[0]}:{rpc[1]}" if rpc else m.addr[0]
            rows.append(RaftServer(id=m.tags.get("id", ""), node=m.name, address=addr,
                                   raft=addr, leader=addr == leader))  # fmt: skip
        return rows

    async def _configuration(self, args: Any) -> dict[str, Any]:
        stale = isinstance(args, Mapping) and bool(args.get("stale"))
        group = self._group()
        index = 0
        if group is not None and not stale:
            index = await group.barrier()  # the leader confirms it leads; the log is current
        elif group is not None:
            index = group.commit_index
        return {"servers": [_row_wire(r) for r in self.rows()], "index": index}

    # --- changes, on the leader -----------------------------------------------------------

    async def _remove_peer(self, args: Any) -> dict[str, Any]:
        server_id, address, hops = _change_args(args)
        group = self._voting_group()
        if group is None:
            return self._refuse_without_group(server_id, address)
        target = find_voter(self.rows(), server_id=server_id, address=address)
        if group.leader() != group.address:
            return await self._to_leader(REMOVE_PEER_METHOD, {"address": target}, hops)
        if target == group.address:
            new_leader = await group.transfer_leadership()
            log.info("handed Raft leadership over before removing this server",
                     extra={"leader": new_leader})  # fmt: skip
            return await self._to_leader(REMOVE_PEER_METHOD, {"address": target}, hops)
        await group.remove_voter(target)
        log.info("removed a server from the Raft configuration", extra={"raft": target})
        return {}

    async def _transfer_leader(self, args: Any) -> dict[str, Any]:
        server_id, _, hops = _change_args(args)
        group = self._voting_group()
        if group is None:
            raise InvalidRequest("cannot find peer")
        if group.leader() != group.address:
            return await self._to_leader(TRANSFER_LEADER_METHOD, {"id": server_id}, hops)
        target = None
        if server_id:
            try:
                target = find_voter(self.rows(), server_id=server_id)
            except NodeError:
                raise InvalidRequest(f'cannot find peer with id "{server_id}"') from None
        new_leader = await group.transfer_leadership(target)
        log.info("transferred Raft leadership", extra={"leader": new_leader})
        return {"success": True}

    def _refuse_without_group(self, server_id: str, address: str) -> dict[str, Any]:
        find_voter(self.rows(), server_id=server_id, address=address)  # Consul's not-found first
        raise InvalidRequest(
            f"datacenter {self._config.datacenter!r} runs no Raft group of several servers: "
            "its only voter cannot be removed"
        )

    async def _to_leader(self, method: str, args: dict[str, Any], hops: int) -> dict[str, Any]:
        """Send a change to the leader's RPC address (the leader may have just moved)."""
        if hops >= _MAX_HOPS:
            raise NoClusterLeader("No cluster leader")
        group = self._voting_group()
        leader = None if group is None else await self._wait_leader(group)
        info = None if leader is None else self._known().get(leader)
        if info is None:
            raise NoClusterLeader("No cluster leader")
        host, _, port = info.rpc.rpartition(":")
        reply = await self._call_address(
            (host, int(port)), method, args | {"hops": hops + 1}, timeout=_CALL_TIMEOUT
        )
        return dict(reply) if isinstance(reply, Mapping) else {}

    @staticmethod
    async def _wait_leader(group: RaftOperations, wait: float = 5.0) -> str | None:
        """The leader, waiting a moment for one to be known (an election in progress)."""
        for _ in range(int(wait / 0.1)):
            leader = group.leader()
            if leader:
                return leader
            await asyncio.sleep(0.1)
        return None

    # --- the leader keeps the membership ---------------------------------------------------

    async def run(self, every: float = RECONCILE_EVERY) -> None:
        """On the leader, add servers that joined and remove those that left the pool."""
        while True:
            await asyncio.sleep(every)
            group = self._voting_group()
            if group is None or not group.address or group.leader() != group.address:
                continue
            others = [s for s in self._known().values() if s.raft != group.address]
            change = reconcile(group.voters(), others)
            if not change:
                continue
            verb, raft = change
            try:
                if verb == "add":
                    await group.add_voter(raft)
                else:
                    await group.remove_voter(raft)
                log.info("raft membership changed", extra={"change": verb, "raft": raft})
            except NodeError as exc:
                log.warning("raft membership change failed",
                            extra={"change": verb, "raft": raft, "error": str(exc)})  # fmt: skip

    # --- a server that leaves --------------------------------------------------------------

    async def hand_over(self) -> None:
        """Before a graceful leave: a leader with other voters hands leadership over."""
        group = self._voting_group()
        if group is None or not group.address or group.leader() != group.address:
            return
        if len(group.voters()) < 2:
            return
        try:
            leader = await group.transfer_leadership()
            log.info("handed Raft leadership over before leaving", extra={"leader": leader})
        except NodeError as exc:
            log.warning("could not hand Raft leadership over", extra={"error": str(exc)})

    async def leave_group(self) -> None:
        """After leaving the pool: ask the leader to remove this server (logged if it
        cannot: the leader removes a server that left on its own, once it has one)."""
        group = self._voting_group()
        if group is None or not group.address or len(group.voters()) < 2:
            return
        try:
            await self._to_leader(REMOVE_PEER_METHOD, {"address": group.address}, 0)
            log.info("removed from the Raft configuration", extra={"raft": group.address})
        except NodeError as exc:
            log.warning("could not leave the Raft configuration", extra={"error": str(exc)})


def _change_args(args: Any) -> tuple[str, str, int]:
    if not isinstance(args, Mapping):
        raise InvalidRequest("operator request must be a map")
    server_id, address, hops = args.get("id") or "", args.get("address") or "", args.get("hops", 0)
    if not isinstance(server_id, str) or not isinstance(address, str) or not isinstance(hops, int):
        raise InvalidRequest("operator request: id and address must be strings")
    return server_id, address, hops


def _row_wire(row: RaftServer) -> dict[str, Any]:
    return {"id": row.id, "node": row.node, "address": row.address, "leader": row.leader,
            "voter": row.voter, "protocol": row.protocol}  # fmt: skip
