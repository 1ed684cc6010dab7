"""``meshnode operator raft list-peers | remove-peer | transfer-leader``.

Rule: each command is a ``configure(parser)`` / ``run(ctx) -> exit status`` pair listed
as one row of ``node.cli.COMMANDS``; it talks to the node through its HTTP API
(``/v1/operator/raft/*``) and prints what Consul's ``consul operator raft`` prints.
``ctx`` is ``node.cli.Context`` (not imported: ``node.cli`` imports this module).
"""

from __future__ import annotations

import argparse
from typing import Any

from node.cli.table import format_table
from node.errors import InvalidRequest

__all__ = [
    "configure_list_peers",
    "run_list_peers",
    "configure_remove_peer",
    "run_remove_peer",
    "configure_transfer_leader",
    "run_transfer_leader",
    "peer_rows",
]

EXIT_OK = 0
_PATH = "/v1/operator/raft"


def _flag(parser: argparse.ArgumentParser, name: str, **kw: Any) -> None:
    parser.add_argument(f"-{name}", f"--{name}", **kw)


def _dc(ctx: Any) -> dict[str, str]:
    return {"dc": ctx.args.datacenter} if ctx.args.datacenter else {}


def _configure_dc(p: argparse.ArgumentParser) -> None:
    _flag(p, "datacenter", default="", help="the datacenter to ask (default: the agent's)")


def configure_list_peers(p: argparse.ArgumentParser) -> None:
    """``list-peers [-stale] [-datacenter DC]``."""
    _flag(p, "stale", action="store_true", help="answer from any server, even without a leader")
    _configure_dc(p)


def peer_rows(configuration: Any) -> list[list[object]]:
    """Consul's rows: Node, ID, Address, State, Voter, RaftProtocol."""
    servers = configuration.get("Servers") if isinstance(configuration, dict) else None
    rows: list[list[object]] = []
    for s in servers or []:
        state = "leader" if s.get("Leader") else "follower"
        voter = "true" if s.get("Voter") else "false"
        protocol = s.get("ProtocolVersion") or "<=1"
        rows.append([s.get("Node", ""), s.get("ID", ""), s.get("Address", ""), state, voter,
                     protocol])  # fmt: skip
    return rows


def run_list_peers(ctx: Any) -> int:
    """The servers of the Raft configuration as a table."""
    params = _dc(ctx) | ({"stale": "true"} if ctx.args.stale else {})
    configuration = ctx.client().get(f"{_PATH}/configuration", **params)
    header = ["Node", "ID", "Address", "State", "Voter", "RaftProtocol"]
    ctx.say(format_table(header, peer_rows(configuration)))
    return EXIT_OK


def configure_remove_peer(p: argparse.ArgumentParser) -> None:
    """``remove-peer -address IP:PORT | -id ID [-datacenter DC]``."""
    _flag(p, "address", default="", help="the peer's IP:port")
    _flag(p, "id", dest="peer_id", default="", help="the peer's server ID")
    _configure_dc(p)


def run_remove_peer(ctx: Any) -> int:
    """Remove a (failed) server from the Raft configuration."""
    address, peer_id = ctx.args.address, ctx.args.peer_id
    if not address and not peer_id:
        raise InvalidRequest(
            "Error removing peer: an address or id is required for the peer to remove"
        )
    if address and peer_id:
        raise InvalidRequest("Error removing peer: cannot give both an address and id")
    params = _dc(ctx) | ({"address": address} if address else {"id": peer_id})
    ctx.client().request("DELETE", f"{_PATH}/peer", **params)
    if address:
        ctx.say(f'Removed peer with address "{address}"')
    else:
        ctx.say(f'Removed peer with id "{peer_id}"')
    return EXIT_OK


def configure_transfer_leader(p: argparse.ArgumentParser) -> None:
    """``transfer-leader [-id ID] [-datacenter DC]``."""
    _flag(p, "id", dest="peer_id", default="", help="the server to hand leadership to")
    _configure_dc(p)


def run_transfer_leader(ctx: Any) -> int:
    """Hand leadership to another server (the chosen one, or the most caught-up)."""
    params = _dc(ctx) | ({"id": ctx.args.peer_id} if ctx.args.peer_id else {})
    answer = ctx.client().request("POST", f"{_PATH}/transfer-leader", **params)
    if not (isinstance(answer, dict) and answer.get("Success")):
        raise InvalidRequest("Error transferring leadership")
    ctx.say("Success")
    return EXIT_OK
