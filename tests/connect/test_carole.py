"""The CA role's decision, pure: a view in, a decision out (no event loop, no keys)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from node.connect.carole import (
    Bootstrap,
    CAView,
    FetchRootKey,
    Idle,
    Need,
    RenewIntermediate,
    WriteRoots,
    looks_again,
    primary_servers,
    retry_wait,
    step,
)
from node.connect.castate import CAConfig
from tests.connect.roots import fake_roots
from tests.helpers.ca import CLUSTER_ID, NOW

LEAF_TTL = timedelta(hours=72)


def _view(**kw: Any) -> CAView:
    base = CAView(
        roots=None, config=None, need=None, in_primary=True, node_name="s1",
        primary_servers=frozenset(), elapsed=10.0, bootstrap_delay=2.0, now=NOW,
    )  # fmt: skip
    return replace(base, **kw)


# --------------------------------------------------------------------------- bootstrap


def test_the_smallest_alive_primary_server_bootstraps_after_the_delay() -> None:
    assert step(_view(primary_servers=frozenset({"s2", "s3"}))) == Bootstrap()
    assert step(_view(node_name="s2", primary_servers=frozenset({"s1", "s3"}))) == Idle()
    assert step(_view(elapsed=1.0)) == Idle()  # existing roots may still be on their way


def test_a_secondary_server_never_bootstraps() -> None:
    assert step(_view(in_primary=False)) == Idle()


def test_primary_servers_are_the_alive_servers_of_the_primary() -> None:
    rows = [
        ("s1", True, "dc1", True),
        ("s2", True, "dc1", False),  # not alive
        ("c1", False, "dc1", True),  # not a server
        ("s9", True, "dc2", True),  # another datacenter
    ]
    assert primary_servers(rows, "dc1") == frozenset({"s1"})


# --------------------------------------------------------------------------- signing material


def test_a_missing_root_key_is_fetched_and_a_missing_intermediate_renewed() -> None:
    roots = fake_roots("r1", active="r1")
    assert step(_view(roots=roots, need=Need.ROOT_KEY)) == FetchRootKey(roots)
    secondary = _view(roots=roots, need=Need.INTERMEDIATE, in_primary=False)
    assert step(secondary) == RenewIntermediate(roots)


def test_decisions_that_change_the_signing_material_look_again_at_once() -> None:
    roots = fake_roots("r1", active="r1")
    assert looks_again(Bootstrap()) and looks_again(FetchRootKey(roots))
    assert looks_again(RenewIntermediate(roots))
    assert not looks_again(Idle()) and not looks_again(WriteRoots(roots))


# --------------------------------------------------------------------------- maintenance


def test_a_primary_retires_an_inactive_root_then_prunes_it_once_expired() -> None:
    roots = fake_roots("r1", "r2", active="r2")
    config = CAConfig(cluster_id=CLUSTER_ID, leaf_cert_ttl=LEAF_TTL)
    decision = step(_view(roots=roots, config=config, need=Need.NOTHING))
    assert isinstance(decision, WriteRoots)
    retired = decision.roots.root("r1")
    assert retired is not None and retired.retain_until == NOW + 2 * LEAF_TTL
    # Nothing more to do until the retained root has expired; then it is dropped.
    assert step(_view(roots=decision.roots, config=config, need=Need.NOTHING)) == Idle()
    later = NOW + 2 * LEAF_TTL + timedelta(seconds=1)
    pruned = step(_view(roots=decision.roots, config=config, need=Need.NOTHING, now=later))
    assert isinstance(pruned, WriteRoots)
    assert [r.id for r in pruned.roots.roots] == ["r2"] and pruned.roots.removed == {"r1"}


def test_a_secondary_never_rewrites_roots() -> None:
    roots = fake_roots("r1", "r2", active="r2")
    assert step(_view(roots=roots, need=Need.NOTHING, in_primary=False)) == Idle()


# --------------------------------------------------------------------------- waiting


@pytest.mark.parametrize(
    ("roots_known", "wait", "expected"),
    [(True, 30.0, 30.0), (False, 30.0, 0.5), (False, 0.1, 0.1)],
)
def test_retry_wait_is_short_while_the_ca_does_not_exist(
    roots_known: bool, wait: float, expected: float
) -> None:
    got = retry_wait(roots_known=roots_known, wait=wait, retry_min=0.2, bootstrap_delay=2.0)
    assert got == expected
