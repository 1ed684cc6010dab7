"""`scripts/demo --check` on a fresh clone, exactly as a new user runs it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.e2e.harness import ROOT

pytestmark = pytest.mark.slow


def test_Demo_check_passes_on_a_fresh_clone(tmp_path: Path) -> None:
    clone = tmp_path / "meshnode"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    result = subprocess.run(
        [str(clone / "scripts" / "demo"), "--check"],
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "demo check: PASS" in result.stdout
    assert "api in dc2" in result.stdout
