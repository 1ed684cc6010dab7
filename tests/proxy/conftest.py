"""Proxy test fixtures; makes ``proxy_helpers`` importable (pytest runs with importlib mode)."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from proxy_helpers import TD, MeshTestCA  # noqa: E402


@pytest.fixture(scope="session")
def ca() -> MeshTestCA:
    return MeshTestCA(TD)


@pytest.fixture(scope="session")
def other_ca() -> MeshTestCA:
    return MeshTestCA(TD)  # same trust domain, different key: must not be trusted
