"""node.dns.records, local and packet: names → records, as Consul answers them. No sockets.

Each case asks a question of a filled catalog the way the listener does (read the
packet, parse the name, build from the store, render) and reads the reply back with
dnspython.
"""

from __future__ import annotations

import random
from types import MappingProxyType

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from node.catalog.store import CatalogStore
from node.config.agent import DNSConfig
from node.dns import records
from node.dns.local import answer_local
from node.dns.names import parse_question
from node.dns.packet import Malformed, read_query, render
from tests.dns.catalog import MANY, add_node, fill

SERIAL = 1_700_000_000
SERVERS = [("srv1", "10.9.0.1"), ("bad name", "10.9.0.2"), ("srv2", "10.9.0.3")]


def ask(
    name: str,
    qtype: str,
    *,
    zone: records.Zone | None = None,
    store: CatalogStore | None = None,
    payload: int | None = None,
    udp: bool = True,
    limit: int = 3,
    truncate: bool = False,
    seed: int = 1,
) -> dns.message.Message:
    zone = zone or records.Zone()
    query_msg = dns.message.make_query(name, qtype, use_edns=payload is not None,
                                       payload=payload or 512)  # fmt: skip
    query = read_query(query_msg.to_wire())
    lookup = parse_question(query.name(), query.qtype, (zone.domain,))
    assert lookup is not None, name
    answer = answer_local(zone, store or fill(CatalogStore()), lookup, query.qtype, SERVERS)
    wire = render(query, answer.prepared, soa=records.soa_record(zone, SERIAL), ra=False,
                  limit=limit, udp=udp, truncate=truncate, rng=random.Random(seed))  # fmt: skip
    reply = dns.message.from_wire(wire)
    assert reply.id == query_msg.id and reply.flags & dns.flags.AA
    return reply


def texts(section: list[dns.rrset.RRset]) -> set[str]:
    return {f"{r.name} {r.ttl} {dns.rdatatype.to_text(r.rdtype)} {rd}" for r in section for rd in r}


# ---------------------------------------------------------------------------- table

CASES = [
    # (name, qtype, rcode, answers, authority has SOA)
    ("web.service.consul", "A", "NOERROR", {"web.service.consul. 0 A 10.0.0.1",
                                            "web.service.consul. 0 A 10.0.0.2"}, False),
    ("WEB.Service.CONSUL", "A", "NOERROR", {"WEB.Service.CONSUL. 0 A 10.0.0.1",
                                            "WEB.Service.CONSUL. 0 A 10.0.0.2"}, False),
    ("blue.web.service.consul", "A", "NOERROR", {"blue.web.service.consul. 0 A 10.0.0.1"}, False),
    ("_web._v2.service.consul", "SRV", "NOERROR",
     {"_web._v2.service.consul. 0 SRV 1 2 81 n2.node.dc1.consul."}, False),
    ("_web._tcp.consul", "SRV", "NOERROR",
     {"_web._tcp.consul. 0 SRV 1 5 80 n1.node.dc1.consul.",
      "_web._tcp.consul. 0 SRV 1 2 81 n2.node.dc1.consul."}, False),
    ("web.service.consul", "AAAA", "NOERROR", set(), True),  # instances, none with IPv6
    ("web.service.consul", "MX", "NOERROR", set(), True),
    ("web6.service.consul", "AAAA", "NOERROR", {"web6.service.consul. 0 AAAA 2001:db8::6"}, False),
    ("web6.service.consul", "A", "NOERROR", set(), True),
    ("web.service.consul", "ANY", "NOERROR", {"web.service.consul. 0 A 10.0.0.1",
                                              "web.service.consul. 0 A 10.0.0.2"}, False),
    ("v3.web.service.consul", "A", "NXDOMAIN", set(), True),
    ("nope.service.consul", "A", "NXDOMAIN", set(), True),
    ("shout.service.consul", "A", "NOERROR", {"shout.service.consul. 0 A 10.0.0.9"}, False),
    # Connect: the sidecar (with its port) and the native service (with its own address)
    ("api.connect.consul", "SRV", "NOERROR",
     {"api.connect.consul. 0 SRV 1 1 21000 n1.node.dc1.consul."}, False),
    ("db.connect.consul", "SRV", "NOERROR",
     {"db.connect.consul. 0 SRV 1 1 5432 0a000032.addr.dc1.consul."}, False),
    ("db.connect.consul", "A", "NOERROR", {"db.connect.consul. 0 A 10.0.0.50"}, False),
    ("web.connect.consul", "A", "NXDOMAIN", set(), True),
    # nodes
    ("n1.node.consul", "A", "NOERROR", {"n1.node.consul. 0 A 10.0.0.1"}, False),
    ("mixed-case.node.consul", "A", "NOERROR", {"mixed-case.node.consul. 0 A 10.0.0.9"}, False),
    ("n6.node.dc1.consul", "AAAA", "NOERROR", {"n6.node.dc1.consul. 0 AAAA 2001:db8::6"}, False),
    ("n1.node.consul", "TXT", "NOERROR", {'n1.node.consul. 0 TXT "rack=r1"',
                                          'n1.node.consul. 0 TXT "plain"'}, False),
    ("n1.node.consul", "MX", "NOERROR", set(), False),  # 1.6: no SOA here
    ("nobody.node.consul", "A", "NXDOMAIN", set(), True),
    # .addr., prepared queries (none exist), invalid shapes
    ("0a000032.addr.dc1.consul", "A", "NOERROR", {"0a000032.addr.consul. 0 A 10.0.0.50"}, False),
    ("20010db8000000000000000000000006.addr.consul", "AAAA", "NOERROR",
     {"20010db8000000000000000000000006.addr.consul. 0 AAAA 2001:db8::6"}, False),
    ("zz000032.addr.consul", "A", "NXDOMAIN", set(), True),
    ("0a0000.addr.consul", "A", "NOERROR", set(), False),
    ("q.query.consul", "A", "NXDOMAIN", set(), True),
    ("consul", "A", "NXDOMAIN", set(), True),
    ("foo.service.dc1.extra.consul", "A", "NXDOMAIN", set(), True),
]  # fmt: skip


@pytest.mark.parametrize(("name", "qtype", "rcode", "answers", "soa"), CASES)
def test_answer_table(name: str, qtype: str, rcode: str, answers: set[str], soa: bool) -> None:
    reply = ask(name, qtype, limit=8)
    assert dns.rcode.to_text(reply.rcode()) == rcode
    assert texts(reply.answer) == answers
    soas = [r for r in reply.authority if r.rdtype == dns.rdatatype.SOA]
    assert bool(soas) == soa
    if soa:
        soa_rr = soas[0]
        assert str(soa_rr.name) == "consul." and soa_rr.ttl == 0
        assert str(soa_rr[0]) == f"ns.consul. hostmaster.consul. {SERIAL} 3600 600 86400 0"


def test_srv_puts_each_targets_address_and_meta_in_additional() -> None:
    reply = ask("web.service.consul", "SRV")
    assert texts(reply.additional) == {
        "n1.node.dc1.consul. 0 A 10.0.0.1",
        'n1.node.dc1.consul. 0 TXT "rack=r1"',
        'n1.node.dc1.consul. 0 TXT "plain"',
        "n2.node.dc1.consul. 0 A 10.0.0.2",
    }
    native = ask("db.connect.consul", "SRV")
    assert texts(native.additional) == {"0a000032.addr.dc1.consul. 0 A 10.0.0.50"}


def test_meta_txt_in_additional_can_be_turned_off() -> None:
    zone = records.Zone(DNSConfig(enable_additional_node_meta_txt=False))
    assert texts(ask("web.service.consul", "SRV", zone=zone).additional) == {
        "n1.node.dc1.consul. 0 A 10.0.0.1",
        "n2.node.dc1.consul. 0 A 10.0.0.2",
    }
    assert ask("n1.node.consul", "A", zone=zone).additional == []
    assert len(texts(ask("n1.node.consul", "A").additional)) == 2


def test_only_passing_drops_warning_instances() -> None:
    reply = ask("web.service.consul", "A", zone=records.Zone(DNSConfig(only_passing=True)))
    assert texts(reply.answer) == {"web.service.consul. 0 A 10.0.0.1"}


def test_critical_and_maintenance_instances_are_left_out() -> None:
    from node.catalog.values import Health

    store = CatalogStore()
    add_node(store, "a", "10.0.0.1", [{"name": "x", "id": "x"}], {"x": Health.MAINTENANCE})
    add_node(store, "b", "10.0.0.2", [{"name": "x", "id": "x"}], {"x": Health.CRITICAL})
    assert ask("x.service.consul", "A", store=store).rcode() == dns.rcode.NXDOMAIN


@pytest.mark.parametrize(
    ("ttls", "service", "ttl"),
    [
        ({"web": 10, "*": 1}, "web", 10),
        ({"we*": 5, "w*": 3, "*": 1}, "web", 5),
        ({"*": 1}, "db", 1),
        ({"api": 7}, "web", 0),
    ],
)
def test_service_ttl_exact_then_longest_prefix(
    ttls: dict[str, float], service: str, ttl: int
) -> None:
    assert (
        records.service_ttl(records.Zone(DNSConfig(service_ttl=MappingProxyType(ttls))), service)
        == ttl
    )


def test_ttls_apply_to_answers_and_additional() -> None:
    zone = records.Zone(DNSConfig(service_ttl=MappingProxyType({"web": 30.0}), node_ttl=7.0))
    reply = ask("web.service.consul", "SRV", zone=zone)
    assert {r.ttl for r in reply.answer} == {30} and {r.ttl for r in reply.additional} == {30}
    assert {r.ttl for r in ask("n1.node.consul", "A", zone=zone).answer} == {7}


def test_other_domain_names_targets_in_that_domain() -> None:
    zone = records.Zone(DNSConfig(domain="mesh.local."))
    reply = ask("web.service.mesh.local", "SRV", zone=zone)
    assert {str(rd.target) for r in reply.answer for rd in r} == {
        "n1.node.dc1.mesh.local.",
        "n2.node.dc1.mesh.local.",
    }


def test_soa_and_ns_questions() -> None:
    soa = ask("anything.consul", "SOA")
    assert texts(soa.answer) == {
        f"consul. 0 SOA ns.consul. hostmaster.consul. {SERIAL} 3600 600 86400 0"
    }
    assert texts(soa.authority) == {
        "consul. 0 NS srv1.node.dc1.consul.",
        "consul. 0 NS srv2.node.dc1.consul.",
    }
    assert texts(soa.additional) == {
        "srv1.node.dc1.consul. 0 A 10.9.0.1",
        "srv2.node.dc1.consul. 0 A 10.9.0.3",
    }
    ns = ask("consul", "NS")
    assert texts(ns.answer) == texts(soa.authority) and texts(ns.additional) == texts(
        soa.additional
    )
    assert ask("web.service.consul", "AXFR").rcode() == dns.rcode.NOTIMP  # fmt: skip


# ---------------------------------------------------------------------------- limits


def test_udp_answers_are_cut_to_the_limit_and_shuffled() -> None:
    seen: set[str] = set()
    for seed in range(20):
        reply = ask("many.service.consul", "A", seed=seed)
        assert len(reply.answer[0]) == 3 and not reply.flags & dns.flags.TC
        seen |= texts(reply.answer)
    assert len(seen) > 10  # different instances on different queries


def test_truncation_sets_tc_only_with_enable_truncate() -> None:
    reply = ask("many.service.consul", "SRV", truncate=True)
    assert reply.flags & dns.flags.TC and len(reply.answer[0]) == 3
    assert len(reply.additional) == 3  # synced to the answers kept


def test_edns_lifts_the_answer_limit_and_trims_to_its_size() -> None:
    reply = ask("many.service.consul", "A", payload=4096)
    assert len(reply.answer[0]) == MANY and reply.edns == 0 and reply.payload == 4096
    small = ask("many.service.consul", "SRV", payload=600, truncate=True)
    assert 1 <= len(small.answer[0]) < MANY and small.flags & dns.flags.TC
    assert len(small.to_wire()) <= 600


def test_size_trimming_keeps_one_record_at_least() -> None:
    store = CatalogStore()
    long_meta = {f"k{i}": "v" * 200 for i in range(3)}
    add_node(store, "big", "10.0.0.1", [{"name": "x", "id": "x"}], meta=long_meta)
    reply = ask("x.service.consul", "SRV", store=store, truncate=True)
    assert len(reply.answer) == 1


def test_tcp_answers_everything() -> None:
    reply = ask("many.service.consul", "SRV", udp=False)
    assert len(reply.answer[0]) == MANY and not reply.flags & dns.flags.TC


def test_a_record_limit_caps_address_answers() -> None:
    reply = ask(
        "many.service.consul", "A", zone=records.Zone(DNSConfig(a_record_limit=2)), udp=False
    )
    assert len(reply.answer[0]) == 2


# ---------------------------------------------------------------------------- reading


def test_queries_off_the_common_shape_go_through_dnspython() -> None:
    msg = dns.message.make_query("web.service.consul", "A", use_edns=0, payload=1400)
    msg.use_edns(0, payload=1400, options=[dns.edns.ECSOption("192.0.2.0", 24)])
    query = read_query(msg.to_wire())
    assert query.name() == "web.service.consul" and query.max_udp == 1400
    reply = dns.message.from_wire(
        render(
            query,
            records.NXDOMAIN,
            soa=records.soa_record(records.Zone(), 1),
            ra=True,
            limit=3,
            udp=True,
            truncate=False,
            rng=None,
        )  # fmt: skip
    )
    (ecs,) = reply.options
    assert isinstance(ecs, dns.edns.ECSOption) and ecs.scopelen == 0 and ecs.srclen == 24
    assert reply.flags & dns.flags.RA


@pytest.mark.parametrize(
    ("packet", "reply_rcode"),
    [
        (b"", None),
        (b"\x12\x34\x01", None),  # shorter than a header
        (b"\x12\x34\x81\x80" + bytes(8), None),  # a response
        (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01", 1),  # loop
        (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03abc", 1),  # cut short
        (b"\x12\x34\x01\x00\x00\x02\x00\x00\x00\x00\x00\x00" + b"\x00\x00\x01\x00\x01" * 2, 1),
        (b"\x12\x34\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00", 1),  # no question
        (b"\x12\x34\x11\x00\x00\x00\x00\x00\x00\x00\x00\x00", 4),  # opcode STATUS
        (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"\x3f" + b"a" * 63 * 5, 1),
    ],
)
def test_malformed_packets_get_formerr_or_are_dropped(
    packet: bytes, reply_rcode: int | None
) -> None:
    with pytest.raises(Malformed) as caught:
        read_query(packet)
    if reply_rcode is None:
        assert caught.value.reply is None
    else:
        reply = caught.value.reply
        assert reply is not None and reply[:2] == b"\x12\x34" and reply[3] & 0x0F == reply_rcode
