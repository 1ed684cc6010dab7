"""Several gossip delegates on one pool: channels chosen by one leading byte.

Rule: a LAN pool has one ``Delegate`` slot, but several applications ride it (the
catalog, Connect's global state). ``DelegateMux`` is that one delegate; each application
registers on a channel number (append-only constants below, never renumbered). Every
user broadcast is ``[channel u8][payload]``; push-pull state is a msgpack map
``{channel: bytes}``. Broadcast space is shared fairly: each ``get_broadcasts`` call
rotates which channel asks first and first offers every channel an equal share of the
budget, then hands what is left over to whoever still has something to send. Input for
a channel this node does not know (a newer peer) is dropped and counted, never raised.
Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from node.errors import LocalProtocolError, RemoteProtocolError
from node.gossip.delegate import Delegate
from node.wire import pack, unpack

__all__ = [
    "DelegateMux",
    "CHANNEL_CATALOG",
    "CHANNEL_GLOBAL_STATE",
    "CHANNEL_EVENTS",
    "CHANNEL_BYTES",
]

#: Channel of the catalog's ``CatalogSync`` (node records of the datacenter).
CHANNEL_CATALOG = 1
#: Channel of Connect's replicated global state (CA roots, intentions, config entries).
CHANNEL_GLOBAL_STATE = 2
#: Channel of user events (``node.userevents``, Serf's user events).
CHANNEL_EVENTS = 3
#: Bytes the mux adds in front of every user broadcast.
CHANNEL_BYTES = 1


class DelegateMux:
    """A ``Delegate`` that routes to per-channel delegates."""

    __slots__ = ("_channels", "_order", "_turn", "_stats")

    def __init__(self) -> None:
        self._channels: dict[int, Delegate] = {}
        self._order: list[int] = []
        self._turn = 0
        self._stats: dict[str, int] = {}

    def add_channel(self, channel: int, delegate: Delegate) -> None:
        """Register ``delegate`` on ``channel`` (1..255, once; before the pool runs)."""
        if not 1 <= channel <= 255:
            raise LocalProtocolError(f"gossip channel {channel} is outside 1..255")
        if channel in self._channels:
            raise LocalProtocolError(f"gossip channel {channel} is already registered")
        self._channels[channel] = delegate
        self._order = sorted(self._channels)

    def channel(self, channel: int) -> Delegate | None:
        """The delegate on ``channel``, if any."""
        return self._channels.get(channel)

    @property
    def stats(self) -> Mapping[str, int]:
        """Counters: dropped_empty, dropped_unknown_channel, dropped_malformed_state."""
        return MappingProxyType(dict(self._stats))

    # ------------------------------------------------------------------ Delegate

    def notify_msg(self, payload: bytes) -> None:
        """Hand a user broadcast to its channel's delegate (without the channel byte)."""
        if not payload:
            self._count("dropped_empty")
            return
        delegate = self._channels.get(payload[0])
        if delegate is None:
            self._count("dropped_unknown_channel")
            return
        delegate.notify_msg(payload[CHANNEL_BYTES:])

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        """Broadcasts of every channel, prefixed with the channel byte, within ``limit``."""
        if not self._order:
            return []
        start = self._turn % len(self._order)
        self._turn += 1
        order = self._order[start:] + self._order[:start]
        cost = overhead + CHANNEL_BYTES
        out: list[bytes] = []
        remaining = limit
        # First pass: an equal share each, so one busy channel cannot starve another.
        for i, channel in enumerate(order):
            share = remaining // (len(order) - i)
            remaining -= self._take(channel, cost, share, out)
        # Second pass: whatever is left goes to anyone with more to say.
        for channel in order:
            if remaining <= cost:
                break
            remaining -= self._take(channel, cost, remaining, out)
        return out

    def local_state(self, join: bool) -> bytes:
        """``{channel: state}`` of every channel, for a push-pull."""
        return pack({ch: self._channels[ch].local_state(join) for ch in self._order})

    def merge_remote_state(self, payload: bytes, join: bool) -> None:
        """Split a peer's push-pull state by channel (untrusted bytes)."""
        try:
            states = unpack(payload)
        except RemoteProtocolError:
            self._count("dropped_malformed_state")
            return
        if not isinstance(states, dict):
            self._count("dropped_malformed_state")
            return
        for channel, state in states.items():
            delegate = self._channels.get(channel) if isinstance(channel, int) else None
            if delegate is None:
                self._count("dropped_unknown_channel")
            elif not isinstance(state, bytes):
                self._count("dropped_malformed_state")
            else:
                delegate.merge_remote_state(state, join)

    # ------------------------------------------------------------------ internals

    def _take(self, channel: int, cost: int, budget: int, out: list[bytes]) -> int:
        if budget <= cost:
            return 0
        prefix = bytes([channel])
        used = 0
        for payload in self._channels[channel].get_broadcasts(cost, budget):
            used += len(payload) + cost
            out.append(prefix + payload)
        return used

    def _count(self, key: str) -> None:
        self._stats[key] = self._stats.get(key, 0) + 1
