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

This face imports nothing: callers import ``client``, ``server``, ``codec``, ``routing``
or ``keyops`` by name, so loading one part never loads the event loop with it.
"""
