"""The one exception tree of meshnode.

Rule: domain code raises only these; it never mentions HTTP. ``node/api/errors.py``
maps them to status codes in a single table. Errors caused by a remote peer
(bytes off the wire) are ``RemoteProtocolError``; errors caused by our own caller
are ``LocalProtocolError``.

- NodeError
  - ConfigError                   bad config file / flag (names file, key path, reason)
  - ProtocolError
    - LocalProtocolError          we tried to send something illegal
    - RemoteProtocolError         a peer sent garbage, truncated or oversized data
  - CatalogError
    - NotFound                    unknown service, check, node, entry ...
    - Conflict                    a write that conflicts (CAS failure, duplicate)
    - NoClusterLeader             the owning Raft group has no leader: nothing was applied
  - CAError
    - CertificateExpired
    - TrustError                  chain or SPIFFE id does not verify, CSR refused
  - ProxyError
    - NoRoute                     no endpoint for an SNI / upstream
    - UpstreamUnavailable         endpoints exist but none answered
  - InvalidRequest                a request (HTTP body, CLI arg) is malformed
  - RPCError                      a node-to-node call failed (remote error text kept)
    - RPCUnreachable              the call got no answer (refused, I/O error, timeout)
    - DatacenterUnavailable       no live server in the target datacenter
"""

from __future__ import annotations

__all__ = [
    "NodeError",
    "ConfigError",
    "ProtocolError",
    "LocalProtocolError",
    "RemoteProtocolError",
    "CatalogError",
    "NotFound",
    "Conflict",
    "NoClusterLeader",
    "CAError",
    "CertificateExpired",
    "TrustError",
    "ProxyError",
    "NoRoute",
    "UpstreamUnavailable",
    "InvalidRequest",
    "RPCError",
    "RPCUnreachable",
    "DatacenterUnavailable",
]


class NodeError(Exception):
    """Base of every error meshnode raises on purpose."""


class ConfigError(NodeError):
    """A configuration problem; ``str()`` names the file, the key path and the reason."""

    def __init__(self, reason: str, *, file: str | None = None, key: str | None = None) -> None:
        self.reason = reason
        self.file = file
        self.key = key
        where = ": ".join(p for p in (file, key) if p)
        super().__init__(f"{where}: {reason}" if where else reason)


class ProtocolError(NodeError):
    """Bytes that do not follow a protocol."""


class LocalProtocolError(ProtocolError):
    """We were asked to produce something the protocol forbids."""


class RemoteProtocolError(ProtocolError):
    """A peer sent something the protocol forbids; drop it, count it, carry on."""


class CatalogError(NodeError):
    """A catalog or state-store operation failed."""


class NotFound(CatalogError):
    """The named thing does not exist."""


class Conflict(CatalogError):
    """The write conflicts with current state and was not applied."""


class NoClusterLeader(CatalogError):
    """The servers that own the state have no leader (no quorum): the write was refused."""


class CAError(NodeError):
    """A certificate-authority operation failed."""


class CertificateExpired(CAError):
    """A certificate is outside its validity window."""


class TrustError(CAError):
    """A certificate, chain, CSR or SPIFFE id is not trusted."""


class ProxyError(NodeError):
    """The data plane could not route a connection."""


class NoRoute(ProxyError):
    """Nothing is known that could serve this connection."""


class UpstreamUnavailable(ProxyError):
    """Endpoints are known but none accepted the connection."""


class InvalidRequest(NodeError):
    """A malformed request; ``field`` names the offending field when known."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class RPCError(NodeError):
    """A node-to-node call failed."""


class DatacenterUnavailable(RPCError):
    """No live server of the target datacenter could be reached in time."""


class RPCUnreachable(RPCError):
    """The call never got an answer: connect refused, I/O error or timeout.

    Distinct from an ``RPCError`` the remote handler raised, so a caller may try
    another server only when the first one did not answer.
    """
