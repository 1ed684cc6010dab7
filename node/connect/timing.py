"""Delays and bounds of Connect's loops, in seconds (tests shrink them).

Pure.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.state.retry import Retry

__all__ = ["Timing"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Timing:
    """Delays and bounds of the Connect components' loops."""

    bootstrap_delay: float = 2.0  # primary: wait this long for existing roots first
    pull_wait: float = 30.0  # blocking State.Pull wait
    rpc_timeout: float = 10.0  # any other RPC
    retry_min: float = 0.2
    retry_max: float = 30.0
    maintenance: float = 30.0  # roots pruning, tombstone reaping, federation checks
    tombstone_grace: float = 3600.0  # seconds a tombstone is kept before reaping
    leader_wait: float = 5.0  # a write waits this long for a Raft leader, then "No cluster leader"
    registration_wait: float = 3.0  # CA.SignLeaf waits this long for a registration to arrive

    @property
    def retry(self) -> Retry:
        """The loops' retry bounds."""
        return Retry(self.retry_min, self.retry_max)
