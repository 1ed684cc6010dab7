"""Catalog answers → DNS records, as Consul's DNS server builds them (``agent/dns.go``).

Rule: every answer is a ``packet.Prepared`` rendered once with dnspython's rdata
classes; the per-query work (shuffle, limits, trimming, the SOA serial) is ``packet``'s.

- Services (``serviceLookup``): instances with a critical (or maintenance) check are
  dropped, and with ``only_passing`` so are warning ones; none left → NXDOMAIN with the
  SOA. A/AAAA/ANY give one record per distinct address (the service address, else the
  node's; a hostname becomes a CNAME, used only when no instance has an IP); SRV gives
  one record per distinct node/address/port, weight from ``Weights`` by health, target
  ``<node>.node.<dc>.<domain>`` (or ``<hex>.addr.<dc>.<domain>`` when the service has
  its own IP) with its A/AAAA (and node-meta TXT) in Additional. No record of the asked
  type → NOERROR, empty, with the SOA.
- Nodes (``nodeLookup``): A/AAAA/ANY/TXT for a known node, meta as RFC 1464 TXT;
  unknown → NXDOMAIN with the SOA; other types → NOERROR, empty.
- ``<hex>.addr``: 8 hex digits → A, 32 → AAAA; bad hex → NXDOMAIN.
- Zone: SOA (``ns.<domain>``, ``hostmaster.<domain>``, serial = the time) and NS
  (up to 3 servers of the datacenter as ``<node>.node.<dc>.<domain>``, with glue).
Pure.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
from dns.rdtypes.ANY.CNAME import CNAME
from dns.rdtypes.ANY.NS import NS
from dns.rdtypes.ANY.SOA import SOA
from dns.rdtypes.ANY.TXT import TXT
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA
from dns.rdtypes.IN.SRV import SRV

from node.catalog.queries import HealthEntry, NodeInfo
from node.catalog.values import Health
from node.config.agent import DNSConfig
from node.dns.names import QTYPE_A, QTYPE_AAAA, QTYPE_ANY, QTYPE_SRV, QTYPE_TXT
from node.dns.packet import (
    QUESTION_POINTER,
    RCODE_NOTIMP,
    RCODE_NXDOMAIN,
    RCODE_SERVFAIL,
    Prepared,
    Record,
)
from node.proxy.endpoints import is_healthy

__all__ = [
    "Zone",
    "service_answer",
    "node_answer",
    "addr_answer",
    "ns_answer",
    "soa_question_answer",
    "soa_record",
    "service_ttl",
    "NXDOMAIN",
    "SERVFAIL",
    "NOTIMP",
    "MAX_NS",
]

_IN = dns.rdataclass.IN
#: Consul answers NS (and the SOA's authority) with at most this many servers.
MAX_NS: Final = 3
_NS_NAME_OK = re.compile(r"[A-Za-z0-9-]+")

NXDOMAIN: Final = Prepared(rcode=RCODE_NXDOMAIN, soa_authority=True)
SERVFAIL: Final = Prepared(rcode=RCODE_SERVFAIL)
NOTIMP: Final = Prepared(rcode=RCODE_NOTIMP)
_EMPTY_WITH_SOA: Final = Prepared(soa_authority=True)
_EMPTY: Final = Prepared()


@dataclass(frozen=True, slots=True)
class Zone:
    """What every answer of a server shares: its ``DNSConfig`` and its datacenter."""

    config: DNSConfig = field(default_factory=DNSConfig)
    datacenter: str = "dc1"

    @property
    def domain(self) -> str:
        """The primary domain (``consul.``): SRV targets, NS and SOA are named in it."""
        return self.config.domain

    @property
    def node_ttl(self) -> int:
        """TTL of node answers, NS and ``.addr.`` records, in whole seconds."""
        return int(self.config.node_ttl)


def service_ttl(zone: Zone, service: str) -> int:
    """``dns_config.service_ttl`` for ``service``: an exact key, else the longest ``*`` prefix."""
    ttls = zone.config.service_ttl
    exact = ttls.get(service)
    if exact is not None:
        return int(exact)
    best, best_len = 0.0, -1
    for key, ttl in ttls.items():
        if key.endswith("*") and service.startswith(key[:-1]) and len(key) > best_len:
            best, best_len = ttl, len(key)
    return int(best)


# ---------------------------------------------------------------------------- rendering


def _name(text: str) -> bytes | None:
    """A name's wire form (uncompressed), or None when it cannot be one (a label too long)."""
    try:
        wire = dns.name.from_text(text).to_wire()
    except dns.exception.DNSException:
        return None
    assert wire is not None
    return wire


def _make(cls: Any, *args: Any) -> dns.rdata.Rdata:
    """An IN-class rdata (dnspython's rdata constructors are untyped)."""
    rdata: dns.rdata.Rdata = cls(_IN, dns.rdatatype.from_text(cls.__name__), *args)
    return rdata


def _rr(owner: bytes, rdata: dns.rdata.Rdata, ttl: int) -> bytes:
    body = rdata.to_wire()
    assert body is not None
    return owner + struct.pack("!HHIH", rdata.rdtype, rdata.rdclass, ttl, len(body)) + body


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        return None


def _address_rr(owner: bytes, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, ttl: int) -> bytes:
    if ip.version == 4:
        return _rr(owner, _make(A, str(ip)), ttl)
    return _rr(owner, _make(AAAA, str(ip)), ttl)


def _wants(qtype: int, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return qtype == QTYPE_ANY or qtype == (QTYPE_A if ip.version == 4 else QTYPE_AAAA)


def _rfc1464(key: str, value: str) -> str:
    """Consul's ``encodeKVasRFC1464``: backquote-escape the key, join with ``=``."""
    if key.startswith("rfc1035-"):
        return value
    key = key.replace("`", "``").replace("=", "`=")
    stripped = key.lstrip(" ")
    key = "` " * (len(key) - len(stripped)) + stripped
    stripped = key.rstrip(" ")
    key = stripped + "` " * (len(key) - len(stripped))
    return f"{key}={value.replace('`', '``')}"


def _meta_txt(owner: bytes, meta: Mapping[str, str], ttl: int) -> list[bytes]:
    records = []
    for key in sorted(meta):
        text = _rfc1464(key, meta[key]).encode()
        chunks = [text[i : i + 255] for i in range(0, len(text), 255)] or [b""]
        records.append(_rr(owner, _make(TXT, chunks), ttl))
    return records


# ---------------------------------------------------------------------------- services


def service_answer(
    zone: Zone, qtype: int, service: str, entries: Sequence[HealthEntry], dc: str
) -> Prepared:
    """The answer for ``<service>.service|connect[.<dc>]`` from its instances in ``dc``."""
    healthy = [e for e in entries if _serves(e, zone.config.only_passing)]
    if not healthy:
        return NXDOMAIN
    ttl = service_ttl(zone, service)
    if qtype == QTYPE_SRV:
        records = _srv_records(zone, healthy, dc, ttl)
    elif qtype in (QTYPE_A, QTYPE_AAAA, QTYPE_ANY):
        records = _address_records(healthy, qtype, ttl)
    else:
        records = []
    if not records:
        return _EMPTY_WITH_SOA
    limit = zone.config.a_record_limit if qtype != QTYPE_SRV else 0
    return Prepared(answers=tuple(records), shuffle=True, trim=True, max_answers=limit,
                    dedupe_extras=qtype == QTYPE_SRV)  # fmt: skip


def _serves(entry: HealthEntry, only_passing: bool) -> bool:
    return is_healthy((c.check.status for c in entry.checks), only_passing=only_passing)


def _address_records(entries: Iterable[HealthEntry], qtype: int, ttl: int) -> list[Record]:
    seen: set[str] = set()
    records: list[Record] = []
    cnames: list[Record] = []
    for entry in entries:
        address = entry.service.address or entry.node.address
        if address in seen:
            continue
        seen.add(address)
        ip = _ip(address)
        if ip is None:
            target = _name(address if address.endswith(".") else address + ".")
            if target is not None:
                rdata = _make(CNAME, dns.name.from_wire(target, 0)[0])
                cnames.append(Record(_rr(QUESTION_POINTER, rdata, ttl)))
        elif _wants(qtype, ip):
            records.append(Record(_address_rr(QUESTION_POINTER, ip, ttl)))
    return records or cnames


def _srv_records(zone: Zone, entries: Iterable[HealthEntry], dc: str, ttl: int) -> list[Record]:
    seen: set[tuple[str, str, int]] = set()
    records: list[Record] = []
    for entry in entries:
        svc, node = entry.service, entry.node
        address = svc.address or node.address
        key = (node.name, address, svc.port)
        if key in seen:
            continue
        seen.add(key)
        target, extras = _srv_target(zone, entry, address, dc, ttl)
        if target is None:
            continue
        weights = svc.weights
        weight = weights.warning if entry.status is Health.WARNING else weights.passing
        rdata = _make(SRV, 1, weight, svc.port, dns.name.from_wire(target, 0)[0])
        records.append(Record(_rr(QUESTION_POINTER, rdata, ttl), tuple(extras)))
    return records


def _srv_target(
    zone: Zone, entry: HealthEntry, address: str, dc: str, ttl: int
) -> tuple[bytes | None, list[bytes]]:
    """The SRV target's name and its additional records (Consul ``makeRecordFromServiceNode``)."""
    node = entry.node
    ip = _ip(address)
    if ip is None:  # a hostname: the target itself, resolvable by whoever asks
        return _name(address if address.endswith(".") else address + "."), []
    if entry.service.address and entry.service.address != node.address:
        hexed = ip.packed.hex()
        target = _name(f"{hexed}.addr.{dc}.{zone.domain}")
    else:
        target = _name(f"{node.name}.node.{dc}.{zone.domain}")
    if target is None:
        return None, []
    extras = [_address_rr(target, ip, ttl)]
    if zone.config.enable_additional_node_meta_txt:
        extras += _meta_txt(target, node.meta, ttl)
    return target, extras


# ---------------------------------------------------------------------------- nodes


def node_answer(zone: Zone, qtype: int, node: NodeInfo | None) -> Prepared:
    """The answer for ``<node>.node[.<dc>]``."""
    if node is None:
        return NXDOMAIN
    if qtype not in (QTYPE_A, QTYPE_AAAA, QTYPE_ANY, QTYPE_TXT):
        return _EMPTY
    ttl = zone.node_ttl
    records: list[Record] = []
    if qtype != QTYPE_TXT:
        ip = _ip(node.address)
        if ip is not None and _wants(qtype, ip):
            records.append(Record(_address_rr(QUESTION_POINTER, ip, ttl)))
        elif ip is None and (target := _name(node.address.rstrip(".") + ".")) is not None:
            rdata = _make(CNAME, dns.name.from_wire(target, 0)[0])
            records.append(Record(_rr(QUESTION_POINTER, rdata, ttl)))
    meta = _meta_txt(QUESTION_POINTER, node.meta, ttl)
    if qtype in (QTYPE_ANY, QTYPE_TXT):
        records += [Record(txt) for txt in meta]
        return Prepared(answers=tuple(records))
    return Prepared(
        answers=tuple(records),
        extra=tuple(meta) if zone.config.enable_additional_node_meta_txt else (),
    )


def addr_answer(zone: Zone, hexed: str) -> Prepared:
    """``<hex>.addr``: the IP spelled in hex, named in the primary domain (any qtype)."""
    try:
        packed = bytes.fromhex(hexed)
    except ValueError:
        return NXDOMAIN
    if len(packed) not in (4, 16):
        return _EMPTY
    owner = _name(f"{hexed}.addr.{zone.domain}")
    assert owner is not None  # 8 or 32 hex digits always make a valid label
    return Prepared(
        answers=(Record(_address_rr(owner, ipaddress.ip_address(packed), zone.node_ttl)),)
    )


# ---------------------------------------------------------------------------- the zone


def soa_record(zone: Zone, serial: int) -> bytes:
    """The zone's SOA record with ``serial`` (Consul uses the current unix time)."""
    owner = _name(zone.domain)
    assert owner is not None
    rdata = _make(SOA, dns.name.from_text(f"ns.{zone.domain}"), dns.name.from_text(f"hostmaster.{zone.domain}"),
        serial & 0xFFFFFFFF, zone.config.soa_refresh, zone.config.soa_retry, zone.config.soa_expire, zone.config.soa_min_ttl,
    )  # fmt: skip
    return _rr(owner, rdata, zone.config.soa_min_ttl)


def _nameservers(zone: Zone, servers: Sequence[tuple[str, str]]) -> tuple[list[bytes], list[bytes]]:
    """NS records for up to ``MAX_NS`` servers ``(node name, address)`` and their glue."""
    owner = _name(zone.domain)
    assert owner is not None
    records, glue = [], []
    for name, address in servers:
        ip = _ip(address)
        target = _name(f"{name.lower()}.node.{zone.datacenter}.{zone.domain}")
        if ip is None or target is None or not _NS_NAME_OK.fullmatch(name):
            continue
        target_name = dns.name.from_wire(target, 0)[0]
        records.append(_rr(owner, _make(NS, target_name), zone.node_ttl))
        glue.append(_address_rr(target, ip, zone.node_ttl))
        if len(records) == MAX_NS:
            break
    return records, glue


def ns_answer(zone: Zone, servers: Sequence[tuple[str, str]]) -> Prepared:
    """qtype NS for any name in the domain: the servers, with glue."""
    records, glue = _nameservers(zone, servers)
    return Prepared(answers=tuple(Record(r) for r in records), extra=tuple(glue))


def soa_question_answer(zone: Zone, servers: Sequence[tuple[str, str]]) -> Prepared:
    """qtype SOA for any name in the domain: the SOA, the servers in Authority, glue."""
    records, glue = _nameservers(zone, servers)
    return Prepared(soa_answer=True, authority=tuple(records), extra=tuple(glue))
