"""Is a recorded history of concurrent operations linearizable? (Wing & Gong, with Lowe's cache)

Rule: a history is linearizable when every operation can be given one instant between
its call and its return such that, taken in the order of those instants, the operations
are a legal run of the sequential ``Model``. ``check`` searches for such an order:

- **Wing & Gong's search.** Calls and returns form one list in time order (a call
  before a return at the same instant: that is the permissive reading). The search
  walks it; at a call it tries to linearize the operation now (the model accepts it from
  the current state), lifts its call and return out of the list and starts over from
  the head; at a return whose operation is not linearized yet it has gone too far, and
  it undoes the last choice and tries the next candidate instead.
- **Lowe's memoisation.** A configuration is (the set of linearized operations, the
  model's state); one seen before failed before, so it is never explored twice.
- **P-compositionality.** Linearizability is local (Herlihy & Wing): a history is
  linearizable iff each object's sub-history is, so operations are partitioned by
  ``key`` and each part is searched alone.
- **Unknown outcomes.** An operation whose outcome the client never learned (a timeout,
  a dropped connection, a ``500`` from a server that had forwarded the write) has
  ``output=UNKNOWN`` and no return: it may take effect at any instant after its call, or
  never (it is then linearized last, where it changes nothing anyone saw).
- **Nondeterminism.** ``Model.step`` returns every state an operation may lead to (an
  unknown CAS may or may not have applied); the search carries the set of possible
  states, so the model stays a plain sequential specification.

The search is exponential in the worst case; ``max_steps`` bounds it, and a search cut
short answers ``linearizable=None`` rather than a guess.

Hand-written: the Python options (``porcupine`` is Go, ``knossos`` Clojure, Jepsen's
checkers need a JVM) would need another runtime in the test tier; this is the small
core of the same algorithm.

``Register`` is the model of one Consul-style entry read, written and compare-and-set:
see its docstring for how a history names versions.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

__all__ = [
    "UNKNOWN",
    "Operation",
    "Model",
    "Result",
    "check",
    "Read",
    "Write",
    "Cas",
    "Register",
]


class _Unknown:
    """The outcome of an operation whose client never learned it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Final = _Unknown()

#: Steps of the search for one key before it gives up (answers ``None``).
DEFAULT_MAX_STEPS: Final = 2_000_000


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation as a client saw it: what it asked, what it was told, and when.

    ``call`` and ``ret`` are readings of one monotonic clock; ``ret`` is ``None`` (and
    ``output`` must be ``UNKNOWN``) when no answer came. An ``UNKNOWN`` output with a
    ``ret`` is read as no answer too: the operation may still take effect later.
    """

    client: Hashable
    input: Hashable
    output: Any
    call: float
    ret: float | None
    key: Hashable = None

    def __post_init__(self) -> None:
        if self.ret is None and self.output is not UNKNOWN:
            raise ValueError(f"{self}: an operation without a return has an UNKNOWN output")
        if self.ret is not None and self.ret < self.call:
            raise ValueError(f"{self}: returns before it is called")

    @property
    def pending(self) -> bool:
        """Whether the operation may take effect at any time after its call."""
        return self.output is UNKNOWN or self.ret is None


class Model(Protocol):
    """A sequential specification: states are hashable values."""

    def init(self) -> Hashable:
        """The state before any operation."""
        ...

    def step(self, state: Any, input: Any, output: Any) -> Iterable[Hashable]:
        """Every state ``input`` answered by ``output`` may lead to from ``state`` (none:
        illegal there). ``output`` may be ``UNKNOWN``; then some answer must be legal
        from any state, so that an operation that never took effect can be placed last."""
        ...


@dataclass(frozen=True, slots=True)
class Result:
    """The verdict: ``linearizable`` is ``None`` when ``max_steps`` ran out.

    ``order`` is a linearization when the history is linearizable; otherwise, for the
    first key that is not (``key``), the longest prefix the search could linearize,
    which ends just before the operations that cannot be placed.
    """

    linearizable: bool | None
    order: tuple[Operation, ...]
    key: Hashable = None
    steps: int = 0


def check(
    history: Sequence[Operation], model: Model, *, max_steps: int = DEFAULT_MAX_STEPS
) -> Result:
    """Whether ``history`` is linearizable with respect to ``model``, key by key."""
    parts: dict[Hashable, list[Operation]] = {}
    for op in history:
        parts.setdefault(op.key, []).append(op)
    order: list[Operation] = []
    steps = 0
    for key, ops in parts.items():
        result = _Search(ops, model, max_steps).run()
        steps += result.steps
        if result.linearizable is not True:
            return Result(result.linearizable, result.order, key, steps)
        order += result.order
    return Result(True, tuple(order), None, steps)


_HEAD: Final = -1


class _Search:
    """Wing & Gong's search over one key's operations (see the module rule).

    Events are numbered in time order; ``_next``/``_prev`` link those not lifted yet,
    with ``_HEAD`` before the first and ``len(events)`` after the last.
    """

    def __init__(self, ops: Sequence[Operation], model: Model, max_steps: int) -> None:
        self._ops = list(ops)
        self._model = model
        self._max_steps = max_steps
        # (time, 0 for a call / 1 for a return, op): calls first at equal times.
        events = [(op.call, 0, i) for i, op in enumerate(self._ops)]
        events += [(op.ret, 1, i) for i, op in enumerate(self._ops) if op.ret is not None
                   and not op.pending]  # fmt: skip
        events.sort(key=lambda e: (e[0], e[1]))
        self._is_call = [kind == 0 for _, kind, _ in events]
        self._op_of = [i for _, _, i in events]
        self._ret_of: dict[int, int] = {
            self._op_of[e]: e for e in range(len(events)) if not self._is_call[e]
        }
        self._end = len(events)
        self._next = {e: e + 1 for e in range(_HEAD, self._end)}
        self._prev = {e: e - 1 for e in range(0, self._end + 1)}

    def run(self) -> Result:
        states: frozenset[Hashable] = frozenset({self._model.init()})
        linearized = 0
        seen: set[tuple[int, frozenset[Hashable]]] = set()
        stack: list[tuple[int, frozenset[Hashable]]] = []  # (call event, states before it)
        longest: list[int] = []
        entry = self._next[_HEAD]
        for steps in range(1, self._max_steps + 1):
            if self._next[_HEAD] == self._end:
                return Result(True, self._order(e for e, _ in stack), steps=steps)
            if entry != self._end and self._is_call[entry]:
                op = self._op_of[entry]
                after = self._step(states, self._ops[op])
                config = (linearized | 1 << op, after)
                if after and config not in seen:
                    seen.add(config)
                    stack.append((entry, states))
                    states, linearized = after, config[0]
                    self._lift(entry)
                    if len(stack) > len(longest):
                        longest = [e for e, _ in stack]
                    entry = self._next[_HEAD]
                else:
                    entry = self._next[entry]
                continue
            # A return of an operation not placed yet (or the end): undo the last choice.
            if not stack:
                return Result(False, self._order(longest), steps=steps)
            entry, states = stack.pop()
            linearized &= ~(1 << self._op_of[entry])
            self._unlift(entry)
            entry = self._next[entry]
        return Result(None, self._order(longest), steps=self._max_steps)

    def _step(self, states: frozenset[Hashable], op: Operation) -> frozenset[Hashable]:
        output = UNKNOWN if op.pending else op.output
        return frozenset(s for state in states for s in self._model.step(state, op.input, output))

    def _order(self, calls: Iterable[int]) -> tuple[Operation, ...]:
        return tuple(self._ops[self._op_of[e]] for e in calls)

    def _lift(self, call: int) -> None:
        self._unlink(call)
        ret = self._ret_of.get(self._op_of[call])
        if ret is not None:
            self._unlink(ret)

    def _unlift(self, call: int) -> None:
        ret = self._ret_of.get(self._op_of[call])
        if ret is not None:
            self._relink(ret)
        self._relink(call)

    def _unlink(self, e: int) -> None:
        self._next[self._prev[e]] = self._next[e]
        self._prev[self._next[e]] = self._prev[e]

    def _relink(self, e: int) -> None:
        self._next[self._prev[e]] = e
        self._prev[self._next[e]] = e


# --------------------------------------------------------------------------- the register


@dataclass(frozen=True, slots=True)
class Read:
    """Read the register; the output is the value seen (``None``: absent)."""


@dataclass(frozen=True, slots=True)
class Write:
    """Write ``value``; the output is ``True`` (applied), ``False`` (refused) or unknown."""

    value: Hashable


@dataclass(frozen=True, slots=True)
class Cas:
    """Write ``value`` if the register still holds the version ``expected`` (``None``: only
    if absent, as ``?cas=0``); the output is ``True``, ``False`` or unknown."""

    expected: Hashable
    value: Hashable


class Register:
    """One entry read, written and compared-and-set, as Consul's ``?cas=`` does.

    The state is the value held (``None``: absent). A history writes each value at most
    once, so a value names its version; Consul's ``?cas=<modify index>`` is recorded as
    ``Cas(expected=<the value the read that gave that index returned>, ...)``. That keeps
    the model free of how a server numbers versions, which no client can predict.
    """

    def __init__(self, initial: Hashable = None) -> None:
        self._initial = initial

    def init(self) -> Hashable:
        """The value before the history (``None``: absent)."""
        return self._initial

    def step(self, state: Any, input: Any, output: Any) -> Iterable[Hashable]:
        """See ``Model.step``."""
        if isinstance(input, Read):
            return (state,) if output is UNKNOWN or output == state else ()
        if isinstance(input, Write):
            return {True: (input.value,), False: (state,)}.get(output, (input.value, state))
        if isinstance(input, Cas):
            holds = state == input.expected
            if output is UNKNOWN:
                return (input.value, state) if holds else (state,)
            if output is True:
                return (input.value,) if holds else ()
            return (state,) if output is False and not holds else ()
        raise TypeError(f"a register cannot {input!r}")
