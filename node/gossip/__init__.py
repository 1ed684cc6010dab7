"""node.gossip: SWIM + Lifeguard membership, memberlist-style.

The pure core (``config``, ``messages``, ``state``, ``suspicion``, ``awareness``,
``broadcast``, ``delegate``, ``protocol``) contains no networking code at all: it takes
bytes and ``now`` and returns actions. The drivers (``transport``, ``runtime``
and ``keyring``) are imported by name, never through this face, so the pure core loads
without the event loop.
"""

from node.gossip.awareness import Awareness
from node.gossip.broadcast import TransmitLimitedQueue, retransmit_limit
from node.gossip.config import GossipConfig
from node.gossip.delegate import Delegate, UserBroadcastQueue
from node.gossip.messages import Address, Decoder, MemberStatus, MessageType
from node.gossip.protocol import (
    Action,
    GossipProtocol,
    MemberChanged,
    MemberReaped,
    SendPacket,
    SendStream,
    push_pull_scale,
)
from node.gossip.state import Member
from node.gossip.suspicion import Suspicion, remaining_suspicion_time, suspicion_timeouts

__all__ = [
    "Action",
    "Address",
    "Awareness",
    "Decoder",
    "Delegate",
    "GossipConfig",
    "GossipProtocol",
    "Member",
    "MemberChanged",
    "MemberReaped",
    "MemberStatus",
    "MessageType",
    "SendPacket",
    "SendStream",
    "Suspicion",
    "TransmitLimitedQueue",
    "UserBroadcastQueue",
    "push_pull_scale",
    "remaining_suspicion_time",
    "retransmit_limit",
    "suspicion_timeouts",
]
