"""The Connect certificate authority: roots, intermediates, leaves, chain verification.

Rule: private keys exist only inside ``RootMaterial``, ``CAServer`` and the leaf key a
hosting node generates for itself; none of them ever appears in a ``repr``, a ``str``, a
log line or an exception message, and only ``export_private_material`` (for the sealed
server-to-server channel and ``data_dir``) hands one out, by name. Certificates follow
Consul 1.6's built-in provider (``agent/connect/ca/provider_consul.go``):

- root: EC P-256, self-signed, 10 years, URI SAN ``spiffe://<td>``, CA, KeyUsage
  CertSign|CRLSign|DigitalSignature; root ID = SHA-1 of the DER, lowercase colon-hex;
  SubjectKeyId = SHA-256 of the PKIX public key;
- intermediate (a secondary datacenter's signer): CSR made on the secondary, signed by the
  primary's root: 1 year, path length 0, exactly one URI, the same trust domain;
- leaf: EC P-256 key and CSR made on the hosting node; CN = service, URI SAN = the
  service's SPIFFE id, KeyUsage DigitalSignature|KeyEncipherment|DataEncipherment|
  KeyAgreement, ExtKeyUsage ServerAuth+ClientAuth, valid from one minute ago for
  ``LeafCertTTL`` (72 h by default).

Time is always an input (``now``: aware UTC ``datetime``); no asyncio here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from node.connect.castate import (
    DEFAULT_LEAF_CERT_TTL,
    CAConfig,
    CAConfigRequest,
    CARoot,
    CARoots,
    rotate_roots,
)
from node.connect.spiffe import SigningID, SpiffeID, parse_any_spiffe_id, trust_domain_for
from node.errors import CAError, InvalidRequest, TrustError

__all__ = [
    "ROOT_TTL",
    "INTERMEDIATE_TTL",
    "CLOCK_SKEW",
    "IssuedCert",
    "RootMaterial",
    "CAServer",
    "RegisteredCheck",
    "TrustBundle",
    "colon_hex",
    "serial_hex",
    "key_id",
    "cert_fingerprint",
    "generate_private_key",
    "private_key_to_pem",
    "load_private_key",
    "generate_root",
    "load_root",
    "root_info",
    "make_leaf_csr",
    "make_intermediate_csr",
    "verify_leaf",
    "spiffe_id_from_cert",
    "load_certificates",
    "CAChange",
    "bootstrap_ca",
    "reconfigure_ca",
]

ROOT_TTL: Final = timedelta(days=3652)  # 10 years, leap days included
INTERMEDIATE_TTL: Final = timedelta(days=365)
#: Certificates start this long before "now" so a peer whose clock lags still accepts them.
CLOCK_SKEW: Final = timedelta(minutes=1)
#: Bound on what we parse from a peer or a request (a CSR is ~400 bytes, a chain a few KiB).
MAX_PEM_BYTES: Final = 64 * 1024

RegisteredCheck = Callable[[str, str], bool]
"""``is_registered(node, service)``: is ``service`` registered on ``node``?"""


# --- small helpers --------------------------------------------------------------------------


def colon_hex(data: bytes) -> str:
    """Consul's ``HexString``: lowercase hex bytes joined by ``:``."""
    return data.hex(":")


def _public_der(public_key: Any) -> bytes:
    der: bytes = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


def key_id(public_key: Any) -> bytes:
    """SubjectKeyId as Consul computes it: SHA-256 of the PKIX DER public key."""
    return hashlib.sha256(_public_der(public_key)).digest()


def cert_fingerprint(cert: x509.Certificate) -> str:
    """Root ID: SHA-1 of the certificate DER, lowercase colon-hex."""
    return colon_hex(cert.fingerprint(hashes.SHA1()))  # noqa: S303 - an identifier, as Consul


def serial_hex(serial: int) -> str:
    """Consul's ``EncodeSerialNumber``: the big-endian bytes of the serial, colon-hex."""
    return colon_hex(serial.to_bytes(max(1, (serial.bit_length() + 7) // 8), "big"))


def _utc(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise InvalidRequest("now must be an aware UTC datetime")
    return now.astimezone(UTC)


def generate_private_key() -> ec.EllipticCurvePrivateKey:
    """A fresh EC P-256 key (Consul's default and only agent key type)."""
    return ec.generate_private_key(ec.SECP256R1())


def private_key_to_pem(key: Any) -> str:
    """PEM as Consul hands it out (``-----BEGIN EC PRIVATE KEY-----`` for EC keys)."""
    pem: bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return pem.decode()


def load_private_key(pem: str, *, what: str = "PrivateKey") -> Any:
    """Load an unencrypted EC or RSA private key; a clear error (never the key) on failure."""
    try:
        key = serialization.load_pem_private_key(_pem_bytes(pem, what), password=None)
    except (ValueError, TypeError):
        raise InvalidRequest(f"{what} is not an unencrypted PEM private key", field=what) from None
    _check_key_type(key.public_key(), what)
    return key


def _pem_bytes(pem: str | bytes, what: str) -> bytes:
    data = pem.encode() if isinstance(pem, str) else pem
    if len(data) > MAX_PEM_BYTES:
        raise InvalidRequest(f"{what} is larger than {MAX_PEM_BYTES} bytes", field=what)
    return data


_EC_CURVES: Final = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)


def _check_key_type(public_key: Any, what: str) -> None:
    """Accept Consul's key types: EC P-256/384/521 or RSA of at least 2048 bits."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if isinstance(public_key.curve, _EC_CURVES):
            return
        raise TrustError(f"{what} uses EC curve {public_key.curve.name}, not P-256/384/521")
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size >= 2048:
            return
        raise TrustError(f"{what} is an RSA key of {public_key.key_size} bits (< 2048)")
    raise TrustError(f"{what} has an unsupported key type {type(public_key).__name__}")


def _key_type_bits(public_key: Any) -> tuple[str, int]:
    if isinstance(public_key, rsa.RSAPublicKey):
        return "rsa", public_key.key_size
    return "ec", public_key.curve.key_size


def load_certificates(pem: str | bytes, *, what: str = "certificate") -> list[x509.Certificate]:
    """Every certificate in a PEM bundle (leaf first, as a ``CertPEM`` is); at least one."""
    try:
        certs = x509.load_pem_x509_certificates(_pem_bytes(pem, what))
    except ValueError:
        raise InvalidRequest(f"{what} is not a PEM certificate", field=what) from None
    return certs


def _cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _load_csr(
    csr_pem: str | bytes, *, proof_of_possession: bool = True
) -> tuple[x509.CertificateSigningRequest, Any]:
    """Parse a CSR and (normally) prove the requester holds its key; returns (csr, key)."""
    try:
        csr = x509.load_pem_x509_csr(_pem_bytes(csr_pem, "CSR"))
    except ValueError:
        raise InvalidRequest("CSR is not a PEM certificate request", field="CSR") from None
    public_key = csr.public_key()
    _check_key_type(public_key, "CSR key")
    if proof_of_possession and not csr.is_signature_valid:
        raise TrustError("CSR signature does not verify (no proof of key possession)")
    return csr, public_key


def _csr_single_uri(csr: x509.CertificateSigningRequest) -> str:
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise TrustError(
            "CSR has no SubjectAlternativeName; exactly one SPIFFE URI is required"
        ) from None
    except ValueError as exc:  # malformed extensions in a CSR that still self-verifies
        raise TrustError(f"CSR extensions are malformed: {exc}") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1 or len(san) != 1:
        raise TrustError(f"CSR must carry exactly one URI SAN and nothing else, got {len(san)}")
    return uris[0]


def _uri_san(uri: str) -> x509.SubjectAlternativeName:
    return x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)])


def _sign(builder: x509.CertificateBuilder, key: Any) -> x509.Certificate:
    return builder.sign(key, hashes.SHA256())


# --- roots ----------------------------------------------------------------------------------


class RootMaterial:
    """A root certificate and its private key (primary servers only)."""

    __slots__ = ("_key", "_cert", "_info")

    def __init__(self, key: Any, cert: x509.Certificate) -> None:
        self._key = key
        self._cert = cert
        self._info = root_info(cert)

    @property
    def cert(self) -> x509.Certificate:
        """The root certificate."""
        return self._cert

    @property
    def info(self) -> CARoot:
        """The public description that goes into the ``ca-roots`` entry."""
        return self._info

    @property
    def key(self) -> Any:
        """The private key; for ``CAServer`` only."""
        return self._key

    def export_private_material(self) -> dict[str, str]:
        """Key and cert PEMs for the sealed server channel / ``data_dir``; never log this."""
        return {"private_key": private_key_to_pem(self._key), "root_cert": _cert_pem(self._cert)}

    def __repr__(self) -> str:
        return f"RootMaterial(id={self._info.id!r})"

    __str__ = __repr__


def _root_name(serial: int) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Consul CA {serial}")])


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def generate_root(*, trust_domain: str, now: datetime, key: Any = None) -> RootMaterial:
    """A new self-signed root for ``trust_domain`` (EC P-256 unless ``key`` is given)."""
    now = _utc(now)
    key = key or generate_private_key()
    signing = SigningID(trust_domain=trust_domain)
    serial = x509.random_serial_number() >> 96  # 63 bits: short CN, still unique enough
    skid = key_id(key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_root_name(serial))
        .issuer_name(_root_name(serial))
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + ROOT_TTL)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(_uri_san(signing.uri), critical=False)
        .add_extension(x509.SubjectKeyIdentifier(skid), critical=False)
        .add_extension(_akid(skid), critical=False)
    )
    return RootMaterial(key, _sign(builder, key))


def _akid(issuer_skid: bytes) -> x509.AuthorityKeyIdentifier:
    return x509.AuthorityKeyIdentifier(
        key_identifier=issuer_skid, authority_cert_issuer=None, authority_cert_serial_number=None
    )


def _skid_of(cert: x509.Certificate) -> bytes:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return key_id(cert.public_key())


def root_info(cert: x509.Certificate) -> CARoot:
    """The public ``CARoot`` record of a root certificate."""
    kind, bits = _key_type_bits(cert.public_key())
    return CARoot(
        id=cert_fingerprint(cert),
        serial_number=cert.serial_number,
        signing_key_id=colon_hex(_skid_of(cert)),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        root_cert=_cert_pem(cert),
        private_key_type=kind,
        private_key_bits=bits,
    )


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _same_public_key(a: Any, b: Any) -> bool:
    return _public_der(a) == _public_der(b)


def load_root(
    *, private_key_pem: str, root_cert_pem: str, trust_domain: str, now: datetime
) -> RootMaterial:
    """Bring-your-own root: check that key and cert match and the cert can act as a root."""
    key = load_private_key(private_key_pem, what="Config.PrivateKey")
    certs = load_certificates(root_cert_pem, what="Config.RootCert")
    if len(certs) != 1:
        raise InvalidRequest("Config.RootCert must hold exactly one certificate")
    cert = certs[0]
    if not _same_public_key(key.public_key(), cert.public_key()):
        raise InvalidRequest("Config.PrivateKey does not match Config.RootCert", field="Config")
    if not _is_ca(cert):
        raise InvalidRequest("Config.RootCert is not a CA certificate (BasicConstraints CA)")
    now = _utc(now)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise InvalidRequest("Config.RootCert is not valid now", field="Config.RootCert")
    _check_root_trust_domain(cert, trust_domain)
    return RootMaterial(key, cert)


def _check_root_trust_domain(cert: x509.Certificate, trust_domain: str) -> None:
    """A BYO root may carry no SPIFFE URI; if it carries one, it must be ours."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.lower().startswith("spiffe://") and uri.lower() != f"spiffe://{trust_domain}":
            raise InvalidRequest(
                f"Config.RootCert names trust domain {uri!r}, this cluster is "
                f"spiffe://{trust_domain}"
            )


# --- CSRs (made by the key's owner) ---------------------------------------------------------


def make_leaf_csr(identity: SpiffeID, key: Any = None) -> tuple[Any, str]:
    """Key and CSR PEM for a service leaf: URI SAN only, as Consul's agent makes it."""
    key = key or generate_private_key()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(_uri_san(identity.uri), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, csr.public_bytes(serialization.Encoding.PEM).decode()


def make_intermediate_csr(
    *, trust_domain: str, datacenter: str, key: Any = None
) -> tuple[Any, str]:
    """Key and CSR PEM for a secondary datacenter's signing intermediate."""
    key = key or generate_private_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Consul CA {datacenter}")])
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(name)
        .add_extension(_uri_san(SigningID(trust_domain=trust_domain).uri), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, csr.public_bytes(serialization.Encoding.PEM).decode()


# --- signing --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class IssuedCert:
    """A signed leaf: ``cert_pem`` is the leaf followed by any intermediate (Consul ``CertPEM``)."""

    serial_number: str
    cert_pem: str
    service: str
    service_uri: str
    valid_after: datetime
    valid_before: datetime
    root_id: str


_LEAF_KEY_USAGE: Final = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=True,
    data_encipherment=True,
    key_agreement=True,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)
_LEAF_EKU: Final = x509.ExtendedKeyUsage(
    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
)
_LEAF_BASIC: Final = x509.BasicConstraints(ca=False, path_length=None)
_INTERMEDIATE_BASIC: Final = x509.BasicConstraints(ca=True, path_length=0)


class CAServer:
    """The signing side of one datacenter's CA: the root in the primary, an intermediate in
    a secondary. Holds the signing key; ``repr``/``str`` never show it.

    ``is_registered(node, service)`` is asked before a leaf is signed, so a node can only
    obtain certificates for services registered on it.
    """

    __slots__ = (
        "_key",
        "_cert",
        "_chain_pems",
        "_root_id",
        "_datacenter",
        "_signing",
        "_leaf_ttl",
        "_is_registered",
        "_max_leaf_expiry",
        "_is_root",
        "_skid",
        "_issuer",
        "_verify_csr_signatures",
    )

    def __init__(
        self,
        *,
        key: Any,
        cert: x509.Certificate,
        root_id: str,
        chain_pems: Sequence[str],
        datacenter: str,
        trust_domain: str,
        is_registered: RegisteredCheck,
        leaf_ttl: timedelta = DEFAULT_LEAF_CERT_TTL,
    ) -> None:
        if not _same_public_key(key.public_key(), cert.public_key()):
            raise CAError("signing key does not match the signing certificate")
        self._key = key
        self._cert = cert
        self._chain_pems = tuple(chain_pems)
        self._root_id = root_id
        self._datacenter = datacenter
        self._signing = SigningID(trust_domain=trust_domain)
        self._leaf_ttl = leaf_ttl
        self._is_registered = is_registered
        self._max_leaf_expiry: datetime | None = None
        self._is_root = not self._chain_pems
        self._skid = _skid_of(cert)
        self._issuer = cert.subject
        self._verify_csr_signatures = False

    @classmethod
    def primary(
        cls,
        root: RootMaterial,
        *,
        datacenter: str,
        trust_domain: str,
        is_registered: RegisteredCheck,
        leaf_ttl: timedelta = DEFAULT_LEAF_CERT_TTL,
    ) -> CAServer:
        """The primary datacenter's CA: signs leaves and intermediates with the root."""
        return cls(
            key=root.key,
            cert=root.cert,
            root_id=root.info.id,
            chain_pems=(),
            datacenter=datacenter,
            trust_domain=trust_domain,
            is_registered=is_registered,
            leaf_ttl=leaf_ttl,
        )

    @classmethod
    def secondary(
        cls,
        *,
        key: Any,
        intermediate_pem: str,
        root_pem: str,
        datacenter: str,
        trust_domain: str,
        is_registered: RegisteredCheck,
        now: datetime,
        leaf_ttl: timedelta = DEFAULT_LEAF_CERT_TTL,
    ) -> CAServer:
        """A secondary's CA from its key and the intermediate the primary signed."""
        inter = _single_cert(intermediate_pem, "intermediate")
        root = _single_cert(root_pem, "root")
        try:
            inter.verify_directly_issued_by(root)
        except (ValueError, TypeError, InvalidSignature):
            raise TrustError("intermediate was not issued by the primary's root") from None
        if not _utc(now) <= inter.not_valid_after_utc:
            raise TrustError("intermediate has expired")
        return cls(
            key=key,
            cert=inter,
            root_id=cert_fingerprint(root),
            chain_pems=(intermediate_pem,),
            datacenter=datacenter,
            trust_domain=trust_domain,
            is_registered=is_registered,
            leaf_ttl=leaf_ttl,
        )

    # read-only views
    @property
    def datacenter(self) -> str:
        """The datacenter whose leaves this CA signs."""
        return self._datacenter

    @property
    def trust_domain(self) -> str:
        """The trust domain of every identity it signs."""
        return self._signing.trust_domain

    @property
    def root_id(self) -> str:
        """ID of the root this CA's chain ends in."""
        return self._root_id

    @property
    def signing_key_id(self) -> str:
        """SubjectKeyId of the signing certificate, colon-hex (Consul ``SigningKeyID``)."""
        return colon_hex(self._skid)

    @property
    def signing_cert_pem(self) -> str:
        """The signing certificate (root or intermediate)."""
        return _cert_pem(self._cert)

    @property
    def max_leaf_expiry(self) -> datetime | None:
        """Latest ``NotAfter`` of any leaf signed so far (feeds ``note_leaf_expiry``)."""
        return self._max_leaf_expiry

    @property
    def leaf_ttl(self) -> timedelta:
        """Lifetime of new leaves."""
        return self._leaf_ttl

    @property
    def verify_csr_signatures(self) -> bool:
        """Whether leaf CSRs must prove possession of their key (default False).

        Off by default, as in Consul (``ConnectCA.Sign`` never checks the CSR signature):
        the check costs one ECDSA verification per leaf, more CPU than the signature
        itself, and buys nothing here. The requester is authenticated by the sealed RPC,
        the registration check authorises the identity, and a certificate for a public
        key the requester does not hold is useless to it (it cannot complete a TLS
        handshake with it). Set it to True to demand the proof anyway. Intermediates are
        always checked.
        """
        return self._verify_csr_signatures

    @verify_csr_signatures.setter
    def verify_csr_signatures(self, value: bool) -> None:
        self._verify_csr_signatures = bool(value)

    def set_leaf_ttl(self, ttl: timedelta) -> None:
        """Apply a new ``LeafCertTTL`` (already validated by ``CAConfig``)."""
        self._leaf_ttl = ttl

    def sign_leaf(self, csr_pem: str, requester_node: str, now: datetime) -> IssuedCert:
        """Check and sign a service CSR from ``requester_node``.

        Refuses (``TrustError``) a CSR whose SPIFFE id is for another trust domain or
        datacenter, or for a service not registered on ``requester_node``.
        """
        now = _utc(now)
        csr, public_key = _load_csr(csr_pem, proof_of_possession=self._verify_csr_signatures)
        identity = self._leaf_identity(csr, requester_node)
        not_before = now - CLOCK_SKEW
        not_after = min(not_before + self._leaf_ttl, self._cert.not_valid_after_utc)
        if not_after <= now:
            raise CAError("the signing certificate has expired; cannot issue leaves")
        serial = x509.random_serial_number()
        builder = self._leaf_builder(public_key, identity, serial, not_before, not_after)
        cert = _sign(builder, self._key)
        if self._max_leaf_expiry is None or not_after > self._max_leaf_expiry:
            self._max_leaf_expiry = not_after
        return IssuedCert(
            serial_number=serial_hex(serial),
            cert_pem=_cert_pem(cert) + "".join(self._chain_pems),
            service=identity.service,
            service_uri=identity.uri,
            valid_after=not_before,
            valid_before=not_after,
            root_id=self._root_id,
        )

    def _leaf_identity(self, csr: x509.CertificateSigningRequest, node: str) -> SpiffeID:
        uri = _csr_single_uri(csr)
        try:
            identity = parse_any_spiffe_id(uri)
        except InvalidRequest as exc:
            raise TrustError(f"CSR URI is not a SPIFFE id: {exc}") from None
        if not isinstance(identity, SpiffeID):
            raise TrustError(f"CSR URI {uri!r} is a CA identity, not a service")
        if not self._signing.can_sign(identity):
            raise TrustError(
                f"CSR trust domain {identity.trust_domain!r} is not this cluster's "
                f"{self.trust_domain!r}"
            )
        if identity.datacenter != self._datacenter:
            raise TrustError(
                f"CSR is for datacenter {identity.datacenter!r}; this CA signs for "
                f"{self._datacenter!r}"
            )
        if not self._is_registered(node, identity.service):
            raise TrustError(f"service {identity.service!r} is not registered on node {node!r}")
        return identity

    def _leaf_builder(
        self,
        public_key: Any,
        identity: SpiffeID,
        serial: int,
        not_before: datetime,
        not_after: datetime,
    ) -> x509.CertificateBuilder:
        # X.509 caps a CommonName at 64 characters; the full name is in the URI SAN anyway.
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity.service[:64])])
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._issuer)
            .public_key(public_key)
            .serial_number(serial)
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(_LEAF_BASIC, critical=True)
            .add_extension(_LEAF_KEY_USAGE, critical=True)
            .add_extension(_LEAF_EKU, critical=False)
            .add_extension(_uri_san(identity.uri), critical=False)
            .add_extension(x509.SubjectKeyIdentifier(key_id(public_key)), critical=False)
            .add_extension(_akid(self._skid), critical=False)
        )

    def sign_intermediate(self, csr_pem: str, now: datetime) -> str:
        """Sign a secondary datacenter's intermediate CSR (primary only); returns its PEM."""
        if not self._is_root:
            raise CAError("only the primary datacenter's root signs intermediates")
        now = _utc(now)
        csr, public_key = _load_csr(csr_pem)
        uri = _csr_single_uri(csr)
        try:
            signing = parse_any_spiffe_id(uri)
        except InvalidRequest as exc:
            raise TrustError(f"intermediate CSR URI is not a SPIFFE id: {exc}") from None
        if not isinstance(signing, SigningID):
            raise TrustError(f"intermediate CSR URI {uri!r} is a service, not a CA identity")
        if signing.trust_domain != self.trust_domain:
            raise TrustError(
                f"intermediate CSR trust domain {signing.trust_domain!r} is not this "
                f"cluster's {self.trust_domain!r}"
            )
        not_after = min(now + INTERMEDIATE_TTL, self._cert.not_valid_after_utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(self._issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(not_after)
            .add_extension(_INTERMEDIATE_BASIC, critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            .add_extension(_uri_san(signing.uri), critical=False)
            .add_extension(x509.SubjectKeyIdentifier(key_id(public_key)), critical=False)
            .add_extension(_akid(self._skid), critical=False)
        )
        return _cert_pem(_sign(builder, self._key))

    def export_private_material(self) -> dict[str, Any]:
        """Signing key, cert and chain for the sealed server channel / ``data_dir``."""
        return {
            "private_key": private_key_to_pem(self._key),
            "signing_cert": _cert_pem(self._cert),
            "chain": list(self._chain_pems),
            "root_id": self._root_id,
        }

    @classmethod
    def from_private_material(
        cls,
        material: Mapping[str, Any],
        *,
        datacenter: str,
        trust_domain: str,
        is_registered: RegisteredCheck,
        leaf_ttl: timedelta = DEFAULT_LEAF_CERT_TTL,
    ) -> CAServer:
        """Rebuild a CA from ``export_private_material`` output (restart, another server)."""
        try:
            key_pem, cert_pem = material["private_key"], material["signing_cert"]
            chain, root_id = list(material["chain"]), str(material["root_id"])
        except (KeyError, TypeError):
            raise InvalidRequest(
                "CA material lacks private_key/signing_cert/chain/root_id"
            ) from None
        if not all(isinstance(p, str) for p in chain):
            raise InvalidRequest("CA material chain must be a list of PEM strings")
        return cls(
            key=load_private_key(key_pem, what="CA private key"),
            cert=_single_cert(cert_pem, "signing certificate"),
            root_id=root_id,
            chain_pems=chain,
            datacenter=datacenter,
            trust_domain=trust_domain,
            is_registered=is_registered,
            leaf_ttl=leaf_ttl,
        )

    def __repr__(self) -> str:
        role = "root" if self._is_root else "intermediate"
        return (
            f"CAServer(dc={self._datacenter!r}, trust_domain={self.trust_domain!r}, "
            f"signer={role}, root_id={self._root_id!r})"
        )

    __str__ = __repr__


def _single_cert(pem: str, what: str) -> x509.Certificate:
    certs = load_certificates(pem, what=what)
    if len(certs) != 1:
        raise InvalidRequest(f"{what} PEM must hold exactly one certificate, got {len(certs)}")
    return certs[0]


# --- verification ---------------------------------------------------------------------------


def spiffe_id_from_cert(cert: x509.Certificate) -> SpiffeID:
    """The service identity in a leaf's URI SAN; ``TrustError`` if there is not exactly one."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        raise TrustError("certificate has no usable SubjectAlternativeName") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise TrustError(f"certificate must carry exactly one URI SAN, has {len(uris)}")
    try:
        return SpiffeID.parse(uris[0])
    except InvalidRequest as exc:
        raise TrustError(f"certificate URI is not a service SPIFFE id: {exc}") from None


class TrustBundle:
    """Trusted roots prepared once, then used to verify many leaves (sidecars, tests)."""

    __slots__ = ("_store", "_count")

    def __init__(self, roots: Iterable[str | x509.Certificate]) -> None:
        certs = [r if isinstance(r, x509.Certificate) else _single_cert(r, "root") for r in roots]
        if not certs:
            raise TrustError("no trusted roots")
        self._store = Store(certs)
        self._count = len(certs)

    def verify(
        self,
        leaf: str | bytes | x509.Certificate,
        intermediates: Sequence[str] = (),
        *,
        now: datetime,
    ) -> SpiffeID:
        """Verify ``leaf`` (PEM, DER or parsed; a PEM may carry its chain) at ``now``."""
        leaf_cert, chain = _leaf_and_chain(leaf)
        for pem in intermediates:
            chain.extend(load_certificates(pem, what="intermediate"))
        verifier = PolicyBuilder().store(self._store).time(_utc(now)).build_client_verifier()
        try:
            verifier.verify(leaf_cert, chain)
        except VerificationError as exc:
            raise TrustError(f"certificate chain does not verify: {exc}") from None
        return spiffe_id_from_cert(leaf_cert)

    def __repr__(self) -> str:
        return f"TrustBundle(roots={self._count})"


def _leaf_and_chain(
    leaf: str | bytes | x509.Certificate,
) -> tuple[x509.Certificate, list[x509.Certificate]]:
    if isinstance(leaf, x509.Certificate):
        return leaf, []
    if isinstance(leaf, bytes) and not leaf.lstrip().startswith(b"-----"):
        try:
            return x509.load_der_x509_certificate(leaf), []
        except ValueError:
            raise TrustError("peer certificate is not valid DER") from None
    certs = load_certificates(leaf, what="leaf certificate")
    return certs[0], certs[1:]


def verify_leaf(
    leaf_pem: str | bytes, intermediates: Sequence[str], roots: Iterable[str], now: datetime
) -> SpiffeID:
    """Verify a leaf (and its chain) against ``roots`` at ``now``; return its SPIFFE id."""
    return TrustBundle(roots).verify(leaf_pem, intermediates, now=now)


# --- bootstrap and reconfiguration (what the primary's servers do) ---------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CAChange:
    """The outcome of a CA bootstrap or reconfiguration, ready to write and to use.

    ``roots`` and ``config`` go into the global state (``ca-roots``, ``ca-config``);
    ``new_root`` (private key included) goes only to the primary's servers, which build a
    ``CAServer.primary`` from it. ``new_root`` is ``None`` when the active root is unchanged.
    """

    roots: CARoots
    config: CAConfig
    new_root: RootMaterial | None = field(default=None, repr=False)


def bootstrap_ca(*, cluster_id: str, now: datetime, config: CAConfig | None = None) -> CAChange:
    """First start of the primary: cluster id → trust domain, a new root, the roots entry."""
    trust_domain = trust_domain_for(cluster_id)
    config = replace(config or CAConfig(), cluster_id=cluster_id)
    root = generate_root(trust_domain=trust_domain, now=now)
    roots = rotate_roots(
        None, root.info, now=now, leaf_ttl=config.leaf_cert_ttl,
        cluster_id=cluster_id, trust_domain=trust_domain,
    )  # fmt: skip
    return CAChange(roots=roots, config=config, new_root=root)


def reconfigure_ca(
    request: CAConfigRequest, *, roots: CARoots, config: CAConfig, now: datetime
) -> CAChange:
    """``PUT /v1/connect/ca/configuration`` on the primary.

    The cluster id never changes. A ``PrivateKey`` + ``RootCert`` pair (validated by
    ``load_root``) becomes the new active root unless it already is; the old root stays
    trusted until every leaf it signed, under the old or new TTL, has expired. Any other
    change (``LeafCertTTL``, ``RotationPeriod``) keeps the root. Bad input raises before
    anything is returned, so nothing is half-applied.
    """
    new_config = replace(request.config, cluster_id=config.cluster_id)
    if request.private_key_pem is None or request.root_cert_pem is None:
        return CAChange(roots=roots, config=new_config)
    root = load_root(
        private_key_pem=request.private_key_pem,
        root_cert_pem=request.root_cert_pem,
        trust_domain=roots.trust_domain,
        now=now,
    )
    if root.info.id == roots.active_root_id:
        return CAChange(roots=roots, config=new_config)
    if roots.root(root.info.id) is not None:
        raise InvalidRequest(
            f"root {root.info.id} is already in the trust bundle; it cannot be made active again"
        )
    rotated = rotate_roots(
        roots, root.info, now=now,
        leaf_ttl=max(config.leaf_cert_ttl, new_config.leaf_cert_ttl),
        cluster_id=roots.cluster_id, trust_domain=roots.trust_domain,
    )  # fmt: skip
    return CAChange(roots=rotated, config=new_config, new_root=root)
