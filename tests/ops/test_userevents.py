"""User events: the pure core (wire, filters, index, delegate) without I/O."""

from __future__ import annotations

import pytest

from node.errors import InvalidRequest, RemoteProtocolError
from node.gossip.delegate import UserBroadcastQueue
from node.userevents import (
    BUFFER_EVENTS,
    EventDelegate,
    UserEvent,
    accepts,
    event_index,
    validate_event,
)
from node.wire import pack, unpack

ID = "6f1c2b1e-0d7a-4b53-9a8e-2f1f1c0c9d01"


def _event(n: int = 0, **kw: object) -> UserEvent:
    return UserEvent(id=f"{n:08x}-0000-4000-8000-000000000000", name="deploy", **kw)  # type: ignore[arg-type]


def _delegate(accept: bool = True) -> tuple[EventDelegate, UserBroadcastQueue]:
    queue = UserBroadcastQueue(retransmit_mult=4, num_nodes=lambda: 3)
    return EventDelegate(queue, lambda e: accept), queue


def test_wire_round_trip_and_garbage() -> None:
    event = UserEvent(id=ID, name="x", payload=b"\x00\xff", node_filter="n.*", ltime=7)
    assert UserEvent.from_wire(unpack(pack(event.to_wire()))) == event
    for bad in (None, [], {"id": ID}, {**event.to_wire(), "ltime": -1},
                {**event.to_wire(), "payload": "text"}, {**event.to_wire(), "name": ""}):  # fmt: skip
        with pytest.raises(RemoteProtocolError):
            UserEvent.from_wire(bad)


@pytest.mark.parametrize(
    ("kw", "node", "services", "kept"),
    [
        ({}, "n1", {}, True),
        ({"node_filter": "^web"}, "web-1", {}, True),
        ({"node_filter": "^web"}, "db-1", {}, False),
        ({"node_filter": "eb"}, "web-1", {}, True),  # unanchored, as Go's MatchString
        ({"service_filter": "api"}, "n1", {"api-1": ()}, True),
        ({"service_filter": "api"}, "n1", {"web": ("api",)}, False),  # IDs, not tags
        ({"service_filter": "api", "tag_filter": "v2"}, "n1", {"api": ("v1", "v2")}, True),
        ({"service_filter": "api", "tag_filter": "v3"}, "n1", {"api": ("v1",)}, False),
    ],
)
def test_filters_admit_the_nodes_consul_admits(
    kw: dict[str, str], node: str, services: dict[str, tuple[str, ...]], kept: bool
) -> None:
    assert accepts(UserEvent(id=ID, name="e", **kw), node, services) is kept


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (UserEvent(id=ID, name=""), "User event missing name"),
        (UserEvent(id=ID, name="e", tag_filter="v1"), "Cannot provide tag filter without service"),
        (UserEvent(id=ID, name="e", node_filter="("), "Invalid node filter: "),
        (UserEvent(id=ID, name="e", service_filter="["), "Invalid service filter: "),
        (UserEvent(id=ID, name="e", payload=b"x" * 600), "exceeds configured limit of 512"),
    ],
)
def test_validation_uses_consuls_words(event: UserEvent, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message.replace("(", r"\(")):
        validate_event(event)


def test_index_folds_the_last_id() -> None:
    assert event_index([]) == 1
    one = UserEvent(id="00000000-0000-0001-0000-000000000003", name="e")
    assert event_index([_event(), one]) == 1 ^ 3


def test_fire_keeps_queues_and_stamps_lamport_time() -> None:
    delegate, queue = _delegate()
    first = delegate.fire(_event(1))
    second = delegate.fire(_event(2))
    assert (first.ltime, second.ltime) == (0, 1)
    assert delegate.events() == [first, second]
    assert len(queue) == 2
    # A peer's later event moves our clock past its time.
    delegate.notify_msg(pack(_event(3, ltime=10).to_wire()))
    assert delegate.fire(_event(4)).ltime == 11


def test_received_events_are_relayed_once_and_duplicates_dropped() -> None:
    delegate, queue = _delegate()
    wire = pack(_event(1).to_wire())
    delegate.notify_msg(wire)
    delegate.notify_msg(wire)
    assert len(delegate.events()) == 1 and len(queue) == 1
    assert delegate.stats["duplicates"] == 1
    delegate.notify_msg(b"\xc1garbage")
    assert delegate.stats["dropped_malformed"] == 1


def test_filtered_events_are_relayed_but_not_kept() -> None:
    delegate, queue = _delegate(accept=False)
    delegate.notify_msg(pack(_event(1).to_wire()))
    assert delegate.events() == [] and len(queue) == 1


def test_ring_keeps_the_last_events_and_filters_by_name() -> None:
    delegate, _ = _delegate()
    woke: list[int] = []
    delegate.add_listener(lambda: woke.append(1))
    for n in range(BUFFER_EVENTS + 5):
        delegate.fire(_event(n))
    kept = delegate.events()
    assert len(kept) == BUFFER_EVENTS and kept[0].id == _event(5).id
    assert len(woke) == BUFFER_EVENTS + 5
    other = UserEvent(id=ID, name="other")
    delegate.fire(other)
    assert [e.id for e in delegate.events("other")] == [ID]


def test_push_pull_catches_up_missed_events_but_a_join_ignores_old_ones() -> None:
    sender, _ = _delegate()
    sender.fire(_event(1))
    sender.fire(_event(2))
    state = sender.local_state(join=False)
    late, _ = _delegate()
    late.merge_remote_state(state, join=False)
    assert [e.id for e in late.events()] == [_event(1).id, _event(2).id]
    joiner, _ = _delegate()
    joiner.merge_remote_state(state, join=True)
    assert joiner.events() == []
    joiner.notify_msg(pack(_event(1).to_wire()))  # already seen: not replayed
    assert joiner.events() == []
    assert joiner.fire(_event(3)).ltime == 2  # the clock moved past what it saw
    joiner.merge_remote_state(b"\x93garbage", join=False)
    assert joiner.stats["dropped_malformed"] == 1
