"""Compile a parsed filter into one predicate over a subject; evaluate it.

Rule: everything that can be decided from the text and the field spec is decided once, in
``compile_filter``: selectors are checked against the spec, operators against the field's
type, literals coerced to it (Go's ``strconv`` rules, go-bexpr's messages), regular
expressions compiled. What is left is a tree of closures that walk the subject's
mappings; evaluating parses nothing and allocates little.

Semantics are go-bexpr's (v0.1.2, as Consul 1.6–1.10 use it):

- a selector that crosses a list of structs (``Checks.Status``) matches when ANY element
  matches, and an empty or absent list matches nothing, even for negated operators;
- a missing map key or an absent nested object is "not present": ``==``, ``in``,
  ``is not empty`` and ``matches`` are false there, their negations true;
- ``x != v`` is ``not (x == v)`` at the leaf; ``in`` on a string is a substring test;
- ``matches`` is an unanchored RE2 search (google-re2: Go's regexp dialect, linear time).

Without a field spec the types come from the subject's values at evaluation time, and
an operator that does not fit a value raises ``FilterError`` then.

Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final, TypeAlias, TypeVar

import re2

from node.filter.fields import OPERATORS, FieldSpec, FieldType, Kind
from node.filter.grammar import And, Expr, FilterError, Match, Not, Op, parse

__all__ = ["Filter", "compile_filter"]

T = TypeVar("T")
Predicate: TypeAlias = Callable[[object], bool]


class _Missing:
    """The value of a selector whose key or parent object is absent."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Final = _Missing()
_NEGATED: Final = {
    Op.NOT_EQUAL: Op.EQUAL,
    Op.NOT_IN: Op.IN,
    Op.IS_NOT_EMPTY: Op.IS_EMPTY,
    Op.NOT_MATCHES: Op.MATCHES,
}
_RE2_OPTIONS: Final = re2.Options()
_RE2_OPTIONS.log_errors = False


class Filter:
    """A compiled filter expression: ``matches(subject)`` for one subject, ``select`` for many."""

    __slots__ = ("text", "_predicate")

    def __init__(self, text: str, predicate: Predicate) -> None:
        self.text = text
        self._predicate = predicate

    def matches(self, subject: Mapping[str, object]) -> bool:
        return self._predicate(subject)

    def select(self, subjects: Iterable[T]) -> list[T]:
        """The subjects that match, in order."""
        predicate = self._predicate
        return [subject for subject in subjects if predicate(subject)]

    def __repr__(self) -> str:
        return f"Filter({self.text!r})"


def compile_filter(text: str, fields: FieldSpec | None = None) -> Filter:
    """Parse ``text`` once and compile it against ``fields`` (Consul's selector table of the
    endpoint); raise ``FilterError`` with go-bexpr's message when it is not valid."""
    return Filter(text, _compile(parse(text), fields))


def _compile(expr: Expr, fields: FieldSpec | None) -> Predicate:
    if isinstance(expr, Match):
        return _compile_match(expr, fields)
    if isinstance(expr, Not):
        operand = _compile(expr.operand, fields)
        return lambda subject: not operand(subject)
    operands = [_compile(item, fields) for item in expr.operands]
    return _all(operands) if isinstance(expr, And) else _any(operands)


def _all(predicates: Sequence[Predicate]) -> Predicate:
    if len(predicates) == 2:
        first, second = predicates
        return lambda subject: first(subject) and second(subject)
    if len(predicates) == 3:
        first, second, third = predicates
        return lambda subject: first(subject) and second(subject) and third(subject)
    return lambda subject: all(predicate(subject) for predicate in predicates)


def _any(predicates: Sequence[Predicate]) -> Predicate:
    if len(predicates) == 2:
        first, second = predicates
        return lambda subject: first(subject) or second(subject)
    return lambda subject: any(predicate(subject) for predicate in predicates)


# -- one match expression -----------------------------------------------------------------


def _compile_match(match: Match, fields: FieldSpec | None) -> Predicate:
    if fields is None:
        types = None
        test = _dynamic_test(match)
    else:
        types = _resolve(match.selector, fields)
        test = _typed_test(match, types[-1])
    if match.op in _NEGATED:
        # Negated at the leaf: under a list of structs, `!=` means "some element differs".
        positive = test
        test = lambda value: not positive(value)  # noqa: E731
    return _path(match.selector, types, test)


def _resolve(selector: tuple[str, ...], fields: FieldSpec) -> list[FieldType]:
    """The type of the value at each part of ``selector``; an unknown part is refused."""
    types: list[FieldType] = []
    for i, part in enumerate(selector):
        found = fields.get(part) if not types else _child(types[-1], part)
        if found is None:
            raise FilterError(f'Selector "{".".join(selector[: i + 1])}" is not valid')
        types.append(found)
    return types


def _child(parent: FieldType, part: str) -> FieldType | None:
    if parent.kind is Kind.MAP:
        return parent.element
    if parent.fields is not None:
        return parent.fields.get(part)
    return None


def _path(selector: tuple[str, ...], types: list[FieldType] | None, test: Predicate) -> Predicate:
    """Apply ``test`` to the value ``selector`` reaches, fanning out over lists of structs
    (true when any element's value passes)."""
    if types is None:
        return _dynamic_path(selector, test)
    # Split the selector after each part that is a list of structs (except the last).
    groups: list[tuple[str, ...]] = []
    begin = 0
    for i, ftype in enumerate(types[:-1]):
        if ftype.kind is Kind.STRUCT_LIST:
            groups.append(selector[begin : i + 1])
            begin = i + 1
    groups.append(selector[begin:])
    predicate = _lookup(groups[-1], test)
    for group in reversed(groups[:-1]):
        predicate = _lookup(group, _fan_out(predicate))
    return predicate


def _fan_out(predicate: Predicate) -> Predicate:
    def any_item(items: object) -> bool:
        if isinstance(items, list | tuple):
            for item in items:
                if predicate(item):
                    return True
        return False

    return any_item


def _lookup(keys: tuple[str, ...], then: Predicate) -> Predicate:
    """``then`` of the value at ``keys`` below a subject (``_MISSING`` where one is absent)."""
    if len(keys) == 1:
        (key,) = keys

        def one(subject: object) -> bool:
            if type(subject) is dict:
                return then(subject.get(key, _MISSING))
            return then(subject.get(key, _MISSING) if isinstance(subject, Mapping) else _MISSING)

        return one

    def many(subject: object) -> bool:
        value = subject
        for key in keys:
            if type(value) is dict or isinstance(value, Mapping):
                value = value.get(key, _MISSING)
            else:
                return then(_MISSING)
        return then(value)

    return many


def _dynamic_path(selector: tuple[str, ...], test: Predicate) -> Predicate:
    """Without types: fan out wherever a list meets a selector with parts left."""
    last = len(selector) - 1

    def walk(value: object, i: int) -> bool:
        while True:
            value = value.get(selector[i], _MISSING) if isinstance(value, Mapping) else _MISSING
            if i == last:
                return test(value)
            if isinstance(value, list | tuple):
                return any(walk(item, i + 1) for item in value)
            i += 1

    return lambda subject: walk(subject, 0)


# -- typed tests ----------------------------------------------------------------------------


def _typed_test(match: Match, ftype: FieldType) -> Predicate:
    """The positive test of ``match`` on a value of type ``ftype``, checked and coerced now."""
    if match.op not in OPERATORS[ftype.kind]:
        raise FilterError(f'Invalid match operator "{match.op.value}" for selector "{match.name}"')
    op = _NEGATED.get(match.op, match.op)
    if op is Op.IS_EMPTY:
        return _is_empty
    raw = match.value if match.value is not None else ""
    if ftype.kind in (Kind.LIST, Kind.MAP):
        element = ftype.element if ftype.kind is Kind.LIST and ftype.element else None
        wanted = _coerce(match, raw, element.kind if element else Kind.STRING)
        return lambda value: isinstance(value, list | tuple | Mapping) and wanted in value
    if op is Op.MATCHES:
        return _regex_test(match, raw)
    wanted = _coerce(match, raw, ftype.kind)
    if op is Op.IN:
        assert isinstance(wanted, str)  # only strings allow `in` among primitives
        return lambda value: isinstance(value, str) and wanted in value
    return _equality(wanted)


def _equality(wanted: object) -> Predicate:
    if isinstance(wanted, bool):
        return lambda value: value is wanted
    if isinstance(wanted, str):
        return lambda value: value == wanted
    if isinstance(wanted, float) and math.isnan(wanted):
        return lambda value: False
    return lambda value: value == wanted and type(value) is not bool


def _is_empty(value: object) -> bool:
    if value is _MISSING or value is None:
        return True
    return isinstance(value, str | list | tuple | Mapping) and len(value) == 0


def _regex_test(match: Match, pattern: str) -> Predicate:
    try:
        regex = re2.compile(_utf8_safe(pattern), _RE2_OPTIONS)
    except re2.error as exc:
        detail = (
            exc.args[0].decode("utf-8", "replace")
            if exc.args and isinstance(exc.args[0], bytes)
            else str(exc)
        )
        raise FilterError(
            f'Failed to compile regular expression "{_go_quote(pattern)}": error parsing regexp: {detail}'
        ) from None
    search = regex.search

    def test(value: object) -> bool:
        if not isinstance(value, str):
            return False
        try:
            return search(value) is not None
        except UnicodeEncodeError:  # a lone surrogate, from a JSON "\ud800" escape
            return search(_utf8_safe(value)) is not None

    return test


def _utf8_safe(text: str) -> str:
    """``text`` with what UTF-8 cannot encode (lone surrogates) replaced, as RE2 needs."""
    return text.encode("utf-8", "replace").decode("utf-8")


# -- untyped tests --------------------------------------------------------------------------


def _dynamic_test(match: Match) -> Predicate:
    """The positive test of ``match`` where the value's type is known only when evaluating."""
    op = _NEGATED.get(match.op, match.op)
    if op is Op.IS_EMPTY:
        return _dynamic_is_empty(match)
    raw = match.value if match.value is not None else ""
    regex = _regex_test(match, raw) if op is Op.MATCHES else None
    coerced: dict[Kind, object] = {}

    def wanted(kind: Kind) -> object:
        if kind not in coerced:
            coerced[kind] = _coerce(match, raw, kind)
        return coerced[kind]

    def test(value: object) -> bool:
        if value is _MISSING or value is None:
            return False
        if regex is not None:
            if not isinstance(value, str):
                raise _unfit(match, value)
            return regex(value)
        if op is Op.IN:
            return _dynamic_in(match, value, wanted)
        kind = _kind_of(value)
        if kind not in (Kind.STRING, Kind.INT, Kind.FLOAT, Kind.BOOL):
            raise _unfit(match, value)
        return _equality(wanted(kind))(value)

    return test


def _dynamic_in(match: Match, value: object, wanted: Callable[[Kind], object]) -> bool:
    if isinstance(value, str):
        return wanted(Kind.STRING) in value  # type: ignore[operator]
    if isinstance(value, Mapping):
        return wanted(Kind.STRING) in value
    if isinstance(value, list | tuple):
        for item in value:
            kind = _kind_of(item)
            if kind in (Kind.STRING, Kind.INT, Kind.FLOAT, Kind.BOOL) and _equality(wanted(kind))(
                item
            ):
                return True
        return False
    raise _unfit(match, value)


def _dynamic_is_empty(match: Match) -> Predicate:
    def test(value: object) -> bool:
        if value is _MISSING or value is None or isinstance(value, str | list | tuple | Mapping):
            return _is_empty(value)
        raise _unfit(match, value)

    return test


def _kind_of(value: object) -> Kind:
    if isinstance(value, bool):
        return Kind.BOOL
    if isinstance(value, int):
        return Kind.INT
    if isinstance(value, float):
        return Kind.FLOAT
    if isinstance(value, str):
        return Kind.STRING
    if isinstance(value, Mapping):
        return Kind.MAP
    return Kind.LIST if isinstance(value, list | tuple) else Kind.STRUCT


def _unfit(match: Match, value: object) -> FilterError:
    return FilterError(
        f'Invalid match operator "{match.op.value}" for selector "{match.name}" '
        f"(its value is a {_kind_of(value).value})"
    )


# -- Go's strconv, for literals -------------------------------------------------------------

_TRUE: Final = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE: Final = frozenset({"0", "f", "F", "FALSE", "false", "False"})
_INT64: Final = (-(2**63), 2**63 - 1)


def _coerce(match: Match, raw: str, kind: Kind) -> object:
    """``raw`` as a value of ``kind`` (go-bexpr's CoerceFn), or go-bexpr's error."""
    if kind is Kind.STRING:
        return raw
    func = {Kind.INT: "ParseInt", Kind.FLOAT: "ParseFloat", Kind.BOOL: "ParseBool"}.get(kind)
    if func is None:
        return raw
    value, reason = _parse_go(raw, kind)
    if reason:
        raise FilterError(
            f'Failed to coerce value "{_go_quote(raw)}" for selector "{match.name}": '
            f'strconv.{func}: parsing "{_go_quote(raw)}": {reason}'
        )
    return value


def _parse_go(raw: str, kind: Kind) -> tuple[object, str]:
    if kind is Kind.BOOL:
        if raw in _TRUE:
            return True, ""
        return (False, "") if raw in _FALSE else (None, "invalid syntax")
    if kind is Kind.INT:
        return _parse_go_int(raw)
    if not raw or raw != raw.strip():
        return None, "invalid syntax"
    try:
        return float(raw), ""
    except ValueError:
        return None, "invalid syntax"


def _parse_go_int(raw: str) -> tuple[object, str]:
    """``strconv.ParseInt(raw, 0, 64)``: sign, then 0x/0o/0b or a leading 0 for octal."""
    body = raw[1:] if raw[:1] in ("+", "-") else raw
    if not body or body != body.strip():
        return None, "invalid syntax"
    if len(body) > 1 and body[0] == "0" and body[1] not in "xXoObB":
        body = "0o" + body[1:]
    try:
        value = int(body, 0)
    except ValueError:
        return None, "invalid syntax"
    value = -value if raw[0] == "-" else value
    if not _INT64[0] <= value <= _INT64[1]:
        return None, "value out of range"
    return value, ""


def _go_quote(text: str) -> str:
    """The inside of Go's ``%q`` of ``text`` (enough of it for messages)."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
