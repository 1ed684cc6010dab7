"""SPIFFE identities of the mesh: services and the signing CA.

Rule: a SPIFFE URI is turned into a typed value here and only here, and the trust domain
is always lowercase (Consul: ``strings.ToLower(ClusterID + ".consul")``). Formats::

    spiffe://<td>/ns/<ns>/dc/<dc>/svc/<service>    a service (leaf certificates)
    spiffe://<td>                                  the signing CA (roots, intermediates)

Parsing is strict: a wrong scheme, a query or fragment, a missing or extra path segment
raise ``InvalidRequest`` naming what is wrong. Code that reads a URI out of a certificate
turns that into ``TrustError``.

Pure: no I/O.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import quote, unquote

from node.errors import InvalidRequest

__all__ = [
    "TRUST_DOMAIN_SUFFIX",
    "SpiffeID",
    "SigningID",
    "parse_spiffe_id",
    "parse_any_spiffe_id",
    "trust_domain_for",
    "check_trust_domain",
]

TRUST_DOMAIN_SUFFIX: Final = ".consul"
_SCHEME: Final = "spiffe://"
_SERVICE_PATH: Final = re.compile(r"^/ns/([^/]+)/dc/([^/]+)/svc/([^/]+)$")
# A DNS-ish host: what ``<uuid>.consul`` and any sane trust domain look like.
_TRUST_DOMAIN: Final = re.compile(
    r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$"
)
MAX_URI_LENGTH: Final = 2048
# RFC 3986 unreserved characters: such segments need no percent-encoding (the usual case).
_NEEDS_QUOTE: Final = re.compile(r"[^A-Za-z0-9._~-]").search


def _quote(segment: str) -> str:
    return quote(segment, safe="") if _NEEDS_QUOTE(segment) else segment


def trust_domain_for(cluster_id: str) -> str:
    """The trust domain of a cluster: ``<cluster-id>.consul``, lowercase."""
    return check_trust_domain((cluster_id + TRUST_DOMAIN_SUFFIX).lower())


@functools.lru_cache(maxsize=64)  # a cluster has one or two; this runs per signed leaf
def check_trust_domain(trust_domain: str) -> str:
    """Return ``trust_domain`` if it is a lowercase DNS-style name, else raise."""
    if not _TRUST_DOMAIN.match(trust_domain) or len(trust_domain) > 253:
        raise InvalidRequest(f"invalid trust domain {trust_domain!r}")
    return trust_domain


def _segment(value: str, what: str) -> str:
    if not value or "/" in value:
        raise InvalidRequest(f"SPIFFE {what} {value!r} is invalid (empty or contains '/')")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class SpiffeID:
    """A service identity: ``spiffe://<td>/ns/<ns>/dc/<dc>/svc/<service>``."""

    trust_domain: str
    datacenter: str
    service: str
    namespace: str = "default"
    #: The URI as it goes into a certificate's SAN (derived; computed once).
    uri: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "trust_domain", check_trust_domain(self.trust_domain.lower()))
        _segment(self.namespace, "namespace")
        _segment(self.datacenter, "datacenter")
        _segment(self.service, "service")
        uri = (
            f"{_SCHEME}{self.trust_domain}/ns/{_quote(self.namespace)}"
            f"/dc/{_quote(self.datacenter)}/svc/{_quote(self.service)}"
        )
        object.__setattr__(self, "uri", uri)

    @classmethod
    def parse(cls, uri: str) -> SpiffeID:
        """Parse a service URI; raise ``InvalidRequest`` saying what is wrong."""
        parsed = parse_any_spiffe_id(uri)
        if not isinstance(parsed, SpiffeID):
            raise InvalidRequest(f"SPIFFE ID {uri!r} names a signing CA, not a service")
        return parsed

    def __str__(self) -> str:
        return self.uri


@dataclass(frozen=True, slots=True, kw_only=True)
class SigningID:
    """The CA identity ``spiffe://<td>`` carried by roots and intermediates."""

    trust_domain: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "trust_domain", check_trust_domain(self.trust_domain.lower()))

    @property
    def uri(self) -> str:
        """The URI as it goes into a CA certificate's SAN."""
        return _SCHEME + self.trust_domain

    def can_sign(self, identity: SpiffeID) -> bool:
        """A CA signs only identities of its own trust domain (Consul ``CanSign``)."""
        return identity.trust_domain == self.trust_domain

    def __str__(self) -> str:
        return self.uri


def parse_any_spiffe_id(uri: str) -> SpiffeID | SigningID:
    """Parse a service or signing URI; raise ``InvalidRequest`` naming the problem."""
    if not isinstance(uri, str):
        raise InvalidRequest(f"SPIFFE ID must be a string, got {type(uri).__name__}")
    if len(uri) > MAX_URI_LENGTH:
        raise InvalidRequest(f"SPIFFE ID is longer than {MAX_URI_LENGTH} characters")
    if uri[: len(_SCHEME)].lower() != _SCHEME:
        raise InvalidRequest(f"SPIFFE ID {uri!r} does not start with 'spiffe://'")
    rest = uri[len(_SCHEME) :]
    if "?" in rest or "#" in rest:
        raise InvalidRequest(f"SPIFFE ID {uri!r} must not have a query or fragment")
    host, slash, path = rest.partition("/")
    try:
        trust_domain = check_trust_domain(host.lower())
    except InvalidRequest:
        raise InvalidRequest(f"SPIFFE ID {uri!r} has an invalid trust domain {host!r}") from None
    if not slash or not path:
        return SigningID(trust_domain=trust_domain)
    match = _SERVICE_PATH.match("/" + path)
    if match is None:
        raise InvalidRequest(
            f"SPIFFE ID {uri!r} has path {'/' + path!r}, expected /ns/<ns>/dc/<dc>/svc/<service>"
        )
    ns, dc, svc = (unquote(g) if "%" in g else g for g in match.groups())
    return SpiffeID(trust_domain=trust_domain, namespace=ns, datacenter=dc, service=svc)


def parse_spiffe_id(uri: str) -> SpiffeID:
    """Parse a service URI (the usual case); alias of ``SpiffeID.parse``."""
    return SpiffeID.parse(uri)
