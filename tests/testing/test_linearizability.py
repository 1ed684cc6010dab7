"""The Wing–Gong checker accepts linearizable register histories and rejects the others.

Pure: histories are written by hand (the classic counterexamples) or generated from a
real sequential register (always linearizable), and small random ones are compared
with a brute-force search over every order.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Hashable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.testing.linearizability import (
    UNKNOWN,
    Cas,
    Operation,
    Read,
    Register,
    Write,
    check,
)


def op(client: Hashable, input: Any, output: Any, call: float, ret: float | None, key: Any = None):
    return Operation(client, input, output, call, ret, key)


def ok(history: Sequence[Operation], **kw: Any) -> bool | None:
    return check(history, Register(), **kw).linearizable


# --------------------------------------------------------------------------- by hand


def test_Check_empty_history_is_linearizable() -> None:
    assert ok([]) is True


def test_Check_a_read_after_a_completed_write_must_see_it() -> None:
    write = op("a", Write(1), True, 0, 1)
    assert ok([write, op("b", Read(), 1, 2, 3)]) is True
    assert ok([write, op("b", Read(), None, 2, 3)]) is False  # stale read


def test_Check_a_read_overlapping_a_write_may_see_either_value() -> None:
    write = op("a", Write(1), True, 0, 10)
    assert ok([write, op("b", Read(), 1, 1, 2)]) is True
    assert ok([write, op("b", Read(), None, 1, 2)]) is True
    assert ok([write, op("b", Read(), 2, 1, 2)]) is False  # never written


def test_Check_new_then_old_inversion_is_rejected() -> None:
    # Both reads overlap the write, but once one saw 1 a later one cannot see 0 again.
    history = [
        op("w", Write(0), True, 0, 1),
        op("a", Write(1), True, 2, 20),
        op("b", Read(), 1, 3, 4),
        op("c", Read(), 0, 5, 6),
    ]
    assert ok(history) is False
    # Swapped order of the reads is fine: old, then new.
    history[2:] = [op("b", Read(), 0, 3, 4), op("c", Read(), 1, 5, 6)]
    assert ok(history) is True


def test_Check_two_cas_on_the_same_version_cannot_both_succeed() -> None:
    first = op("w", Write("v0"), True, 0, 1)
    a = op("a", Cas("v0", "a"), True, 2, 5)
    b = op("b", Cas("v0", "b"), True, 3, 6)
    assert ok([first, a, b]) is False
    assert ok([first, a, op("b", Cas("v0", "b"), False, 3, 6)]) is True
    assert ok([first, op("a", Cas("v0", "a"), False, 2, 5), b]) is True


def test_Check_cas_only_if_absent_has_one_winner() -> None:
    a = op("a", Cas(None, "a"), True, 0, 5)
    b = op("b", Cas(None, "b"), True, 1, 6)
    assert ok([a, b]) is False
    assert ok([a, op("b", Cas(None, "b"), False, 1, 6), op("c", Read(), "a", 7, 8)]) is True


def test_Check_a_failed_cas_needs_the_version_to_have_changed() -> None:
    first = op("w", Write("v0"), True, 0, 1)
    assert ok([first, op("a", Cas("v0", "x"), False, 2, 3)]) is False
    racing = op("b", Write("v1"), True, 2, 4)
    assert ok([first, racing, op("a", Cas("v0", "x"), False, 3, 5)]) is True


def test_Check_a_lost_update_is_rejected() -> None:
    # Two read-modify-write cycles that both win, each on the version it read.
    history = [
        op("w", Write("v0"), True, 0, 1),
        op("a", Read(), "v0", 2, 3),
        op("b", Read(), "v0", 2, 3),
        op("a", Cas("v0", "a"), True, 4, 5),
        op("b", Cas("v0", "b"), True, 6, 7),
        op("c", Read(), "b", 8, 9),
    ]
    assert ok(history) is False


def test_Check_an_unknown_write_may_apply_late_or_never() -> None:
    lost = op("a", Write(1), UNKNOWN, 0, None)
    assert ok([lost, op("b", Read(), None, 5, 6)]) is True
    assert ok([lost, op("b", Read(), 1, 5, 6)]) is True
    # A timed-out write may still apply after its client gave up on it.
    late = op("a", Write(1), UNKNOWN, 0, 1)
    assert ok([late, op("b", Read(), None, 2, 3), op("b", Read(), 1, 4, 5)]) is True
    # But once seen it cannot be undone.
    assert ok([late, op("b", Read(), 1, 2, 3), op("b", Read(), None, 4, 5)]) is False


def test_Check_an_unknown_cas_applies_only_where_its_version_holds() -> None:
    first = op("w", Write("v0"), True, 0, 1)
    maybe = op("a", Cas("v0", "a"), UNKNOWN, 2, None)
    assert ok([first, maybe, op("b", Read(), "a", 5, 6)]) is True
    assert ok([first, maybe, op("b", Read(), "v0", 5, 6)]) is True
    # It cannot apply on top of another version.
    history = [first, op("c", Write("v1"), True, 1.5, 1.8), maybe, op("b", Read(), "a", 5, 6)]
    assert ok(history) is False
    # And it can win at most once against a definite winner.
    winner = op("c", Cas("v0", "c"), True, 2, 3)
    assert ok([first, maybe, winner, op("b", Read(), "a", 5, 6)]) is False


def test_Check_keys_are_checked_alone_and_the_bad_one_is_named() -> None:
    good = [op("a", Write(1), True, 0, 1, key="x"), op("b", Read(), 1, 2, 3, key="x")]
    bad = [op("a", Write(1), True, 0, 1, key="y"), op("b", Read(), None, 2, 3, key="y")]
    assert ok(good + [op("c", Read(), None, 2, 3, key="y")]) is True
    result = check(good + bad, Register())
    assert (result.linearizable, result.key) == (False, "y")
    assert result.order == (bad[0],)  # the prefix linearized before the stale read


def test_Check_answers_a_linearization_that_the_model_accepts() -> None:
    history = [
        op("a", Write(1), True, 0, 10),
        op("b", Write(2), True, 1, 3),
        op("c", Read(), 2, 4, 5),
        op("d", Read(), 1, 11, 12),
    ]
    result = check(history, Register())
    assert result.linearizable is True
    assert [o.input for o in result.order] == [Write(2), Read(), Write(1), Read()]


def test_Check_gives_up_within_its_budget_rather_than_guessing() -> None:
    # Many concurrent writes and a read of a value nobody wrote: exhaustive to refute.
    history = [op(i, Write(i), True, 0, 100) for i in range(14)]
    history.append(op("r", Read(), "nobody", 101, 102))
    assert ok(history, max_steps=500) is None
    assert ok(history) is False  # memoisation makes the full refutation cheap


def test_Operation_refuses_inconsistent_timings() -> None:
    with pytest.raises(ValueError, match="returns before"):
        op("a", Read(), None, 2, 1)
    with pytest.raises(ValueError, match="UNKNOWN output"):
        op("a", Read(), None, 2, None)


def test_Register_refuses_an_unknown_operation() -> None:
    with pytest.raises(TypeError, match="cannot"):
        ok([op("a", "increment", True, 0, 1)])


# --------------------------------------------------------------------------- generated


def _real_history(seed: int, clients: int, count: int) -> list[Operation]:
    """Run a real register with ``clients`` overlapping clients: linearizable by build."""
    rng = random.Random(seed)
    value: Any = None
    history: list[Operation] = []
    busy_until = [0.0] * clients
    now = 0.0
    written = 0
    for _ in range(count):
        now = max(now + rng.random(), min(busy_until) + 0.01)  # the linearization point
        client = rng.choice([c for c in range(clients) if busy_until[c] < now])
        call = max(now - rng.random() * 3, busy_until[client])
        ret = now + rng.random() * 3
        busy_until[client] = ret
        kind = rng.choice(("read", "write", "cas"))
        if kind == "read":
            history.append(op(client, Read(), value, call, ret))
        elif kind == "write":
            written += 1
            value = written
            history.append(op(client, Write(value), True, call, ret))
        else:
            expected = value if rng.random() < 0.5 else rng.randrange(written + 1) or None
            written += 1
            won = expected == value
            if won:
                value = written
            lost = rng.random() < 0.1
            history.append(
                op(client, Cas(expected, written), UNKNOWN if lost else won, call,
                   None if lost else ret)
            )  # fmt: skip
    return history


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 6))
def test_Check_accepts_every_history_of_a_real_register(seed: int, clients: int) -> None:
    assert ok(_real_history(seed, clients, 60)) is True


def _brute(history: Sequence[Operation]) -> bool:
    """Every order that respects real time, tried against the register."""
    model = Register()
    for order in itertools.permutations(history):
        if any(
            a.ret is not None and not a.pending and a.ret < b.call
            for i, b in enumerate(order) for a in order[i + 1:]
        ):  # fmt: skip
            continue
        states = {model.init()}
        for o in order:
            output = UNKNOWN if o.pending else o.output
            states = {s for st_ in states for s in model.step(st_, o.input, output)}
        if states:
            return True
    return False


def _random_history(rng: random.Random, size: int) -> list[Operation]:
    values = [None, 1, 2]
    ops: list[Operation] = []
    for i in range(size):
        call = rng.randrange(10)
        ret: float | None = call + rng.randrange(1, 6)
        kind = rng.randrange(3)
        if kind == 0:
            ops.append(op(i, Read(), rng.choice(values), call, ret))
            continue
        output: Any = rng.choice((True, False, UNKNOWN))
        if output is UNKNOWN:
            ret = None
        if kind == 1:
            ops.append(op(i, Write(rng.choice(values[1:])), output, call, ret))
        else:
            ops.append(op(i, Cas(rng.choice(values), rng.choice(values[1:])), output, call, ret))
    return ops


@pytest.mark.parametrize("seed", range(8))
def test_Check_agrees_with_brute_force_on_small_random_histories(seed: int) -> None:
    rng = random.Random(seed)
    verdicts = set()
    for _ in range(60):
        history = _random_history(rng, rng.randrange(1, 6))
        expected = _brute(history)
        verdicts.add(expected)
        assert ok(history) is expected, history
    assert verdicts == {True, False}  # both answers were exercised


def test_Check_a_long_history_is_fast() -> None:
    result = check(_real_history(7, 8, 2000), Register())
    assert result.linearizable is True
    assert result.steps < 200_000
