"""Proxy test fixtures; makes ``proxy_helpers`` importable (pytest runs with importlib mode)."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from proxy_helpers import TD, TestCA  # noqa: E402


@pytest.fixture(scope="session")
def ca() -> TestCA:
    return TestCA(TD)


@pytest.fixture(scope="session")
def other_ca() -> TestCA:
    return TestCA(TD)  # same trust domain, different key: must not be trusted
