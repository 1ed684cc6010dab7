"""The global state is generic over kinds: a toy schema exercises every ``KindCodec`` hook."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from node.errors import Conflict, InvalidRequest
from node.state.globalstate import GlobalState, KindCodec, Record, Schema


def _no_duplicate_text(current: str | None, value: str, live: Iterable[str]) -> None:
    del current
    text = value.split("=", 1)[1]
    if any(v.split("=", 1)[1] == text for v in live if v != value):
        raise Conflict(f"duplicate text {text!r}")


def _union(winner: frozenset[str], loser: frozenset[str]) -> frozenset[str]:
    return winner | loser


TOY = Schema(
    {
        "note": KindCodec(
            type=str, name_of=lambda v: v.split("=", 1)[0], to_wire=str, from_wire=str,
            check_put=_no_duplicate_text,
        ),
        "tags": KindCodec(
            type=frozenset, name_of=lambda v: "all", to_wire=sorted, from_wire=frozenset,
            join=_union, undeletable="tags are only ever added",
        ),
    }
)  # fmt: skip


def test_kinds_are_the_schema_s_own() -> None:
    gs = GlobalState("n1", TOY)
    assert TOY.kinds == ("note", "tags")
    gs.put("note", "a", "a=hello", wall_ms=1)
    with pytest.raises(InvalidRequest, match="unknown global state kind 'intention'"):
        gs.get("intention", "x")
    with pytest.raises(Conflict, match="duplicate text"):
        gs.put("note", "b", "b=hello", wall_ms=2)
    with pytest.raises(InvalidRequest, match="only ever added"):
        gs.delete("tags", "all", wall_ms=3)


def test_a_joined_kind_merges_both_values_and_records_travel_through_the_schema() -> None:
    a, b = GlobalState("a", TOY), GlobalState("b", TOY)
    a.put("tags", "all", frozenset({"x"}), wall_ms=1)
    b.put("tags", "all", frozenset({"y"}), wall_ms=2)
    wire = [r.to_wire(TOY) for r in a.all_records()]
    b.merge([Record.from_wire(raw, TOY) for raw in wire], wall_ms=3)
    held = b.get("tags", "all")
    assert held is not None and held.value == frozenset({"x", "y"})
