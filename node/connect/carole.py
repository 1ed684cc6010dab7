"""The CA role of a server: what to do next, decided from a view of the CA.

Rule: the primary datacenter's alive server with the smallest name bootstraps the CA
once, after ``bootstrap_delay`` (so that a first push-pull has had time to bring roots
that already exist). Once roots exist, a server follows them: a primary server that
lacks the active root's key fetches it from the one that has it (``CA.RootKey``); a
secondary server that lacks a current intermediate asks the primary to sign one
(``CA.SignIntermediate``). A primary server with nothing missing retires roots that no
live leaf can need any more and prunes the retired ones that have expired.

``step(view) -> Decision`` is the whole decision; ``node.connect.cadriver`` builds the
view, carries the decision out and waits. ``Need`` is the signing material's own answer
(``node.connect.authority.Authority.sync``).

Pure: no I/O, no clock; time arrives in the view.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from node.connect.castate import CAConfig, CARoots, prune_roots, retire_inactive

__all__ = [
    "Need",
    "CAView",
    "Decision",
    "Bootstrap",
    "FetchRootKey",
    "RenewIntermediate",
    "WriteRoots",
    "Idle",
    "step",
    "may_bootstrap",
    "looks_again",
    "retry_wait",
    "primary_servers",
]


class Need(enum.Enum):
    """What a server lacks to sign under the active root."""

    NOTHING = "nothing"
    ROOT_KEY = "root-key"
    INTERMEDIATE = "intermediate"


@dataclass(frozen=True, slots=True, kw_only=True)
class CAView:
    """What one look at the CA sees.

    ``need`` is ``None`` until roots exist. ``primary_servers`` are the alive servers of
    the primary datacenter this server sees on the LAN (this one not included).
    """

    roots: CARoots | None
    config: CAConfig | None
    need: Need | None
    in_primary: bool
    node_name: str
    primary_servers: frozenset[str]
    elapsed: float  # seconds since this server started
    bootstrap_delay: float
    now: datetime


@dataclass(frozen=True, slots=True)
class Bootstrap:
    """Create the CA: a root, the trust domain, the CA configuration."""


@dataclass(frozen=True, slots=True)
class FetchRootKey:
    """Fetch the active root's key from the primary server that has it."""

    roots: CARoots


@dataclass(frozen=True, slots=True)
class RenewIntermediate:
    """Have the primary sign a new intermediate for this (secondary) server."""

    roots: CARoots


@dataclass(frozen=True, slots=True)
class WriteRoots:
    """Replace the roots with ``roots`` (retired or pruned ones)."""

    roots: CARoots


@dataclass(frozen=True, slots=True)
class Idle:
    """Nothing to do until the CA changes or the next look."""


Decision = Bootstrap | FetchRootKey | RenewIntermediate | WriteRoots | Idle
#: Decisions after which the role looks again at once (something it waited for changed).
AGAIN: Final = (Bootstrap, FetchRootKey, RenewIntermediate)


def step(view: CAView) -> Decision:
    """The next thing this server does for the CA (see the module rule)."""
    roots = view.roots
    if roots is None:
        return Bootstrap() if view.in_primary and may_bootstrap(view) else Idle()
    if view.need is Need.ROOT_KEY:
        return FetchRootKey(roots)
    if view.need is Need.INTERMEDIATE:
        return RenewIntermediate(roots)
    if view.in_primary:
        config = view.config or CAConfig(cluster_id=roots.cluster_id)
        retired = retire_inactive(roots, now=view.now, leaf_ttl=config.leaf_cert_ttl)
        updated = prune_roots(retired, view.now)
        if updated != roots:
            return WriteRoots(updated)
    return Idle()


def may_bootstrap(view: CAView) -> bool:
    """After the delay, the smallest name among the primary's alive servers bootstraps."""
    if view.elapsed < view.bootstrap_delay:
        return False
    return min(view.primary_servers | {view.node_name}) == view.node_name


def looks_again(decision: Decision) -> bool:
    """True if the role should look again at once after carrying ``decision`` out."""
    return isinstance(decision, AGAIN)


def retry_wait(
    *, roots_known: bool, wait: float, retry_min: float, bootstrap_delay: float
) -> float:
    """How long to wait before the next look; shorter while the CA does not exist yet."""
    if roots_known:
        return wait
    return min(wait, max(retry_min, bootstrap_delay / 4))


def primary_servers(members: Iterable[tuple[str, bool, str, bool]], primary: str) -> frozenset[str]:
    """Names of alive servers of ``primary`` among (name, is_server, dc, alive) rows."""
    return frozenset(
        name for name, server, dc, alive in members if alive and server and dc == primary
    )
