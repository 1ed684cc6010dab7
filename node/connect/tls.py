"""TLS contexts for Connect from PEM strings, and the SPIFFE check Python's ssl cannot do.

Rule: chain verification is OpenSSL's (client certificate required, chained to the trust
bundle, in its validity period); identity is ours: after the handshake the peer's DER
certificate is read with ``cryptography`` and its URI SAN must be a SPIFFE service id in
our trust domain (naming the expected service when one is expected), else ``TrustError``
and the caller closes the connection. Hostname checking is off because mesh
certificates carry no DNS names; the SNI is only a routing label for gateways.

``ssl`` can load a certificate chain only from a file, so the leaf and key are written
to a private temporary file (in /dev/shm when there is one) that is removed at once.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
from collections.abc import Sequence

from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from node.connect.spiffe import SpiffeID, parse_spiffe_id
from node.errors import InvalidRequest, TrustError

__all__ = [
    "make_client_context",
    "make_server_context",
    "ServerContextSwitch",
    "peer_spiffe_id",
    "check_peer",
]

_SHM = "/dev/shm"


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


def _base(protocol: int, roots_pem: Sequence[str]) -> ssl.SSLContext:
    if not roots_pem:
        raise TrustError("no CA roots to trust")
    ctx = ssl.SSLContext(protocol)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_verify_locations(cadata="\n".join(p.strip() for p in roots_pem) + "\n")
    except ssl.SSLError as exc:
        raise TrustError(f"CA roots cannot be loaded: {exc}") from exc
    return ctx


def make_client_context(cert_pem: str, key_pem: str, roots_pem: Sequence[str]) -> ssl.SSLContext:
    """Client side of mesh mTLS: present the leaf, verify the server against the roots."""
    ctx = _base(ssl.PROTOCOL_TLS_CLIENT, roots_pem)
    ctx.check_hostname = False  # identity is the SPIFFE id, checked by check_peer
    _load_chain(ctx, cert_pem, key_pem)
    return ctx


def make_server_context(cert_pem: str, key_pem: str, roots_pem: Sequence[str]) -> ssl.SSLContext:
    """Server side of mesh mTLS: present the leaf, require a client cert chained to the roots."""
    ctx = _base(ssl.PROTOCOL_TLS_SERVER, roots_pem)
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
        self.listening = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.listening.verify_mode = ssl.CERT_REQUIRED
        self.listening.sni_callback = self._select

    def replace(self, ctx: ssl.SSLContext) -> None:
        """Use ``ctx`` for connections whose handshake starts from now on."""
        self.current = ctx

    def _select(self, sslobj: ssl.SSLObject, _name: str | None, _ctx: ssl.SSLContext) -> None:
        sslobj.context = self.current


def _uri_sans(der: bytes) -> list[str]:
    try:
        cert = x509.load_der_x509_certificate(der)
        ext = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    except x509.ExtensionNotFound:
        return []
    except ValueError as exc:
        raise TrustError(f"peer certificate cannot be parsed: {exc}") from exc
    san = ext.value
    assert isinstance(san, x509.SubjectAlternativeName)
    return list(san.get_values_for_type(x509.UniformResourceIdentifier))


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
