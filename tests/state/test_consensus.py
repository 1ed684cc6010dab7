"""The replicated state machine: conditions checked at the command's place in the log."""

from __future__ import annotations

from typing import Any

import pytest

from node.errors import Conflict, NotFound
from node.state.consensus import StateMachine, command, error_of
from node.state.globalstate import GlobalState
from node.state.raft import records_of
from tests.state.test_schema import TOY


def _machine(group: str = "raft.dc1") -> StateMachine:
    return StateMachine(GlobalState(group, TOY), writable=TOY.kinds)


def _put(name: str, text: str, wall: int, **extra: Any) -> bytes:
    op = {"op": "put", "kind": "note", "name": name, "value": f"{name}={text}", **extra}
    return command(op, wall_ms=wall)


def test_every_voter_applying_the_same_log_holds_the_same_records_and_stamps() -> None:
    log = [_put("a", "x", 5), _put("b", "y", 3), command({"op": "delete", "kind": "note",
                                                          "name": "a"}, wall_ms=4)]  # fmt: skip
    one, two = _machine(), _machine()
    answers = [[m.apply(e, i) for i, e in enumerate(log, 1)] for m in (one, two)]
    assert answers[0] == answers[1]
    assert [r.to_wire(TOY) for r in one.state.all_records()] == [
        r.to_wire(TOY) for r in two.state.all_records()
    ]
    assert one.commit_index == 3
    stamps = [records_of(a, TOY)[0].stamp for a in answers[0]]
    assert stamps == sorted(stamps)  # log order, even when a writer's clock went back


def test_cas_is_decided_in_log_order_exactly_one_of_two_racing_writers_wins() -> None:
    sm = _machine()
    first = records_of(sm.apply(_put("a", "x", 1), 1), TOY)[0]
    seen = first.stamp.to_wire()
    left, right = _put("a", "left", 2, cas=seen), _put("a", "right", 2, cas=seen)
    won = sm.apply(left, 2)
    lost = sm.apply(right, 3)
    assert error_of(won) is None
    assert isinstance(error_of(lost), Conflict)
    held = sm.state.get("note", "a")
    assert held is not None and held.value == "a=left"


def test_absent_writes_once_and_a_failed_condition_changes_nothing() -> None:
    sm = _machine()
    items = [["note", "a", "a=1"], ["note", "b", "b=2"]]
    assert error_of(sm.apply(command({"op": "puts", "items": items, "absent": True},
                                     wall_ms=1), 1)) is None  # fmt: skip
    again = sm.apply(command({"op": "puts", "items": [["note", "c", "c=3"], *items],
                              "absent": True}, wall_ms=2), 2)  # fmt: skip
    assert isinstance(error_of(again), Conflict)
    assert sm.state.get("note", "c") is None


def test_a_kind_s_uniqueness_check_runs_in_the_state_machine() -> None:
    sm = _machine()
    sm.apply(_put("a", "same", 1), 1)
    answer = sm.apply(_put("b", "same", 2), 2)
    assert isinstance(error_of(answer), Conflict)
    with pytest.raises(Conflict, match="duplicate text"):
        records_of(answer, TOY)


def test_errors_are_data_and_snapshots_restore_the_state_and_index() -> None:
    sm = _machine()
    missing = sm.apply(command({"op": "delete", "kind": "note", "name": "zz"}, wall_ms=1), 1)
    assert missing["error"][0] == "NotFound" and isinstance(error_of(missing), NotFound)
    assert error_of(sm.apply(b"\x93garbage", 2)) is not None
    sm.apply(_put("a", "x", 3), 3)
    copy = _machine()
    copy.restore(sm.snapshot())
    assert copy.commit_index == 3
    assert copy.state.get("note", "a") == sm.state.get("note", "a")


def test_an_import_writes_only_into_an_empty_state() -> None:
    sm = _machine()
    kept = [["note", "a", "a=old"], ["note", "b", "b=older"]]
    first = sm.apply(command({"op": "import", "items": kept}, wall_ms=1), 1)
    assert error_of(first) is None and len(first["records"]) == 2
    again = sm.apply(command({"op": "import", "items": [["note", "c", "c=x"]]}, wall_ms=2), 2)
    assert isinstance(error_of(again), Conflict)
    assert sm.state.get("note", "c") is None
