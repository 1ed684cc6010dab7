"""Cluster subcommands of ``meshnode``: members, join, leave, force-leave, keygen, keyring.

Rule: each command is a ``configure(parser)`` / ``run(ctx) -> exit status`` pair that
``node.cli.COMMANDS`` lists as one row; they talk to the node only through its HTTP API
(``ctx.client()``) and print what Consul's commands print. This module does not import
``node.cli`` at load time (``node.cli`` imports it); ``ctx`` is ``node.cli.Context``.
"""

from __future__ import annotations

import argparse
import urllib.parse
from collections.abc import Mapping
from typing import Any

from node import __version__
from node.cli.table import format_table
from node.errors import InvalidRequest
from node.gossip.keyring import generate_key

__all__ = [
    "configure_members",
    "run_members",
    "configure_join",
    "run_join",
    "run_leave",
    "configure_force_leave",
    "run_force_leave",
    "run_keygen",
    "configure_keyring",
    "run_keyring",
    "member_status",
]

EXIT_OK, EXIT_ERROR = 0, 1
_STATUS = {0: "none", 1: "alive", 2: "leaving", 3: "left", 4: "failed"}


def _flag(parser: argparse.ArgumentParser, name: str, **kw: Any) -> None:
    parser.add_argument(f"-{name}", f"--{name}", **kw)


def _table(header: list[str], rows: list[list[object]]) -> str:

    return format_table(header, rows)


def member_status(status: object) -> str:
    """serf's numeric status as the word Consul's CLI prints."""
    return _STATUS.get(status, str(status)) if isinstance(status, int) else str(status)


# ---------------------------------------------------------------------------- members


def configure_members(p: argparse.ArgumentParser) -> None:
    """``members [-wan] [-detailed]``."""
    _flag(p, "wan", action="store_true", help="list WAN members (servers only)")
    _flag(p, "detailed", action="store_true", help="show every tag of each member")


def run_members(ctx: Any) -> int:
    """An aligned table like ``consul members``; ``-detailed`` shows the raw tags."""
    params = {"wan": "1"} if ctx.args.wan else {}
    members = sorted(
        ctx.client().get("/v1/agent/members", **params) or [], key=lambda m: m.get("Name", "")
    )
    if ctx.args.detailed:
        rows: list[list[object]] = [
            [m.get("Name", ""), _addr(m), member_status(m.get("Status")), _tags(m)] for m in members
        ]
        ctx.say(_table(["Node", "Address", "Status", "Tags"], rows))
        return EXIT_OK
    rows = [_member_row(m) for m in members]
    header = ["Node", "Address", "Status", "Type", "Build", "Protocol", "DC", "Segment"]
    ctx.say(_table(header, rows))
    return EXIT_OK


def _addr(m: Mapping[str, Any]) -> str:
    return f"{m.get('Addr', '')}:{m.get('Port', '')}"


def _tags(m: Mapping[str, Any]) -> str:
    tags = m.get("Tags") or {}
    return ",".join(f"{k}={tags[k]}" for k in sorted(tags))


def _member_row(m: Mapping[str, Any]) -> list[object]:
    tags = m.get("Tags") or {}
    return [
        m.get("Name", ""),
        _addr(m),
        member_status(m.get("Status")),
        "server" if tags.get("role") == "consul" else "client",
        tags.get("build", __version__),
        tags.get("vsn", "2"),
        tags.get("dc", ""),
        tags.get("segment", "<all>") or "<all>",
    ]


# ---------------------------------------------------------------------------- join / leave


def configure_join(p: argparse.ArgumentParser) -> None:
    """``join [-wan] ADDR...``."""
    _flag(p, "wan", action="store_true", help="join the WAN pool (servers only)")
    p.add_argument("addresses", metavar="ADDR", nargs="+", help="host[:port] of a member")


def run_join(ctx: Any) -> int:
    """Ask the node to join through each address; fails only if none answered."""
    client = ctx.client()
    params = {"wan": "1"} if ctx.args.wan else {}
    joined, errors = 0, []
    for addr in ctx.args.addresses:
        try:
            client.put("/v1/agent/join/" + urllib.parse.quote(addr, safe=""), **params)
            joined += 1
        except Exception as exc:  # one bad address must not hide the others' outcome
            errors.append(f"{addr}: {exc}")
    if not joined:
        raise InvalidRequest("Error joining address(es): " + "; ".join(errors))
    ctx.say(f"Successfully joined cluster by contacting {joined} nodes.")
    return EXIT_OK


def run_leave(ctx: Any) -> int:
    """Graceful leave of the node the CLI talks to (it shuts down afterwards)."""
    ctx.client().put("/v1/agent/leave")
    ctx.say("Graceful leave complete")
    return EXIT_OK


def configure_force_leave(p: argparse.ArgumentParser) -> None:
    """``force-leave NODE``."""
    p.add_argument("node", metavar="NODE", help="name of a failed member")


def run_force_leave(ctx: Any) -> int:
    """Mark a failed member left."""
    ctx.client().put("/v1/agent/force-leave/" + urllib.parse.quote(ctx.args.node, safe=""))
    return EXIT_OK


# ---------------------------------------------------------------------------- keys


def run_keygen(ctx: Any) -> int:
    """Print a new random 32-byte gossip key (base64), for ``encrypt``."""
    ctx.say(generate_key())
    return EXIT_OK


def configure_keyring(p: argparse.ArgumentParser) -> None:
    """``keyring -list | -install K | -use K | -remove K`` (exactly one)."""
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("-list", "--list", action="store_true", help="list installed keys")
    group.add_argument("-install", "--install", metavar="KEY", help="install a new key")
    group.add_argument("-use", "--use", metavar="KEY", help="make an installed key primary")
    group.add_argument("-remove", "--remove", metavar="KEY", help="remove a key")


def run_keyring(ctx: Any) -> int:
    """Apply the operation cluster-wide (LAN and WAN) and print what Consul prints."""
    client, args = ctx.client(), ctx.args
    if args.list:
        ctx.say("==> Gathering installed encryption keys...")
        for pool in client.get("/v1/operator/keyring") or []:
            ctx.say("")
            ctx.say("WAN:" if pool.get("WAN") else f"{pool.get('Datacenter', '')} (LAN):")
            total = pool.get("NumNodes", 0)
            for key, count in sorted((pool.get("Keys") or {}).items()):
                ctx.say(f"  {key} [{count}/{total}]")
        return EXIT_OK
    for op, method, what in (
        ("install", "POST", "Installing new gossip encryption key..."),
        ("use", "PUT", "Changing primary gossip encryption key..."),
        ("remove", "DELETE", "Removing gossip encryption key..."),
    ):
        key = getattr(args, op)
        if key is not None:
            ctx.say(f"==> {what}")
            client.request(method, "/v1/operator/keyring", {"Key": key})
            return EXIT_OK
    return EXIT_ERROR  # unreachable: argparse requires one of the options
