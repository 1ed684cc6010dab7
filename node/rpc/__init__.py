"""Node-to-node RPC: msgpack calls in ``node.wire`` frames over TCP on ``ports.server``.

Wire: each frame is ``[u32 length][body]``; the body is a msgpack map
(``{"id", "method", "args"}`` → ``{"id", "result"}`` or ``{"id", "error": {"type",
"message", "field"?}}``; ``{"id", "cancel": true}`` when the caller gives up), each frame
sealed with the gossip keyring's AES-GCM envelope (GCM additional data
``b"meshnode-rpc"``) whenever a keyring is set. Remote ``node.errors`` classes
round-trip by name; a call that got no answer raises ``RPCUnreachable`` (a subclass of
``RPCError``). The client keeps a few connections per address open and runs many calls
at once on each, matched by id; a call may block for as long as the caller's
``timeout``, and its handler is cancelled when the caller gives up (cancel frame) or
hangs up (every call of that connection).

Gossip tags that make a member an RPC target (see ``routing``):

- ``dc``   — the member's datacenter name
- ``role`` — ``"server"`` for servers, ``"node"`` for every other agent
- ``port`` — the member's RPC port (decimal); the host is its gossip address

Cluster-wide keyring operations ride this RPC: ``keyops.KEYRING_METHOD``.
"""

from __future__ import annotations

from node.rpc.client import RPCClient, call_datacenter
from node.rpc.codec import MAX_RPC_BYTES, RPC_LABEL, RPCUnreachable
from node.rpc.keyops import (
    KEYRING_METHOD,
    KeyringOp,
    KeyringOpReport,
    apply_keyring_op,
    keyring_handler,
    keyring_op_cluster,
)
from node.rpc.routing import (
    ROLE_NODE,
    ROLE_SERVER,
    TAG_DC,
    TAG_ROLE,
    TAG_RPC_PORT,
    pick_server,
    rpc_address,
    rpc_targets,
    servers,
)
from node.rpc.server import Handler, KeyringProvider, RPCServer

__all__ = [
    "RPCClient",
    "call_datacenter",
    "RPCServer",
    "RPCUnreachable",
    "Handler",
    "KeyringProvider",
    "MAX_RPC_BYTES",
    "RPC_LABEL",
    "KEYRING_METHOD",
    "KeyringOp",
    "KeyringOpReport",
    "apply_keyring_op",
    "keyring_handler",
    "keyring_op_cluster",
    "TAG_DC",
    "TAG_ROLE",
    "TAG_RPC_PORT",
    "ROLE_SERVER",
    "ROLE_NODE",
    "rpc_address",
    "servers",
    "rpc_targets",
    "pick_server",
]
