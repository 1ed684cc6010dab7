"""read_table: the forwardable reads are listed explicitly; nothing else can be asked for."""

from __future__ import annotations

import pytest

from node.api.app import FORWARDABLE_READS
from node.api.read import ReadSpec, read_table


def test_read_table_rejects_a_read_that_is_not_forwardable() -> None:
    spec = ReadSpec(name="agent.secret", query=lambda a: (None, 1), encode=lambda a, v: v)
    with pytest.raises(ValueError, match="'agent.secret' is not forwardable"):
        read_table(spec)


def test_FORWARDABLE_READS_lists_catalog_and_health_reads_only_and_is_read_only() -> None:
    assert {"catalog.nodes", "catalog.service", "health.service"} <= set(FORWARDABLE_READS)
    assert all(name.startswith(("catalog.", "health.")) for name in FORWARDABLE_READS)
    with pytest.raises(TypeError):
        FORWARDABLE_READS["catalog.x"] = FORWARDABLE_READS["catalog.nodes"]  # type: ignore[index]
