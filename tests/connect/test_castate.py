"""Public CA state: configuration parsing, root rotation and pruning, set merge of roots."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from node.connect import (
    CAConfig,
    CARoots,
    format_duration,
    merge_roots,
    parse_ca_configuration,
    parse_duration,
    prune_roots,
    retire_inactive,
    rotate_roots,
)
from node.connect.ca import CAServer, TrustBundle, generate_root, make_leaf_csr
from node.connect.castate import (
    ca_config_from_wire,
    ca_config_to_wire,
    note_leaf_expiry,
    roots_from_wire,
    roots_to_wire,
)
from node.connect.spiffe import SpiffeID
from node.errors import InvalidRequest, TrustError
from tests.connect.roots import fake_root, fake_roots
from tests.helpers.ca import CLUSTER_ID, NOW, TD, is_registered

TTL = timedelta(hours=72)


# --- durations and CA configuration ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("72h", 259200),
        ("2160h", 7776000),
        ("1h30m", 5400),
        ("90s", 90),
        ("1.5h", 5400),
        ("500ms", 0.5),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "72", "h", "1d", "-1h", "1h x", 72])
def test_parse_duration_errors(text: Any) -> None:
    with pytest.raises(InvalidRequest, match="duration"):
        parse_duration(text, what="Config.LeafCertTTL")


def test_format_duration() -> None:
    assert format_duration(TTL) == "72h"
    assert format_duration(timedelta(hours=1, minutes=30)) == "1h30m"


def test_parse_ca_configuration_defaults_and_byo() -> None:
    req = parse_ca_configuration(
        {"Provider": "consul", "Config": {"LeafCertTTL": "24h"}}, cluster_id=CLUSTER_ID
    )
    assert req.config == CAConfig(cluster_id=CLUSTER_ID, leaf_cert_ttl=timedelta(hours=24))
    assert req.private_key_pem is None and req.root_cert_pem is None
    byo = parse_ca_configuration({"Config": {"PrivateKey": "KEYPEM", "RootCert": "CERTPEM"}})
    assert byo.root_cert_pem == "CERTPEM" and byo.private_key_pem == "KEYPEM"
    assert "KEYPEM" not in repr(byo)
    echoed = {
        "Provider": "consul",
        "Config": {"RotationPeriod": "2160h"},
        "CreateIndex": 1,
        "ModifyIndex": 2,
    }
    assert parse_ca_configuration(echoed).config == CAConfig()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"Provider": "vault"}, "Provider 'vault' is not supported"),
        ({"Config": {"LeafCertTTL": "30m"}}, "LeafCertTTL must be at least 1h"),
        ({"Config": {"LeafCertTTL": "9000h"}}, "less than 8760h"),
        ({"Config": {"LeafCertTTL": "soon"}}, "invalid duration"),
        ({"Config": {"PrivateKey": "k"}}, "must be given together"),
        ({"Config": {"Colour": "red"}}, "invalid CA configuration key Config.'Colour'"),
        ({"Setting": 1}, "invalid CA configuration key 'Setting'"),
        ({"Config": "x"}, "Config must be an object"),
        ({"Config": {"RootCert": 5, "PrivateKey": "k"}}, "PEM string"),
    ],
)
def test_parse_ca_configuration_errors(body: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        parse_ca_configuration(body)


def test_ca_config_wire_round_trip() -> None:
    config = CAConfig(cluster_id=CLUSTER_ID, leaf_cert_ttl=timedelta(hours=5))
    assert ca_config_from_wire(ca_config_to_wire(config)) == config
    with pytest.raises(InvalidRequest, match="malformed ca-config"):
        ca_config_from_wire({})


# --- roots ----------------------------------------------------------------------------------


def test_rotation_keeps_old_root_until_its_leaves_expire_then_prunes() -> None:
    first = rotate_roots(
        None, fake_root("a"), now=NOW, leaf_ttl=TTL, cluster_id=CLUSTER_ID, trust_domain=TD
    )
    assert first.active_root_id == "a"
    later = NOW + timedelta(hours=10)
    second = rotate_roots(
        first, fake_root("b"), now=later, leaf_ttl=TTL, cluster_id=CLUSTER_ID, trust_domain=TD
    )
    assert second.active_root_id == "b"
    old = second.root("a")
    assert old is not None and old.retain_until == later + 2 * TTL
    assert prune_roots(second, later + 2 * TTL) == second  # not yet
    pruned = prune_roots(second, later + 2 * TTL + timedelta(seconds=1))
    assert [r.id for r in pruned.roots] == ["b"] and pruned.removed == {"a"}
    with pytest.raises(InvalidRequest, match="already in the trust bundle"):
        rotate_roots(
            second, fake_root("b"), now=later, leaf_ttl=TTL, cluster_id=CLUSTER_ID, trust_domain=TD
        )


def test_note_leaf_expiry_extends_retention() -> None:
    rotated = rotate_roots(
        fake_roots("a", active="a"),
        fake_root("b"),
        now=NOW,
        leaf_ttl=TTL,
        cluster_id=CLUSTER_ID,
        trust_domain=TD,
    )
    far = NOW + timedelta(days=30)
    extended = note_leaf_expiry(rotated, "a", far)
    assert extended.root("a").retain_until == far  # type: ignore[union-attr]
    assert note_leaf_expiry(extended, "a", NOW) == extended
    assert note_leaf_expiry(extended, "b", far) == extended  # the active root is never retired


def test_bootstrap_race_merge_is_deterministic_and_keeps_both_roots() -> None:
    from_a, from_b = fake_roots("a", active="a"), fake_roots("b", active="b")
    # B's copy carries the larger stamp in both orders of arrival.
    merged_1 = merge_roots(from_b, from_a)
    merged_2 = merge_roots(merge_roots(from_b, from_a), from_a)
    assert merged_1 == merged_2
    assert merged_1.active_root_id == "b" and {r.id for r in merged_1.roots} == {"a", "b"}
    # The loser is kept (it may have signed leaves) until it is retired and pruned.
    retired = retire_inactive(merged_1, now=NOW, leaf_ttl=TTL)
    assert retired.root("a").retain_until == NOW + 2 * TTL  # type: ignore[union-attr]
    assert prune_roots(retired, NOW + timedelta(hours=1)).root("a") is not None


def test_pruned_root_never_comes_back_from_a_stale_copy() -> None:
    current = fake_roots("a", "b", active="b")
    pruned = CARoots(
        cluster_id=CLUSTER_ID,
        trust_domain=TD,
        active_root_id="b",
        roots=(fake_root("b"),),
        removed=frozenset({"a"}),
    )
    assert {r.id for r in merge_roots(pruned, current).roots} == {"b"}
    assert {r.id for r in merge_roots(current, pruned).roots} == {"b"}


def test_merge_takes_later_retention() -> None:
    one = fake_roots("a", "b", active="b")
    t1, t2 = NOW + TTL, NOW + 3 * TTL
    x = CARoots(
        cluster_id=CLUSTER_ID,
        trust_domain=TD,
        active_root_id="b",
        roots=(fake_root("a", retain_until=t1), fake_root("b")),
    )
    y = CARoots(
        cluster_id=CLUSTER_ID,
        trust_domain=TD,
        active_root_id="b",
        roots=(fake_root("a", retain_until=t2), fake_root("b")),
    )
    assert merge_roots(x, y).root("a").retain_until == t2  # type: ignore[union-attr]
    assert merge_roots(y, x).root("a").retain_until == t2  # type: ignore[union-attr]
    assert merge_roots(one, x).root("a").retain_until == t1  # type: ignore[union-attr]


def test_roots_validation_and_wire() -> None:
    with pytest.raises(InvalidRequest, match="not in the roots"):
        fake_roots("a", active="z")
    with pytest.raises(InvalidRequest, match="same root id twice"):
        fake_roots("a", "a", active="a")
    value = rotate_roots(
        fake_roots("a", active="a"),
        fake_root("b"),
        now=NOW,
        leaf_ttl=TTL,
        cluster_id=CLUSTER_ID,
        trust_domain=TD,
    )
    assert roots_from_wire(roots_to_wire(value)) == value
    with pytest.raises(InvalidRequest, match="malformed ca-roots"):
        roots_from_wire({"cluster_id": "x"})
    assert value.trusted_pems[0] == "PEM-b"


def test_rotation_in_simulated_time_old_and_new_leaves_verify_until_old_expire() -> None:
    web = SpiffeID(trust_domain=TD, datacenter="dc1", service="web")
    root_a = generate_root(trust_domain=TD, now=NOW)
    ca_a = CAServer.primary(root_a, datacenter="dc1", trust_domain=TD, is_registered=is_registered)
    roots = rotate_roots(
        None, root_a.info, now=NOW, leaf_ttl=TTL, cluster_id=CLUSTER_ID, trust_domain=TD
    )
    old_leaf = ca_a.sign_leaf(make_leaf_csr(web)[1], "node-a", NOW).cert_pem

    t_rot = NOW + timedelta(hours=20)
    root_b = generate_root(trust_domain=TD, now=t_rot)
    roots = rotate_roots(
        roots, root_b.info, now=t_rot, leaf_ttl=TTL, cluster_id=CLUSTER_ID, trust_domain=TD
    )
    assert ca_a.max_leaf_expiry is not None
    roots = note_leaf_expiry(roots, root_a.info.id, ca_a.max_leaf_expiry)
    ca_b = CAServer.primary(root_b, datacenter="dc1", trust_domain=TD, is_registered=is_registered)
    new_leaf = ca_b.sign_leaf(make_leaf_csr(web)[1], "node-a", t_rot).cert_pem

    bundle = TrustBundle(roots.trusted_pems)
    for t in (t_rot + timedelta(minutes=1), NOW + timedelta(hours=71)):
        assert bundle.verify(old_leaf, now=t) == web
        assert bundle.verify(new_leaf, now=t) == web
    after_old_expiry = NOW + timedelta(hours=73)
    with pytest.raises(TrustError):
        bundle.verify(old_leaf, now=after_old_expiry)
    assert bundle.verify(new_leaf, now=after_old_expiry) == web
    # Old root is pruned only after every leaf it signed has expired.
    assert prune_roots(roots, after_old_expiry).root(root_a.info.id) is not None
    final = prune_roots(roots, t_rot + 2 * TTL + timedelta(seconds=1))
    assert final.root(root_a.info.id) is None
    assert TrustBundle(final.trusted_pems).verify(new_leaf, now=t_rot + timedelta(hours=71)) == web
