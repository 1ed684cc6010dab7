"""SPIFFE ids: formats, parsing, clear errors."""

from __future__ import annotations

import pytest

from node.connect import SigningID, SpiffeID, parse_any_spiffe_id, parse_spiffe_id, trust_domain_for
from node.errors import InvalidRequest

CLUSTER = "11111111-2222-3333-4444-555555555555"
TD = f"{CLUSTER}.consul"


def test_trust_domain_is_cluster_id_dot_consul_lowercase() -> None:
    assert trust_domain_for(CLUSTER.upper()) == TD


def test_service_uri_format() -> None:
    sid = SpiffeID(trust_domain=TD, datacenter="dc1", service="web")
    assert sid.uri == f"spiffe://{TD}/ns/default/dc/dc1/svc/web"
    assert str(sid) == sid.uri


def test_signing_uri_format_and_can_sign() -> None:
    signing = SigningID(trust_domain=TD)
    assert signing.uri == f"spiffe://{TD}"
    assert signing.can_sign(SpiffeID(trust_domain=TD, datacenter="dc2", service="api"))
    assert not signing.can_sign(
        SpiffeID(trust_domain="other.consul", datacenter="dc2", service="api")
    )


def test_parse_round_trip_and_case_of_host() -> None:
    sid = SpiffeID(trust_domain=TD, datacenter="dc1", service="web")
    assert parse_spiffe_id(sid.uri) == sid
    assert parse_spiffe_id(sid.uri.replace(TD, TD.upper())) == sid
    assert parse_any_spiffe_id(f"spiffe://{TD}") == SigningID(trust_domain=TD)
    assert parse_any_spiffe_id(f"spiffe://{TD}/") == SigningID(trust_domain=TD)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        (f"https://{TD}/ns/default/dc/dc1/svc/web", "does not start with 'spiffe://'"),
        (f"spiffe://{TD}/ns/default/dc/dc1/svc/web?x=1", "query or fragment"),
        (f"spiffe://{TD}/ns/default/dc/dc1/svc/web#f", "query or fragment"),
        (f"spiffe://{TD}/ns/default/dc/dc1", "expected /ns/<ns>/dc/<dc>/svc/<service>"),
        (
            f"spiffe://{TD}/ns/default/dc/dc1/svc/web/extra",
            "expected /ns/<ns>/dc/<dc>/svc/<service>",
        ),
        (f"spiffe://{TD}/agent/client/dc/dc1/id/node1", "expected /ns/<ns>/dc/<dc>/svc/<service>"),
        ("spiffe://bad_domain!/ns/default/dc/dc1/svc/web", "invalid trust domain"),
        ("spiffe:///ns/default/dc/dc1/svc/web", "invalid trust domain"),
        ("spiffe://" + "a" * 3000, "longer than"),
    ],
)
def test_parse_errors_name_the_problem(uri: str, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        parse_any_spiffe_id(uri)


def test_parse_service_rejects_signing_id() -> None:
    with pytest.raises(InvalidRequest, match="names a signing CA"):
        parse_spiffe_id(f"spiffe://{TD}")


def test_parse_rejects_non_string() -> None:
    with pytest.raises(InvalidRequest, match="must be a string"):
        parse_any_spiffe_id(42)  # type: ignore[arg-type]


def test_constructor_validates_segments() -> None:
    with pytest.raises(InvalidRequest, match="service"):
        SpiffeID(trust_domain=TD, datacenter="dc1", service="a/b")
    with pytest.raises(InvalidRequest, match="trust domain"):
        SpiffeID(trust_domain="not a domain", datacenter="dc1", service="web")
