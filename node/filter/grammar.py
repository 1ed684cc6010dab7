"""The grammar of Consul's filter expressions: text → an immutable expression tree.

Rule: this module follows go-bexpr's PEG (``grammar.peg``, as vendored by Consul) rule by
rule, alternative by alternative, so that it accepts exactly what Consul accepts and fails
where Consul fails with the same message: ``<line>:<col> (<byte offset>): no match found,
expected: <terminals>`` from the farthest position any terminal was tried at, or ``rule
"<name>": <reason>`` from the grammar's own error alternatives (``Invalid number literal``,
``Unmatched parentheses``, ...). That is why it is written by hand: no maintained Python
parser library speaks this grammar, and a generated parser from a generic library (lark,
pyparsing) reports failures in its own words and positions, which would then have to be
translated back into go-bexpr's. The transcription is small and mechanical; the only
liberties are equivalent ones: the right-recursive ``and``/``or``/``not`` rules become
loops (the same terminals are tried at the same places, so the errors are identical),
and ``OrExpression`` is memoised by position, which keeps backtracking over nested
parentheses linear instead of exponential.

Bounds: the text is at most ``MAX_EXPRESSION_LENGTH`` characters and parentheses nest at
most ``MAX_NESTING`` deep; beyond that the parser refuses rather than recursing.

Pure: no I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeAlias

from node.errors import InvalidRequest

__all__ = [
    "MAX_EXPRESSION_LENGTH",
    "MAX_NESTING",
    "FilterError",
    "Op",
    "Match",
    "Not",
    "And",
    "Or",
    "Expr",
    "parse",
]

#: Longest expression accepted (characters). Consul sets none; a query string has one.
MAX_EXPRESSION_LENGTH: Final = 4096
#: Deepest nesting of parentheses accepted.
MAX_NESTING: Final = 64


class FilterError(InvalidRequest):
    """A filter expression that does not parse, names an unknown selector or misuses a type.

    ``str()`` is go-bexpr's message: where parsing failed (``line:col (offset)``) and
    what was expected, or which selector, operator or value is wrong.
    """


class Op(enum.Enum):
    """A match operator; the value is go-bexpr's name for it, used in its messages."""

    EQUAL = "Equal"
    NOT_EQUAL = "Not Equal"
    IN = "In"
    NOT_IN = "Not In"
    IS_EMPTY = "Is Empty"
    IS_NOT_EMPTY = "Is Not Empty"
    MATCHES = "Matches"
    NOT_MATCHES = "Not Matches"


@dataclass(frozen=True, slots=True)
class Match:
    """``selector <op> value`` (``value`` is ``None`` for ``is [not] empty``)."""

    selector: tuple[str, ...]
    op: Op
    value: str | None

    @property
    def name(self) -> str:
        """The selector as go-bexpr prints it: its parts joined by dots."""
        return ".".join(self.selector)


@dataclass(frozen=True, slots=True)
class Not:
    operand: Expr


@dataclass(frozen=True, slots=True)
class And:
    operands: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Or:
    operands: tuple[Expr, ...]


Expr: TypeAlias = Match | Not | And | Or
_Rule: TypeAlias = Callable[[], bool]
_ExprRule: TypeAlias = Callable[[], "Expr | None"]


def parse(text: str) -> Expr:
    """Parse ``text``; raise :class:`FilterError` with go-bexpr's message if it is not valid."""
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise FilterError(
            f"expression is {len(text)} characters long, at most {MAX_EXPRESSION_LENGTH} are accepted"
        )
    return _Parser(text).run()


# -- the parser ---------------------------------------------------------------------------

_WS: Final = frozenset(" \t\r\n")
_ALPHA: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_ALNUM_: Final = _ALPHA | frozenset("0123456789_")
_DIGITS: Final = frozenset("0123456789")
_DIGITS_1_9: Final = frozenset("123456789")

# Operator rules that follow a selector, in the grammar's order: (words, operator).
# A word list means `_ w1 _ w2 ... _` (`==`/`!=` take optional whitespace instead).
_SELECTOR_VALUE_OPS: Final = (
    (("==",), Op.EQUAL),
    (("!=",), Op.NOT_EQUAL),
    (("contains",), Op.IN),
    (("not", "contains"), Op.NOT_IN),
    (("matches",), Op.MATCHES),
    (("not", "matches"), Op.NOT_MATCHES),
)
_SELECTOR_OPS: Final = ((("is", "empty"), Op.IS_EMPTY), (("is", "not", "empty"), Op.IS_NOT_EMPTY))
_VALUE_SELECTOR_OPS: Final = ((("in",), Op.IN), (("not", "in"), Op.NOT_IN))


class _Parser:
    """One parse of one text: a PEG with pigeon's error bookkeeping.

    Every terminal attempt goes through ``_expect``, which keeps the terminals tried at the
    farthest position (inverted inside ``!`` predicates, as pigeon does); ``_error`` records
    the grammar's own error alternatives under the innermost named rule.
    """

    def __init__(self, text: str) -> None:
        self.s = text
        self.n = len(text)
        self.pos = 0
        self.fail_pos = -1
        self.expected: set[str] = set()
        self.invert = False
        self.errors: dict[str, None] = {}  # ordered, deduplicated like pigeon's errList
        self.rules: list[str] = []
        self.nesting = 0
        self.memo: dict[int, tuple[Expr | None, int]] = {}

    # -- bookkeeping --------------------------------------------------------------------

    def run(self) -> Expr:
        expr = self._input()
        if self.errors:
            raise FilterError("\n".join(self.errors))
        if expr is None:
            raise FilterError(
                f"{self._where(self.fail_pos)}: no match found, expected: {self._expected_list()}"
            )
        return expr

    def _where(self, pos: int) -> str:
        # pigeon's position: the line/column of the rune at ``pos`` (a newline there already
        # counts as the next line, column 0) and the byte offset.
        before = self.s[:pos]
        line = before.count("\n") + 1
        if pos < self.n and self.s[pos] == "\n":
            line, col = line + 1, 0
        else:
            col = pos - before.rfind("\n")
        return f"{line}:{col} ({len(before.encode('utf-8', 'surrogatepass'))})"

    def _expected_list(self) -> str:
        eof = "!." in self.expected
        items = sorted(self.expected - {"!."})
        if eof:
            items.append("EOF")
        if len(items) < 2:
            return "".join(items)
        return ", ".join(items[:-1]) + " or " + items[-1]

    def _expect(self, matched: bool, pos: int, want: str) -> None:
        if matched != self.invert or pos < self.fail_pos:
            return
        if pos > self.fail_pos:
            self.fail_pos = pos
            self.expected = set()
        self.expected.add("!" + want if self.invert else want)

    def _error(self, reason: str, pos: int | None = None) -> None:
        where = self._where(self.pos if pos is None else pos)
        self.errors[f'{where}: rule "{self.rules[-1]}": {reason}'] = None

    # -- terminals ----------------------------------------------------------------------

    def _lit(self, text: str) -> bool:
        ok = self.s.startswith(text, self.pos)
        self._expect(ok, self.pos, '"' + text.replace('"', '\\"') + '"')
        if ok:
            self.pos += len(text)
        return ok

    def _cls(self, chars: frozenset[str], want: str) -> bool:
        ok = self.pos < self.n and self.s[self.pos] in chars
        self._expect(ok, self.pos, want)
        if ok:
            self.pos += 1
        return ok

    def _any(self) -> bool:
        ok = self.pos < self.n
        self._expect(ok, self.pos, ".")
        if ok:
            self.pos += 1
        return ok

    def _not_ahead(self, rule: _Rule) -> bool:
        """``!rule``: true when ``rule`` does not match here; consumes nothing."""
        start = self.pos
        self.invert = not self.invert
        ok = rule()
        self.invert = not self.invert
        self.pos = start
        return not ok

    def _ws(self) -> bool:
        """``_ <- [ \\t\\r\\n]+``"""
        if not self._cls(_WS, "[ \\t\\r\\n]"):
            return False
        while self._cls(_WS, "[ \\t\\r\\n]"):
            pass
        return True

    def _eof(self) -> bool:
        """``EOF <- !.``"""
        return self._not_ahead(self._any)

    # -- expressions --------------------------------------------------------------------

    def _input(self) -> Expr | None:
        # Input <- _? "(" _? Or _? ")" _? EOF / _? Or _? EOF
        self._ws()
        if self._lit("("):
            self._ws()
            self.nesting = 1
            expr = self._or()
            self.nesting = 0
            if expr is not None:
                self._ws()
                if self._lit(")"):
                    self._ws()
                    if self._eof():
                        return expr
        self.pos = 0
        self._ws()
        expr = self._or()
        if expr is not None:
            self._ws()
            if self._eof():
                return expr
        return None

    def _or(self) -> Expr | None:
        start = self.pos
        hit = self.memo.get(start)
        if hit is not None:
            self.pos = hit[1]
            return hit[0]
        expr = self._chain("or", self._and, Or)
        self.memo[start] = (expr, self.pos)
        return expr

    def _and(self) -> Expr | None:
        return self._chain("and", self._not, And)

    def _chain(self, word: str, operand: _ExprRule, node: type[And] | type[Or]) -> Expr | None:
        # X <- Y _ word _ X / Y, as a loop: stop before the first `_ word _ Y` that fails.
        first = operand()
        if first is None:
            return None
        items = [first]
        while True:
            back = self.pos
            nxt = operand() if self._ws() and self._lit(word) and self._ws() else None
            if nxt is None:
                self.pos = back
                break
            items.append(nxt)
        return items[0] if len(items) == 1 else node(tuple(items))

    def _not(self) -> Expr | None:
        # NotExpression <- "not" _ NotExpression / ParenthesizedExpression. Each "not _"
        # prefix is an alternative; when the group after k of them fails, the grammar
        # falls back to a group at the k-1th, and so on.
        starts = [self.pos]
        while self._lit("not") and self._ws():
            starts.append(self.pos)
        for count in range(len(starts) - 1, -1, -1):
            self.pos = starts[count]
            expr = self._group()
            if expr is not None:
                return Not(expr) if count % 2 else expr
        self.pos = starts[0]
        return None

    def _group(self) -> Expr | None:
        self.rules.append("grouping")
        try:
            return self._group_alternatives()
        finally:
            self.rules.pop()

    def _group_alternatives(self) -> Expr | None:
        start = self.pos
        expr = self._paren_body()
        if expr is not None and self._lit(")"):
            return expr
        self.pos = start
        expr = self._match()
        if expr is not None:
            return expr
        self.pos = start
        if self._paren_body() is not None and self._not_ahead(lambda: self._lit(")")):
            self._error("Unmatched parentheses")
        self.pos = start
        return None

    def _paren_body(self) -> Expr | None:
        """``"(" _? OrExpression _?``"""
        if not self._lit("("):
            return None
        self._ws()
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            raise FilterError(
                f"{self._where(self.pos)}: parentheses nested deeper than {MAX_NESTING} levels"
            )
        try:
            expr = self._or()
        finally:
            self.nesting -= 1
        if expr is not None:
            self._ws()
        return expr

    # -- match expressions --------------------------------------------------------------

    def _match(self) -> Match | None:
        self.rules.append("match")
        try:
            start = self.pos
            for alternative in (
                self._selector_op_value,
                self._selector_op,
                self._value_op_selector,
            ):
                self.pos = start
                found = alternative()
                if found is not None:
                    return found
            self.pos = start
            return None
        finally:
            self.rules.pop()

    def _selector_op_value(self) -> Match | None:
        selector = self._selector()
        if selector is None:
            return None
        op = self._operator(_SELECTOR_VALUE_OPS)
        if op is None:
            return None
        value = self._value()
        return None if value is None else Match(selector, op, value)

    def _selector_op(self) -> Match | None:
        selector = self._selector()
        if selector is None:
            return None
        op = self._operator(_SELECTOR_OPS)
        return None if op is None else Match(selector, op, None)

    def _value_op_selector(self) -> Match | None:
        start = self.pos
        value = self._value()
        if value is None:
            return None
        op = self._operator(_VALUE_SELECTOR_OPS)
        if op is None:
            return None
        selector = self._selector()
        if selector is not None:
            return Match(selector, op, value)
        # The error alternative: the same prefix, then no selector.
        self.pos = start
        if (
            self._value() is not None
            and self._operator(_VALUE_SELECTOR_OPS) is not None
            and self._not_ahead(lambda: self._selector() is not None)
        ):
            self._error("Invalid selector")
        return None

    def _operator(self, table: tuple[tuple[tuple[str, ...], Op], ...]) -> Op | None:
        start = self.pos
        for words, op in table:
            self.pos = start
            if self._operator_words(words):
                return op
        self.pos = start
        return None

    def _operator_words(self, words: tuple[str, ...]) -> bool:
        if words[0] in ("==", "!="):
            # MatchEqual <- _? "==" _?
            self._ws()
            if not self._lit(words[0]):
                return False
            self._ws()
            return True
        # `_ w1 _ w2 ... wn _`, except that `is [not] empty` ends on its last word.
        for word in words:
            if not (self._ws() and self._lit(word)):
                return False
        return words[-1] == "empty" or self._ws()

    # -- selectors and values -----------------------------------------------------------

    def _selector(self) -> tuple[str, ...] | None:
        self.rules.append("selector")
        try:
            first = self._identifier()
            if first is None:
                return None
            parts = [first]
            while True:
                back = self.pos
                part = self._identifier() if self._lit(".") else None
                if part is None:
                    self.pos = back
                    part = self._index()
                if part is None:
                    self.pos = back
                    return tuple(parts)
                parts.append(part)
        finally:
            self.rules.pop()

    def _identifier(self) -> str | None:
        start = self.pos
        if not self._cls(_ALPHA, "[a-zA-Z]"):
            return None
        while self._cls(_ALNUM_, "[a-zA-Z0-9_]"):
            pass
        return self.s[start : self.pos]

    def _index(self) -> str | None:
        self.rules.append("index")
        try:
            start = self.pos
            if not self._lit("["):
                return None
            self._ws()
            key = self._string()
            if key is not None:
                self._ws()
                if self._lit("]"):
                    return key
            self.pos = start
            self._lit("[")
            self._ws()
            if self._not_ahead(lambda: self._string() is not None):
                self._error("Invalid index")
                return None
            self._string()
            self._ws()
            if self._not_ahead(lambda: self._lit("]")):
                self._error("Unclosed index expression")
            return None
        finally:
            self.rules.pop()

    def _value(self) -> str | None:
        self.rules.append("value")
        try:
            start = self.pos
            selector = self._selector()
            if selector is not None:
                return ".".join(selector)
            self.pos = start
            number = self._number()
            if number is not None:
                return number
            self.pos = start
            return self._string()
        finally:
            self.rules.pop()

    def _number(self) -> str | None:
        self.rules.append("number")
        try:
            start = self.pos
            self._lit("-")
            if not self._integer_or_float():
                self.pos = start
                return None
            if self._after_number():
                return self.s[start : self.pos]
            self._error("Invalid number literal")
            self.pos = start
            return None
        finally:
            self.rules.pop()

    def _integer_or_float(self) -> bool:
        # IntegerOrFloat <- ("0" / [1-9][0-9]*) ("." [0-9]+)?
        if not self._lit("0"):
            if not self._cls(_DIGITS_1_9, "[1-9]"):
                return False
            while self._cls(_DIGITS, "[0-9]"):
                pass
        back = self.pos
        if self._lit(".") and self._cls(_DIGITS, "[0-9]"):
            while self._cls(_DIGITS, "[0-9]"):
                pass
        else:
            self.pos = back
        return True

    def _after_number(self) -> bool:
        # AfterNumbers <- &(_ / EOF / ")")
        start = self.pos
        ok = self._ws() or self._eof() or self._lit(")")
        self.pos = start
        return ok

    def _string(self) -> str | None:
        self.rules.append("string")
        try:
            return self._string_alternatives()
        finally:
            self.rules.pop()

    def _string_alternatives(self) -> str | None:
        start = self.pos
        for quote in ("`", '"'):
            self.pos = start
            if self._lit(quote) and self._skip_until(quote) and self._lit(quote):
                text = self.s[start : self.pos]
                value = _go_unquote(text)
                if value is None:
                    self._error("invalid syntax", start)
                    return ""
                return value
        for quote in ("`", '"'):
            self.pos = start
            if self._lit(quote) and self._skip_until(quote) and self._eof():
                self._error("Unterminated string literal")
                break
        self.pos = start
        return None

    def _skip_until(self, quote: str) -> bool:
        """``(!quote .)*``: always succeeds."""
        while True:
            back = self.pos
            if not (self._not_ahead(lambda: self._lit(quote)) and self._any()):
                self.pos = back
                return True


# -- Go's strconv.Unquote ------------------------------------------------------------------

_SIMPLE_ESCAPES: Final = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    '"': '"',
}
_HEX: Final = frozenset("0123456789abcdefABCDEF")
_OCT: Final = frozenset("01234567")


def _go_unquote(text: str) -> str | None:
    """What Go's ``strconv.Unquote`` makes of a quoted literal, or ``None`` where it fails."""
    quote, body = text[0], text[1:-1]
    if quote == "`":
        return body.replace("\r", "")
    if "\n" in body:
        return None
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        decoded = _go_escape(body, i + 1)
        if decoded is None:
            return None
        char, i = decoded
        out.append(char)
    return "".join(out)


def _go_escape(body: str, i: int) -> tuple[str, int] | None:
    """The escape whose letter is at ``body[i]``: (its character, the index after it)."""
    if i >= len(body):
        return None
    c = body[i]
    if c in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[c], i + 1
    width = {"x": 2, "u": 4, "U": 8}.get(c)
    if width is not None:
        digits = body[i + 1 : i + 1 + width]
        if len(digits) != width or not set(digits) <= _HEX:
            return None
        code = int(digits, 16)
        if c != "x" and (code > 0x10FFFF or 0xD800 <= code <= 0xDFFF):
            return None
        return chr(code), i + 1 + width
    digits = body[i : i + 3]
    if len(digits) == 3 and set(digits) <= _OCT and int(digits, 8) <= 0xFF:
        return chr(int(digits, 8)), i + 3
    return None
