"""The ACL rules language: HCL and JSON forms, and bad rules naming line and key."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.acl.rules import (
    SEGMENTED,
    Access,
    Resource,
    Rule,
    Rules,
    RulesError,
    parse_rules,
)
from node.errors import InvalidRequest

SEGMENTED_KEYWORDS = sorted(r.value for r in SEGMENTED)


def test_empty_text_is_an_empty_policy() -> None:
    assert parse_rules("") == Rules()
    assert parse_rules("  \n") == parse_rules("# nothing\n") == Rules()


@pytest.mark.parametrize("keyword", SEGMENTED_KEYWORDS)
@pytest.mark.parametrize("prefix", [False, True])
@pytest.mark.parametrize("policy", ["read", "write", "deny"])
def test_every_segmented_kind_in_hcl(keyword: str, prefix: bool, policy: str) -> None:
    name = keyword + ("_prefix" if prefix else "")
    rules = parse_rules(f'{name} "foo" {{\n  policy = "{policy}"\n}}\n')
    assert rules.segmented == (Rule(Resource(keyword), "foo", prefix, Access(policy)),)


@pytest.mark.parametrize("keyword", SEGMENTED_KEYWORDS)
@pytest.mark.parametrize("prefix", [False, True])
def test_every_segmented_kind_in_json(keyword: str, prefix: bool) -> None:
    name = keyword + ("_prefix" if prefix else "")
    rules = parse_rules(json.dumps({name: {"foo": {"policy": "write"}, "": {"policy": "deny"}}}))
    assert rules.segmented == (
        Rule(Resource(keyword), "foo", prefix, Access.WRITE),
        Rule(Resource(keyword), "", prefix, Access.DENY),
    )


@pytest.mark.parametrize("keyword", ["acl", "keyring", "operator"])
@pytest.mark.parametrize("policy", ["read", "write", "deny"])
def test_unsegmented_kinds(keyword: str, policy: str) -> None:
    for text in (f'{keyword} = "{policy}"', json.dumps({keyword: policy})):
        rules = parse_rules(text)
        assert rules.unsegmented(Resource(keyword)) is Access(policy)
        assert rules.segmented == ()


def test_list_is_only_for_keys() -> None:
    assert parse_rules('key_prefix "a/" { policy = "list" }').segmented[0].policy is Access.LIST
    assert parse_rules('key "a" { policy = "list" }').segmented[0].policy is Access.LIST
    with pytest.raises(RulesError, match=r'invalid policy "list" for service "a"'):
        parse_rules('service "a" { policy = "list" }')
    with pytest.raises(RulesError, match=r'invalid policy "list" for operator'):
        parse_rules('operator = "list"')


def test_service_intentions_hcl1_one_line_and_json() -> None:
    hcl = parse_rules('service "web" { policy = "read"  intentions = "write" }')
    js = parse_rules('{"service": {"web": {"policy": "read", "intentions": "write"}}}')
    expected = (Rule(Resource.SERVICE, "web", False, Access.READ, Access.WRITE),)
    assert hcl.segmented == js.segmented == expected
    assert hcl == js  # the source text does not take part in equality


def test_intentions_only_inside_service_rules() -> None:
    with pytest.raises(RulesError, match=r'line 3: unknown key "intentions" in node "a"'):
        parse_rules('node "a" { \n policy = "read"\n intentions = "read" }')


def test_documented_example_parses_in_order() -> None:
    text = """
key_prefix ""             { policy = "read" }
key_prefix "foo/"         { policy = "write" }
key_prefix "foo/private/" { policy = "deny" }
key "foo/bar/secret"      { policy = "deny" }
service "web"             { policy = "write" }
service_prefix ""         { policy = "read"  intentions = "deny" }
node_prefix ""            { policy = "read" }
operator = "read"
"""
    rules = parse_rules(text)
    assert rules.operator is Access.READ
    assert [(r.resource.value, r.segment, r.prefix, r.policy.value) for r in rules.segmented] == [
        ("key", "", True, "read"),
        ("key", "foo/", True, "write"),
        ("key", "foo/private/", True, "deny"),
        ("key", "foo/bar/secret", False, "deny"),
        ("service", "web", False, "write"),
        ("service", "", True, "read"),
        ("node", "", True, "read"),
    ]
    assert rules.segmented[5].intentions is Access.DENY
    assert rules.source == text


def test_other_spellings_consul_accepts() -> None:
    # HCL object attribute, JSON list of objects, HCL1 JSON's list-wrapped bodies.
    expected = (
        Rule(Resource.SERVICE, "a", False, Access.READ),
        Rule(Resource.SERVICE, "b", False, Access.WRITE),
    )
    assert (
        parse_rules('service = {\n a = { policy = "read" }\n b = { policy = "write" }\n}').segmented
        == expected
    )
    listed = {"service": [{"a": {"policy": "read"}}, {"b": {"policy": "write"}}]}
    assert parse_rules(json.dumps(listed)).segmented == expected
    wrapped = {"service": {"a": [{"policy": "read"}], "b": [{"policy": "write"}]}}
    assert parse_rules(json.dumps(wrapped)).segmented == expected
    assert parse_rules('{"operator": ["read"]}').operator is Access.READ


def test_heredoc_and_comments_and_escapes() -> None:
    text = '# comment\n// another\nservice "w\\"eb" {\n  /* block */ policy = "read"\n}\n'
    assert parse_rules(text).segmented == (Rule(Resource.SERVICE, 'w"eb', False, Access.READ),)


def test_duplicates_are_kept_for_the_merge() -> None:
    rules = parse_rules('service "a" { policy = "read" }\nservice "a" { policy = "deny" }\n')
    assert [r.policy for r in rules.segmented] == [Access.READ, Access.DENY]


def test_rules_are_frozen_and_hashable() -> None:
    rules = parse_rules('service "a" { policy = "read" }')
    with pytest.raises(AttributeError):
        rules.acl = Access.WRITE  # type: ignore[misc]
    assert hash(rules) == hash(parse_rules('service "a" {\n policy = "read"\n}'))


# --- bad rules ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'acl = "write"\n\nservice "api" {\n  policy = "writ"\n}\n',
            r'^Failed to parse ACL rules: line 4: invalid policy "writ" for service "api"',
        ),
        (
            'service "api" { policy = "write" }\n\nservce "x" { policy = "read" }\n',
            r'line 3: unknown resource "servce" \(did you mean "service"\?\)',
        ),
        ('mesh = "write"\n', r'line 1: unknown resource "mesh"'),
        ('acl_prefix "" { policy = "read" }', r'line 1: unknown resource "acl_prefix"'),
        (
            'key_prefix "a/" {\n  polcy = "read"\n}',
            r'line 2: unknown key "polcy" in key_prefix "a/" \(did you mean "policy"\?\)',
        ),
        ('node "n1" {\n}\n', r'line 1: missing policy for node "n1"'),
        (
            'service "api" {\n  policy = "read"\n  intentions = "list"\n}',
            r'line 3: invalid intentions policy "list" for service "api"',
        ),
        ('session "s" {\n policy = true\n}', r"line 2: policy for session \"s\" must be a string"),
        ('event "e" {\n policy = ["read"]\n}', r"line 2: policy for event \"e\" must be a string"),
        ("operator = 3", r"line 1: operator takes a policy string .* got a number"),
        ('keyring { policy = "read" }', r"line 1: keyring takes a policy string"),
        ('agent = "write"', r'line 1: agent needs a name and a block: agent "<name>"'),
        ('query { policy = "read" }', r'line 1: query needs a name: query "<name>"'),
        ('service "a" "b" {\n policy = "read"\n}', r'line 1: service "a" takes a block'),
        (
            'key "k" {\n policy = "write"\n sentinel {\n  code = "x"\n }\n}',
            r"line 3: sentinel policies \(Consul Enterprise\) are not supported",
        ),
        ('service "a" { policy = "read"', r"line 1, column \d+: syntax error"),
        ("service = ", r"line 1, column \d+: syntax error"),
        ('{"service": {"a": {"policy": "x"}}}', r'^[^0-9]*invalid policy "x" for service "a"'),
        ('{"service": {"a": "read"}}', r'service "a" takes a block .* got the string "read"'),
        ('{"service": ', r"line 1, column 13: Expecting value"),
        ("[1, 2]", r"syntax error|expected an object"),
        ('{"acl": 1}', r"acl takes a policy string"),
        ('{"nodes": {}}', r'unknown resource "nodes" \(did you mean "node"\?\)'),
    ],
)
def test_bad_rules_name_line_and_key(text: str, message: str) -> None:
    with pytest.raises(RulesError, match=message) as caught:
        parse_rules(text)
    assert str(caught.value).startswith("Failed to parse ACL rules: ")
    assert isinstance(caught.value, InvalidRequest)  # 400 on HTTP


def test_a_json_value_that_is_not_an_object_is_refused() -> None:
    # JSON is recognised by its leading "{"; "[...]" is then HCL and fails as HCL.
    assert parse_rules("{}") == Rules()
    with pytest.raises(RulesError, match="syntax error"):
        parse_rules("[]")


_PIECES = st.sampled_from(
    [
        "service",
        "key_prefix",
        "acl",
        "operator",
        '"web"',
        '""',
        "{",
        "}",
        "[",
        "]",
        "=",
        '"read"',
        '"write"',
        "policy",
        "intentions",
        "\n",
        " ",
        "#",
        "<<EOF\n",
        "EOF\n",
        "${",
        "1",
        "true",
        ",",
        ":",
        '"',
        "\\",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES, max_size=24).map("".join))
def test_junk_hcl_only_raises_rules_error(text: str) -> None:
    try:
        parse_rules(text)
    except RulesError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_any_text_only_raises_rules_error(text: str) -> None:
    try:
        parse_rules(text)
    except RulesError:
        pass


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.sampled_from(["read", "write", "x", ""]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["service", "key", "acl", "policy", "intentions", "a", ""]),
            inner,
            max_size=3,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(_JSON)
def test_junk_json_only_raises_rules_error(value: object) -> None:
    try:
        parse_rules(json.dumps(value))
    except RulesError:
        pass


def test_rules_that_are_not_text_are_refused() -> None:
    with pytest.raises(RulesError, match="rules must be text"):
        parse_rules({"service": {}})  # type: ignore[arg-type]
