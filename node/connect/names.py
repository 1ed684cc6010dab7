"""SNI names of the mesh: the one place they are built and parsed.

Rule: every SNI string in meshnode comes from ``service_sni``/``datacenter_sni`` and every
SNI received is read by ``parse_sni``; nobody else formats or splits them. The formats are
Consul's (``agent/connect/sni.go``)::

    <svc>.<ns>.<dc>.internal.<td>            a service in a datacenter
    <subset>.<svc>.<ns>.<dc>.internal.<td>   a service subset (parsed; meshnode builds none)
    <dc>.internal.<td>                       a whole datacenter (the gateway-to-gateway hop)

``parse_sni`` runs on every connection a mesh gateway accepts, so it does one suffix test
and one split and returns ``None`` (never raises) for names that are not ours.

Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from node.errors import InvalidRequest

__all__ = [
    "DEFAULT_NAMESPACE",
    "ParsedSNI",
    "service_sni",
    "datacenter_sni",
    "parse_sni",
]

DEFAULT_NAMESPACE: Final = "default"
_INTERNAL: Final = ".internal."
#: RFC 1035 total length; longer names are not valid SNI and are rejected before splitting.
MAX_SNI_LENGTH: Final = 253


@dataclass(frozen=True, slots=True, kw_only=True)
class ParsedSNI:
    """What an SNI names. ``service`` is ``None`` for a datacenter name (then so is ``namespace``)."""

    datacenter: str
    service: str | None = None
    namespace: str | None = None
    subset: str | None = None

    @property
    def is_datacenter(self) -> bool:
        """True for ``<dc>.internal.<td>`` (route to that datacenter's gateways)."""
        return self.service is None


def _label(value: str, what: str) -> str:
    if not value or "." in value:
        raise InvalidRequest(f"{what} {value!r} cannot be used in an SNI name (empty or has '.')")
    return value


def service_sni(
    service: str, namespace: str, dc: str, trust_domain: str, *, subset: str = ""
) -> str:
    """``<svc>.<ns>.<dc>.internal.<td>`` (``<subset>.`` prefixed when given).

    Labels are used as given (Consul does not fold case either); the trust domain is
    lowercased, as Consul always stores it.
    """
    ns = _label(namespace or DEFAULT_NAMESPACE, "namespace")
    parts = [_label(service, "service"), ns, _label(dc, "datacenter")]
    if subset:
        parts.insert(0, _label(subset, "subset"))
    return ".".join(parts) + _INTERNAL + trust_domain.lower()


def datacenter_sni(dc: str, trust_domain: str) -> str:
    """``<dc>.internal.<td>``: the name a gateway forwards to another datacenter by."""
    return _label(dc, "datacenter") + _INTERNAL + trust_domain.lower()


def parse_sni(name: str, trust_domain: str) -> ParsedSNI | None:
    """Read an SNI; ``None`` if it is malformed or names another trust domain.

    The ``.internal.<td>`` suffix matches case-insensitively (DNS names are); the labels
    before it come back exactly as sent.
    """
    if len(name) > MAX_SNI_LENGTH:
        return None
    suffix = _INTERNAL + trust_domain.lower()
    if not name.lower().endswith(suffix):
        return None
    labels = name[: -len(suffix)].split(".")
    if "" in labels:
        return None
    if len(labels) == 1:
        return ParsedSNI(datacenter=labels[0])
    if len(labels) == 3:
        return ParsedSNI(service=labels[0], namespace=labels[1], datacenter=labels[2])
    if len(labels) == 4:
        return ParsedSNI(
            subset=labels[0], service=labels[1], namespace=labels[2], datacenter=labels[3]
        )
    return None
