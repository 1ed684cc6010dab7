"""Lifeguard suspicion timeout: the pure function (memberlist's table) and the record."""

from __future__ import annotations

import pytest

from node.gossip.suspicion import Suspicion, remaining_suspicion_time, suspicion_timeouts


@pytest.mark.parametrize(
    ("n", "k", "elapsed", "lo", "hi", "expected"),
    [
        # memberlist suspicion_test.go TestSuspicion_remainingSuspicionTime
        (0, 3, 0.0, 2.0, 30.0, 30.0),
        (1, 3, 2.0, 2.0, 30.0, 14.0),
        (2, 3, 3.0, 2.0, 30.0, 4.810898),
        (3, 3, 4.0, 2.0, 30.0, -2.0),
        (4, 3, 5.0, 2.0, 30.0, -3.0),
        (5, 3, 10.0, 2.0, 30.0, -8.0),
        # no confirmations expected: straight to the minimum
        (0, 0, 1.0, 2.0, 30.0, 1.0),
    ],
)
def test_remaining_suspicion_time_table(
    n: int, k: int, elapsed: float, lo: float, hi: float, expected: float
) -> None:
    assert remaining_suspicion_time(n, k, elapsed, lo, hi) == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize(
    ("mult", "n", "interval", "lo", "hi"),
    [
        # reference/gossip.md §2 derived table (LAN: mult 4, interval 1 s; WAN: 6, 5 s)
        (4, 10, 1.0, 4.0, 24.0),
        (4, 100, 1.0, 8.0, 48.0),
        (4, 1000, 1.0, 12.0, 72.0),
        (4, 10000, 1.0, 16.0, 96.0),
        (6, 10, 5.0, 30.0, 180.0),
        (6, 1000, 5.0, 90.0, 540.0),
        (4, 1, 1.0, 4.0, 24.0),  # log10 floor of 1
    ],
)
def test_suspicion_timeouts_table(mult: int, n: int, interval: float, lo: float, hi: float) -> None:
    got = suspicion_timeouts(suspicion_mult=mult, max_timeout_mult=6, n=n, probe_interval=interval)
    assert got == pytest.approx((lo, hi))


def test_Suspicion_confirmations_shrink_the_deadline_once_per_distinct_accuser() -> None:
    s = Suspicion(incarnation=3, accuser="a", start=100.0, k=3, lo=2.0, hi=30.0)
    assert s.deadline == pytest.approx(130.0)
    assert not s.confirm("a")  # the original accuser does not count
    assert s.confirm("b")
    assert s.deadline == pytest.approx(116.0)
    assert not s.confirm("b")  # nor does the same accuser twice
    assert s.confirm("c")
    assert s.confirm("d")
    assert s.deadline == pytest.approx(102.0)
    assert not s.confirm("e")  # k reached
    assert s.confirmations == 3


def test_Suspicion_without_expected_confirmations_uses_minimum() -> None:
    s = Suspicion(incarnation=0, accuser="a", start=0.0, k=0, lo=4.0, hi=24.0)
    assert s.deadline == 4.0
    assert not s.confirm("b")
