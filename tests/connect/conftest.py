"""Shared CA fixtures for tests/connect; makes ``connect_helpers`` importable (importlib mode)."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from connect_helpers import NOW, TD, is_registered  # noqa: E402

from node.connect import CAServer, RootMaterial, generate_root, make_intermediate_csr  # noqa: E402


@pytest.fixture(scope="session")
def root() -> RootMaterial:
    return generate_root(trust_domain=TD, now=NOW)


@pytest.fixture
def primary(root: RootMaterial) -> CAServer:
    return CAServer.primary(root, datacenter="dc1", trust_domain=TD, is_registered=is_registered)


@pytest.fixture
def secondary(primary: CAServer, root: RootMaterial) -> CAServer:
    key, csr = make_intermediate_csr(trust_domain=TD, datacenter="dc2")
    inter = primary.sign_intermediate(csr, NOW)
    return CAServer.secondary(
        key=key,
        intermediate_pem=inter,
        root_pem=root.info.root_cert,
        datacenter="dc2",
        trust_domain=TD,
        is_registered=is_registered,
        now=NOW,
    )
