"""The test CA: every certificate a test uses is made by ``node.connect.ca``.

Rule: tests never assemble certificates by hand, so what they trust or refuse is what a
cluster's own CA issues. The fixed values (``TD``, ``NOW``, ``is_registered``) are the
fake cluster the Connect unit tests share; ``MeshTestCA`` issues live leaves for the
data-plane tests.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from node.connect.ca import (
    CAServer,
    RootMaterial,
    generate_root,
    make_intermediate_csr,
    make_leaf_csr,
    private_key_to_pem,
)
from node.connect.spiffe import SigningID, SpiffeID, parse_any_spiffe_id

__all__ = [
    "CLUSTER_ID",
    "NOW",
    "REGISTERED",
    "TD",
    "MeshTestCA",
    "is_registered",
    "primary_ca",
    "secondary_ca",
]

CLUSTER_ID = "11111111-2222-3333-4444-555555555555"
TD = f"{CLUSTER_ID}.consul"
NOW = datetime(2026, 11, 26, 7, 0, tzinfo=UTC)
#: (node, service) pairs the fake catalog says are registered.
REGISTERED = frozenset({("node-a", "web"), ("node-a", "db"), ("node-b", "api")})
#: How far back ``MeshTestCA`` dates its root, so it can also issue already-expired leaves.
_BACKDATE = timedelta(days=7)
#: When an expired leaf was signed: its 72-hour life ended a day ago.
_EXPIRED_AGE = timedelta(days=4)


def is_registered(node: str, service: str) -> bool:
    return (node, service) in REGISTERED


def primary_ca(root: RootMaterial, *, datacenter: str = "dc1") -> CAServer:
    """The primary datacenter's CA on ``root``, for the fake catalog."""
    return CAServer.primary(
        root, datacenter=datacenter, trust_domain=TD, is_registered=is_registered
    )


def secondary_ca(
    primary: CAServer, root: RootMaterial, *, datacenter: str = "dc2", now: datetime = NOW
) -> CAServer:
    """A secondary datacenter's CA with an intermediate ``primary`` signed at ``now``."""
    key, csr = make_intermediate_csr(trust_domain=TD, datacenter=datacenter)
    return CAServer.secondary(
        key=key,
        intermediate_pem=primary.sign_intermediate(csr, now),
        root_pem=root.info.root_cert,
        datacenter=datacenter,
        trust_domain=TD,
        is_registered=is_registered,
        now=now,
    )


class MeshTestCA:
    """A root of ``trust_domain`` that signs any service's leaf in any datacenter.

    ``leaf(..., uri=...)`` also issues certificates the mesh must refuse: a service of
    another trust domain (signed by this root all the same) or a CA identity.
    """

    def __init__(self, trust_domain: str = TD) -> None:
        self.trust_domain = trust_domain
        self.root = generate_root(trust_domain=trust_domain, now=datetime.now(UTC) - _BACKDATE)

    @property
    def root_pem(self) -> str:
        return self.root.info.root_cert

    def leaf(
        self, service: str, dc: str = "dc1", *, uri: str | None = None, expired: bool = False
    ) -> tuple[str, str]:
        """(cert PEM, key PEM) for ``service`` in ``dc``; ``uri`` overrides the SPIFFE id."""
        now = datetime.now(UTC) - (_EXPIRED_AGE if expired else timedelta(0))
        identity = parse_any_spiffe_id(uri) if uri else self._service_id(service, dc)
        if isinstance(identity, SigningID):
            key, csr = make_intermediate_csr(trust_domain=identity.trust_domain, datacenter=dc)
            return self._server(dc).sign_intermediate(csr, now), private_key_to_pem(key)
        key, csr = make_leaf_csr(identity)
        server = self._server(identity.datacenter, identity.trust_domain)
        return server.sign_leaf(csr, "test-node", now).cert_pem, private_key_to_pem(key)

    def _service_id(self, service: str, dc: str) -> SpiffeID:
        return SpiffeID(trust_domain=self.trust_domain, datacenter=dc, service=service)

    def _server(self, dc: str, trust_domain: str | None = None) -> CAServer:
        return CAServer.primary(
            self.root,
            datacenter=dc,
            trust_domain=trust_domain or self.trust_domain,
            is_registered=lambda node, service: True,
        )
