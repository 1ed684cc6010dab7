"""SignBatcher: concurrent signing requests share one RPC; errors stay per request."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from node.connect.signbatch import SignBatcher
from node.errors import RPCError, TrustError
from tests.connect.service_fakes import TRANSIENT, FakeNet
from tests.helpers.poll import wait_for


class Recorder:
    def __init__(self, fail_on: str = "", whole: BaseException | None = None) -> None:
        self.batches: list[list[str]] = []
        self.fail_on, self.whole = fail_on, whole
        self.gate = asyncio.Event()
        self.gate.set()

    async def send(self, items: Sequence[tuple[str, str]]) -> list[str | BaseException]:
        self.batches.append([csr for csr, _ in items])
        await self.gate.wait()
        if self.whole is not None:
            raise self.whole
        return [
            TrustError(f"no {svc}") if svc == self.fail_on else f"cert:{csr}" for csr, svc in items
        ]


async def test_requests_made_together_share_one_call_and_keep_their_own_errors() -> None:
    rec = Recorder(fail_on="bad")
    batcher = SignBatcher(rec.send)
    results = await asyncio.gather(
        batcher.sign("a", "web"), batcher.sign("b", "bad"), batcher.sign("c", "db"),
        return_exceptions=True,
    )  # fmt: skip
    assert rec.batches == [["a", "b", "c"]]
    assert results[0] == "cert:a" and results[2] == "cert:c"
    assert isinstance(results[1], TrustError) and "no bad" in str(results[1])


async def test_requests_arriving_during_a_call_go_in_the_next_one_and_limit_applies() -> None:
    rec = Recorder()
    rec.gate.clear()
    batcher = SignBatcher(rec.send, max_batch=2)
    first = asyncio.ensure_future(batcher.sign("a", "s"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    later = [asyncio.ensure_future(batcher.sign(c, "s")) for c in "bcd"]
    await asyncio.sleep(0)
    rec.gate.set()
    assert await first == "cert:a"
    assert [await f for f in later] == ["cert:b", "cert:c", "cert:d"]
    assert rec.batches == [["a"], ["b", "c"], ["d"]]


async def test_a_failed_call_fails_its_batch_and_a_cancelled_request_is_skipped() -> None:
    rec = Recorder(whole=RPCError("server gone"))
    batcher = SignBatcher(rec.send)
    with pytest.raises(RPCError, match="server gone"):
        await batcher.sign("a", "s")
    rec.whole = None
    rec.gate.clear()
    gone = asyncio.ensure_future(batcher.sign("x", "s"))
    kept = asyncio.ensure_future(batcher.sign("y", "s"))
    await asyncio.sleep(0)
    gone.cancel()
    rec.gate.set()
    assert await kept == "cert:y"
    assert gone.cancelled()


async def test_a_node_with_many_services_gets_its_leaves_in_few_calls() -> None:
    net = FakeNet()
    try:
        net.add("s1", server=True)
        client = net.add("c1")
        for i in range(6):
            net.agents["c1"].register(
                {"Name": f"svc{i}", "Port": 8000 + i, "Connect": {"SidecarService": {}}}
            )
        net.start()
        await wait_for(
            lambda: all(client.leaf(f"svc{i}") for i in range(6)), "6 leaves", ignoring=TRANSIENT
        )
        calls = [m for _, _, m in net.rpc_log if m == "CA.SignLeaves"]
        assert 1 <= len(calls) < 6
    finally:
        await net.stop()
