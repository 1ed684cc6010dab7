"""Intentions: precedence table, first match wins, default policy, validation, authorize."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from node.connect import (
    Intention,
    IntentionAction,
    authorize,
    check,
    check_unique,
    match_intentions,
    parse_intention,
    sort_intentions,
)
from node.connect.intentions import intention_from_wire, intention_to_wire, with_indexes
from node.errors import Conflict, InvalidRequest
from tests.helpers.ca import NOW, TD

ALLOW, DENY = IntentionAction.ALLOW, IntentionAction.DENY


def ixn(src: str, dst: str, action: IntentionAction = ALLOW, **kw: Any) -> Intention:
    return Intention(
        id=str(uuid.uuid4()), source_name=src, destination_name=dst, action=action, **kw
    )


@pytest.mark.parametrize(
    ("src", "dst", "precedence"),
    [("web", "db", 9), ("*", "db", 8), ("web", "*", 6), ("*", "*", 5)],
)
def test_precedence_table(src: str, dst: str, precedence: int) -> None:
    assert ixn(src, dst).precedence == precedence


def test_precedence_with_wildcard_namespaces() -> None:
    # Consul's general formula: 9/6/3 by exact destination values, minus missing exact sources.
    assert ixn("*", "*", source_ns="*").precedence == 4
    assert ixn("*", "*", source_ns="*", destination_ns="*").precedence == 1
    assert ixn("web", "*", destination_ns="*", source_ns="default").precedence == 3


def test_sort_order_is_precedence_then_names() -> None:
    items = [ixn("*", "*"), ixn("web", "*"), ixn("b", "db"), ixn("*", "db"), ixn("a", "db")]
    ordered = [(i.source_name, i.destination_name) for i in sort_intentions(items)]
    assert ordered == [("a", "db"), ("b", "db"), ("*", "db"), ("web", "*"), ("*", "*")]


def test_check_first_match_by_precedence_decides() -> None:
    rules = [ixn("*", "db", DENY), ixn("web", "db", ALLOW), ixn("*", "*", DENY)]
    allowed, matched = check(rules, "web", "db", default_allow=False)
    assert allowed and matched is rules[1]
    allowed, matched = check(rules, "api", "db", default_allow=True)
    assert not allowed and matched is rules[0]
    allowed, matched = check(rules, "api", "cache", default_allow=True)
    assert not allowed and matched is rules[2]


def test_check_without_match_uses_default() -> None:
    rules = [ixn("web", "db", DENY)]
    assert check(rules, "api", "db", default_allow=True) == (True, None)
    assert check(rules, "api", "db", default_allow=False) == (False, None)
    assert check([], "api", "db", default_allow=False) == (False, None)


def test_match_by_source_and_destination() -> None:
    rules = [ixn("web", "db"), ixn("*", "db"), ixn("web", "*"), ixn("api", "cache")]
    by_dst = match_intentions(rules, "destination", "db")
    # Consul includes wildcard destinations when matching by destination.
    assert [(i.source_name, i.destination_name) for i in by_dst] == [
        ("web", "db"),
        ("*", "db"),
        ("web", "*"),
    ]
    by_src = match_intentions(rules, "source", "web")
    assert [(i.source_name, i.destination_name) for i in by_src] == [
        ("web", "db"),
        ("*", "db"),
        ("web", "*"),
    ]
    with pytest.raises(InvalidRequest, match="by must be"):
        match_intentions(rules, "sideways", "db")
    with pytest.raises(InvalidRequest, match="name must be given"):
        match_intentions(rules, "source", "")


def test_unique_pair_is_a_conflict() -> None:
    first = ixn("web", "db")
    with pytest.raises(Conflict, match="duplicate intention"):
        check_unique([first], ixn("web", "db", DENY))
    check_unique([first], first)  # updating itself is fine
    check_unique([first], ixn("web", "cache"))


def test_authorize_reasons() -> None:
    rule = ixn("web", "db")
    uri = f"spiffe://{TD}/ns/default/dc/dc1/svc/web"
    ok, reason = authorize([rule], target="db", client_cert_uri=uri, default_allow=False)
    assert (
        ok
        and reason
        == f"Matched intention: ALLOW default/web => default/db (ID: {rule.id}, Precedence: 9)"
    )
    ok, reason = authorize([rule], target="cache", client_cert_uri=uri, default_allow=False)
    assert not ok and "default_intention_policy (deny)" in reason
    ok, _ = authorize([], target="cache", client_cert_uri=uri, default_allow=True)
    assert ok


def test_authorize_bad_input() -> None:
    with pytest.raises(InvalidRequest, match="does not start with 'spiffe://'"):
        authorize([], target="db", client_cert_uri="http://x", default_allow=True)
    with pytest.raises(InvalidRequest, match="names a signing CA"):
        authorize([], target="db", client_cert_uri=f"spiffe://{TD}", default_allow=True)
    with pytest.raises(InvalidRequest, match="Target service must be specified"):
        authorize(
            [],
            target="",
            client_cert_uri=f"spiffe://{TD}/ns/default/dc/dc1/svc/web",
            default_allow=True,
        )


def test_parse_intention_from_api_body() -> None:
    new_id = str(uuid.uuid4())
    body = {
        "SourceName": "web",
        "DestinationName": "db",
        "Action": "deny",
        "Description": "no",
        "Meta": {"a": "b"},
    }
    got = parse_intention(body, intention_id=new_id, now=NOW)
    assert (got.source_ns, got.source_name, got.destination_ns, got.destination_name) == (
        "default",
        "web",
        "default",
        "db",
    )
    assert got.action is DENY and got.description == "no" and dict(got.meta) == {"a": "b"}
    assert got.created_at == got.updated_at == NOW and got.precedence == 9
    snake = parse_intention(
        {"source_name": "*", "destination_name": "db", "action": "allow"},
        intention_id=new_id,
        now=NOW,
    )
    assert snake.precedence == 8
    # an echoed GET body (with output-only fields) is accepted for an update
    echoed = {
        **body,
        "ID": new_id,
        "Precedence": 9,
        "CreateIndex": 3,
        "ModifyIndex": 4,
        "Hash": "x",
    }
    assert parse_intention(echoed, intention_id=new_id, now=NOW, previous=got).created_at == NOW


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"SourceName": "web", "DestinationName": "db", "Action": "maybe"},
            "Action must be set to 'allow' or 'deny'",
        ),
        ({"SourceName": "web", "DestinationName": "db"}, "Action must be set"),
        (
            {"SourceName": "we*", "DestinationName": "db", "Action": "allow"},
            "SourceName: wildcard character '\\*' cannot be used with partial values",
        ),
        (
            {"SourceName": "web", "DestinationName": "*db", "Action": "allow"},
            "DestinationName: wildcard character",
        ),
        (
            {"SourceName": "web", "SourceNS": "*", "DestinationName": "db", "Action": "allow"},
            "SourceName: exact value cannot follow wildcard namespace",
        ),
        ({"DestinationName": "db", "Action": "allow"}, "SourceName must be set"),
        ({"SourceName": "web", "Action": "allow"}, "DestinationName must be set"),
        (
            {"SourceName": "web", "DestinationName": "db", "Action": "allow", "SourceType": "k8s"},
            "SourceType must be set to 'consul'",
        ),
        (
            {"SourceName": "web", "DestinationName": "db", "Action": "allow", "Colour": "red"},
            "invalid intention field 'Colour'",
        ),
        (
            {"SourceName": "web", "DestinationName": "db", "Action": "allow", "Meta": {"k": 1}},
            "Meta value",
        ),
        (
            {"SourceName": "web", "DestinationName": "db", "Action": "allow", "Meta": "x"},
            "Meta must be an object",
        ),
        ({"SourceName": 7, "DestinationName": "db", "Action": "allow"}, "SourceName must be set"),
        (
            {"SourceName": "web", "DestinationName": "db", "Action": "allow", "ID": "other"},
            "does not match",
        ),
    ],
)
def test_parse_intention_errors(body: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        parse_intention(body, intention_id=str(uuid.uuid4()), now=NOW)


def test_id_must_be_uuid() -> None:
    with pytest.raises(InvalidRequest, match="not a UUID"):
        Intention(id="nope", source_name="a", destination_name="b", action=ALLOW)


def test_indexes_are_attached_without_touching_precedence() -> None:
    base = ixn("*", "db")
    served = with_indexes(base, create_index=3, modify_index=7)
    assert (served.create_index, served.modify_index, served.precedence) == (3, 7, 8)


def test_wire_round_trip() -> None:
    original = parse_intention(
        {"SourceName": "web", "DestinationName": "db", "Action": "allow", "Meta": {"x": "y"}},
        intention_id=str(uuid.uuid4()),
        now=NOW,
    )
    assert intention_from_wire(intention_to_wire(original)) == original
    with pytest.raises(InvalidRequest, match="malformed intention"):
        intention_from_wire({"id": original.id})
