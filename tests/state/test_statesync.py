"""StateSync (global state over LAN gossip), pure: records, digests, mismatches, garbage.

Run with the kinds Connect keeps (the CA roots are the record too big for one packet).
"""

from __future__ import annotations

from collections.abc import Iterable

from node.connect import parse_config_entry, rotate_roots
from node.connect.ca import generate_root
from node.connect.castate import DEFAULT_LEAF_CERT_TTL
from node.connect.records import CA_ROOTS_NAME, CONNECT_SCHEMA, KIND_CA_ROOTS
from node.gossip.delegate import MAX_USER_MSG_BYTES, UserBroadcastQueue
from node.state.globalstate import GlobalState, Record
from node.state.hlc import Stamp
from node.state.statesync import StateMessage, StateSync, encode_record
from node.wire import pack
from tests.helpers.ca import NOW, TD

WALL = 1_800_000_000_000


class Sink:
    """A GlobalState plus the calls StateSync makes (sink, ``on_want``, ``on_mismatch``)."""

    def __init__(self, node: str) -> None:
        self.state = GlobalState(node, CONNECT_SCHEMA)
        self.wanted: list[tuple[str, str, Stamp]] = []
        self.mismatches: list[str] = []

    def records(self) -> Iterable[Record]:
        return self.state.all_records()

    def stamp_of(self, kind: str, name: str) -> Stamp | None:
        held = self.state.held(kind, name)
        return None if held is None else held.stamp

    def merge_records(self, records: Iterable[Record]) -> tuple[Record, ...]:
        return self.state.merge(records, wall_ms=WALL)

    def want(self, kind: str, name: str, stamp: Stamp) -> None:
        self.wanted.append((kind, name, stamp))

    def on_mismatch(self, peer_primary: str) -> None:
        self.mismatches.append(peer_primary)


def _pair(primary_b: str = "dc1") -> tuple[Sink, StateSync, Sink, StateSync]:
    a, b = Sink("a"), Sink("b")
    return a, _sync(a, "dc1"), b, _sync(b, primary_b)


def _sync(sink: Sink, primary: str) -> StateSync:
    queue = UserBroadcastQueue(retransmit_mult=4, num_nodes=lambda: 2)
    return StateSync(
        sink, schema=CONNECT_SCHEMA, primary=primary, queue=queue,
        on_want=sink.want, on_mismatch=sink.on_mismatch,
    )  # fmt: skip


def _entry(name: str, mode: str = "local") -> object:
    return parse_config_entry(
        {"Kind": "service-defaults", "Name": name, "MeshGateway": {"Mode": mode}}
    )


def _deliver(src: StateSync, dst: StateSync) -> int:
    payloads = src.get_broadcasts(2, 64 * 1024)
    for payload in payloads:
        dst.notify_msg(payload)
    return len(payloads)


def test_small_record_travels_whole_and_is_rebroadcast_once() -> None:
    a, sync_a, b, sync_b = _pair()
    record = a.state.put("service-defaults", "web", _entry("web"), wall_ms=WALL)
    sync_a.announce([record])
    assert _deliver(sync_a, sync_b) == 1
    assert b.state.get("service-defaults", "web").value == record.value
    assert sync_b.stats()["applied"] == 1
    assert len(sync_b.get_broadcasts(2, 64 * 1024)) >= 1  # news to b spreads on
    # The same record again is stale and not re-queued.
    sync_a.announce([record])
    _deliver(sync_a, sync_b)
    assert sync_b.stats()["stale"] == 1


def test_big_record_travels_as_a_digest_and_is_wanted() -> None:
    a, sync_a, b, sync_b = _pair()
    root = generate_root(trust_domain=TD, now=NOW)
    roots = rotate_roots(None, root.info, now=NOW, leaf_ttl=DEFAULT_LEAF_CERT_TTL,
                         cluster_id=TD.split(".")[0], trust_domain=TD)  # fmt: skip
    record = a.state.put(KIND_CA_ROOTS, CA_ROOTS_NAME, roots, wall_ms=WALL)
    payload = encode_record(record, "dc1", CONNECT_SCHEMA)
    assert payload[0] == StateMessage.DIGEST and len(payload) <= MAX_USER_MSG_BYTES
    sync_b.notify_msg(payload)
    assert b.wanted == [(KIND_CA_ROOTS, CA_ROOTS_NAME, record.stamp)]
    # Push-pull carries it whole; after that the digest is stale.
    sync_b.merge_remote_state(sync_a.local_state(False), False)
    assert b.state.get(KIND_CA_ROOTS, CA_ROOTS_NAME).value == roots
    sync_b.notify_msg(payload)
    assert len(b.wanted) == 1


def test_push_pull_carries_tombstones() -> None:
    a, sync_a, b, sync_b = _pair()
    a.state.put("service-defaults", "web", _entry("web"), wall_ms=WALL)
    sync_b.merge_remote_state(sync_a.local_state(False), False)
    a.state.delete("service-defaults", "web", wall_ms=WALL + 1)
    sync_b.merge_remote_state(sync_a.local_state(False), False)
    assert b.state.get("service-defaults", "web") is None
    assert b.state.held("service-defaults", "web").is_tombstone


def test_another_primary_is_never_merged_and_is_reported() -> None:
    a, sync_a, b, sync_b = _pair(primary_b="dc9")
    record = a.state.put("service-defaults", "web", _entry("web"), wall_ms=WALL)
    sync_a.announce([record])
    _deliver(sync_a, sync_b)
    sync_b.merge_remote_state(sync_a.local_state(False), False)
    assert b.state.get("service-defaults", "web") is None
    assert b.mismatches == ["dc1", "dc1"]
    assert sync_b.stats()["mismatch"] == 2


def test_garbage_is_dropped_and_counted() -> None:
    _, _, b, sync_b = _pair()
    for payload in (b"", b"\x01", b"\x01\xc1", bytes([1]) + pack([1, 2]),
                    bytes([1]) + pack({"p": "dc1", "r": {"k": "nope"}}),
                    bytes([2]) + pack({"p": "dc1", "k": "x", "n": "y", "s": "bad"}),
                    bytes([9]) + pack({"p": "dc1"}), bytes([1]) + pack({"r": {}})):  # fmt: skip
        sync_b.notify_msg(payload)
    for state in (b"", pack([]), pack({"p": "dc1", "r": [1]}), pack({"p": "dc1"})):
        sync_b.merge_remote_state(state, False)
    assert sync_b.stats()["dropped"] == 12
    assert b.state.all_records() == ()
