"""Consul's DNS names → what to look up (``doDispatch``).

Rule: the question is matched case-insensitively against ``domain`` and ``alt_domain``;
what is left is read from the right: ``service``, ``connect``, ``node``, ``query`` or
``addr`` is the kind, at most one label between it and the domain is the datacenter, and
the labels left of the kind are its arguments:

- ``<svc>.service``, ``<tag...>.<svc>.service`` (dots in a tag are joined back) and the
  RFC 2782 form ``_<svc>._<tag>.service`` (``_tcp`` means no tag); for SRV questions a
  last label starting with ``_`` implies ``service``;
- ``<svc>.connect`` (Connect-capable endpoints), ``<node...>.node``, ``<id...>.query``,
  ``<hex>.addr`` (exactly one label).

SOA and NS questions are zone questions for any name in the domain; AXFR is refused.
A name outside both domains is not ours (``None``: recursors answer it). Pure.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

__all__ = ["Kind", "Lookup", "parse_question", "QTYPE_SOA", "QTYPE_NS", "QTYPE_SRV"]

QTYPE_A: Final = 1
QTYPE_NS: Final = 2
QTYPE_SOA: Final = 6
QTYPE_TXT: Final = 16
QTYPE_AAAA: Final = 28
QTYPE_SRV: Final = 33
QTYPE_AXFR: Final = 252
QTYPE_ANY: Final = 255


class Kind(enum.Enum):
    """What a name in the domain asks for."""

    SERVICE = "service"
    CONNECT = "connect"
    NODE = "node"
    QUERY = "query"
    ADDR = "addr"
    SOA = "soa"  # the zone's SOA (any name, qtype SOA)
    NS = "ns"  # the zone's name servers (any name, qtype NS)
    AXFR = "axfr"  # zone transfers are not implemented
    INVALID = "invalid"


@dataclass(frozen=True, slots=True)
class Lookup:
    """A parsed question: ``name`` is the service, node, query or hex; ``dc`` None = ours."""

    kind: Kind
    name: str = ""
    tag: str | None = None
    dc: str | None = None


_INVALID: Final = Lookup(Kind.INVALID)
_KINDS: Final = {k.value: k for k in (Kind.SERVICE, Kind.CONNECT, Kind.NODE, Kind.QUERY, Kind.ADDR)}


def parse_question(name: str, qtype: int, domains: tuple[str, ...]) -> Lookup | None:
    """The lookup for ``name`` (lowercase, with or without the final dot), or None when the
    name is in none of ``domains`` (each lowercase, ending with a dot)."""
    fqdn = name if name.endswith(".") else name + "."
    for domain in domains:
        if fqdn == domain or fqdn.endswith("." + domain):
            rest = fqdn[: -len(domain)].rstrip(".")
            break
    else:
        return None
    if qtype == QTYPE_SOA:
        return Lookup(Kind.SOA)
    if qtype == QTYPE_NS:
        return Lookup(Kind.NS)
    if qtype == QTYPE_AXFR:
        return Lookup(Kind.AXFR)
    return _dispatch(rest.split(".") if rest else [], qtype)


def _dispatch(labels: list[str], qtype: int) -> Lookup:
    dc: str | None = None
    if qtype == QTYPE_SRV and labels and labels[-1].startswith("_"):
        labels = [*labels, "service"]
    while labels:
        kind = _KINDS.get(labels[-1])
        if kind is not None:
            return _lookup(kind, labels[:-1], dc)
        if dc is not None:
            break  # only one label may sit between the kind and the domain
        dc = labels.pop()
        if qtype == QTYPE_SRV and labels and labels[-1].startswith("_"):
            labels.append("service")
    return _INVALID


def _lookup(kind: Kind, args: list[str], dc: str | None) -> Lookup:
    if not args or not all(args):
        return _INVALID
    if kind is Kind.SERVICE:
        return _service(args, dc)
    if kind is Kind.CONNECT:
        return Lookup(kind, args[-1], None, dc)
    if kind is Kind.ADDR:
        return Lookup(kind, args[0], None, dc) if len(args) == 1 else _INVALID
    return Lookup(kind, ".".join(args), None, dc)  # node and query names may hold dots


def _service(args: list[str], dc: str | None) -> Lookup:
    if len(args) == 2 and args[0].startswith("_") and args[1].startswith("_"):
        tag = args[1][1:]
        return Lookup(Kind.SERVICE, args[0][1:], None if tag == "tcp" else tag, dc)
    return Lookup(Kind.SERVICE, args[-1], ".".join(args[:-1]) or None, dc)
