"""The shared test helpers: the poll loop's contract and the test CA's certificates."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from node.connect.ca import TrustBundle
from node.errors import TrustError
from node.testing import FakeClock
from tests.helpers.ca import TD, MeshTestCA
from tests.helpers.poll import wait_for, wait_for_blocking


async def test_wait_for_returns_the_first_truthy_value() -> None:
    values = iter([0, None, "", "done"])
    assert await wait_for(lambda: next(values), "a value", interval=0) == "done"


async def test_wait_for_awaits_async_conditions() -> None:
    async def ready() -> int:
        return 7

    assert await wait_for(ready, "seven") == 7


async def test_wait_for_names_what_never_happened_and_the_last_value() -> None:
    with pytest.raises(AssertionError, match=r"waiting for: the moon \(last: 0\)"):
        await wait_for(lambda: 0, "the moon", 0.05)


async def test_wait_for_retries_only_the_exceptions_it_ignores() -> None:
    calls = []

    def flaky() -> bool:
        calls.append(1)
        if len(calls) < 3:
            raise KeyError("not yet")
        return True

    assert await wait_for(flaky, "third call", interval=0, ignoring=(KeyError,))
    with pytest.raises(ZeroDivisionError):
        await wait_for(lambda: 1 / 0, "never", ignoring=(KeyError,))


async def test_wait_for_on_a_fake_clock_moves_fake_time_only() -> None:
    clock = FakeClock(autojump_threshold=0)
    start = clock.monotonic()
    await wait_for(
        lambda: clock.monotonic() - start >= 30, "30 fake seconds", 60, interval=1, clock=clock
    )
    with pytest.raises(AssertionError, match="fake deadline"):
        await wait_for(lambda: False, "fake deadline", 5, interval=1, clock=clock)


def test_wait_for_blocking_describes_lazily() -> None:
    lines: list[str] = []
    with pytest.raises(AssertionError, match="lines: none"):
        wait_for_blocking(bool, lambda: "lines: " + (", ".join(lines) or "none"), 0.02)


def test_MeshTestCA_leaves_verify_against_its_root_only() -> None:
    ca, other = MeshTestCA(TD), MeshTestCA(TD)
    cert, _key = ca.leaf("web", "dc2")
    now = datetime.now(UTC)
    assert TrustBundle([ca.root_pem]).verify(cert, now=now).service == "web"
    with pytest.raises(TrustError):
        TrustBundle([other.root_pem]).verify(cert, now=now)
    expired, _ = ca.leaf("web", expired=True)
    with pytest.raises(TrustError):
        TrustBundle([ca.root_pem]).verify(expired, now=now)
