"""TransmitLimitedQueue: retransmit limits, ordering, invalidation, bounds."""

from __future__ import annotations

import pytest

from node.errors import LocalProtocolError
from node.gossip.broadcast import MAX_QUEUE_DEPTH, TransmitLimitedQueue, retransmit_limit
from node.gossip.delegate import MAX_USER_MSG_BYTES, UserBroadcastQueue


@pytest.mark.parametrize(
    ("mult", "n", "limit"),
    [
        (4, 1, 4),
        (4, 9, 4),
        (4, 10, 8),
        (4, 99, 8),
        (4, 100, 12),
        (4, 999, 12),
        (4, 1000, 16),
        (2, 100, 6),
    ],
)
def test_retransmit_limit_table(mult: int, n: int, limit: int) -> None:
    assert retransmit_limit(mult, n) == limit


def test_TransmitLimitedQueue_sends_each_broadcast_exactly_limit_times() -> None:
    q = TransmitLimitedQueue(retransmit_mult=4)
    q.queue(b"x" * 10, "a")
    sent = 0
    for _ in range(20):
        got = q.get_broadcasts(2, 1000, n=10)
        assert got in ([], [b"x" * 10])  # never twice in one packet
        sent += len(got)
    assert sent == retransmit_limit(4, 10) == 8
    assert len(q) == 0


def test_TransmitLimitedQueue_prefers_fewest_transmits_then_newest() -> None:
    q = TransmitLimitedQueue(retransmit_mult=4)
    q.queue(b"old", "a")
    assert q.get_broadcasts(0, 3, n=10) == [b"old"]
    q.queue(b"mid", "b")
    q.queue(b"new", "c")
    assert q.get_broadcasts(0, 6, n=10) == [b"new", b"mid"]
    # all sent once now: newest first
    assert q.get_broadcasts(0, 100, n=10) == [b"new", b"mid", b"old"]


def test_TransmitLimitedQueue_invalidates_by_key() -> None:
    q = TransmitLimitedQueue(retransmit_mult=4)
    q.queue(b"alive-1", "node-a")
    q.queue(b"other", "node-b")
    q.queue(b"suspect-1", "node-a")
    assert len(q) == 2
    assert sorted(q.get_broadcasts(0, 1000, n=10)) == [b"other", b"suspect-1"]


def test_TransmitLimitedQueue_respects_size_limit_and_overhead() -> None:
    q = TransmitLimitedQueue(retransmit_mult=4)
    for i in range(10):
        q.queue(bytes([i]) * 100, i)
    got = q.get_broadcasts(2, 350, n=10)
    assert len(got) == 3
    assert sum(len(b) + 2 for b in got) <= 350
    assert q.get_broadcasts(2, 50, n=10) == []


def test_TransmitLimitedQueue_is_bounded() -> None:
    q = TransmitLimitedQueue(retransmit_mult=4)
    for i in range(MAX_QUEUE_DEPTH + 100):
        q.queue(b"m%d" % i, i)
    assert len(q) <= MAX_QUEUE_DEPTH


def test_UserBroadcastQueue_follows_cluster_size_and_rejects_oversized() -> None:
    size = [1]
    q = UserBroadcastQueue(retransmit_mult=1, num_nodes=lambda: size[0])
    q.queue(b"u", "k")
    assert q.get_broadcasts(3, 100) == [b"u"]
    assert q.get_broadcasts(3, 100) == []  # limit 1 * ceil(log10 2) = 1
    size[0] = 1000
    q.queue(b"v", "k")
    assert sum(len(q.get_broadcasts(3, 100)) for _ in range(10)) == 4
    with pytest.raises(LocalProtocolError, match="exceeds"):
        q.queue(b"x" * (MAX_USER_MSG_BYTES + 1))
