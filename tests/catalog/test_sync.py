"""CatalogSync: stores of several nodes converge through the gossip delegate seam."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.catalog import queries
from node.catalog.local import LocalState, NodeIdentity
from node.catalog.parse import parse_service
from node.catalog.store import CatalogStore
from node.catalog.sync import CatalogSync, SyncMessage, encode_update
from node.catalog.values import Health, NodeRecord
from node.gossip.delegate import MAX_USER_MSG_BYTES, UserBroadcastQueue
from node.wire import pack


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def utcnow(self) -> dt.datetime:
        return dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


class Peer:
    def __init__(self, name: str) -> None:
        self.store = CatalogStore()
        self.queue = UserBroadcastQueue(retransmit_mult=4, num_nodes=lambda: 3)
        self.local = LocalState(
            identity=NodeIdentity(name=name, datacenter="dc1", address="127.0.0.1"),
            store=self.store,
            clock=Clock(),
        )
        self.sync = CatalogSync(
            self.store, local_name=name, queue=self.queue, on_own_version=self.local.republish_above
        )
        self.local.add_record_listener(self.sync.local_record_changed)
        self.sync.local_record_changed(None, self.local.record())

    def gossip_to(self, *others: Peer) -> int:
        """Deliver everything queued (as the core would piggyback it) to ``others``."""
        sent = 0
        for _ in range(50):  # bounded: the queue drains within its transmit limit
            batch = self.sync.get_broadcasts(2, 1400)
            if not batch:
                return sent
            for payload in batch:
                for other in others:
                    other.sync.notify_msg(payload)
                sent += 1
        raise AssertionError("broadcast queue did not drain")

    def push_pull(self, other: Peer) -> None:
        other.sync.merge_remote_state(self.sync.local_state(False), False)
        self.sync.merge_remote_state(other.sync.local_state(False), False)


def test_CatalogSync_small_change_travels_as_whole_record() -> None:
    a, b = Peer("a"), Peer("b")
    index = b.store.index
    a.local.register_service(parse_service({"name": "web", "port": 80, "check": {"ttl": "10s"}}))
    a.gossip_to(b)
    (entry,) = queries.health_service(b.store, "web").value
    assert entry.node.name == "a" and entry.status is Health.CRITICAL
    assert queries.health_service(b.store, "web").index > index
    a.local.update_ttl("service:web", Health.PASSING, "ok")
    a.gossip_to(b)
    (entry,) = queries.health_service(b.store, "web").value
    assert entry.status is Health.PASSING
    assert b.sync.stats()["applied"] >= 2


def _register_many(peer: Peer, count: int) -> None:
    for i in range(count):
        peer.local.register_service(
            parse_service(
                {"name": f"svc{i}", "port": 1000 + i, "tags": ["t" * 20], "check": {"ttl": "1m"}}
            )
        )


def test_CatalogSync_large_node_uses_deltas_after_baseline() -> None:
    a, b = Peer("a"), Peer("b")
    _register_many(a, 60)
    assert len(pack(a.local.record().to_wire())) > MAX_USER_MSG_BYTES
    a.push_pull(b)  # baseline
    a.gossip_to()  # drain old news
    a.local.update_ttl("service:svc7", Health.WARNING, "slow")
    payloads = a.sync.get_broadcasts(2, 1400)
    assert [p[0] for p in payloads] == [SyncMessage.DELTA]
    for payload in payloads:
        b.sync.notify_msg(payload)
    entry = b.store.entry("a")
    assert entry is not None and entry.record == a.local.record()
    assert b.sync.missing() == {}


def test_CatalogSync_unappliable_news_is_wanted_until_push_pull() -> None:
    a, b = Peer("a"), Peer("b")
    _register_many(a, 60)
    a.gossip_to()  # b never heard these
    a.local.update_ttl("service:svc1", Health.PASSING)
    a.gossip_to(b)
    assert b.sync.missing() == {"a": a.local.version}
    a.push_pull(b)
    assert b.sync.missing() == {}
    entry = b.store.entry("a")
    assert entry is not None and entry.record.version == a.local.version


def test_CatalogSync_rebroadcast_reaches_third_node() -> None:
    a, b, c = Peer("a"), Peer("b"), Peer("c")
    a.local.register_service(parse_service({"name": "web", "port": 80}))
    a.gossip_to(b)  # c is not reachable from a
    b.gossip_to(c)
    assert [s.node.name for s in queries.service_nodes(c.store, "web").value] == ["a"]


def test_CatalogSync_member_failure_and_leave() -> None:
    a, b = Peer("a"), Peer("b")
    a.local.register_service(parse_service({"name": "web", "port": 80}))
    a.gossip_to(b)
    b.sync.member_failed("a")
    (entry,) = queries.health_service(b.store, "web").value
    assert entry.status is Health.CRITICAL
    assert entry.checks[0].check.id == "serfHealth"
    b.sync.member_alive("a")
    assert queries.health_service(b.store, "web", passing=True).value != ()
    stale = a.sync.local_state(False)
    b.sync.member_left("a")
    assert queries.service_nodes(b.store, "web").value == ()
    b.sync.merge_remote_state(stale, False)  # a slow push-pull must not resurrect it
    assert b.store.entry("a") is None
    # Tombstones spread through push-pull too.
    c = Peer("c")
    c.sync.merge_remote_state(stale, False)
    assert c.store.entry("a") is not None
    c.sync.merge_remote_state(b.sync.local_state(False), False)
    assert c.store.entry("a") is None


def test_CatalogSync_own_record_from_peer_forces_republish_above() -> None:
    a, b = Peer("a"), Peer("b")
    claim = NodeRecord(name="a", node_id="x", version=a.local.version + 1000)
    b.store.upsert_node(claim)
    a.sync.merge_remote_state(b.sync.local_state(False), False)
    assert a.local.version > claim.version
    own = a.store.entry("a")
    assert own is not None and own.record.node_id == a.local.node_id
    assert a.sync.stats()["own_conflict"] == 1
    # Our own record echoed back at our version is not a conflict.
    version = a.local.version
    b.sync.merge_remote_state(a.sync.local_state(False), False)
    a.sync.merge_remote_state(b.sync.local_state(False), False)
    assert a.local.version == version


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x07" + pack({}),
        bytes([SyncMessage.RECORD]) + b"\xc1garbage",
        bytes([SyncMessage.RECORD]) + pack({"name": "x", "version": "1"}),
        bytes([SyncMessage.RECORD])
        + pack({"name": "x", "version": 1, "services": [{"kind": "bogus"}]}),
        bytes([SyncMessage.DELTA]) + pack({"n": "x", "b": 5, "v": 4}),
        bytes([SyncMessage.DELTA]) + pack([1, 2]),
        bytes([SyncMessage.DIGEST]) + pack({"n": 3, "v": 1}),
        os.urandom(64),
    ],
)
def test_CatalogSync_garbage_is_dropped_and_counted(payload: bytes) -> None:
    b = Peer("b")
    index = b.store.index
    b.sync.notify_msg(payload)
    b.sync.merge_remote_state(payload, False)
    assert b.store.index == index
    assert b.sync.stats().get("dropped", 0) >= 1


def test_encode_update_falls_back_to_digest_when_delta_is_too_big() -> None:
    a = Peer("a")
    old = a.local.record()
    _register_many(a, 60)
    payload = encode_update(old, a.local.record())
    assert payload[0] == SyncMessage.DIGEST


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(list(SyncMessage)))
def test_CatalogSync_never_raises_on_fuzzed_payloads(data: bytes, kind: SyncMessage) -> None:
    b = Peer("b")
    b.sync.notify_msg(data)
    b.sync.notify_msg(bytes([kind]) + data)
    b.sync.merge_remote_state(data, True)


def test_CatalogSync_on_member_change_maps_gossip_statuses() -> None:
    from types import SimpleNamespace

    from node.gossip.messages import MemberStatus

    a, b = Peer("a"), Peer("b")
    a.local.register_service(parse_service({"name": "web", "port": 80}))
    a.gossip_to(b)
    for status, expected in [
        (MemberStatus.SUSPECT, Health.PASSING),
        (MemberStatus.DEAD, Health.CRITICAL),
        (MemberStatus.ALIVE, Health.PASSING),
    ]:
        b.sync.on_member_change(SimpleNamespace(name="a", status=status), None)
        (entry,) = queries.health_service(b.store, "web").value
        assert entry.status is expected, status
    b.sync.on_member_change(SimpleNamespace(name="a", status=MemberStatus.LEFT), MemberStatus.ALIVE)
    assert queries.service_nodes(b.store, "web").value == ()
