"""DelegateMux: channel routing, fair broadcast budget, push-pull state map, bad input."""

from __future__ import annotations

import pytest

from node.errors import LocalProtocolError
from node.gossip.mux import CHANNEL_CATALOG, CHANNEL_GLOBAL_STATE, DelegateMux
from node.wire import pack


class FakeDelegate:
    """Records what it gets; hands out queued broadcasts within the limit."""

    def __init__(self, outgoing: list[bytes] | None = None, state: bytes = b"") -> None:
        self.received: list[bytes] = []
        self.merged: list[tuple[bytes, bool]] = []
        self.outgoing = list(outgoing or [])
        self.state = state
        self.asked: list[tuple[int, int]] = []

    def notify_msg(self, payload: bytes) -> None:
        self.received.append(payload)

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        self.asked.append((overhead, limit))
        out: list[bytes] = []
        used = 0
        while self.outgoing and used + len(self.outgoing[0]) + overhead <= limit:
            msg = self.outgoing.pop(0)
            used += len(msg) + overhead
            out.append(msg)
        return out

    def local_state(self, join: bool) -> bytes:
        return self.state

    def merge_remote_state(self, payload: bytes, join: bool) -> None:
        self.merged.append((payload, join))


def test_channel_numbers_are_fixed() -> None:
    assert (CHANNEL_CATALOG, CHANNEL_GLOBAL_STATE) == (1, 2)


def test_notify_routes_by_leading_byte_and_strips_it() -> None:
    mux, a, b = DelegateMux(), FakeDelegate(), FakeDelegate()
    mux.add_channel(1, a)
    mux.add_channel(2, b)
    mux.notify_msg(b"\x01hello")
    mux.notify_msg(b"\x02world")
    assert a.received == [b"hello"] and b.received == [b"world"]


def test_unknown_channel_and_empty_message_are_dropped_and_counted() -> None:
    mux, a = DelegateMux(), FakeDelegate()
    mux.add_channel(1, a)
    mux.notify_msg(b"\x09x")
    mux.notify_msg(b"")
    assert a.received == []
    assert mux.stats == {"dropped_unknown_channel": 1, "dropped_empty": 1}


def test_add_channel_rejects_duplicates_and_out_of_range() -> None:
    mux = DelegateMux()
    mux.add_channel(1, FakeDelegate())
    with pytest.raises(LocalProtocolError, match="already registered"):
        mux.add_channel(1, FakeDelegate())
    for bad in (0, 256):
        with pytest.raises(LocalProtocolError, match="outside 1..255"):
            mux.add_channel(bad, FakeDelegate())


def test_broadcasts_carry_the_channel_byte_and_respect_the_limit() -> None:
    mux = DelegateMux()
    mux.add_channel(1, FakeDelegate([b"a" * 10, b"b" * 10]))
    out = mux.get_broadcasts(overhead=2, limit=100)
    assert out == [b"\x01" + b"a" * 10, b"\x01" + b"b" * 10]
    assert sum(len(m) + 2 for m in out) <= 100


def test_a_busy_channel_cannot_starve_another() -> None:
    busy = FakeDelegate([b"x" * 40] * 50)
    quiet = FakeDelegate([b"y" * 40])
    mux = DelegateMux()
    mux.add_channel(1, busy)
    mux.add_channel(2, quiet)
    out = mux.get_broadcasts(overhead=2, limit=200)
    assert b"\x02" + b"y" * 40 in out
    assert sum(len(m) + 2 for m in out) <= 200
    # leftover budget goes to the busy channel in the second pass
    assert len([m for m in out if m[0] == 1]) >= 2


def test_fairness_rotates_who_asks_first() -> None:
    a, b = FakeDelegate([b"a" * 50] * 10), FakeDelegate([b"b" * 50] * 10)
    mux = DelegateMux()
    mux.add_channel(1, a)
    mux.add_channel(2, b)
    firsts = {mux.get_broadcasts(overhead=0, limit=60)[0][0] for _ in range(2)}
    assert firsts == {1, 2}


def test_push_pull_state_is_a_map_by_channel() -> None:
    a, b = FakeDelegate(state=b"A"), FakeDelegate(state=b"B")
    mux = DelegateMux()
    mux.add_channel(1, a)
    mux.add_channel(2, b)
    other = DelegateMux()
    a2, b2 = FakeDelegate(), FakeDelegate()
    other.add_channel(1, a2)
    other.add_channel(2, b2)
    other.merge_remote_state(mux.local_state(join=True), join=True)
    assert a2.merged == [(b"A", True)] and b2.merged == [(b"B", True)]


def test_remote_state_for_unknown_channels_and_garbage_is_counted() -> None:
    a = FakeDelegate()
    mux = DelegateMux()
    mux.add_channel(1, a)
    mux.merge_remote_state(pack({1: b"ok", 7: b"new", 2: "not-bytes"}), join=False)
    mux.merge_remote_state(b"\xc1garbage", join=False)
    mux.merge_remote_state(pack([1, 2]), join=False)
    assert a.merged == [(b"ok", False)]
    assert mux.stats["dropped_unknown_channel"] == 2
    assert mux.stats["dropped_malformed_state"] == 2
