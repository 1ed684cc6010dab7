"""SNI names: build, parse, reject foreign or malformed names."""

from __future__ import annotations

import pytest

from node.connect import ParsedSNI, datacenter_sni, parse_sni, service_sni
from node.errors import InvalidRequest

TD = "5fcd4b81-a2ca-405a-ac62-0fac602c1949.consul"


def test_service_sni_matches_consul_format() -> None:
    assert service_sni("api", "default", "dc2", TD) == f"api.default.dc2.internal.{TD}"
    assert service_sni("api", "", "bar", TD) == f"api.default.bar.internal.{TD}"
    assert (
        service_sni("api", "default", "dc2", TD, subset="v2") == f"v2.api.default.dc2.internal.{TD}"
    )


def test_datacenter_sni() -> None:
    assert datacenter_sni("dc2", TD) == f"dc2.internal.{TD}"


def test_trust_domain_is_lowercased_when_building() -> None:
    assert service_sni("web", "default", "dc1", TD.upper()).endswith(TD)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            f"api.default.dc2.internal.{TD}",
            ParsedSNI(service="api", namespace="default", datacenter="dc2"),
        ),
        (f"dc2.internal.{TD}", ParsedSNI(datacenter="dc2")),
        (
            f"v2.api.default.dc2.internal.{TD}",
            ParsedSNI(subset="v2", service="api", namespace="default", datacenter="dc2"),
        ),
        (
            f"api.default.dc2.INTERNAL.{TD.upper()}",
            ParsedSNI(service="api", namespace="default", datacenter="dc2"),
        ),
    ],
)
def test_parse_sni_ok(name: str, expected: ParsedSNI) -> None:
    assert parse_sni(name, TD) == expected


def test_parse_sni_round_trips_builders() -> None:
    parsed = parse_sni(service_sni("web", "default", "dc1", TD), TD)
    assert parsed is not None and (parsed.service, parsed.datacenter) == ("web", "dc1")
    dc = parse_sni(datacenter_sni("dc9", TD), TD)
    assert dc is not None and dc.is_datacenter and dc.datacenter == "dc9"


@pytest.mark.parametrize(
    "name",
    [
        "",
        "api.default.dc2.internal.other.consul",  # foreign trust domain
        f"api.default.dc2.query.{TD}",  # prepared query names are not routed
        f"internal.{TD}",
        f".internal.{TD}",
        f"a..dc2.internal.{TD}",
        f"ns.dc2.internal.{TD}",  # two labels: neither a service nor a datacenter name
        f"a.b.c.d.e.internal.{TD}",
        "x" * 300 + f".internal.{TD}",
        TD,
    ],
)
def test_parse_sni_returns_none_for_names_not_ours(name: str) -> None:
    assert parse_sni(name, TD) is None


@pytest.mark.parametrize(("svc", "dc"), [("", "dc1"), ("a.b", "dc1"), ("web", ""), ("web", "d.c")])
def test_builders_reject_labels_that_would_break_the_name(svc: str, dc: str) -> None:
    with pytest.raises(InvalidRequest, match="cannot be used in an SNI name"):
        service_sni(svc, "default", dc, TD)
