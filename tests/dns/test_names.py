"""node.dns.names: Consul's DNS names → lookups, as a table (``doDispatch``)."""

from __future__ import annotations

import pytest

from node.dns.names import Kind, Lookup, parse_question

A, NS, SOA, SRV, AXFR, ANY = 1, 2, 6, 33, 252, 255
DOMAINS = ("consul.", "alt.example.")

CASES = [
    # (name, qtype, lookup)
    ("web.service.consul", A, Lookup(Kind.SERVICE, "web")),
    ("web.service.consul.", SRV, Lookup(Kind.SERVICE, "web")),
    ("web.service.dc2.consul", A, Lookup(Kind.SERVICE, "web", None, "dc2")),
    ("v1.web.service.consul", A, Lookup(Kind.SERVICE, "web", "v1")),
    ("a.b.web.service.consul", A, Lookup(Kind.SERVICE, "web", "a.b")),  # dots in a tag
    ("v1.web.service.dc3.consul", SRV, Lookup(Kind.SERVICE, "web", "v1", "dc3")),
    ("_web._tcp.service.consul", SRV, Lookup(Kind.SERVICE, "web")),  # RFC 2782, no tag
    ("_web._v1.service.consul", SRV, Lookup(Kind.SERVICE, "web", "v1")),
    ("_web._tcp.consul", SRV, Lookup(Kind.SERVICE, "web")),  # "service" implied for SRV
    ("_web._v1.dc2.consul", SRV, Lookup(Kind.SERVICE, "web", "v1", "dc2")),
    ("_web._tcp.consul", A, Lookup(Kind.INVALID)),  # only SRV implies "service"
    ("web.connect.consul", A, Lookup(Kind.CONNECT, "web")),
    ("api.connect.dc2.consul", SRV, Lookup(Kind.CONNECT, "api", None, "dc2")),
    ("n1.node.consul", A, Lookup(Kind.NODE, "n1")),
    ("n1.example.com.node.dc1.consul", A, Lookup(Kind.NODE, "n1.example.com", None, "dc1")),
    ("q1.query.consul", A, Lookup(Kind.QUERY, "q1")),
    ("7f000001.addr.consul", A, Lookup(Kind.ADDR, "7f000001")),
    ("7f000001.addr.dc1.consul", A, Lookup(Kind.ADDR, "7f000001", None, "dc1")),
    ("x.7f000001.addr.consul", A, Lookup(Kind.INVALID)),
    ("web.service.alt.example", A, Lookup(Kind.SERVICE, "web")),  # alt_domain
    # invalid shapes
    ("consul", A, Lookup(Kind.INVALID)),
    ("service.consul", A, Lookup(Kind.INVALID)),
    ("node.consul", A, Lookup(Kind.INVALID)),
    ("query.consul", A, Lookup(Kind.INVALID)),
    ("nonexisting.consul", A, Lookup(Kind.INVALID)),
    ("foo.service.dc1.extra.consul", A, Lookup(Kind.INVALID)),  # one datacenter label at most
    ("service.dc1.consul", A, Lookup(Kind.INVALID)),
    # zone questions, for any name in the domain
    ("consul", SOA, Lookup(Kind.SOA)),
    ("whatever.consul", NS, Lookup(Kind.NS)),
    ("web.service.consul", AXFR, Lookup(Kind.AXFR)),
]


@pytest.mark.parametrize(("name", "qtype", "expected"), CASES)
def test_parse_question(name: str, qtype: int, expected: Lookup) -> None:
    assert parse_question(name, qtype, DOMAINS) == expected


@pytest.mark.parametrize("name", ["example.com", "consul.example.com", "notconsul", "", "xconsul"])
def test_names_outside_the_domains_are_not_ours(name: str) -> None:
    assert parse_question(name, A, DOMAINS) is None


def test_only_the_given_domains_count() -> None:
    assert parse_question("web.service.alt.example", A, ("consul.",)) is None
