"""Coalescing concurrent leaf-signing requests into one RPC.

Rule: every ``sign(csr, service)`` made while a batch is on the wire waits for the next
one, which carries all of them (at most ``max_batch``) in a single ``CA.SignLeaves``
call; one request alone goes out at once. The RPC's fixed cost (connect, frames, a task
on each side) is then paid per batch, not per certificate, which matters when a node
re-issues the leaves of all its services at once (a root rotation). Each request gets
its own answer or error; a request whose caller gave up (cancelled) is skipped or its
answer dropped. A failure of the whole call fails every request of that batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

__all__ = ["SignBatcher", "MAX_BATCH"]

log = logging.getLogger(__name__)

#: Most CSRs one ``CA.SignLeaves`` call carries (a CSR is ~400 bytes, a chain ~2 KiB).
MAX_BATCH: Final = 64

SendFn = Callable[[Sequence[tuple[str, str]]], Awaitable[Sequence[str | BaseException]]]
"""``send([(csr_pem, service), ...]) -> [cert_pem or the error of that item, ...]``."""


class SignBatcher:
    """See the module rule."""

    __slots__ = ("_send", "_max", "_pending", "_task")

    def __init__(self, send: SendFn, *, max_batch: int = MAX_BATCH) -> None:
        self._send = send
        self._max = max_batch
        self._pending: list[tuple[str, str, asyncio.Future[str]]] = []
        self._task: asyncio.Task[None] | None = None

    async def sign(self, csr_pem: str, service: str) -> str:
        """The certificate chain for one CSR (raises that request's error)."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending.append((csr_pem, service, future))
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self._max], self._pending[self._max :]
            live = [item for item in batch if not item[2].done()]
            if live:
                await self._send_batch(live)

    async def _send_batch(self, live: list[tuple[str, str, asyncio.Future[str]]]) -> None:
        try:
            results = await self._send([(csr, service) for csr, service, _ in live])
            if len(results) != len(live):
                raise ValueError(f"{len(results)} answers for {len(live)} requests")
        except asyncio.CancelledError:
            for *_, future in live:
                future.cancel()
            raise
        except Exception as exc:  # task boundary: the whole batch fails, the caller retries
            log.warning("leaf signing batch failed", extra={"csrs": len(live), "error": repr(exc)})
            for *_, future in live:
                if not future.done():
                    future.set_exception(exc)
            return
        for (*_, future), result in zip(live, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
