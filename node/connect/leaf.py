"""Leaf certificates of the services hosted on this node, kept fresh.

Rule: a leaf's private key is generated here, on the node that hosts the service, and
never leaves it; only a CSR goes to the injected ``sign(csr_pem, service)`` (the agent
wires it to the leaf-signing RPC of a server of this datacenter). Each leaf is renewed at
a random point between 60 % and 90 % of its lifetime (Consul's
``calculateSoftExpiry``; the randomness spreads renewals of many nodes) and as soon as the
active root changes. A failed signing is retried with capped exponential backoff; the
old leaf is served meanwhile. Every returned certificate is checked (our key, our SPIFFE
id, a chain to a trusted root) before it replaces the current one.

Watchers (the blocking ``GET /v1/agent/connect/ca/leaf/:service``, the sidecars) call
``wait_for_leaf(service, min_index=...)``. Time comes from the injected clock and sleep,
so tests run it on ``node.testing.FakeClock``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Final

from cryptography.exceptions import InvalidSignature

from node.clock import Clock
from node.connect.ca import (
    TrustBundle,
    generate_private_key,
    key_id,
    load_certificates,
    make_leaf_csr,
    private_key_to_pem,
    serial_hex,
    spiffe_id_from_cert,
)
from node.connect.castate import CARoots
from node.connect.spiffe import SpiffeID
from node.errors import NodeError, NotFound, RPCError, TrustError

__all__ = ["Leaf", "LeafManager", "SignFn", "renewal_time"]

log = logging.getLogger(__name__)

SignFn = Callable[[str, str], Awaitable[str]]
"""``sign(csr_pem, service) -> cert_pem`` (the leaf, followed by any intermediate)."""

#: Renew at a uniformly random point of this span of the lifetime.
RENEW_WINDOW: Final = (0.6, 0.9)
RETRY_MIN_S: Final = 1.0
RETRY_MAX_S: Final = 60.0
#: A signer that has not answered by then is given up on (and retried with backoff), so one
#: hung RPC cannot hold every other renewal back.
SIGN_TIMEOUT_S: Final = 30.0
#: Longest single sleep, so a wall-clock jump is noticed within this many seconds.
MAX_SLEEP_S: Final = 300.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Leaf:
    """A service's current certificate and key (the agent leaf endpoint's content)."""

    service: str
    service_uri: str
    cert_pem: str
    private_key_pem: str = field(repr=False)
    serial_number: str
    valid_after: datetime
    valid_before: datetime
    root_id: str
    create_index: int
    modify_index: int


def renewal_time(valid_after: datetime, valid_before: datetime, rng: random.Random) -> datetime:
    """A random instant between 60 % and 90 % of the certificate's lifetime."""
    return valid_after + (valid_before - valid_after) * rng.uniform(*RENEW_WINDOW)


class _Slot:
    """Mutable per-service bookkeeping (only the manager touches it)."""

    __slots__ = ("leaf", "due_at", "failures")

    def __init__(self, due_at: datetime) -> None:
        self.leaf: Leaf | None = None
        self.due_at = due_at
        self.failures = 0


class LeafManager:
    """Keeps one leaf per local service; see the module rule."""

    __slots__ = (
        "_datacenter", "_sign", "_clock", "_rng", "_sleep", "_slots", "_roots", "_bundle",
        "_index", "_wake", "_changed", "_retry_min", "_retry_max", "_idle", "_sign_timeout",
        "_on_change",
    )  # fmt: skip

    def __init__(
        self,
        *,
        datacenter: str,
        sign: SignFn,
        clock: Clock,
        rng: random.Random,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        retry_min: float = RETRY_MIN_S,
        retry_max: float = RETRY_MAX_S,
        sign_timeout: float = SIGN_TIMEOUT_S,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        """``on_change()`` is called (synchronously) after every leaf issued or dropped."""
        self._datacenter = datacenter
        self._sign = sign
        self._clock = clock
        self._rng = rng
        self._sleep = sleep
        self._slots: dict[str, _Slot] = {}
        self._roots: CARoots | None = None
        self._bundle: TrustBundle | None = None
        self._index = 0
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._retry_min = retry_min
        self._retry_max = retry_max
        self._idle = False
        self._sign_timeout = sign_timeout
        self._on_change = on_change

    # --- inputs (sync: they never block) ----------------------------------------------

    def set_roots(self, roots: CARoots) -> None:
        """New trust bundle; leaves not issued under the active root are renewed now."""
        previous = self._roots
        self._roots = roots
        self._bundle = TrustBundle(roots.trusted_pems)
        if previous is not None and previous.active_root_id == roots.active_root_id:
            return
        now = self._clock.utcnow()
        for slot in self._slots.values():
            if slot.leaf is None or slot.leaf.root_id != roots.active_root_id:
                slot.due_at, slot.failures = now, 0
        self._kick()

    def add_service(self, service: str) -> None:
        """Start keeping a leaf for ``service`` (idempotent)."""
        if service not in self._slots:
            self._slots[service] = _Slot(self._clock.utcnow())
            self._kick()

    def remove_service(self, service: str) -> None:
        """Stop keeping its leaf; its watchers get ``NotFound``."""
        if self._slots.pop(service, None) is not None:
            self._notify()

    # --- reads ------------------------------------------------------------------------

    @property
    def index(self) -> int:
        """Modify index of the latest leaf change on this node."""
        return self._index

    def get(self, service: str) -> Leaf | None:
        """The current leaf of ``service`` (``None`` until the first is signed)."""
        slot = self._slots.get(service)
        return None if slot is None else slot.leaf

    @property
    def idle(self) -> bool:
        """True while ``run`` sleeps with its timer registered (nothing due, no signing)."""
        return self._idle

    def next_renewal(self, service: str) -> datetime | None:
        """When the leaf of ``service`` is next due (for diagnostics and tests)."""
        slot = self._slots.get(service)
        return None if slot is None else slot.due_at

    async def wait_for_leaf(
        self, service: str, *, min_index: int = 0, timeout: float
    ) -> Leaf | None:
        """Blocking read: a leaf with ``modify_index > min_index``, or the current one after
        ``timeout`` seconds (``None`` if none has been issued yet). ``NotFound`` if the service
        is not (or no longer) managed here."""
        deadline = self._clock.monotonic() + timeout
        while True:
            changed = self._changed
            if service not in self._slots:
                raise NotFound(f"no leaf certificate is managed for service {service!r}")
            leaf = self._slots[service].leaf
            remaining = deadline - self._clock.monotonic()
            if (leaf is not None and leaf.modify_index > min_index) or remaining <= 0:
                return leaf
            await self._first_of(changed.wait(), remaining)

    # --- the driver -------------------------------------------------------------------

    async def run(self) -> None:
        """Renew leaves when due, until cancelled."""
        while True:
            self._wake.clear()
            now = self._clock.utcnow()
            due = [s for s, slot in self._slots.items() if slot.due_at <= now]
            if due and self._roots is not None:
                async with asyncio.TaskGroup() as tg:
                    for service in due:
                        tg.create_task(self._renew(service, self._roots))
                continue
            await self._first_of(self._wake.wait(), self._next_delay(now), mark_idle=True)

    def _next_delay(self, now: datetime) -> float:
        if self._roots is None or not self._slots:
            return MAX_SLEEP_S
        soonest = min(slot.due_at for slot in self._slots.values())
        return min(MAX_SLEEP_S, max(0.0, (soonest - now).total_seconds()))

    async def _first_of(
        self, event_wait: Awaitable[Any], seconds: float, *, mark_idle: bool = False
    ) -> None:
        """Wait for the event or ``seconds`` of clock time, whichever comes first."""
        waiter = asyncio.ensure_future(event_wait)
        sleeper = asyncio.ensure_future(self._timer(seconds, clears_idle=mark_idle))
        try:
            if mark_idle:
                await asyncio.sleep(0)  # both tasks have started: the timer is registered
                self._idle = not (waiter.done() or sleeper.done())
            await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if mark_idle:
                self._idle = False
            for task in (waiter, sleeper):
                task.cancel()
            await asyncio.gather(waiter, sleeper, return_exceptions=True)

    async def _timer(self, seconds: float, *, clears_idle: bool) -> None:
        await self._sleep(seconds)
        if clears_idle:  # in the same step the clock wakes run(): never a stale ``idle``
            self._idle = False

    async def _signed(self, csr_pem: str, service: str) -> str:
        """The injected signer, bounded by ``sign_timeout`` of clock time."""
        call = asyncio.ensure_future(self._sign(csr_pem, service))
        timer = asyncio.ensure_future(self._sleep(self._sign_timeout))
        try:
            await asyncio.wait({call, timer}, return_when=asyncio.FIRST_COMPLETED)
            if not call.done():
                raise RPCError(
                    f"signing the leaf of {service!r} timed out after {self._sign_timeout}s"
                )
            return call.result()
        finally:
            for task in (call, timer):
                task.cancel()
            await asyncio.gather(call, timer, return_exceptions=True)

    def _kick(self) -> None:
        self._idle = False
        self._wake.set()

    async def _renew(self, service: str, roots: CARoots) -> None:
        try:
            identity = SpiffeID(
                trust_domain=roots.trust_domain, datacenter=self._datacenter, service=service
            )
            key = generate_private_key()
            _, csr_pem = make_leaf_csr(identity, key)
            cert_pem = await self._signed(csr_pem, service)
            leaf = self._accept(service, identity, key, cert_pem)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # task boundary: any signer failure is retried, never fatal
            self._failed(service, exc)
            return
        self._install(service, leaf)

    def _accept(self, service: str, identity: SpiffeID, key: Any, cert_pem: str) -> Leaf:
        """Check what the signer returned before it replaces anything."""
        certs = load_certificates(cert_pem, what="signed leaf")
        leaf_cert = certs[0]
        if key_id(leaf_cert.public_key()) != key_id(key.public_key()):
            raise TrustError("signed leaf does not carry the key we generated")
        if spiffe_id_from_cert(leaf_cert) != identity:
            raise TrustError(f"signed leaf names {spiffe_id_from_cert(leaf_cert)}, not {identity}")
        root_id = self._verified_root(cert_pem)
        return Leaf(
            service=service,
            service_uri=identity.uri,
            cert_pem=cert_pem,
            private_key_pem=private_key_to_pem(key),
            serial_number=serial_hex(leaf_cert.serial_number),
            valid_after=leaf_cert.not_valid_before_utc,
            valid_before=leaf_cert.not_valid_after_utc,
            root_id=root_id,
            create_index=0,  # set by _install, which runs one at a time
            modify_index=0,
        )

    def _verified_root(self, cert_pem: str) -> str:
        """ID of the trusted root the chain ends in; ``TrustError`` if none."""
        assert self._roots is not None and self._bundle is not None
        now = self._clock.utcnow()
        self._bundle.verify(cert_pem, now=now)
        top = load_certificates(cert_pem)[-1]
        for root in self._roots.roots:
            root_cert = load_certificates(root.root_cert)[0]
            if top.issuer == root_cert.subject:
                try:
                    top.verify_directly_issued_by(root_cert)
                except (ValueError, TypeError, InvalidSignature):  # same name, other key
                    continue
                return root.id
        raise TrustError("signed leaf does not chain to a trusted root")

    def _install(self, service: str, leaf: Leaf) -> None:
        slot = self._slots.get(service)
        if slot is None:  # removed while the signature was in flight
            return
        assert self._roots is not None
        now = self._clock.utcnow()
        self._index += 1
        created = slot.leaf.create_index if slot.leaf is not None else self._index
        leaf = replace(leaf, create_index=created, modify_index=self._index)
        slot.leaf, slot.failures = leaf, 0
        slot.due_at = renewal_time(leaf.valid_after, leaf.valid_before, self._rng)
        if leaf.root_id != self._roots.active_root_id:
            # The signer still uses a root we no longer consider active: ask again soon.
            slot.due_at = min(slot.due_at, now + timedelta(seconds=self._backoff(1)))
        log.info(
            "leaf certificate issued",
            extra={
                "service": service,
                "serial": leaf.serial_number,
                "renew_at": slot.due_at.isoformat(),
            },
        )
        self._notify()

    def _failed(self, service: str, exc: BaseException) -> None:
        slot = self._slots.get(service)
        if slot is None:
            return
        slot.failures += 1
        delay = self._backoff(slot.failures)
        slot.due_at = self._clock.utcnow() + timedelta(seconds=delay)
        level = logging.WARNING if isinstance(exc, NodeError) else logging.ERROR
        log.log(
            level,
            "leaf signing failed; will retry",
            extra={"service": service, "error": repr(exc), "retry_in_s": round(delay, 3)},
            exc_info=not isinstance(exc, NodeError),
        )

    def _backoff(self, failures: int) -> float:
        base = min(self._retry_max, self._retry_min * 2 ** (failures - 1))
        return float(base * self._rng.uniform(0.5, 1.0))

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
        if self._on_change is not None:
            self._on_change()
