"""Global state: LWW merge after a partition, tombstones and reaping, CAS, roots as a set."""

from __future__ import annotations

import random
import uuid

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.catalog.values import MeshGatewayMode
from node.connect import (
    CONNECT_SCHEMA,
    CAConfig,
    CARoots,
    Intention,
    IntentionAction,
    ProxyDefaults,
    ServiceDefaults,
)
from node.errors import Conflict, InvalidRequest, NotFound
from node.state.globalstate import Delta, GlobalState, Record
from node.state.hlc import HybridClock, Stamp
from tests.connect.roots import fake_roots
from tests.helpers.ca import CLUSTER_ID

SD = "service-defaults"
S = CONNECT_SCHEMA  # the state machinery, with the kinds Connect keeps in it


def sd(name: str, mode: str = "") -> ServiceDefaults:
    return ServiceDefaults(name=name, mesh_gateway=MeshGatewayMode(mode))


def sync(a: GlobalState, b: GlobalState, wall_ms: int) -> None:
    """Full exchange both ways, as anti-entropy does."""
    b.merge(a.entries_since(0).records, wall_ms=wall_ms)
    a.merge(b.entries_since(0).records, wall_ms=wall_ms)


def snapshot(state: GlobalState) -> dict[tuple[str, str], object]:
    return {r.key: (r.value, r.stamp) for r in state.entries_since(0).records}


# --- HLC ------------------------------------------------------------------------------------


def test_hlc_is_monotonic_when_wall_clock_goes_back() -> None:
    clock = HybridClock("n1")
    s1 = clock.tick(1000)
    s2 = clock.tick(900)
    s3 = clock.tick(1000)
    assert s1 < s2 < s3 and s2.wall_ms == 1000 and s2.counter == 1
    assert clock.observe(Stamp(5000, 7, "n2"), wall_ms=1000)
    assert clock.tick(1000) > Stamp(5000, 7, "n2")
    assert not clock.observe(Stamp(10_000_000, 0, "n3"), wall_ms=1000)  # reported as drift


def test_stamp_wire_errors() -> None:
    assert Stamp.from_wire(Stamp(1, 2, "n").to_wire()) == Stamp(1, 2, "n")
    for bad in ([1, 2], [1, "2", "n"], [-1, 0, "n"], "x"):
        with pytest.raises(ValueError, match="stamp"):
            Stamp.from_wire(bad)


# --- local writes ---------------------------------------------------------------------------


def test_put_get_list_and_indexes() -> None:
    gs = GlobalState("n1", S)
    r1 = gs.put(SD, "web", sd("web"), wall_ms=1000)
    r2 = gs.put(SD, "api", sd("api"), wall_ms=1001)
    r3 = gs.put(SD, "web", sd("web", "local"), wall_ms=1002)
    assert (r1.modify_index, r2.modify_index, r3.modify_index, gs.index) == (1, 2, 3, 3)
    assert r3.create_index == 1
    got = gs.get(SD, "web")
    assert got is not None and got.value.mesh_gateway is MeshGatewayMode.LOCAL
    assert [r.name for r in gs.list(SD)] == ["api", "web"]
    assert gs.kind_index(SD) == 3 and gs.kind_index("intention") == 0


def test_cas() -> None:
    gs = GlobalState("n1", S)
    first = gs.put(SD, "web", sd("web"), wall_ms=1, cas=0)
    with pytest.raises(Conflict, match="CAS failed .* modify index is 1, the request said 0"):
        gs.put(SD, "web", sd("web", "remote"), wall_ms=2, cas=0)
    with pytest.raises(Conflict, match="CAS failed"):
        gs.put(SD, "web", sd("web", "remote"), wall_ms=2, cas=7)
    assert gs.index == 1 and gs.get(SD, "web").value == sd("web")  # type: ignore[union-attr]
    second = gs.put(SD, "web", sd("web", "remote"), wall_ms=2, cas=first.modify_index)
    with pytest.raises(Conflict):
        gs.delete(SD, "web", wall_ms=3, cas=first.modify_index)
    gs.delete(SD, "web", wall_ms=3, cas=second.modify_index)
    assert gs.get(SD, "web") is None
    gs.put(SD, "web", sd("web"), wall_ms=4, cas=0)  # absent again: cas=0 succeeds


@pytest.mark.parametrize(
    ("kind", "name", "value", "error", "message"),
    [
        (
            "ingress-gateway",
            "x",
            sd("x"),
            InvalidRequest,
            "unknown global state kind 'ingress-gateway'",
        ),
        (SD, "web", ProxyDefaults(), InvalidRequest, "must be a ServiceDefaults"),
        (SD, "web", sd("api"), InvalidRequest, "named 'api', not 'web'"),
        ("proxy-defaults", "other", ProxyDefaults(), InvalidRequest, "named 'global'"),
        ("ca-config", "cfg", CAConfig(), InvalidRequest, "named 'config'"),
    ],
)
def test_put_rejects_bad_input_and_changes_nothing(
    kind: str, name: str, value: object, error: type, message: str
) -> None:
    gs = GlobalState("n1", S)
    gs.put(SD, "web", sd("web"), wall_ms=1)
    before = snapshot(gs)
    with pytest.raises(error, match=message):
        gs.put(kind, name, value, wall_ms=2)
    assert snapshot(gs) == before and gs.index == 1


def test_duplicate_intention_is_a_conflict() -> None:
    gs = GlobalState("n1", S)
    a = Intention(
        id=str(uuid.uuid4()), source_name="web", destination_name="db", action=IntentionAction.ALLOW
    )
    b = Intention(
        id=str(uuid.uuid4()), source_name="web", destination_name="db", action=IntentionAction.DENY
    )
    gs.put("intention", a.id, a, wall_ms=1)
    with pytest.raises(Conflict, match="duplicate intention"):
        gs.put("intention", b.id, b, wall_ms=2)
    assert len(gs.list("intention")) == 1
    gs.delete("intention", a.id, wall_ms=3)
    gs.put("intention", b.id, b, wall_ms=4)  # the pair is free again


def test_delete_errors() -> None:
    gs = GlobalState("n1", S)
    with pytest.raises(NotFound, match="service-defaults 'web' not found"):
        gs.delete(SD, "web", wall_ms=1)
    with pytest.raises(InvalidRequest, match="cannot be deleted"):
        gs.delete("ca-roots", "roots", wall_ms=1)


# --- replication ----------------------------------------------------------------------------


def test_lww_merge_after_partition_converges_on_larger_stamp() -> None:
    a, b = GlobalState("node-a", S), GlobalState("node-b", S)
    a.put(SD, "web", sd("web"), wall_ms=1000)
    sync(a, b, 1000)
    # Partition: both accept writes; b's is later in wall time; a also writes a key b never sees.
    a.put(SD, "web", sd("web", "local"), wall_ms=2000)
    b.put(SD, "web", sd("web", "remote"), wall_ms=3000)
    a.put(SD, "api", sd("api", "none"), wall_ms=2500)
    sync(a, b, 4000)
    assert snapshot(a) == snapshot(b)
    assert a.get(SD, "web").value == sd("web", "remote")  # type: ignore[union-attr]
    assert b.get(SD, "api").value == sd("api", "none")  # type: ignore[union-attr]


def test_equal_wall_time_ties_break_by_counter_then_node_id() -> None:
    a, b = GlobalState("node-a", S), GlobalState("node-b", S)
    a.put(SD, "web", sd("web", "local"), wall_ms=1000)
    b.put(SD, "web", sd("web", "remote"), wall_ms=1000)
    sync(a, b, 1000)
    assert a.get(SD, "web").value == b.get(SD, "web").value == sd("web", "remote")  # type: ignore[union-attr]


def test_merge_is_order_independent() -> None:
    writers = [GlobalState(f"n{i}", S) for i in range(3)]
    for i, gs in enumerate(writers):
        for j in range(5):
            gs.put(
                SD,
                f"s{j}",
                sd(f"s{j}", ["local", "remote", "none"][(i + j) % 3]),
                wall_ms=1000 + 7 * i + j,
            )
        if i == 1:
            gs.put(SD, "s0", sd("s0"), wall_ms=5000)
            gs.delete(SD, "s0", wall_ms=5001)
    records = [r for gs in writers for r in gs.entries_since(0).records]
    results = []
    for seed in range(5):
        shuffled = records[:]
        random.Random(seed).shuffle(shuffled)
        target = GlobalState("reader", S)
        target.merge(shuffled, wall_ms=6000)
        results.append({k: v for k, (v, _) in snapshot(target).items()})
    assert all(r == results[0] for r in results)
    assert results[0][(SD, "s0")] is None  # the later delete wins


def test_tombstone_wins_over_older_write_and_is_reaped_after_grace() -> None:
    a, b = GlobalState("node-a", S), GlobalState("node-b", S)
    a.put(SD, "web", sd("web"), wall_ms=1000)
    sync(a, b, 1000)
    stale = b.entries_since(0).records
    a.delete(SD, "web", wall_ms=2000)
    sync(a, b, 2000)
    assert b.get(SD, "web") is None
    a.merge(stale, wall_ms=2100)  # an old copy arriving late does not resurrect it
    assert a.get(SD, "web") is None
    assert a.reap(wall_ms=2500, grace_ms=1000) == 0
    assert a.reap(wall_ms=3001, grace_ms=1000) == 1
    assert a.to_wire()["records"] == []  # the tombstone itself is gone


def test_replica_behind_a_reaped_tombstone_gets_full_snapshot_and_drops_deleted() -> None:
    primary, replica = GlobalState("primary", S), GlobalState("replica", S)
    primary.put(SD, "web", sd("web"), wall_ms=1000)
    primary.put(SD, "api", sd("api"), wall_ms=1001)
    replica.apply_delta(primary.entries_since(0), wall_ms=1001)
    seen = primary.index
    primary.delete(SD, "web", wall_ms=2000)
    primary.reap(wall_ms=10_000, grace_ms=1000)
    delta = primary.entries_since(seen)
    assert delta.full and delta.horizon is not None
    replica.apply_delta(
        Delta.from_wire(msgpack.unpackb(msgpack.packb(delta.to_wire(S))), S), wall_ms=10_000
    )
    assert replica.get(SD, "web") is None and replica.get(SD, "api") is not None
    # A record newer than the horizon that the sender lacks is not dropped.
    replica.put(SD, "late", sd("late"), wall_ms=20_000)
    replica.apply_delta(primary.entries_since(0), wall_ms=20_000)
    assert replica.get(SD, "late") is not None


def test_replica_ahead_of_a_rebuilt_primary_gets_full_snapshot() -> None:
    rebuilt = GlobalState("primary", S)
    rebuilt.put(SD, "web", sd("web"), wall_ms=1)
    delta = rebuilt.entries_since(500)
    assert delta.full and [r.name for r in delta.records] == ["web"] and delta.index == 1


def test_entries_since_returns_only_newer_changes_in_index_order() -> None:
    gs = GlobalState("n1", S)
    for i in range(4):
        gs.put(SD, f"s{i}", sd(f"s{i}"), wall_ms=100 + i)
    delta = gs.entries_since(2)
    assert [r.name for r in delta.records] == ["s2", "s3"] and not delta.full and delta.index == 4


# --- ca-roots as a set ----------------------------------------------------------------------


def roots(active: str, *ids: str, removed: frozenset[str] = frozenset()) -> CARoots:
    return fake_roots(*ids, active=active, removed=removed)


def test_bootstrap_race_ends_with_one_active_root_and_keeps_both() -> None:
    a, b = GlobalState("server-a", S), GlobalState("server-b", S)
    a.put("ca-roots", "roots", roots("ra", "ra"), wall_ms=1000)
    b.put("ca-roots", "roots", roots("rb", "rb"), wall_ms=1001)
    sync(a, b, 1002)
    for gs in (a, b):
        value = gs.get("ca-roots", "roots").value  # type: ignore[union-attr]
        assert value.active_root_id == "rb" and {r.id for r in value.roots} == {"ra", "rb"}
    assert snapshot(a) == snapshot(b)
    # A third node hearing only from a (stale) still ends in the same place.
    c = GlobalState("server-c", S)
    c.merge(a.entries_since(0).records, wall_ms=1003)
    c.merge(b.entries_since(0).records, wall_ms=1003)
    assert c.get("ca-roots", "roots").value == a.get("ca-roots", "roots").value  # type: ignore[union-attr]


def test_roots_write_may_not_silently_drop_a_root() -> None:
    gs = GlobalState("n1", S)
    gs.put("ca-roots", "roots", roots("ra", "ra", "rb"), wall_ms=1)
    with pytest.raises(InvalidRequest, match="would drop root\\(s\\) rb without retiring them"):
        gs.put("ca-roots", "roots", roots("ra", "ra"), wall_ms=2)
    gs.put("ca-roots", "roots", roots("ra", "ra", removed=frozenset({"rb"})), wall_ms=3)


# --- wire and persistence -------------------------------------------------------------------


def test_persistence_round_trip_through_msgpack() -> None:
    gs = GlobalState("n1", S)
    ixn = Intention(
        id=str(uuid.uuid4()), source_name="*", destination_name="db", action=IntentionAction.DENY
    )
    gs.put("intention", ixn.id, ixn, wall_ms=10)
    gs.put("proxy-defaults", "global", ProxyDefaults(config={"protocol": "http"}), wall_ms=11)
    gs.put("ca-config", "config", CAConfig(cluster_id=CLUSTER_ID), wall_ms=12)
    gs.put("ca-roots", "roots", roots("ra", "ra"), wall_ms=13)
    gs.put(SD, "web", sd("web"), wall_ms=14)
    gs.delete(SD, "web", wall_ms=15)
    again = GlobalState.from_wire(msgpack.unpackb(msgpack.packb(gs.to_wire())), S)
    assert snapshot(again) == snapshot(gs) and again.index == gs.index
    assert [(r.create_index, r.modify_index) for r in again.entries_since(0).records] == [
        (r.create_index, r.modify_index) for r in gs.entries_since(0).records
    ]
    assert again.put(SD, "x", sd("x"), wall_ms=1).stamp > Stamp(15, 0, "n1")  # clock restored


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"k": "nope", "n": "x", "v": None, "s": [1, 0, "n"]}, "unknown global state kind"),
        ({"k": SD, "n": "web", "v": None}, "malformed global state record"),
        (
            {
                "k": SD,
                "n": "web",
                "v": {"kind": "service-defaults", "name": "api"},
                "s": [1, 0, "n"],
            },
            "holds a value named 'api'",
        ),
        (
            {"k": SD, "n": "web", "v": {"kind": "proxy-defaults"}, "s": [1, 0, "n"]},
            "holds a 'proxy-defaults' entry",
        ),
        ({"k": SD, "n": "", "v": None, "s": [1, 0, "n"]}, "has no name"),
        (
            {
                "k": SD,
                "n": "web",
                "v": {"kind": "service-defaults", "name": "web", "bogus": 1},
                "s": [1, 0, "n"],
            },
            "invalid config key",
        ),
        ("garbage", "must be a map"),
    ],
)
def test_bad_records_are_refused(raw: object, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        Record.from_wire(raw, S)


def test_bad_delta_and_damaged_file() -> None:
    with pytest.raises(InvalidRequest, match="malformed global state delta"):
        Delta.from_wire({"records": "x"}, S)
    with pytest.raises(InvalidRequest, match="bad index"):
        Delta.from_wire({"records": [], "index": "1", "full": False}, S)
    with pytest.raises(InvalidRequest, match="damaged global state"):
        GlobalState.from_wire({"node": "n"}, S)


# --- property: any interleaving of writes and partial syncs converges -----------------------

_OPS = st.lists(
    st.tuples(
        st.sampled_from(["put", "delete", "roots", "sync"]),
        st.integers(0, 2),  # node
        st.integers(0, 2),  # key / peer
        st.integers(0, 50),  # wall clock step
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(_OPS)
def test_any_history_converges_after_full_sync(ops: list[tuple[str, int, int, int]]) -> None:
    nodes = [GlobalState(f"n{i}", S) for i in range(3)]
    wall = 1000
    written_roots: set[str] = set()
    for n, (op, node, arg, step) in enumerate(ops):
        wall += step
        gs = nodes[node]
        if op == "put":
            gs.put(
                SD, f"s{arg}", sd(f"s{arg}", ["local", "remote", "none"][step % 3]), wall_ms=wall
            )
        elif op == "delete" and gs.get(SD, f"s{arg}") is not None:
            gs.delete(SD, f"s{arg}", wall_ms=wall)
        elif op == "roots":
            rid = f"r{node}-{n}"
            current = gs.get("ca-roots", "roots")
            ids = [rid] + ([r.id for r in current.value.roots] if current else [])
            gs.put("ca-roots", "roots", roots(rid, *ids), wall_ms=wall)
            written_roots.add(rid)
        elif op == "sync":
            peer = nodes[arg]
            peer.merge(gs.entries_since(0).records, wall_ms=wall)
    for _ in range(2):
        for a in nodes:
            for b in nodes:
                if a is not b:
                    sync(a, b, wall)
    first = {k: v for k, (v, _) in snapshot(nodes[0]).items()}
    for other in nodes[1:]:
        assert {k: v for k, (v, _) in snapshot(other).items()} == first
    if written_roots:
        value = nodes[0].get("ca-roots", "roots").value  # type: ignore[union-attr]
        assert {r.id for r in value.roots} == written_roots  # no root is ever lost
