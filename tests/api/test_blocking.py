"""Blocking-query option parsing and the wait loop (no HTTP)."""

from __future__ import annotations

import asyncio
import random

import pytest

from node.api.blocking import (
    DEFAULT_WAIT,
    MAX_WAIT,
    QueryOptions,
    consul_headers,
    jittered,
    parse_duration,
    parse_query_options,
    run_blocking,
)
from node.errors import InvalidRequest


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10s", 10.0),
        ("1m30s", 90.0),
        ("250ms", 0.25),
        ("0", 0.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        ("100us", 1e-4),
    ],
)
def test_parse_duration_go_forms(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["10", "s", "10x", "1m30", "abc", ""])
def test_parse_duration_rejects_garbage(text: str) -> None:
    with pytest.raises(InvalidRequest, match="Invalid wait time"):
        parse_duration(text)


def test_parse_query_options_defaults_and_clamp() -> None:
    assert parse_query_options({}) == QueryOptions(index=0, wait=DEFAULT_WAIT, dc=None)
    opts = parse_query_options({"index": "42", "wait": "20m", "dc": "dc2"})
    assert opts == QueryOptions(index=42, wait=MAX_WAIT, dc="dc2")
    assert opts.blocking
    assert parse_query_options({"wait": "0s"}).wait == DEFAULT_WAIT


@pytest.mark.parametrize("query", [{"index": "-1"}, {"index": "x"}, {"wait": "-5s"}])
def test_parse_query_options_rejects_bad_values(query: dict[str, str]) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_query_options(query)
    assert info.value.field in {"index", "wait"}


def test_jitter_is_bounded_by_a_sixteenth() -> None:
    rng = random.Random(7)
    values = [jittered(160.0, rng) for _ in range(500)]
    assert all(160.0 <= v <= 170.0 for v in values)
    assert max(values) > 168.0  # the stagger actually spreads


def test_consul_headers_carry_index_and_leader() -> None:
    headers = consul_headers(9)
    assert headers["X-Consul-Index"] == "9"
    assert headers["X-Consul-KnownLeader"] == "true"
    assert headers["X-Consul-LastContact"] == "0"
    assert consul_headers(9, known_leader=False)["X-Consul-KnownLeader"] == "false"


class _Notifier:
    """A minimal notifier: an index and a condition to wait on."""

    def __init__(self) -> None:
        self.index = 5
        self._cond = asyncio.Condition()

    async def bump(self) -> None:
        async with self._cond:
            self.index += 1
            self._cond.notify_all()

    async def wait(self, index_above: int, timeout: float) -> int:
        async with self._cond:
            try:
                await asyncio.wait_for(
                    self._cond.wait_for(lambda: self.index > index_above), timeout
                )
            except TimeoutError:
                pass
        return self.index


async def test_run_blocking_returns_at_once_without_index() -> None:
    notifier = _Notifier()
    loop = asyncio.get_running_loop()
    value, index = await run_blocking(
        lambda: ("v", 0), QueryOptions(), notifier, rng=random.Random(1), monotonic=loop.time
    )
    assert (value, index) == ("v", 1)  # index clamped to at least 1


async def test_run_blocking_wakes_on_change_and_ignores_unrelated_changes() -> None:
    notifier = _Notifier()
    state = {"query_index": 5, "calls": 0}

    def query() -> tuple[str, int]:
        state["calls"] += 1
        return f"v{state['query_index']}", state["query_index"]

    loop = asyncio.get_running_loop()
    task = asyncio.create_task(
        run_blocking(
            query,
            QueryOptions(index=5, wait=30.0),
            notifier,
            rng=random.Random(1),
            monotonic=loop.time,
        )
    )
    await asyncio.sleep(0)
    await notifier.bump()  # unrelated change: query index unchanged, keeps waiting
    for _ in range(10):
        await asyncio.sleep(0)
    assert not task.done()
    state["query_index"] = 7
    await notifier.bump()
    value, index = await asyncio.wait_for(task, 5)
    assert (value, index) == ("v7", 7)
    assert state["calls"] == 3


async def test_run_blocking_times_out_with_current_value() -> None:
    notifier = _Notifier()
    loop = asyncio.get_running_loop()
    start = loop.time()
    value, index = await run_blocking(
        lambda: ("same", 5),
        QueryOptions(index=5, wait=0.05),
        notifier,
        rng=random.Random(1),
        monotonic=loop.time,
    )
    elapsed = loop.time() - start
    assert (value, index) == ("same", 5)
    assert 0.05 <= elapsed < 2.0


async def test_run_blocking_answers_at_once_for_an_index_from_the_future() -> None:
    notifier = _Notifier()  # index 5
    loop = asyncio.get_running_loop()
    value, index = await asyncio.wait_for(
        run_blocking(
            lambda: ("v", 3),
            QueryOptions(index=500, wait=30.0),
            notifier,
            rng=random.Random(1),
            monotonic=loop.time,
        ),
        5,
    )
    assert (value, index) == ("v", 3)
