"""CA fixtures for tests/connect: a root at ``NOW``, its primary and a dc2 secondary."""

from __future__ import annotations

import pytest

from node.connect.ca import CAServer, RootMaterial, generate_root
from tests.helpers.ca import NOW, TD, primary_ca, secondary_ca


@pytest.fixture(scope="session")
def root() -> RootMaterial:
    return generate_root(trust_domain=TD, now=NOW)


@pytest.fixture
def primary(root: RootMaterial) -> CAServer:
    return primary_ca(root)


@pytest.fixture
def secondary(primary: CAServer, root: RootMaterial) -> CAServer:
    return secondary_ca(primary, root)
