"""The grammar: go-bexpr's parse tree and its error messages, position for position."""

from __future__ import annotations

import pytest

from node.filter.grammar import (
    MAX_EXPRESSION_LENGTH,
    MAX_NESTING,
    And,
    FilterError,
    Match,
    Not,
    Op,
    Or,
    parse,
)


def m(selector: str, op: Op, value: str | None = None) -> Match:
    return Match(tuple(selector.split(".")), op, value)


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("Service == web", m("Service", Op.EQUAL, "web")),
        ("Service==web", m("Service", Op.EQUAL, "web")),
        ("Meta.env != qa", m("Meta.env", Op.NOT_EQUAL, "qa")),
        ('"primary" in Tags', m("Tags", Op.IN, "primary")),
        ("Tags contains primary", m("Tags", Op.IN, "primary")),
        ("Tags not contains primary", m("Tags", Op.NOT_IN, "primary")),
        ("primary not in Tags", m("Tags", Op.NOT_IN, "primary")),
        ("Tags is empty", m("Tags", Op.IS_EMPTY)),
        ("Tags is not empty", m("Tags", Op.IS_NOT_EMPTY)),
        ('Meta["build.id"] == "a-1"', Match(("Meta", "build.id"), Op.EQUAL, "a-1")),
        ("Meta[`a-b`] == x", Match(("Meta", "a-b"), Op.EQUAL, "x")),
        ("Address matches `^10\\.`", m("Address", Op.MATCHES, "^10\\.")),
        ('Node not matches "^old-"', m("Node", Op.NOT_MATCHES, "^old-")),
        ("Port == 8080", m("Port", Op.EQUAL, "8080")),
        ("Port == -1.5", m("Port", Op.EQUAL, "-1.5")),
        ('Name == "a\\tb"', m("Name", Op.EQUAL, "a\tb")),
        ('Name == "\\u00e9\\x41\\101"', m("Name", Op.EQUAL, "éAA")),
        ("Meta.env == Meta.other", m("Meta.env", Op.EQUAL, "Meta.other")),
        ("not not a == b", m("a", Op.EQUAL, "b")),
        ("not not not a == b", Not(m("a", Op.EQUAL, "b"))),
        ("not == 1", m("not", Op.EQUAL, "1")),
        ("notes == x", m("notes", Op.EQUAL, "x")),
        ("  ( a == b )  ", m("a", Op.EQUAL, "b")),
        (
            "a == b or c == d and not e is empty",
            Or(
                (
                    m("a", Op.EQUAL, "b"),
                    And((m("c", Op.EQUAL, "d"), Not(m("e", Op.IS_EMPTY)))),
                )
            ),
        ),
        (
            "(a == b or c == d) and e == f",
            And((Or((m("a", Op.EQUAL, "b"), m("c", Op.EQUAL, "d"))), m("e", Op.EQUAL, "f"))),
        ),
        ("a == b\nand\tc == d", And((m("a", Op.EQUAL, "b"), m("c", Op.EQUAL, "d")))),
    ],
)
def test_parse_tree(text: str, tree: object) -> None:
    assert parse(text) == tree


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # Both from Consul's issues (#7338, #9441), verbatim.
        (
            "foo",
            '1:4 (3): no match found, expected: "!=", ".", "==", "[", [ \\t\\r\\n] or [a-zA-Z0-9_]',
        ),
        ("Address == 10.10.10.10", '1:17 (16): rule "number": Invalid number literal'),
        ("(a == b", '1:8 (7): rule "grouping": Unmatched parentheses'),
        ('a == "x', '1:8 (7): rule "string": Unterminated string literal'),
        ("a == `x", '1:8 (7): rule "string": Unterminated string literal'),
        ("x in ", '1:6 (5): rule "match": Invalid selector'),
        ("Meta[1] == 2", '1:6 (5): rule "index": Invalid index'),
        ('Meta["a" == 2', '1:10 (9): rule "index": Unclosed index expression'),
        ('a == "\\d"', '1:6 (5): rule "string": invalid syntax'),
        ("a == b c", '1:8 (7): no match found, expected: "and", "or", [ \\t\\r\\n] or EOF'),
        (
            "a == qa-1",
            '1:8 (7): no match found, expected: ".", "[", [ \\t\\r\\n], [a-zA-Z0-9_] or EOF',
        ),
        ("a ==\nb c", '2:3 (7): no match found, expected: "and", "or", [ \\t\\r\\n] or EOF'),
        # Columns count characters, offsets bytes.
        ('Name == "é" x', '1:13 (13): no match found, expected: "and", "or", [ \\t\\r\\n] or EOF'),
        (
            "é == x",
            '1:1 (0): no match found, expected: "(", "-", "0", "\\"", "`", "not", [ \\t\\r\\n], [1-9] or [a-zA-Z]',
        ),
        (
            "a == é",
            '1:6 (5): no match found, expected: "-", "0", "\\"", "`", [ \\t\\r\\n], [1-9] or [a-zA-Z]',
        ),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(FilterError) as info:
        parse(text)
    assert str(info.value) == message


def test_empty_is_an_error() -> None:
    with pytest.raises(FilterError, match=r"^1:1 \(0\): no match found"):
        parse("")


def test_nesting_is_bounded() -> None:
    deep = "(" * (MAX_NESTING - 2) + "a == b" + ")" * (MAX_NESTING - 2)
    assert parse(deep) == m("a", Op.EQUAL, "b")
    with pytest.raises(FilterError, match="nested deeper than"):
        parse("(" * (MAX_NESTING + 1) + "a == b" + ")" * (MAX_NESTING + 1))


def test_length_is_bounded() -> None:
    long = " and ".join(["a == b"] * (MAX_EXPRESSION_LENGTH // 11))
    assert isinstance(parse(long), And)
    with pytest.raises(FilterError, match="at most"):
        parse("a == " + "b" * MAX_EXPRESSION_LENGTH)


def test_long_chains_do_not_recurse() -> None:
    many = " or ".join(f"a{i} == b" for i in range(300))
    tree = parse(many)
    assert isinstance(tree, Or) and len(tree.operands) == 300
    assert parse("not " * 600 + "a == b") == m("a", Op.EQUAL, "b")
