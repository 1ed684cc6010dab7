"""TLS contexts for Connect from PEM strings, and the SPIFFE check Python's ssl cannot do.

Rule: chain verification is OpenSSL's (client certificate required, chained to the trust
bundle, in its validity period); identity is ours: after the handshake the peer's DER
certificate is read with ``cryptography`` and its URI SAN must be a SPIFFE service id in
our trust domain (naming the expected service when one is expected), else ``TrustError``
and the caller closes the connection. Hostname checking is off because mesh
certificates carry no DNS names; the SNI is only a routing label for gateways.

``ssl`` can load a certificate chain only from a file, so the leaf and key are written
to a private temporary file (in /dev/shm when there is one) that is removed at once.

Cheap per connection: contexts are built once per leaf/roots (the caller keeps them),
the URI SANs of a peer certificate are parsed once per distinct certificate (cached by
its DER bytes), and a client context resumes TLS sessions per upstream endpoint (TLS 1.3
tickets between our own sidecars, as Envoy does). A resumed session still carries the
peer's certificate, so the SPIFFE check runs on every connection all the same; tickets
are only ever offered to the endpoint that issued them, and a server's tickets die with
its listening context, which ``ServerContextSwitch.replace`` renews on rotation. A
remembered session is offered for up to ``SESSION_REUSE`` connections (copying a
session out of Python's ssl is what resumption would otherwise cost most).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import ssl
import tempfile
from collections.abc import Sequence
from typing import TypeVar

from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from node.connect.spiffe import SpiffeID, parse_spiffe_id
from node.errors import InvalidRequest, TrustError

__all__ = [
    "make_client_context",
    "ResumingClientContext",
    "resumption_key",
    "make_server_context",
    "ServerContextSwitch",
    "peer_spiffe_id",
    "check_peer",
]

_SHM = "/dev/shm"
_C = TypeVar("_C", bound=ssl.SSLContext)
# Distinct peer certificates whose URI SANs we remember (a mesh has one leaf per
# service instance, rotated every few days); beyond this the cache starts over.
PEER_CACHE_SIZE = 4096
# Endpoints whose last TLS session a client context remembers.
SESSION_CACHE_SIZE = 4096
# Resumed connections per remembered session before the newest one is taken instead.
# Taking a session costs ~0.2 ms (Python's ssl copies it through DER, peer certificate
# included), a tenth of a sidecar connection; a TLS 1.3 ticket stays valid for its
# whole lifetime, and a refused one makes a full handshake whose session is taken.
SESSION_REUSE = 64

# Set around a dial (e.g. to (address, port, sni)): the session to offer is looked up
# under this key when the TLS object is created, wherever the event loop creates it.
resumption_key: contextvars.ContextVar[object | None] = contextvars.ContextVar(
    "resumption_key", default=None
)


def _load_chain(ctx: ssl.SSLContext, cert_pem: str, key_pem: str) -> None:
    """Load leaf (+ intermediates) and key from PEM strings via a short-lived 0600 file."""
    tmpdir = _SHM if os.path.isdir(_SHM) and os.access(_SHM, os.W_OK) else None
    fd, path = tempfile.mkstemp(prefix="meshnode-leaf-", suffix=".pem", dir=tmpdir)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(cert_pem.strip() + "\n" + key_pem.strip() + "\n")
        ctx.load_cert_chain(path)
    except ssl.SSLError as exc:
        raise TrustError(f"leaf certificate or key cannot be loaded: {exc}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _base(protocol: int, roots_pem: Sequence[str], cls: type[_C]) -> _C:
    if not roots_pem:
        raise TrustError("no CA roots to trust")
    ctx = cls(protocol)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_verify_locations(cadata="\n".join(p.strip() for p in roots_pem) + "\n")
    except ssl.SSLError as exc:
        raise TrustError(f"CA roots cannot be loaded: {exc}") from exc
    return ctx


class ResumingClientContext(ssl.SSLContext):
    """A client context that offers the last session it saw for the same endpoint.

    The endpoint is whatever ``resumption_key`` holds when the TLS object is made;
    without a key nothing is offered. Sessions die with the context (rotation).
    """

    sessions: dict[object, ssl.SSLSession]
    uses_left: dict[object, int]

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        if session is None and not server_side:
            key = resumption_key.get()
            if key is not None:
                session = self.sessions.get(key)
        return super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)

    def wants_session(self, key: object, resumed: bool) -> bool:
        """Whether to take (``remember``) the session of a connection just made to ``key``:
        after a full handshake always, else once every ``SESSION_REUSE`` resumptions."""
        left = self.uses_left.get(key, 0) - 1 if resumed else 0
        if left > 0:
            self.uses_left[key] = left
            return False
        if len(self.uses_left) >= SESSION_CACHE_SIZE and key not in self.uses_left:
            self.uses_left.clear()
        self.uses_left[key] = SESSION_REUSE
        return True

    def remember(self, key: object, sslobj: ssl.SSLObject | None) -> None:
        """Keep ``sslobj``'s session for ``key`` if it can be resumed (has a ticket)."""
        session = sslobj.session if sslobj is not None else None
        if session is None or not session.has_ticket:
            return
        if len(self.sessions) >= SESSION_CACHE_SIZE and key not in self.sessions:
            self.sessions.clear()
        self.sessions[key] = session


def make_client_context(
    cert_pem: str, key_pem: str, roots_pem: Sequence[str]
) -> ResumingClientContext:
    """Client side of mesh mTLS: present the leaf, verify the server against the roots."""
    ctx = _base(ssl.PROTOCOL_TLS_CLIENT, roots_pem, ResumingClientContext)
    ctx.sessions = {}
    ctx.uses_left = {}
    ctx.check_hostname = False  # identity is the SPIFFE id, checked by check_peer
    _load_chain(ctx, cert_pem, key_pem)
    return ctx


def make_server_context(cert_pem: str, key_pem: str, roots_pem: Sequence[str]) -> ssl.SSLContext:
    """Server side of mesh mTLS: present the leaf, require a client cert chained to the roots."""
    ctx = _base(ssl.PROTOCOL_TLS_SERVER, roots_pem, ssl.SSLContext)
    _load_chain(ctx, cert_pem, key_pem)
    return ctx


class ServerContextSwitch:
    """A listening context whose certificates can be replaced without re-binding.

    The listener is created with ``.listening``; each handshake is moved to the
    current context in the servername callback (which OpenSSL calls with or without
    SNI), so a renewed leaf or a new trust bundle applies to the next connection while
    open ones keep theirs.
    """

    __slots__ = ("current", "listening")

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.current = ctx
        self.listening = self._new_listening()

    def _new_listening(self) -> ssl.SSLContext:
        # Session tickets are sealed with this context's keys (OpenSSL keeps the first
        # context as the session context across the switch), so a fresh one on each
        # rotation means no session from before the rotation is ever resumed.
        listening = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        listening.verify_mode = ssl.CERT_REQUIRED
        listening.num_tickets = 1  # our clients keep one session per endpoint
        listening.sni_callback = self._select
        return listening

    def replace(self, ctx: ssl.SSLContext) -> None:
        """Use ``ctx`` for connections whose handshake starts from now on."""
        self.current = ctx
        self.listening = self._new_listening()

    def _select(self, sslobj: ssl.SSLObject, _name: str | None, _ctx: ssl.SSLContext) -> None:
        sslobj.context = self.current


_peer_sans: dict[bytes, tuple[str, ...]] = {}


def _uri_sans(der: bytes) -> tuple[str, ...]:
    """The URI SANs of a DER certificate, parsed once per distinct certificate."""
    sans = _peer_sans.get(der)
    if sans is None:
        sans = _parse_uri_sans(der)
        if len(_peer_sans) >= PEER_CACHE_SIZE:
            _peer_sans.clear()
        _peer_sans[der] = sans
    return sans


def _parse_uri_sans(der: bytes) -> tuple[str, ...]:
    try:
        cert = x509.load_der_x509_certificate(der)
        ext = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    except x509.ExtensionNotFound:
        return ()
    except ValueError as exc:
        raise TrustError(f"peer certificate cannot be parsed: {exc}") from exc
    san = ext.value
    assert isinstance(san, x509.SubjectAlternativeName)
    return tuple(san.get_values_for_type(x509.UniformResourceIdentifier))


def check_peer(
    der: bytes | None,
    *,
    trust_domain: str,
    service: str | None = None,
    datacenter: str | None = None,
) -> SpiffeID:
    """The peer's SPIFFE service id, or ``TrustError`` saying why it is not acceptable."""
    if not der:
        raise TrustError("peer presented no certificate")
    uris = _uri_sans(der)
    if len(uris) != 1:
        raise TrustError(f"peer certificate has {len(uris)} URI SANs, expected 1 SPIFFE id")
    try:
        sid = parse_spiffe_id(uris[0])
    except InvalidRequest as exc:
        raise TrustError(f"peer identity is not a service: {exc}") from exc
    if sid.trust_domain != trust_domain.lower():
        raise TrustError(f"peer {sid.uri} is from trust domain {sid.trust_domain!r}, not ours")
    if service is not None and sid.service != service:
        raise TrustError(f"peer {sid.uri} is not service {service!r}")
    if datacenter is not None and sid.datacenter != datacenter:
        raise TrustError(f"peer {sid.uri} is not in datacenter {datacenter!r}")
    return sid


def peer_spiffe_id(
    sslobj: ssl.SSLObject | ssl.SSLSocket | None,
    *,
    trust_domain: str,
    service: str | None = None,
    datacenter: str | None = None,
) -> SpiffeID:
    """``check_peer`` on the certificate of an established TLS connection."""
    if sslobj is None:
        raise TrustError("connection is not TLS")
    return check_peer(
        sslobj.getpeercert(binary_form=True),
        trust_domain=trust_domain,
        service=service,
        datacenter=datacenter,
    )
