"""DNS messages in and out: read a query, render a prepared answer for it.

Rule: dnspython parses every query that is not the common shape (and decides what is
malformed); the common shape — one question, no records but an option-less EDNS0
OPT, no compression in the name — is read here by walking its labels, because a full
parse costs more than the socket work of answering (``scripts/bench/dns.py``). Answers
are spliced from records rendered once (``Prepared``, built by ``records`` with
dnspython's rdata classes): per query only the header, the shuffle, the limits and the
trimming are done. Answer records name the question by a pointer to offset 12, so they
echo the question exactly as sent (Consul's case rule). Pure.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import dns.edns
import dns.exception
import dns.message
import dns.opcode

__all__ = [
    "Query",
    "Record",
    "Prepared",
    "Malformed",
    "read_query",
    "render",
    "error_reply",
    "RCODE_NOERROR",
    "RCODE_FORMERR",
    "RCODE_SERVFAIL",
    "RCODE_NXDOMAIN",
    "RCODE_NOTIMP",
    "QUESTION_POINTER",
    "MAX_UDP_DEFAULT",
    "MAX_TCP",
]

RCODE_NOERROR: Final = 0
RCODE_FORMERR: Final = 1
RCODE_SERVFAIL: Final = 2
RCODE_NXDOMAIN: Final = 3
RCODE_NOTIMP: Final = 4
#: A compression pointer to the question's name, which always starts at offset 12.
QUESTION_POINTER: Final = b"\xc0\x0c"
#: RFC 1035's UDP limit, used when the query carries no (or a smaller) EDNS0 size.
MAX_UDP_DEFAULT: Final = 512
#: Consul's TCP limits (``trimTCPResponse``): 65523 bytes, 4096 answers.
MAX_TCP: Final = 65523
MAX_TCP_ANSWERS: Final = 4096
#: Consul's ceiling on ``udp_answer_limit`` for 512-byte answers (``maxUDPAnswerLimit``).
MAX_UDP_ANSWERS: Final = 8
#: Consul trims UDP answers until they fit the size less this margin.
_UDP_MARGIN: Final = 7

_HEADER = struct.Struct("!6H")
_QTAIL = struct.Struct("!HH")
_OPT_TAIL = struct.Struct("!HIH")
_QR: Final = 0x8000
_AA: Final = 0x0400
_TC: Final = 0x0200
_RD: Final = 0x0100
_RA: Final = 0x0080
_OPCODE_MASK: Final = 0x7800
_TYPE_OPT: Final = 41
_ECS: Final = 8  # EDNS0 client subnet option code


class Malformed(Exception):
    """A packet that is not a query we can answer; ``reply`` is the FORMERR/NOTIMP to send
    (None: drop it silently, e.g. too short to carry an ID, or a response)."""

    def __init__(self, reason: str, reply: bytes | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reply = reply


@dataclass(frozen=True, slots=True)
class Query:
    """A query as the answer needs it.

    ``question`` is the question section as sent (name, type, class); ``key`` its name
    lowercased (ASCII only, as DNS compares names); ``max_udp`` the EDNS0 payload size
    (0 without EDNS0); ``opt_options`` the EDNS0 options the reply's OPT carries.
    """

    ident: int
    flags: int
    question: bytes
    key: bytes
    qtype: int
    max_udp: int
    opt_options: bytes = b""

    @property
    def edns(self) -> bool:
        """Whether the query carried an OPT record (the reply then carries one too)."""
        return self.max_udp > 0

    def name(self) -> str:
        """The question's name as lowercase text without the final dot (``\\``-escaped)."""
        return _name_text(self.key)


@dataclass(frozen=True, slots=True)
class Record:
    """One rendered answer record and the additional records that go with it."""

    wire: bytes
    extras: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Prepared:
    """An answer rendered once, reused for every query of the same name and type.

    ``shuffle`` orders the answers at random per query; ``max_answers`` (0 = all) keeps
    that many; ``trim`` applies Consul's UDP answer limit and size trimming (service
    lookups). ``soa_answer``/``soa_authority`` put the zone's SOA (its serial is the
    time, so it is added per query) in Answer / Authority.
    """

    rcode: int = RCODE_NOERROR
    answers: tuple[Record, ...] = ()
    authority: tuple[bytes, ...] = ()
    extra: tuple[bytes, ...] = ()
    shuffle: bool = False
    max_answers: int = 0
    trim: bool = False
    soa_answer: bool = False
    soa_authority: bool = False
    dedupe_extras: bool = field(default=False)


# ---------------------------------------------------------------------------- reading


def read_query(packet: bytes) -> Query:
    """The query in ``packet``; raises ``Malformed`` for anything that is not one."""
    fast = _read_common(packet)
    return fast if fast is not None else _read_full(packet)


def _read_common(packet: bytes) -> Query | None:
    """The common shape, read without a full parse; None sends it to the full parser."""
    size = len(packet)
    if size < 17 or size > MAX_UDP_DEFAULT:
        return None
    ident, flags, qd, an, ns, ar = _HEADER.unpack_from(packet)
    if flags & (_QR | _OPCODE_MASK) or qd != 1 or an or ns or ar > 1:
        return None
    pos = 12
    while True:
        length = packet[pos]
        if length == 0:
            break
        if length > 63 or b"." in packet[pos + 1 : pos + 1 + length]:
            return None  # a pointer, an extended label, or a dot inside a label
        pos += 1 + length
        if pos >= size or pos > 12 + 254:
            return None
    end = pos + 5
    if end > size:
        return None
    qtype = _QTAIL.unpack_from(packet, pos + 1)[0]
    max_udp = 0
    if ar:
        # The OPT record: root name, type 41, then class = payload size, TTL, no options.
        if size - end != 11 or packet[end] != 0 or packet[end + 1 : end + 3] != b"\x00\x29":
            return None
        payload, ttl, rdlen = _OPT_TAIL.unpack_from(packet, end + 3)
        if rdlen or (ttl >> 16) & 0xFF:
            return None
        max_udp = max(payload, MAX_UDP_DEFAULT)
    elif end != size:
        return None
    key = packet[12 : pos + 1].lower()
    return Query(ident, flags, packet[12:end], key, qtype, max_udp)


def _read_full(packet: bytes) -> Query:
    if len(packet) < 12:
        raise Malformed("shorter than a DNS header", None)
    ident, flags = struct.unpack_from("!HH", packet)
    if flags & _QR:
        raise Malformed("a response, not a query", None)
    try:
        msg = dns.message.from_wire(packet, one_rr_per_rrset=True)
    except (dns.exception.DNSException, ValueError, IndexError, struct.error) as exc:
        # The reason names the exception class only: reasons are metric labels.
        reply = _bare(ident, flags, RCODE_FORMERR)
        raise Malformed(f"cannot parse: {type(exc).__name__}", reply) from None
    if msg.opcode() != dns.opcode.QUERY:
        raise Malformed("opcode is not QUERY", _bare(ident, flags, RCODE_NOTIMP))
    if len(msg.question) != 1:
        raise Malformed("not exactly one question", _bare(ident, flags, RCODE_FORMERR))
    rrset = msg.question[0]
    name = rrset.name.to_wire()
    assert name is not None
    question = name + _QTAIL.pack(rrset.rdtype, rrset.rdclass)
    max_udp = max(msg.payload, MAX_UDP_DEFAULT) if msg.edns >= 0 else 0
    options = b"".join(_echo_option(o) for o in msg.options) if msg.edns >= 0 else b""
    return Query(ident, flags, question, name.lower(), int(rrset.rdtype), max_udp, options)


def _echo_option(option: dns.edns.Option) -> bytes:
    """The reply's copy of a query option: client subnet echoed with scope 0 (Consul's
    answers are valid for every client), others dropped."""
    if not isinstance(option, dns.edns.ECSOption):
        return b""
    scoped = dns.edns.ECSOption(option.address, option.srclen, 0)
    body = scoped.to_wire()
    assert body is not None
    return struct.pack("!HH", _ECS, len(body)) + body


def _name_text(wire: bytes) -> str:
    labels = []
    pos = 0
    while wire[pos]:
        length = wire[pos]
        labels.append(_label_text(wire[pos + 1 : pos + 1 + length]))
        pos += 1 + length
    return ".".join(labels)


def _label_text(label: bytes) -> str:
    if all(0x21 <= b < 0x7F and b not in b'."\\;()@$' for b in label):
        return label.decode("ascii")
    return "".join(
        chr(b) if 0x21 <= b < 0x7F and b not in b'."\\;()@$' else f"\\{b:03d}" for b in label
    )


# ---------------------------------------------------------------------------- writing


def _bare(ident: int, flags: int, rcode: int) -> bytes:
    """A reply with no sections: FORMERR, NOTIMP (the query's opcode and RD kept)."""
    reply_flags = _QR | (flags & (_OPCODE_MASK | _RD)) | rcode
    return _HEADER.pack(ident, reply_flags, 0, 0, 0, 0)


def error_reply(query: Query, rcode: int, *, ra: bool) -> bytes:
    """SERVFAIL, NOTIMP, ... for a readable query: the question echoed, no records."""
    return render(query, Prepared(rcode=rcode), soa=b"", ra=ra, limit=0, udp=False,
                  truncate=False, rng=None)  # fmt: skip


def _opt(query: Query) -> bytes:
    options = query.opt_options
    return b"\x00\x00\x29" + _OPT_TAIL.pack(query.max_udp, 0, len(options)) + options


def render(
    query: Query,
    prepared: Prepared,
    *,
    soa: bytes,
    ra: bool,
    limit: int,
    udp: bool,
    truncate: bool,
    rng: random.Random | None,
) -> bytes:
    """The reply to ``query``: ``prepared`` shuffled, limited and trimmed for the transport.

    ``soa`` is the zone's SOA record (rendered for the current serial), ``limit`` the
    ``udp_answer_limit``, ``truncate`` whether trimming sets TC (``enable_truncate``).
    """
    picked, trimmed = _pick(query, prepared, limit, udp, rng)
    extras = _extras(picked, prepared)
    opt = _opt(query) if query.edns else b""
    answers = [r.wire for r in picked]
    if prepared.soa_answer:
        answers.insert(0, soa)
    authority = [*prepared.authority, soa] if prepared.soa_authority else prepared.authority
    max_size = (max(query.max_udp, MAX_UDP_DEFAULT) if udp else MAX_TCP + _UDP_MARGIN) - _UDP_MARGIN
    if prepared.trim and len(picked) > 1:
        fixed = 12 + len(query.question) + sum(map(len, authority)) + len(opt)
        while len(answers) > 1 and fixed + _size(answers) + _size(extras) > max_size:
            picked = picked[:-1]
            answers.pop()
            extras = _extras(picked, prepared)
            trimmed = True
    flags = _QR | _AA | (query.flags & _RD) | prepared.rcode
    if ra:
        flags |= _RA
    if trimmed and truncate:
        flags |= _TC
    head = _HEADER.pack(query.ident, flags, 1, len(answers), len(authority),
                        len(extras) + (1 if opt else 0))  # fmt: skip
    return b"".join((head, query.question, *answers, *authority, *extras, opt))


def _pick(
    query: Query, prepared: Prepared, limit: int, udp: bool, rng: random.Random | None
) -> tuple[Sequence[Record], bool]:
    answers = prepared.answers
    total = len(answers)
    if prepared.max_answers:
        total = min(total, prepared.max_answers)
    keep = total
    if prepared.trim:
        if udp and query.max_udp <= MAX_UDP_DEFAULT:
            keep = min(keep, MAX_UDP_ANSWERS, limit)
        elif not udp:
            keep = min(keep, MAX_TCP_ANSWERS)
    if prepared.shuffle and rng is not None and len(answers) > 1:
        return rng.sample(answers, keep), keep < total
    return answers[:keep], keep < total


def _extras(picked: Sequence[Record], prepared: Prepared) -> list[bytes]:
    if not prepared.dedupe_extras:
        extras = [e for r in picked for e in r.extras]
    else:
        seen: set[bytes] = set()
        extras = []
        for record in picked:
            for e in record.extras:
                if e not in seen:
                    seen.add(e)
                    extras.append(e)
    if prepared.extra:
        extras.extend(prepared.extra)
    return extras


def _size(parts: Sequence[bytes]) -> int:
    return sum(map(len, parts))
