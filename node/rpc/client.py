"""Node-to-node RPC client.

Rule: every call has a deadline the caller chooses (connect + request + reply), so a
dead or partitioned peer costs at most that long. A call that got no answer raises
``RPCUnreachable``; an answer that is an error raises the remote error's own class.
One connection per call: calls are rare (forwarding, signing, replication) and a
blocking query holds its connection for minutes anyway, so pooling would buy little.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Iterable
from typing import Any

from node.errors import DatacenterUnavailable, RemoteProtocolError
from node.gossip.state import Member
from node.gossip.transport import Address
from node.rpc.codec import (
    MAX_RPC_BYTES,
    Request,
    RPCUnreachable,
    decode_reply,
    encode_request,
    open_sealed,
    seal,
)
from node.rpc.routing import TAG_DC, servers
from node.rpc.server import KeyringProvider
from node.wire import FRAME_HEADER, frame, parse_frame_header

__all__ = ["RPCClient", "call_datacenter"]


class RPCClient:
    """Calls methods on other nodes' ``RPCServer``."""

    def __init__(
        self, keyring_provider: KeyringProvider = lambda: None, *, verify_outgoing: bool = True
    ) -> None:
        self._keyring = keyring_provider
        self._verify_outgoing = verify_outgoing
        self._ids = itertools.count(1)

    async def call(self, addr: Address, method: str, args: Any = None, *, timeout: float) -> Any:
        """Call ``method(args)`` on ``addr`` and return its result.

        Raises the remote error's class (``NotFound``, ``InvalidRequest``, ...),
        ``RPCUnreachable`` when no answer came within ``timeout`` seconds, and
        ``RemoteProtocolError`` when the answer could not be read.
        """
        request = Request(id=next(self._ids), method=method, args=args)
        keyring = self._keyring() if self._verify_outgoing else None
        payload = frame(seal(encode_request(request), keyring))
        where = f"{addr[0]}:{addr[1]}"
        try:
            async with asyncio.timeout(timeout):
                data = await self._exchange(addr, payload)
        except TimeoutError:
            raise RPCUnreachable(f"rpc {method} to {where} timed out after {timeout:g}s") from None
        except (OSError, asyncio.IncompleteReadError) as exc:
            raise RPCUnreachable(f"rpc {method} to {where} failed: {_describe(exc)}") from exc
        body, _ = open_sealed(data, keyring, accept_plaintext=False)
        reply = decode_reply(body)
        if reply.id != request.id:
            raise RemoteProtocolError(
                f"rpc {method} to {where}: reply id {reply.id} != request id {request.id}"
            )
        if reply.error is not None:
            raise reply.error
        return reply.result

    async def _exchange(self, addr: Address, payload: bytes) -> bytes:
        reader, writer = await asyncio.open_connection(addr[0], addr[1])
        try:
            writer.write(payload)
            await writer.drain()
            length = parse_frame_header(
                await reader.readexactly(FRAME_HEADER), max_bytes=MAX_RPC_BYTES
            )
            return await reader.readexactly(length)
        finally:
            writer.close()


async def call_datacenter(
    client: RPCClient,
    members: Iterable[Member],
    dc: str,
    method: str,
    args: Any = None,
    *,
    timeout: float,
    rng: random.Random,
    max_servers: int = 3,
) -> Any:
    """Call ``method`` on a live server of ``dc``, trying up to ``max_servers`` of them.

    Only servers that did not answer are skipped (an error *answer* is raised as is).
    Raises ``DatacenterUnavailable`` when ``dc`` is unknown, has no live server, or none
    answered within ``timeout`` seconds in total — never hangs past it.
    """
    members = list(members)
    if not any(m.tags.get(TAG_DC) == dc for m in members):
        raise DatacenterUnavailable(f"no path to datacenter {dc!r}: no member of it is known")
    candidates = servers(members, dc)
    rng.shuffle(candidates)
    if not candidates:
        raise DatacenterUnavailable(f"no live server in datacenter {dc!r}")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    failures: list[str] = []
    for addr in candidates[:max_servers]:
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        try:
            return await client.call(addr, method, args, timeout=remaining)
        except RPCUnreachable as exc:
            failures.append(str(exc))
    raise DatacenterUnavailable(
        f"no server of datacenter {dc!r} answered within {timeout:g}s: " + "; ".join(failures)
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.IncompleteReadError):
        return "connection closed before a reply (wrong key or server error?)"
    return f"{type(exc).__name__}: {exc}"
