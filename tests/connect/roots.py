"""Fake CA roots for the CA-state and global-state tests: public records, no certificate.

A ``CARoot`` here is what the global state replicates about a root (id, validity,
retention), with a placeholder PEM: the tests that use it never verify a certificate.
Tests that do use ``tests.helpers.ca``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from node.connect.castate import CARoot, CARoots
from tests.helpers.ca import CLUSTER_ID, NOW, TD

__all__ = ["fake_root", "fake_roots"]


def fake_root(rid: str, **kw: Any) -> CARoot:
    """A root's public record, valid ten years from ``NOW``."""
    return CARoot(
        id=rid,
        serial_number=1,
        signing_key_id="aa",
        not_before=NOW,
        not_after=NOW + timedelta(days=3650),
        root_cert=f"PEM-{rid}",
        **kw,
    )


def fake_roots(*ids: str, active: str, **kw: Any) -> CARoots:
    """The roots ``ids`` of the test trust domain, ``active`` signing."""
    return CARoots(
        cluster_id=CLUSTER_ID,
        trust_domain=TD,
        active_root_id=active,
        roots=tuple(fake_root(i) for i in ids),
        **kw,
    )
