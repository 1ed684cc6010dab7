"""The primary datacenter owns the global state: every node must name the same one.

Rule: a node whose ``primary_datacenter`` differs from a peer's stops with an error
naming both values instead of silently forming its own trust domain (Consul issue
#6847). This module words that error.

Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from node.errors import ConfigError

__all__ = ["mismatch_message", "check_peer_primary"]


def mismatch_message(who: str, other: object, dc: str, mine: str) -> str:
    """The error text: ``who`` names primary ``other``, this node (in ``dc``) names ``mine``."""
    return (
        f"primary_datacenter mismatch: this node (datacenter {dc!r}) has primary_datacenter "
        f"{mine!r}, but {who} names {other!r}; every node of every datacenter must set the "
        f"same primary_datacenter (Consul issue #6847)"
    )


def check_peer_primary(args: Mapping[str, Any], *, dc: str, primary: str) -> None:
    """Refuse a request (``pdc``, ``dc``, ``node``) from a node naming another primary."""
    peer = args.get("pdc")
    if peer != primary:
        where = f"datacenter {args.get('dc')!r} (node {args.get('node')!r})"
        raise ConfigError(mismatch_message(where, peer, dc, primary))
