"""LeafManager on fake time: issue, renew in the 60–90 % window, rotate roots, retry, watch."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import pytest

from node.connect import rotate_roots
from node.connect.ca import (
    CAServer,
    TrustBundle,
    generate_root,
    make_intermediate_csr,
    make_leaf_csr,
)
from node.connect.leaf import LeafManager, renewal_time
from node.connect.spiffe import SpiffeID
from node.errors import NotFound, RPCError
from node.testing import FakeClock
from tests.helpers.ca import CLUSTER_ID, TD, is_registered
from tests.helpers.poll import wait_for

TTL = timedelta(hours=72)
LONG = 30 * 24 * 3600.0  # a fake-time timeout no test should reach


class Harness:
    """A primary CA on fake time plus the signer callback a LeafManager calls."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.root = generate_root(trust_domain=TD, now=self.clock.utcnow())
        self.ca = CAServer.primary(
            self.root, datacenter="dc1", trust_domain=TD, is_registered=is_registered
        )
        self.roots = rotate_roots(
            None,
            self.root.info,
            now=self.clock.utcnow(),
            leaf_ttl=TTL,
            cluster_id=CLUSTER_ID,
            trust_domain=TD,
        )
        self.calls: list[float] = []
        self.fail_next = 0

    async def sign(self, csr_pem: str, service: str) -> str:
        self.calls.append(self.clock.monotonic())
        if self.fail_next:
            self.fail_next -= 1
            raise RPCError("no server reachable")
        return self.ca.sign_leaf(csr_pem, "node-a", self.clock.utcnow()).cert_pem

    def manager(self, sign: Callable[[str, str], Awaitable[str]] | None = None) -> LeafManager:
        return LeafManager(
            datacenter="dc1",
            sign=sign or self.sign,
            clock=self.clock,
            rng=random.Random(7),
            sleep=self.clock.sleep,
        )


@contextlib.asynccontextmanager
async def running(mgr: LeafManager) -> AsyncIterator[LeafManager]:
    task = asyncio.ensure_future(mgr.run())
    try:
        async with asyncio.timeout(20):  # real-time safety bound
            yield mgr
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def step_until(
    clock: FakeClock, mgr: LeafManager, cond: Callable[[], bool], what: str, steps: int = 50
) -> None:
    """Whenever the manager sleeps, advance fake time to the next sleeper, until ``cond()``."""
    for _ in range(steps):
        await wait_for(lambda: cond() or mgr.idle, what, interval=0)
        if cond():
            return
        nxt = clock.next_wakeup()
        assert nxt is not None
        clock.advance_to(nxt)
        await asyncio.sleep(0)  # the woken timer runs first (FIFO) and marks the manager busy
    raise AssertionError(f"never happened after {steps} time steps: {what}")


def test_renewal_time_is_between_60_and_90_percent() -> None:
    rng = random.Random(1)
    start = FakeClock().utcnow()
    for _ in range(200):
        at = renewal_time(start, start + TTL, rng)
        assert start + TTL * 0.6 <= at <= start + TTL * 0.9


async def test_issues_leaf_and_renews_inside_window() -> None:
    h = Harness()
    mgr = h.manager()
    mgr.set_roots(h.roots)
    mgr.add_service("web")
    async with running(mgr):
        await wait_for(lambda: mgr.get("web") is not None, "first leaf", interval=0)
        first = mgr.get("web")
        assert first is not None and first.modify_index == first.create_index == 1
        assert first.service_uri == SpiffeID(trust_domain=TD, datacenter="dc1", service="web").uri
        assert first.valid_before - first.valid_after == TTL and first.root_id == h.root.info.id
        assert "EC PRIVATE KEY" in first.private_key_pem and "PRIVATE KEY" not in repr(first)
        due = mgr.next_renewal("web")
        assert (
            due is not None
            and first.valid_after + TTL * 0.6 <= due <= first.valid_after + TTL * 0.9
        )
        # A blocking watcher sees the renewal, which happens at the planned instant, not earlier.
        watcher = asyncio.ensure_future(mgr.wait_for_leaf("web", min_index=1, timeout=LONG))
        h.clock.jump((due - h.clock.utcnow()).total_seconds() - 1)
        await wait_for(lambda: mgr.idle, "manager asleep", interval=0)
        assert mgr.get("web") == first and not watcher.done()
        await step_until(h.clock, mgr, lambda: mgr.index == 2, "renewal")
        second = await watcher
        assert second is not None and second.serial_number != first.serial_number
        assert second.private_key_pem != first.private_key_pem  # fresh key per renewal
        assert (second.create_index, second.modify_index) == (1, 2)
        assert due <= h.clock.utcnow() < first.valid_before


async def test_root_rotation_renews_now_and_both_leaves_verify_until_old_expires() -> None:
    h = Harness()
    mgr = h.manager()
    mgr.set_roots(h.roots)
    mgr.add_service("web")
    async with running(mgr):
        await wait_for(lambda: mgr.get("web") is not None, "first leaf", interval=0)
        old = mgr.get("web")
        assert old is not None
        h.clock.jump(3600)
        rotated_at = h.clock.utcnow()
        new_root = generate_root(trust_domain=TD, now=rotated_at)
        h.roots = rotate_roots(
            h.roots,
            new_root.info,
            now=rotated_at,
            leaf_ttl=TTL,
            cluster_id=CLUSTER_ID,
            trust_domain=TD,
        )
        h.ca = CAServer.primary(
            new_root, datacenter="dc1", trust_domain=TD, is_registered=is_registered
        )
        mgr.set_roots(h.roots)
        await wait_for(
            lambda: mgr.index == 2, "renewal after rotation", interval=0
        )  # time does not move
        new = mgr.get("web")
        assert new is not None and new.root_id == new_root.info.id
        assert h.clock.utcnow() == rotated_at  # right away, not at 60–90 %
    bundle = TrustBundle(h.roots.trusted_pems)
    for leaf in (old, new):
        assert bundle.verify(leaf.cert_pem, now=rotated_at + timedelta(hours=2)).service == "web"
    with pytest.raises(Exception, match="does not verify"):
        bundle.verify(old.cert_pem, now=old.valid_before + timedelta(seconds=1))
    assert bundle.verify(new.cert_pem, now=old.valid_before + timedelta(seconds=1)).service == "web"


async def test_same_active_root_does_not_trigger_renewal() -> None:
    h = Harness()
    mgr = h.manager()
    mgr.set_roots(h.roots)
    mgr.add_service("web")
    async with running(mgr):
        await wait_for(lambda: mgr.get("web") is not None, "first leaf", interval=0)
        mgr.set_roots(h.roots)
        start = h.clock.monotonic()
        watcher = asyncio.ensure_future(mgr.wait_for_leaf("web", min_index=1, timeout=60))
        await wait_for(lambda: h.clock.next_wakeup() == start + 60, "watcher waiting", interval=0)
        h.clock.jump(60)
        leaf = await watcher  # the timeout answers with the unchanged leaf
        assert leaf is not None and leaf.modify_index == 1 and len(h.calls) == 1


async def test_signing_failures_are_retried_with_backoff() -> None:
    h = Harness()
    h.fail_next = 3
    mgr = h.manager()
    mgr.set_roots(h.roots)
    mgr.add_service("web")
    async with running(mgr):
        await step_until(h.clock, mgr, lambda: mgr.get("web") is not None, "leaf after retries")
    leaf = mgr.get("web")
    assert leaf is not None and len(h.calls) == 4
    gaps = [b - a for a, b in zip(h.calls, h.calls[1:], strict=False)]
    assert 0.5 <= gaps[0] <= 1.0 and 1.0 <= gaps[1] <= 2.0 and 2.0 <= gaps[2] <= 4.0


async def test_a_certificate_for_the_wrong_key_or_service_is_refused() -> None:
    h = Harness()
    served: list[str] = []

    async def evil_sign(csr_pem: str, service: str) -> str:
        served.append(service)
        if len(served) == 1:  # someone else's key
            _, other_csr = make_leaf_csr(SpiffeID(trust_domain=TD, datacenter="dc1", service="web"))
            return h.ca.sign_leaf(other_csr, "node-a", h.clock.utcnow()).cert_pem
        if len(served) == 2:  # another service's identity
            _, other_csr = make_leaf_csr(SpiffeID(trust_domain=TD, datacenter="dc1", service="db"))
            return h.ca.sign_leaf(other_csr, "node-a", h.clock.utcnow()).cert_pem
        if len(served) == 3:
            return "garbage"
        return await h.sign(csr_pem, service)

    mgr = h.manager(evil_sign)
    mgr.set_roots(h.roots)
    mgr.add_service("web")
    async with running(mgr):
        await step_until(h.clock, mgr, lambda: mgr.get("web") is not None, "leaf after refusals")
    leaf = mgr.get("web")
    assert leaf is not None and len(served) == 4 and leaf.modify_index == 1


async def test_secondary_leaf_chain_resolves_to_primary_root() -> None:
    h = Harness()
    key, csr = make_intermediate_csr(trust_domain=TD, datacenter="dc2")
    inter = h.ca.sign_intermediate(csr, h.clock.utcnow())
    dc2 = CAServer.secondary(
        key=key,
        intermediate_pem=inter,
        root_pem=h.root.info.root_cert,
        datacenter="dc2",
        trust_domain=TD,
        is_registered=lambda n, s: True,
        now=h.clock.utcnow(),
    )

    async def sign(csr_pem: str, service: str) -> str:
        return dc2.sign_leaf(csr_pem, "node-b", h.clock.utcnow()).cert_pem

    mgr = LeafManager(
        datacenter="dc2", sign=sign, clock=h.clock, rng=random.Random(1), sleep=h.clock.sleep
    )
    mgr.set_roots(h.roots)
    mgr.add_service("api")
    async with running(mgr):
        leaf = await mgr.wait_for_leaf("api", timeout=LONG)
    assert (
        leaf is not None
        and leaf.root_id == h.root.info.id
        and leaf.cert_pem.count("BEGIN CERTIFICATE") == 2
    )


async def test_watchers_unknown_service_timeout_and_removal() -> None:
    h = Harness()
    mgr = h.manager()
    with pytest.raises(NotFound, match="'nope'"):
        await mgr.wait_for_leaf("nope", timeout=1)
    mgr.add_service("web")  # no roots yet: nothing can be signed
    async with running(mgr):
        start = h.clock.monotonic()
        timed = asyncio.ensure_future(mgr.wait_for_leaf("web", timeout=30))
        await wait_for(lambda: h.clock.next_wakeup() == start + 30, "watcher waiting", interval=0)
        h.clock.jump(30)
        assert await timed is None
        waiter = asyncio.ensure_future(mgr.wait_for_leaf("web", timeout=LONG))
        await asyncio.sleep(0)
        mgr.remove_service("web")
        with pytest.raises(NotFound):
            await waiter
    assert h.calls == []


async def test_service_removed_while_signing_is_not_installed() -> None:
    h = Harness()
    gate, started = asyncio.Event(), asyncio.Event()

    async def slow_sign(csr_pem: str, service: str) -> str:
        started.set()
        await gate.wait()
        return await h.sign(csr_pem, service)

    mgr = h.manager(slow_sign)
    mgr.set_roots(h.roots)
    mgr.add_service("web")
    async with running(mgr):
        await wait_for(started.is_set, "signing started", interval=0)
        mgr.remove_service("web")
        gate.set()
        await wait_for(lambda: len(h.calls) == 1, "signer returned", interval=0)
        for _ in range(20):  # let the manager handle the answer
            await asyncio.sleep(0)
        assert mgr.get("web") is None and mgr.index == 0


async def test_a_service_name_that_cannot_be_an_identity_does_not_stop_the_manager() -> None:
    h = Harness()
    mgr = h.manager()
    mgr.set_roots(h.roots)
    mgr.add_service("bad/name")
    mgr.add_service("web")
    async with running(mgr):
        await wait_for(
            lambda: mgr.get("web") is not None, "the good service still gets its leaf", interval=0
        )
    assert mgr.get("bad/name") is None and h.calls == [0.0]


async def test_a_hung_signer_times_out_and_is_retried() -> None:
    h = Harness()
    hung = asyncio.Event()
    attempts: list[float] = []

    async def sometimes_hangs(csr_pem: str, service: str) -> str:
        attempts.append(h.clock.monotonic())
        if len(attempts) == 1:
            await hung.wait()  # never set: only the timeout ends this call
        return await h.sign(csr_pem, service)

    mgr = h.manager(sometimes_hangs)
    mgr.set_roots(h.roots)
    mgr.add_service("web")
    async with running(mgr):
        await wait_for(lambda: len(attempts) == 1, "first attempt", interval=0)
        await wait_for(
            lambda: h.clock.next_wakeup() == 30.0, "signing timer registered", interval=0
        )
        h.clock.advance_to(30.0)
        await step_until(h.clock, mgr, lambda: mgr.get("web") is not None, "leaf after timeout")
    assert len(attempts) == 2 and 30.5 <= attempts[1] <= 31.0
