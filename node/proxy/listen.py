"""Listening sockets for the data plane's listeners.

Rule: a listener that cannot bind says why in a ``ProxyError`` naming the listener and
the address (the manager shows it on the proxy's health); it never raises ``OSError``.
"""

from __future__ import annotations

import errno
import socket

from node.errors import ProxyError

__all__ = ["ACCEPT_BATCH", "LISTEN_BACKLOG", "bind_listener"]

ACCEPT_BATCH = 64  # accepts per readiness callback; bounds one callback's work
LISTEN_BACKLOG = 4096


def bind_listener(address: str, port: int, what: str) -> socket.socket:
    """A non-blocking listening socket, or ``ProxyError`` saying why it cannot be bound."""
    host = address or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, backlog=LISTEN_BACKLOG)
    except OSError as exc:
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise ProxyError(f"{what}: cannot listen on {host}:{port}: {reason}") from exc
    sock.setblocking(False)
    return sock
