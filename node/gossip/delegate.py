"""The seam through which an application (the catalog) rides gossip.

Rule: the gossip core knows nothing of what user payloads mean. It hands inbound user
messages to ``Delegate.notify_msg``, asks ``get_broadcasts`` for payloads to piggyback
(after its own member broadcasts), and carries ``local_state`` / ``merge_remote_state``
blobs in every push-pull (memberlist ``delegate.go``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from node.errors import LocalProtocolError
from node.gossip.broadcast import TransmitLimitedQueue

__all__ = ["Delegate", "UserBroadcastQueue", "MAX_USER_MSG_BYTES"]

#: Largest user broadcast accepted for piggybacking (must fit one packet with headroom).
MAX_USER_MSG_BYTES = 1200


class Delegate(Protocol):
    """What the gossip core calls on its application (all calls are synchronous and quick)."""

    def notify_msg(self, payload: bytes) -> None:
        """A user broadcast arrived (untrusted bytes: validate, never raise)."""
        ...

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        """Payloads to piggyback; each costs ``len + overhead``, all together at most ``limit``."""
        ...

    def local_state(self, join: bool) -> bytes:
        """The application's full state for a push-pull."""
        ...

    def merge_remote_state(self, payload: bytes, join: bool) -> None:
        """A peer's ``local_state`` from a push-pull (untrusted bytes)."""
        ...


class UserBroadcastQueue:
    """A transmit-limited queue for a delegate's own broadcasts.

    ``num_nodes`` is read at each ``get_broadcasts`` so the retransmit limit follows the
    cluster size (pass ``lambda: len(protocol.members())`` or a cheaper counter).
    """

    __slots__ = ("_queue", "_num_nodes")

    def __init__(self, *, retransmit_mult: int, num_nodes: Callable[[], int]) -> None:
        self._queue = TransmitLimitedQueue(retransmit_mult)
        self._num_nodes = num_nodes

    def __len__(self) -> int:
        return len(self._queue)

    def queue(self, payload: bytes, key: object | None = None) -> None:
        """Queue ``payload``; a later payload with the same ``key`` replaces it."""
        if len(payload) > MAX_USER_MSG_BYTES:
            raise LocalProtocolError(
                f"user broadcast of {len(payload)} bytes exceeds {MAX_USER_MSG_BYTES}"
            )
        self._queue.queue(payload, key)

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        """Delegate-compatible: payloads that fit in ``limit``."""
        return self._queue.get_broadcasts(overhead, limit, max(1, self._num_nodes()))
