"""The authorizer: every rule kind, precedence, merging, defaults and built-ins."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from node.acl.authorizer import (
    ALLOW_ALL,
    ANONYMOUS_TOKEN_ID,
    DENY_ALL,
    GLOBAL_MANAGEMENT_POLICY_ID,
    GLOBAL_MANAGEMENT_RULES,
    MANAGE_ALL,
    Authorizer,
    agent_recovery_rules,
    compile_authorizer,
    default_authorizer,
    service_identity_rules,
)
from node.acl.rules import parse_rules

Check = Callable[[Authorizer, str], bool]

#: resource keyword → (read check, write check) on a name.
SEGMENTED: dict[str, tuple[Check, Check]] = {
    "agent": (Authorizer.agent_read, Authorizer.agent_write),
    "event": (Authorizer.event_read, Authorizer.event_write),
    "key": (Authorizer.key_read, Authorizer.key_write),
    "node": (Authorizer.node_read, Authorizer.node_write),
    "query": (Authorizer.query_read, Authorizer.query_write),
    "service": (Authorizer.service_read, Authorizer.service_write),
    "session": (Authorizer.session_read, Authorizer.session_write),
}

#: disposition → (read allowed, write allowed).
GRANTS = {"read": (True, False), "write": (True, True), "deny": (False, False)}


def authorizer(text: str, default: Authorizer = DENY_ALL) -> Authorizer:
    return compile_authorizer([parse_rules(text)], default)


@pytest.mark.parametrize("keyword", sorted(SEGMENTED))
@pytest.mark.parametrize("policy", sorted(GRANTS))
@pytest.mark.parametrize("default", [ALLOW_ALL, DENY_ALL])
def test_exact_rule_of_every_kind(keyword: str, policy: str, default: Authorizer) -> None:
    read, write = SEGMENTED[keyword]
    auth = authorizer(f'{keyword} "foo" {{ policy = "{policy}" }}', default)
    assert (read(auth, "foo"), write(auth, "foo")) == GRANTS[policy]
    # An exact rule says nothing about longer or shorter names: they fall to the default.
    for other in ("foobar", "fo", "", "bar"):
        assert read(auth, other) is default.service_read("x")
        assert write(auth, other) is default.service_write("x")


@pytest.mark.parametrize("keyword", sorted(SEGMENTED))
@pytest.mark.parametrize("policy", sorted(GRANTS))
@pytest.mark.parametrize("default", [ALLOW_ALL, DENY_ALL])
def test_prefix_rule_of_every_kind(keyword: str, policy: str, default: Authorizer) -> None:
    read, write = SEGMENTED[keyword]
    auth = authorizer(f'{keyword}_prefix "foo" {{ policy = "{policy}" }}', default)
    for name in ("foo", "foobar", "foo/bar"):
        assert (read(auth, name), write(auth, name)) == GRANTS[policy]
    for other in ("fo", "", "bar", "xfoo"):
        assert read(auth, other) is default.node_read("x")
        assert write(auth, other) is default.node_write("x")


@pytest.mark.parametrize(
    ("keyword", "read", "write"),
    [
        ("acl", Authorizer.acl_read, Authorizer.acl_write),
        ("keyring", Authorizer.keyring_read, Authorizer.keyring_write),
        ("operator", Authorizer.operator_read, Authorizer.operator_write),
    ],
)
@pytest.mark.parametrize("policy", sorted(GRANTS))
@pytest.mark.parametrize("default", [ALLOW_ALL, DENY_ALL, MANAGE_ALL])
def test_unsegmented_kinds(
    keyword: str,
    read: Callable[[Authorizer], bool],
    write: Callable[[Authorizer], bool],
    policy: str,
    default: Authorizer,
) -> None:
    auth = authorizer(f'{keyword} = "{policy}"', default)
    assert (read(auth), write(auth)) == GRANTS[policy]
    assert (read(authorizer("", default)), write(authorizer("", default))) == (
        read(default),
        write(default),
    )


def test_key_list_disposition() -> None:
    auth = authorizer('key_prefix "a/" { policy = "list" }\nkey "b" { policy = "read" }')
    assert auth.key_list("a/x") and auth.key_read("a/x") and not auth.key_write("a/x")
    assert auth.key_read("b") and not auth.key_list("b") and not auth.key_write("b")
    write = authorizer('key_prefix "" { policy = "write" }')
    assert write.key_list("anything")
    deny = authorizer('key_prefix "" { policy = "deny" }', ALLOW_ALL)
    assert not deny.key_list("x")
    assert ALLOW_ALL.key_list("x") and not DENY_ALL.key_list("x")


# --- precedence ----------------------------------------------------------------------


def test_exact_beats_prefix_even_when_weaker() -> None:
    auth = authorizer('service "db" { policy = "read" }\nservice_prefix "" { policy = "write" }')
    assert auth.service_read("db") and not auth.service_write("db")
    assert auth.service_write("dbx") and auth.service_write("web")


def test_exact_deny_beats_prefix_write() -> None:
    auth = authorizer('service "db" { policy = "deny" }\nservice_prefix "d" { policy = "write" }')
    assert not auth.service_read("db")
    assert auth.service_write("dba")


def test_longest_prefix_wins() -> None:
    auth = authorizer(
        """
key_prefix ""             { policy = "read" }
key_prefix "foo/"         { policy = "write" }
key_prefix "foo/private/" { policy = "deny" }
key "foo/bar/secret"      { policy = "deny" }
""",
        ALLOW_ALL,
    )
    assert auth.key_read("other") and not auth.key_write("other")
    assert auth.key_write("foo/x") and auth.key_write("foo/private")
    assert not auth.key_read("foo/private/x") and not auth.key_read("foo/private/")
    assert not auth.key_read("foo/bar/secret") and auth.key_write("foo/bar/secret2")


def test_a_shorter_prefix_does_not_override_a_longer_one() -> None:
    auth = authorizer(
        'node_prefix "web-" { policy = "write" }\nnode_prefix "w" { policy = "deny" }'
    )
    assert auth.node_write("web-1")
    assert not auth.node_read("wx")


def test_deny_beats_write_beats_read_at_the_same_segment() -> None:
    for order in ((["read", "write", "deny"]), (["deny", "write", "read"])):
        text = "\n".join(f'service "a" {{ policy = "{p}" }}' for p in order)
        assert not authorizer(text, ALLOW_ALL).service_read("a")
    read_write = authorizer('service "a" { policy = "read" }\nservice "a" { policy = "write" }')
    assert read_write.service_write("a")
    write_list = authorizer('key "a" { policy = "list" }\nkey "a" { policy = "write" }')
    assert write_list.key_write("a")
    list_read = authorizer('key "a" { policy = "read" }\nkey "a" { policy = "list" }')
    assert list_read.key_list("a") and not list_read.key_write("a")


def test_multiple_policies_merge() -> None:
    a = parse_rules('service "web" { policy = "read" }\noperator = "read"')
    b = parse_rules('service "web" { policy = "write" }\noperator = "write"\nacl = "read"')
    c = parse_rules('service_prefix "" { policy = "deny" }\nkeyring = "deny"')
    auth = compile_authorizer([a, b, c], ALLOW_ALL)
    assert auth.service_write("web")  # exact write (merged) beats prefix deny
    assert not auth.service_read("api")
    assert auth.operator_write()
    assert auth.acl_read() and not auth.acl_write()
    assert not auth.keyring_read()
    assert compile_authorizer([a, b, c], ALLOW_ALL).service_write("web")
    # Deny in one policy wins over write in another at the same segment.
    d = parse_rules('service "web" { policy = "deny" }')
    assert not compile_authorizer([b, d], ALLOW_ALL).service_read("web")
    assert not compile_authorizer([d, b], ALLOW_ALL).service_read("web")


def test_a_matching_rule_never_falls_through_to_the_default() -> None:
    auth = authorizer('service "a" { policy = "read" }', ALLOW_ALL)
    assert not auth.service_write("a")  # read rule decides; allow-all is not asked


# --- intentions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service_policy", "intentions", "expected"),
    [
        ("read", None, (True, False)),
        ("write", None, (True, False)),
        ("deny", None, (False, False)),
        ("read", "write", (True, True)),
        ("deny", "read", (True, False)),
        ("write", "deny", (False, False)),
    ],
)
@pytest.mark.parametrize("prefix", [False, True])
def test_intentions_from_service_rules(
    service_policy: str, intentions: str | None, expected: tuple[bool, bool], prefix: bool
) -> None:
    keyword = "service_prefix" if prefix else "service"
    extra = f' intentions = "{intentions}"' if intentions else ""
    auth = authorizer(f'{keyword} "web" {{ policy = "{service_policy}"{extra} }}', ALLOW_ALL)
    assert (auth.intention_read("web"), auth.intention_write("web")) == expected
    assert auth.intention_write("db")  # no rule → default allow
    assert auth.intention_read("webx") is (expected[0] if prefix else True)


def test_intentions_merge_separately_from_policy() -> None:
    a = parse_rules('service "web" { policy = "deny" }')
    b = parse_rules('service "web" { policy = "read" intentions = "write" }')
    auth = compile_authorizer([a, b], DENY_ALL)
    assert not auth.service_read("web")
    assert auth.intention_write("web")


def test_intention_exact_and_longest_prefix() -> None:
    auth = authorizer(
        'service_prefix "" { policy = "read" intentions = "write" }\n'
        'service "db" { policy = "write" }\n'
        'service_prefix "pay" { policy = "read" intentions = "deny" }'
    )
    assert auth.intention_write("web")
    assert auth.intention_read("db") and not auth.intention_write("db")
    assert not auth.intention_read("payments")


def test_intention_default_allow_follows_the_root() -> None:
    assert authorizer('service "a" { policy = "write" }', ALLOW_ALL).intention_default_allow()
    assert not authorizer('service "a" { policy = "write" }', DENY_ALL).intention_default_allow()


# --- defaults and built-ins --------------------------------------------------------------


def test_static_authorizers() -> None:
    assert ALLOW_ALL.service_write("x") and not ALLOW_ALL.acl_read() and not ALLOW_ALL.snapshot()
    assert not DENY_ALL.service_read("x") and not DENY_ALL.acl_read()
    assert MANAGE_ALL.acl_write() and MANAGE_ALL.snapshot() and MANAGE_ALL.key_write_prefix("")
    assert default_authorizer("allow") is ALLOW_ALL and default_authorizer("deny") is DENY_ALL
    with pytest.raises(ValueError, match="Unsupported default ACL policy: maybe"):
        default_authorizer("maybe")


def test_no_rules_is_the_default_itself() -> None:
    assert compile_authorizer([], DENY_ALL) is DENY_ALL
    assert compile_authorizer([parse_rules("")], ALLOW_ALL) is ALLOW_ALL


def test_rule_less_lookups_fall_to_a_compiled_parent() -> None:
    parent = authorizer('service_prefix "" { policy = "read" }\nacl = "read"', DENY_ALL)
    child = compile_authorizer([parse_rules('service "web" { policy = "write" }')], parent)
    assert child.service_write("web")
    assert child.service_read("db") and not child.service_write("db")
    assert child.acl_read() and not child.node_read("n")


def test_global_management_policy() -> None:
    auth = compile_authorizer([parse_rules(GLOBAL_MANAGEMENT_RULES)], DENY_ALL)
    assert auth.acl_write() and auth.snapshot() and auth.keyring_write() and auth.operator_write()
    for read, write in SEGMENTED.values():
        assert read(auth, "anything") and write(auth, "anything")
    assert auth.intention_write("x") and auth.key_write_prefix("")
    assert GLOBAL_MANAGEMENT_POLICY_ID == "00000000-0000-0000-0000-000000000001"
    assert ANONYMOUS_TOKEN_ID == "00000000-0000-0000-0000-000000000002"


def test_service_identity() -> None:
    rules = service_identity_rules("web")
    assert 'service "web-sidecar-proxy"' in rules.source
    assert parse_rules(rules.source) == rules
    auth = compile_authorizer([rules], DENY_ALL)
    assert auth.service_write("web") and auth.service_write("web-sidecar-proxy")
    assert auth.service_read("db") and not auth.service_write("db")
    assert auth.node_read("n1") and not auth.node_write("n1")
    assert auth.intention_read("web") and not auth.intention_write("web")
    assert not auth.key_read("k") and not auth.acl_read()


def test_agent_recovery_policy() -> None:
    auth = compile_authorizer([agent_recovery_rules("node-1")], DENY_ALL)
    assert auth.agent_write("node-1") and not auth.agent_read("node-2")
    assert auth.node_read("node-2") and not auth.node_write("node-1")


# --- recursive key deletes -------------------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "default", "prefix", "allowed"),
    [
        ('key_prefix "foo/" { policy = "write" }', DENY_ALL, "foo/", True),
        ('key_prefix "foo/" { policy = "write" }', DENY_ALL, "", False),
        (
            'key_prefix "" { policy = "write" }\nkey "foo/x" { policy = "read" }',
            DENY_ALL,
            "foo/",
            False,
        ),
        (
            'key_prefix "" { policy = "write" }\nkey "bar/x" { policy = "read" }',
            DENY_ALL,
            "foo/",
            True,
        ),
        ('key_prefix "foo/a" { policy = "deny" }', ALLOW_ALL, "foo/", False),
        ('key_prefix "bar/" { policy = "deny" }', ALLOW_ALL, "foo/", True),
        ('key_prefix "bar/" { policy = "deny" }', DENY_ALL, "foo/", False),
        ('key_prefix "foo" { policy = "read" }', ALLOW_ALL, "foo/", False),
    ],
)
def test_key_write_prefix(rules: str, default: Authorizer, prefix: str, allowed: bool) -> None:
    assert authorizer(rules, default).key_write_prefix(prefix) is allowed


def test_many_policies_compile_and_answer() -> None:
    texts = [
        "\n".join(
            f'service "svc-{p}-{r}" {{ policy = "write" }}\nkey_prefix "p{p}/{r}/" {{ policy = "read" }}'
            for r in range(25)
        )
        for p in range(20)
    ]
    auth = compile_authorizer([parse_rules(t) for t in texts], DENY_ALL)
    assert auth.service_write("svc-19-24") and not auth.service_write("svc-20-0")
    assert auth.key_read("p3/7/x/y") and not auth.key_write("p3/7/x")
    assert not auth.key_read("p3/")
    # Memoized answers stay right when asked again.
    assert auth.service_write("svc-19-24") and not auth.service_read("svc-20-0")
