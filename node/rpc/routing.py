"""Choosing a server to call, from gossip members and their tags.

Rule: only a member that is *alive* and whose tags say ``role = "server"`` in the
requested ``dc`` with a valid ``port`` is a candidate; the RPC address is the member's
gossip host with that port. Choice among candidates is random (``rng`` passed in) so
load spreads and a test can seed it. Pure.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from node.gossip.messages import Address, MemberStatus
from node.gossip.state import Member

__all__ = [
    "TAG_DC",
    "TAG_ROLE",
    "TAG_RPC_PORT",
    "ROLE_SERVER",
    "ROLE_NODE",
    "RAFT_TAG",
    "raft_port",
    "rpc_address",
    "servers",
    "rpc_targets",
    "pick_server",
]

TAG_DC = "dc"
TAG_ROLE = "role"
TAG_RPC_PORT = "port"
ROLE_SERVER = "server"
ROLE_NODE = "node"
#: The gossip tag where a server announces its Raft address (``host:port``).
RAFT_TAG = "raft"
#: The Raft port is the server RPC port plus this (8300 → 18300).
RAFT_PORT_OFFSET = 10_000


def raft_port(rpc_port: int) -> int:
    """The Raft port of a server whose RPC port is ``rpc_port``."""
    port = rpc_port + RAFT_PORT_OFFSET
    return port if port <= 65_535 else rpc_port - RAFT_PORT_OFFSET


def rpc_address(member: Member) -> Address | None:
    """The member's RPC address from its ``port`` tag, or ``None`` if absent/invalid."""
    port = member.tags.get(TAG_RPC_PORT, "")
    if not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return (member.addr[0], int(port))


def servers(members: Iterable[Member], dc: str) -> list[Address]:
    """RPC addresses of every alive server of ``dc``, in member order."""
    found: list[Address] = []
    for m in members:
        if m.status is not MemberStatus.ALIVE or m.tags.get(TAG_ROLE) != ROLE_SERVER:
            continue
        if m.tags.get(TAG_DC) != dc:
            continue
        addr = rpc_address(m)
        if addr is not None:
            found.append(addr)
    return found


def rpc_targets(members: Iterable[Member]) -> dict[str, Address]:
    """Name → RPC address of every alive member that advertises a ``port`` (any role)."""
    targets: dict[str, Address] = {}
    for m in members:
        addr = rpc_address(m) if m.status is MemberStatus.ALIVE else None
        if addr is not None:
            targets[m.name] = addr
    return targets


def pick_server(members: Iterable[Member], dc: str, rng: random.Random) -> Address | None:
    """One random alive server of ``dc``, or ``None`` when there is none."""
    candidates = servers(members, dc)
    return rng.choice(candidates) if candidates else None
