"""Junk expressions only ever raise FilterError: never another exception, never a hang."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.filter import (
    CHECK,
    CHECK_SERVICE_NODE,
    NODE,
    SERVICE,
    SERVICE_NODE,
    FilterError,
    compile_filter,
)
from node.filter.grammar import MAX_EXPRESSION_LENGTH

SPECS = [None, SERVICE, CHECK, NODE, SERVICE_NODE, CHECK_SERVICE_NODE]

SUBJECTS: list[dict[str, object]] = [
    {},
    {
        "Service": "web",
        "Tags": ["a"],
        "Meta": {"k": "v"},
        "Port": 1,
        "Proxy": None,
        "Connect": {"Native": True},
    },
    {
        "Node": {"Node": "n", "Meta": {"a": "b"}},
        "Service": {"Service": "s", "Tags": [], "Port": 0},
        "Checks": [{"Status": "passing"}, {"Status": 3}],
    },
    {"Service": "\udc00x", "Node": "\ud800"},
    {"Status": True, "ServiceTags": [1, "x", None, 2.5], "Node": ["a", {"Node": "x"}], "Meta": 7},
]

TOKENS = [
    "Service", "Meta", "Tags", "Port", "Checks", "Status", "Node", ".", "[", "]", '"', "`", "(", ")",
    "==", "!=", " in ", " not ", " contains ", " matches ", " is ", " empty ", " and ", " or ",
    "not ", "-", "0", "1.5", "007", "true", "\\", "\\x4", "\\u00e9", " ", "\n", "é", "*", "(?", "[a-",
]  # fmt: skip

junk = st.one_of(
    st.text(max_size=80),
    st.text(st.characters(codec=None, exclude_categories=()), max_size=20),
    st.lists(st.sampled_from(TOKENS), max_size=30).map("".join),
    st.lists(st.one_of(st.sampled_from(TOKENS), st.text(max_size=3)), max_size=30).map("".join),
)


def check(text: str) -> None:
    for spec in SPECS:
        try:
            compiled = compile_filter(text, spec)
        except FilterError as exc:
            assert str(exc)
            continue
        for subject in SUBJECTS:
            try:
                assert compiled.matches(subject) in (True, False)
            except FilterError:
                assert spec is None  # a typed filter is decided at compile time


@settings(max_examples=600, deadline=500, suppress_health_check=[HealthCheck.too_slow])
@given(junk)
def test_junk_only_raises_filter_error(text: str) -> None:
    check(text)


@pytest.mark.parametrize(
    "text",
    [
        "(" * MAX_EXPRESSION_LENGTH,
        "(" * 60 + "a == b" + ")" * 59,
        "(" * 30 + "a ==" + "(" * 30,
        "not " * 1000,
        "[" * 4000,
        "a == b and " * 370 + "a ==",
        "a == b or " * 400 + "(",
        '"' * 4000,
        "a[" * 2000,
        "Meta[" + '"x"' * 1300,
        "a == " + "1" * 4000,
        "Service matches `" + "(a+)+" * 100 + "$`",
        "Service matches `" + "a{1000}" * 10 + "`",
        "a" * (MAX_EXPRESSION_LENGTH + 1),
        "Service matches `\ud800`",
        "Service == \ud800",
    ],
)
def test_pathological_inputs_are_quick(text: str) -> None:
    start = time.perf_counter()
    check(text)
    assert time.perf_counter() - start < 2.0


def test_regex_cannot_backtrack_catastrophically() -> None:
    compiled = compile_filter("Service matches `^(a+)+$`", SERVICE)
    start = time.perf_counter()
    assert not compiled.matches({"Service": "a" * 5000 + "b"})
    assert time.perf_counter() - start < 0.5
