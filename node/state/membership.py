"""A Raft group's configuration as an operator sees it, and the changes its leader makes.

Rule: the Raft engine knows its voters only by Raft address; the gossip pool knows each
server's node name, node id, RPC address and whether it is alive, failed or left. This
module joins the two: ``describe`` gives Consul's ``Servers`` rows (a voter the pool does
not know is shown as Consul shows it, ``(unknown)``), ``find_voter`` finds the voter an
operator names by id or address (Consul's errors), and ``reconcile`` decides what the
leader changes: a server alive in the pool that is not a voter is added (a server that
joined after the group formed, or came back after it left); a voter whose server left
the pool gracefully is removed. A *failed* server stays a voter until an operator
removes it (``remove-peer``): a server that only crashed is expected back.

Pure.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from node.errors import NotFound

__all__ = [
    "ServerInfo",
    "RaftServer",
    "PROTOCOL_VERSION",
    "describe",
    "find_voter",
    "reconcile",
]

#: Consul's Raft protocol version (3: servers are known by node id).
PROTOCOL_VERSION: Final = "3"
_UNKNOWN_NODE: Final = "(unknown)"
_UNKNOWN_PROTOCOL: Final = "unknown"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerInfo:
    """A server of the datacenter as the gossip pool knows it."""

    node: str
    node_id: str
    rpc: str  # "host:port" of its node RPC
    raft: str  # "host:port" of its Raft port
    alive: bool
    left: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class RaftServer:
    """One row of Consul's ``/v1/operator/raft/configuration``."""

    id: str
    node: str
    address: str  # the RPC address, as Consul shows (its Raft runs on its RPC port)
    raft: str  # the Raft address the engine knows it by
    leader: bool
    voter: bool = True
    protocol: str = PROTOCOL_VERSION


def describe(
    voters: Iterable[str], leader: str | None, known: Mapping[str, ServerInfo]
) -> list[RaftServer]:
    """The voters (Raft addresses) as rows, by node name; ``known`` is keyed by Raft address."""
    rows = []
    for raft in voters:
        info = known.get(raft)
        if info is None:
            rows.append(RaftServer(id=raft, node=_UNKNOWN_NODE, address=raft, raft=raft,
                                   leader=raft == leader, protocol=_UNKNOWN_PROTOCOL))  # fmt: skip
            continue
        rows.append(RaftServer(id=info.node_id or raft, node=info.node, address=info.rpc,
                               raft=raft, leader=raft == leader))  # fmt: skip
    return sorted(rows, key=lambda r: (r.node, r.address))


def find_voter(servers: Sequence[RaftServer], *, server_id: str = "", address: str = "") -> str:
    """The Raft address of the voter named by ``server_id`` or by ``address`` (its RPC or
    Raft address); ``NotFound`` with Consul's wording when there is none."""
    if server_id:
        for row in servers:
            if row.id == server_id:
                return row.raft
        raise NotFound(f'id "{server_id}" was not found in the Raft configuration')
    for row in servers:
        if address in (row.address, row.raft):
            return row.raft
    raise NotFound(f'address "{address}" was not found in the Raft configuration')


def reconcile(voters: Collection[str], servers: Iterable[ServerInfo]) -> tuple[str, ...]:
    """The one change the leader should make now, as ``("add"|"remove", raft address)``,
    or ``()``. One at a time: Raft changes its membership one server per commit."""
    servers = list(servers)
    alive = {s.raft for s in servers if s.alive}
    for server in sorted(servers, key=lambda s: s.raft):
        if server.alive and server.raft not in voters:
            return ("add", server.raft)
    for server in sorted(servers, key=lambda s: s.raft):
        if server.left and server.raft in voters and server.raft not in alive:
            return ("remove", server.raft)
    return ()
