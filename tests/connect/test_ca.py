"""The CA: certificate fields as Consul makes them, chains verified two ways, refusals."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from node.connect import SpiffeID, parse_ca_configuration
from node.connect.ca import (
    CAServer,
    RootMaterial,
    TrustBundle,
    bootstrap_ca,
    generate_root,
    load_certificates,
    load_root,
    make_intermediate_csr,
    make_leaf_csr,
    private_key_to_pem,
    reconfigure_ca,
    verify_leaf,
)
from node.errors import CAError, InvalidRequest, TrustError
from tests.helpers.ca import CLUSTER_ID, NOW, TD, is_registered

COLON_HEX_20 = re.compile(r"^([0-9a-f]{2}:){19}[0-9a-f]{2}$")
COLON_HEX_32 = re.compile(r"^([0-9a-f]{2}:){31}[0-9a-f]{2}$")


def _sid(service: str, dc: str = "dc1", td: str = TD) -> SpiffeID:
    return SpiffeID(trust_domain=td, datacenter=dc, service=service)


def _pub_der(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _ext(cert: x509.Certificate, cls: type) -> object:
    return cert.extensions.get_extension_for_class(cls)  # type: ignore[arg-type]


# --- root -----------------------------------------------------------------------------------


def test_Root_fields_follow_consul(root: RootMaterial) -> None:
    cert = root.cert
    assert cert.issuer == cert.subject
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    assert cert.not_valid_before_utc == NOW - timedelta(minutes=1)
    assert cert.not_valid_after_utc - NOW >= timedelta(days=3650)
    basic = _ext(cert, x509.BasicConstraints)
    assert basic.critical and basic.value.ca  # type: ignore[attr-defined]
    usage = _ext(cert, x509.KeyUsage).value  # type: ignore[attr-defined]
    assert usage.key_cert_sign and usage.crl_sign and usage.digital_signature
    san = _ext(cert, x509.SubjectAlternativeName).value  # type: ignore[attr-defined]
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [f"spiffe://{TD}"]
    skid = _ext(cert, x509.SubjectKeyIdentifier).value.digest  # type: ignore[attr-defined]
    assert skid == hashlib.sha256(_pub_der(cert)).digest()
    assert _ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == skid  # type: ignore[attr-defined]


def test_Root_id_is_sha1_colon_hex_and_signing_key_id_is_skid(root: RootMaterial) -> None:
    der = root.cert.public_bytes(serialization.Encoding.DER)
    expected = ":".join(f"{b:02x}" for b in hashlib.sha1(der).digest())
    assert root.info.id == expected and COLON_HEX_20.match(root.info.id)
    assert COLON_HEX_32.match(root.info.signing_key_id)
    assert (
        root.info.signing_key_id.replace(":", "") == hashlib.sha256(_pub_der(root.cert)).hexdigest()
    )
    assert root.info.name == "Consul CA Root Cert"
    assert (root.info.private_key_type, root.info.private_key_bits) == ("ec", 256)


# --- leaves ---------------------------------------------------------------------------------


def test_Leaf_fields_follow_consul(primary: CAServer, root: RootMaterial) -> None:
    key, csr = make_leaf_csr(_sid("web"))
    issued = primary.sign_leaf(csr, "node-a", NOW)
    (cert,) = load_certificates(issued.cert_pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "web"
    assert cert.issuer == root.cert.subject
    assert cert.not_valid_before_utc == NOW - timedelta(minutes=1)
    assert cert.not_valid_after_utc == cert.not_valid_before_utc + timedelta(hours=72)
    assert (issued.valid_after, issued.valid_before) == (
        cert.not_valid_before_utc,
        cert.not_valid_after_utc,
    )
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    assert not _ext(cert, x509.BasicConstraints).value.ca  # type: ignore[attr-defined]
    usage = _ext(cert, x509.KeyUsage).value  # type: ignore[attr-defined]
    assert (
        usage.digital_signature,
        usage.key_encipherment,
        usage.data_encipherment,
        usage.key_agreement,
    ) == (
        True,
        True,
        True,
        True,
    )
    assert not usage.key_cert_sign
    eku = _ext(cert, x509.ExtendedKeyUsage).value  # type: ignore[attr-defined]
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    san = _ext(cert, x509.SubjectAlternativeName).value  # type: ignore[attr-defined]
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [_sid("web").uri]
    assert issued.service_uri == _sid("web").uri and issued.service == "web"
    assert issued.root_id == root.info.id
    assert re.fullmatch(r"([0-9a-f]{2}:)*[0-9a-f]{2}", issued.serial_number)
    assert int(issued.serial_number.replace(":", ""), 16) == cert.serial_number
    assert primary.max_leaf_expiry == issued.valid_before


def test_Leaf_ttl_is_configurable(primary: CAServer) -> None:
    primary.set_leaf_ttl(timedelta(hours=2))
    _, csr = make_leaf_csr(_sid("db"))
    issued = primary.sign_leaf(csr, "node-a", NOW)
    assert issued.valid_before - issued.valid_after == timedelta(hours=2)


def test_primary_leaf_verifies_with_cryptography(primary: CAServer, root: RootMaterial) -> None:
    _, csr = make_leaf_csr(_sid("web"))
    issued = primary.sign_leaf(csr, "node-a", NOW)
    assert verify_leaf(issued.cert_pem, [], [root.info.root_cert], NOW) == _sid("web")


def test_secondary_leaf_carries_intermediate_and_verifies_against_primary_root(
    secondary: CAServer, root: RootMaterial
) -> None:
    _, csr = make_leaf_csr(_sid("api", "dc2"))
    issued = secondary.sign_leaf(csr, "node-b", NOW)
    leaf, inter = load_certificates(issued.cert_pem)
    assert inter.issuer == root.cert.subject
    assert verify_leaf(issued.cert_pem, [], [root.info.root_cert], NOW) == _sid("api", "dc2")
    assert issued.root_id == root.info.id


def test_Intermediate_fields(primary: CAServer, root: RootMaterial) -> None:
    _, csr = make_intermediate_csr(trust_domain=TD, datacenter="dc2")
    inter = load_certificates(primary.sign_intermediate(csr, NOW))[0]
    basic = _ext(inter, x509.BasicConstraints).value  # type: ignore[attr-defined]
    assert basic.ca and basic.path_length == 0
    assert inter.not_valid_after_utc == NOW + timedelta(days=365)
    assert inter.not_valid_before_utc == NOW - timedelta(minutes=1)
    san = _ext(inter, x509.SubjectAlternativeName).value  # type: ignore[attr-defined]
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [f"spiffe://{TD}"]
    aki = _ext(inter, x509.AuthorityKeyIdentifier).value.key_identifier  # type: ignore[attr-defined]
    assert aki == _ext(root.cert, x509.SubjectKeyIdentifier).value.digest  # type: ignore[attr-defined]


def test_verify_rejects_wrong_root_expired_and_not_yet_valid(primary: CAServer) -> None:
    _, csr = make_leaf_csr(_sid("web"))
    issued = primary.sign_leaf(csr, "node-a", NOW)
    other = generate_root(trust_domain=TD, now=NOW)
    with pytest.raises(TrustError, match="does not verify"):
        verify_leaf(issued.cert_pem, [], [other.info.root_cert], NOW)
    root_pem = primary.signing_cert_pem
    with pytest.raises(TrustError, match="does not verify"):
        verify_leaf(issued.cert_pem, [], [root_pem], NOW + timedelta(hours=73))
    with pytest.raises(TrustError, match="does not verify"):
        verify_leaf(issued.cert_pem, [], [root_pem], NOW - timedelta(minutes=2))


def test_secondary_leaf_without_intermediate_does_not_verify(
    secondary: CAServer, root: RootMaterial
) -> None:
    _, csr = make_leaf_csr(_sid("api", "dc2"))
    leaf_only = load_certificates(secondary.sign_leaf(csr, "node-b", NOW).cert_pem)[0]
    with pytest.raises(TrustError):
        TrustBundle([root.info.root_cert]).verify(leaf_only, now=NOW)


def test_trust_bundle_accepts_der_and_rejects_garbage(
    primary: CAServer, root: RootMaterial
) -> None:
    _, csr = make_leaf_csr(_sid("web"))
    cert = load_certificates(primary.sign_leaf(csr, "node-a", NOW).cert_pem)[0]
    bundle = TrustBundle([root.info.root_cert])
    assert bundle.verify(cert.public_bytes(serialization.Encoding.DER), now=NOW) == _sid("web")
    with pytest.raises(TrustError, match="not valid DER"):
        bundle.verify(b"\x30\x03garbage", now=NOW)


# --- openssl ---------------------------------------------------------------------------------

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl binary not installed")


def _openssl_verify(
    tmp_path: Path, root_pem: str, leaf_pem: str, untrusted: str | None
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "root.pem").write_text(root_pem)
    (tmp_path / "leaf.pem").write_text(leaf_pem)
    cmd = [str(OPENSSL), "verify", "-x509_strict", "-attime", str(int(NOW.timestamp()))]
    cmd += ["-CAfile", str(tmp_path / "root.pem")]
    if untrusted is not None:
        (tmp_path / "inter.pem").write_text(untrusted)
        cmd += ["-untrusted", str(tmp_path / "inter.pem")]
    cmd.append(str(tmp_path / "leaf.pem"))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)


def _split(pem: str) -> tuple[str, str]:
    certs = load_certificates(pem)
    leaf, *rest = (c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)
    return leaf, "".join(rest)


@needs_openssl
def test_openssl_verifies_primary_leaf(
    tmp_path: Path, primary: CAServer, root: RootMaterial
) -> None:
    _, csr = make_leaf_csr(_sid("web"))
    issued = primary.sign_leaf(csr, "node-a", NOW)
    result = _openssl_verify(tmp_path, root.info.root_cert, issued.cert_pem, None)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ": OK" in result.stdout


@needs_openssl
def test_openssl_verifies_secondary_leaf_through_intermediate(
    tmp_path: Path, secondary: CAServer, root: RootMaterial
) -> None:
    _, csr = make_leaf_csr(_sid("api", "dc2"))
    leaf, inter = _split(secondary.sign_leaf(csr, "node-b", NOW).cert_pem)
    ok = _openssl_verify(tmp_path, root.info.root_cert, leaf, inter)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    missing = _openssl_verify(tmp_path, root.info.root_cert, leaf, None)
    assert missing.returncode != 0  # no -partial_chain: the intermediate is required


@needs_openssl
def test_openssl_rejects_leaf_from_another_root(tmp_path: Path, primary: CAServer) -> None:
    _, csr = make_leaf_csr(_sid("web"))
    issued = primary.sign_leaf(csr, "node-a", NOW)
    other = generate_root(trust_domain=TD, now=NOW)
    assert _openssl_verify(tmp_path, other.info.root_cert, issued.cert_pem, None).returncode != 0


# --- refusals -------------------------------------------------------------------------------


def _csr_with(key: object, *uris: str, dns: str | None = None) -> str:
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
    if dns:
        names.append(x509.DNSName(dns))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    csr = builder.sign(key, hashes.SHA256())  # type: ignore[arg-type]
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def _ec() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.mark.parametrize(
    ("make_csr", "node", "error", "message"),
    [
        (lambda: make_leaf_csr(_sid("web", "dc2"))[1], "node-a", TrustError, "datacenter 'dc2'"),
        (
            lambda: make_leaf_csr(_sid("web", td="other.consul"))[1],
            "node-a",
            TrustError,
            "trust domain 'other.consul'",
        ),
        (
            lambda: make_leaf_csr(_sid("api"))[1],
            "node-a",
            TrustError,
            "'api' is not registered on node 'node-a'",
        ),
        (
            lambda: make_leaf_csr(_sid("web"))[1],
            "node-z",
            TrustError,
            "not registered on node 'node-z'",
        ),
        (lambda: "not a csr", "node-a", InvalidRequest, "not a PEM certificate request"),
        (lambda: _csr_with(_ec()), "node-a", TrustError, "no SubjectAlternativeName"),
        (
            lambda: _csr_with(_ec(), _sid("web").uri, _sid("db").uri),
            "node-a",
            TrustError,
            "exactly one URI",
        ),
        (
            lambda: _csr_with(_ec(), _sid("web").uri, dns="web.example"),
            "node-a",
            TrustError,
            "exactly one URI",
        ),
        (
            lambda: _csr_with(_ec(), f"spiffe://{TD}"),
            "node-a",
            TrustError,
            "CA identity, not a service",
        ),
        (
            lambda: _csr_with(_ec(), "https://example.com/x"),
            "node-a",
            TrustError,
            "not a SPIFFE id",
        ),
        (
            lambda: _csr_with(rsa.generate_private_key(65537, 1024), _sid("web").uri),
            "node-a",
            TrustError,
            "RSA key of 1024 bits",
        ),
    ],
)
def test_sign_leaf_refuses(
    primary: CAServer, make_csr, node: str, error: type, message: str
) -> None:  # type: ignore[no-untyped-def]
    before = primary.max_leaf_expiry
    with pytest.raises(error, match=message):
        primary.sign_leaf(make_csr(), node, NOW)
    assert primary.max_leaf_expiry == before


def test_sign_leaf_refuses_tampered_csr(primary: CAServer) -> None:
    _, good = make_leaf_csr(_sid("web"))
    _, other = make_leaf_csr(_sid("db"))
    # Graft db's public key onto web's signed request body: signature no longer matches.
    good_csr = x509.load_pem_x509_csr(good.encode())
    other_csr = x509.load_pem_x509_csr(other.encode())
    der = bytearray(good_csr.public_bytes(serialization.Encoding.DER))
    old_pub = good_csr.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    new_pub = other_csr.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    start = der.find(old_pub)
    der[start : start + len(old_pub)] = new_pub
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM).decode()
    assert primary.verify_csr_signatures is False  # the default, as in Consul
    primary.verify_csr_signatures = True
    with pytest.raises(TrustError, match="signature does not verify"):
        primary.sign_leaf(tampered, "node-a", NOW)
    primary.verify_csr_signatures = False  # Consul's behaviour: the key is taken as given
    issued = primary.sign_leaf(tampered, "node-a", NOW)
    assert load_certificates(issued.cert_pem)[0].public_key() == other_csr.public_key()


@pytest.mark.parametrize(
    ("make_csr", "message"),
    [
        (lambda: make_leaf_csr(_sid("web"))[1], "is a service, not a CA identity"),
        (
            lambda: make_intermediate_csr(trust_domain="other.consul", datacenter="dc2")[1],
            "trust domain 'other.consul'",
        ),
        (lambda: _csr_with(_ec(), f"spiffe://{TD}", f"spiffe://{TD}"), "exactly one URI"),
        (
            lambda: (
                "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
            ),
            "not a PEM",
        ),
    ],
)
def test_sign_intermediate_refuses(primary: CAServer, make_csr, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises((TrustError, InvalidRequest), match=message):
        primary.sign_intermediate(make_csr(), NOW)


def test_only_the_root_signs_intermediates(secondary: CAServer) -> None:
    _, csr = make_intermediate_csr(trust_domain=TD, datacenter="dc3")
    with pytest.raises(CAError, match="only the primary"):
        secondary.sign_intermediate(csr, NOW)


def test_secondary_refuses_intermediate_from_another_root(primary: CAServer) -> None:
    key, csr = make_intermediate_csr(trust_domain=TD, datacenter="dc2")
    inter = primary.sign_intermediate(csr, NOW)
    other = generate_root(trust_domain=TD, now=NOW)
    with pytest.raises(TrustError, match="not issued by the primary's root"):
        CAServer.secondary(
            key=key,
            intermediate_pem=inter,
            root_pem=other.info.root_cert,
            datacenter="dc2",
            trust_domain=TD,
            is_registered=is_registered,
            now=NOW,
        )
    with pytest.raises(CAError, match="does not match"):
        CAServer.secondary(
            key=_ec(),
            intermediate_pem=inter,
            root_pem=primary.signing_cert_pem,
            datacenter="dc2",
            trust_domain=TD,
            is_registered=is_registered,
            now=NOW,
        )


def test_naive_datetime_is_refused(primary: CAServer) -> None:
    _, csr = make_leaf_csr(_sid("web"))
    with pytest.raises(InvalidRequest, match="aware UTC"):
        primary.sign_leaf(csr, "node-a", NOW.replace(tzinfo=None))


# --- secrets never leak ----------------------------------------------------------------------


def test_private_keys_never_in_repr_or_str(
    primary: CAServer, secondary: CAServer, root: RootMaterial
) -> None:
    for obj in (primary, secondary, root):
        for text in (repr(obj), str(obj), f"{obj}"):
            assert "PRIVATE KEY" not in text
    material = primary.export_private_material()
    assert "PRIVATE KEY" in material["private_key"]
    body = material["private_key"].splitlines()[1]
    assert body not in repr(primary)


def test_private_material_round_trip(secondary: CAServer, root: RootMaterial) -> None:
    again = CAServer.from_private_material(
        secondary.export_private_material(),
        datacenter="dc2",
        trust_domain=TD,
        is_registered=is_registered,
    )
    _, csr = make_leaf_csr(_sid("api", "dc2"))
    issued = again.sign_leaf(csr, "node-b", NOW)
    assert verify_leaf(issued.cert_pem, [], [root.info.root_cert], NOW) == _sid("api", "dc2")
    with pytest.raises(InvalidRequest, match="lacks"):
        CAServer.from_private_material(
            {}, datacenter="dc2", trust_domain=TD, is_registered=is_registered
        )


# --- bring your own root ---------------------------------------------------------------------


def test_byo_root_is_accepted_when_key_matches(root: RootMaterial) -> None:
    material = root.export_private_material()
    loaded = load_root(
        private_key_pem=material["private_key"],
        root_cert_pem=material["root_cert"],
        trust_domain=TD,
        now=NOW,
    )
    assert loaded.info.id == root.info.id


def test_byo_root_errors(root: RootMaterial, primary: CAServer) -> None:
    cert_pem = root.export_private_material()["root_cert"]
    other_key = private_key_to_pem(_ec())
    with pytest.raises(InvalidRequest, match="does not match"):
        load_root(private_key_pem=other_key, root_cert_pem=cert_pem, trust_domain=TD, now=NOW)
    with pytest.raises(InvalidRequest, match="not an unencrypted PEM private key"):
        load_root(private_key_pem="junk", root_cert_pem=cert_pem, trust_domain=TD, now=NOW)
    with pytest.raises(InvalidRequest, match="not a PEM certificate"):
        load_root(private_key_pem=other_key, root_cert_pem="junk", trust_domain=TD, now=NOW)
    with pytest.raises(InvalidRequest, match="names trust domain"):
        key = root.export_private_material()["private_key"]
        load_root(private_key_pem=key, root_cert_pem=cert_pem, trust_domain="other.consul", now=NOW)
    with pytest.raises(InvalidRequest, match="not valid now"):
        key = root.export_private_material()["private_key"]
        load_root(
            private_key_pem=key,
            root_cert_pem=cert_pem,
            trust_domain=TD,
            now=NOW + timedelta(days=4000),
        )
    leaf_key, csr = make_leaf_csr(_sid("web"))
    leaf_pem = primary.sign_leaf(csr, "node-a", NOW).cert_pem
    with pytest.raises(InvalidRequest, match="not a CA certificate"):
        load_root(
            private_key_pem=private_key_to_pem(leaf_key),
            root_cert_pem=leaf_pem,
            trust_domain=TD,
            now=NOW,
        )


def test_byo_root_signs_verifiable_leaves() -> None:
    key = _ec()
    original = generate_root(trust_domain=TD, now=NOW, key=key)
    material = original.export_private_material()
    byo = load_root(
        private_key_pem=material["private_key"],
        root_cert_pem=material["root_cert"],
        trust_domain=TD,
        now=NOW,
    )
    ca = CAServer.primary(byo, datacenter="dc1", trust_domain=TD, is_registered=is_registered)
    _, csr = make_leaf_csr(_sid("web"))
    assert verify_leaf(
        ca.sign_leaf(csr, "node-a", NOW).cert_pem, [], [byo.info.root_cert], NOW
    ) == _sid("web")


# --- bootstrap and reconfiguration -----------------------------------------------------------


def test_bootstrap_ca_makes_trust_domain_root_and_roots_entry() -> None:
    change = bootstrap_ca(cluster_id=CLUSTER_ID.upper(), now=NOW)
    assert change.roots.trust_domain == TD and change.config.cluster_id == CLUSTER_ID.upper()
    assert change.new_root is not None and change.roots.active_root_id == change.new_root.info.id
    assert "PRIVATE KEY" not in repr(change)


def test_reconfigure_ca_ttl_only_keeps_root_and_byo_rotates() -> None:
    start = bootstrap_ca(cluster_id=CLUSTER_ID, now=NOW)
    ttl_only = reconfigure_ca(
        parse_ca_configuration({"Config": {"LeafCertTTL": "24h"}}),
        roots=start.roots,
        config=start.config,
        now=NOW,
    )
    assert ttl_only.roots == start.roots and ttl_only.new_root is None
    assert (
        ttl_only.config.leaf_cert_ttl == timedelta(hours=24)
        and ttl_only.config.cluster_id == CLUSTER_ID
    )

    byo = generate_root(trust_domain=TD, now=NOW).export_private_material()
    body = {
        "Config": {
            "PrivateKey": byo["private_key"],
            "RootCert": byo["root_cert"],
            "LeafCertTTL": "96h",
        }
    }
    later = NOW + timedelta(hours=1)
    rotated = reconfigure_ca(
        parse_ca_configuration(body), roots=start.roots, config=start.config, now=later
    )
    assert rotated.new_root is not None and rotated.roots.active_root_id == rotated.new_root.info.id
    old = rotated.roots.root(start.roots.active_root_id)
    assert old is not None and old.retain_until == later + 2 * timedelta(hours=96)
    # The same root again changes nothing; the retired one cannot be reactivated.
    again = reconfigure_ca(
        parse_ca_configuration(body), roots=rotated.roots, config=rotated.config, now=later
    )
    assert again.roots == rotated.roots and again.new_root is None
    assert start.new_root is not None
    old_material = start.new_root.export_private_material()
    back = {
        "Config": {"PrivateKey": old_material["private_key"], "RootCert": old_material["root_cert"]}
    }
    with pytest.raises(InvalidRequest, match="already in the trust bundle"):
        reconfigure_ca(
            parse_ca_configuration(back), roots=rotated.roots, config=rotated.config, now=later
        )
    mismatched = {
        "Config": {"PrivateKey": old_material["private_key"], "RootCert": byo["root_cert"]}
    }
    with pytest.raises(InvalidRequest, match="does not match"):
        reconfigure_ca(
            parse_ca_configuration(mismatched),
            roots=rotated.roots,
            config=rotated.config,
            now=later,
        )
