"""Global state over LAN gossip: the gossip ``Delegate`` of channel 2 (``GLOBAL_STATE``).

Rule: a global-state record travels whole, with its stamp, so a receiver merges it with
the same last-writer-wins rule whatever the order of arrival (``GlobalState.merge``).
Two broadcast kinds: ``RECORD`` (the record, when it fits one packet) and ``DIGEST``
(kind, name, stamp) for a bigger one (the CA roots carry PEMs); a digest newer than what
we hold is handed to ``on_want`` so the owner fetches the record by RPC. Push-pull carries
every record, tombstones included, and repairs anything a broadcast lost. A record that
advanced our state is re-broadcast once (keyed by (kind, name), so newer news replaces
older). Every message names the sender's ``primary_datacenter``; one that differs from
ours is never merged, it goes to ``on_mismatch`` (Consul's silent trust-domain split,
issue #6847, must be loud here). Untrusted bytes are dropped and counted, never raised.
Records are decoded with the state's ``Schema``; this module knows no kind.

Pure: no I/O, no clock; the sink owns time and the store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from enum import IntEnum
from types import MappingProxyType
from typing import Any, Final, Protocol

from node.errors import InvalidRequest, RemoteProtocolError
from node.gossip.delegate import MAX_USER_MSG_BYTES, UserBroadcastQueue
from node.state.globalstate import MAX_WIRE_RECORDS, Record, Schema
from node.state.hlc import Stamp
from node.wire import pack, unpack

__all__ = ["StateMessage", "StateSink", "StateSync", "GLOBAL_STATE_CHANNEL"]

#: The DelegateMux channel of the global state (``node.gossip.mux``; append-only numbers).
GLOBAL_STATE_CHANNEL: Final = 2


class StateMessage(IntEnum):
    """Type byte of a global-state broadcast. Append-only: never renumber."""

    RECORD = 1
    DIGEST = 2


class StateSink(Protocol):
    """The copy the sync merges into and offers (``node.state.replica.Replica``)."""

    def records(self) -> Iterable[Record]:
        """Every record held, tombstones included (for push-pull)."""
        ...

    def stamp_of(self, kind: str, name: str) -> Stamp | None:
        """The stamp held for (kind, name), tombstone or not; ``None`` if unknown."""
        ...

    def merge_records(self, records: Iterable[Record]) -> tuple[Record, ...]:
        """Merge received records; return those that changed our state."""
        ...


WantFn = Callable[[str, str, Stamp], None]
"""``on_want(kind, name, stamp)``: a digest announced a newer record than ours: fetch it."""
MismatchFn = Callable[[str], None]
"""``on_mismatch(peer_primary)``: a peer names another primary datacenter than ours."""


def encode_record(record: Record, primary: str, schema: Schema) -> bytes:
    """The broadcast announcing ``record``: the record itself, or its digest if too big."""
    whole = bytes([StateMessage.RECORD]) + pack({"p": primary, "r": record.to_wire(schema)})
    if len(whole) <= MAX_USER_MSG_BYTES:
        return whole
    digest = {"p": primary, "k": record.kind, "n": record.name, "s": record.stamp.to_wire()}
    return bytes([StateMessage.DIGEST]) + pack(digest)


class StateSync:
    """Implements ``node.gossip.delegate.Delegate`` for the global state."""

    __slots__ = ("_sink", "_schema", "_primary", "_queue", "_want", "_mismatch", "_stats")

    def __init__(
        self,
        sink: StateSink,
        *,
        schema: Schema,
        primary: str,
        queue: UserBroadcastQueue,
        on_want: WantFn,
        on_mismatch: MismatchFn,
    ) -> None:
        self._sink = sink
        self._schema = schema
        self._primary = primary
        self._queue = queue
        self._want = on_want
        self._mismatch = on_mismatch
        self._stats: dict[str, int] = {}

    def announce(self, records: Iterable[Record]) -> None:
        """Broadcast records that changed here (local writes, replication, fetches)."""
        for record in records:
            self._queue.queue(encode_record(record, self._primary, self._schema), key=record.key)

    def stats(self) -> Mapping[str, int]:
        """Counters: applied, stale, dropped, wanted, mismatch."""
        return MappingProxyType(dict(self._stats))

    # ------------------------------------------------------------------ Delegate

    def notify_msg(self, payload: bytes) -> None:
        """A broadcast from a peer (untrusted)."""
        try:
            kind, body = self._open(payload)
            if kind == StateMessage.RECORD:
                self._take([Record.from_wire(body.get("r"), self._schema)], rebroadcast=True)
            elif kind == StateMessage.DIGEST:
                self._take_digest(body)
            else:
                raise RemoteProtocolError(f"unknown global state message type {kind}")
        except (RemoteProtocolError, InvalidRequest):
            self._count("dropped")
        except _Mismatch:
            pass

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        """Payloads to piggyback on gossip packets."""
        return self._queue.get_broadcasts(overhead, limit)

    def local_state(self, join: bool) -> bytes:
        """Every record we hold, tombstones included."""
        del join
        records = [r.to_wire(self._schema) for r in self._sink.records()][:MAX_WIRE_RECORDS]
        return pack({"p": self._primary, "r": records})

    def merge_remote_state(self, payload: bytes, join: bool) -> None:
        """A peer's ``local_state`` (untrusted): merge every record it holds."""
        del join
        try:
            body = unpack(payload)
            if not isinstance(body, dict) or not isinstance(body.get("r"), list):
                raise RemoteProtocolError("global state push-pull: bad shape")
            self._check_primary(body)
            if len(body["r"]) > MAX_WIRE_RECORDS:
                raise RemoteProtocolError("global state push-pull: too many records")
            records = [Record.from_wire(raw, self._schema) for raw in body["r"]]
        except (RemoteProtocolError, InvalidRequest):
            self._count("dropped")
            return
        except _Mismatch:
            return
        self._take(records, rebroadcast=False)

    # ------------------------------------------------------------------ internals

    def _open(self, payload: bytes) -> tuple[int, dict[str, Any]]:
        if not payload:
            raise RemoteProtocolError("empty global state message")
        body = unpack(payload[1:])
        if not isinstance(body, dict):
            raise RemoteProtocolError("global state message: expected a map")
        self._check_primary(body)
        return payload[0], body

    def _check_primary(self, body: Mapping[str, Any]) -> None:
        peer = body.get("p")
        if not isinstance(peer, str):
            raise RemoteProtocolError("global state message names no primary datacenter")
        if peer != self._primary:
            self._count("mismatch")
            self._mismatch(peer)
            raise _Mismatch

    def _take(self, records: list[Record], *, rebroadcast: bool) -> None:
        changed = self._sink.merge_records(records)
        self._count("applied", len(changed))
        self._count("stale", len(records) - len(changed))
        if rebroadcast:
            self.announce(changed)

    def _take_digest(self, body: Mapping[str, Any]) -> None:
        kind, name = body.get("k"), body.get("n")
        try:
            stamp = Stamp.from_wire(body.get("s"))
        except ValueError as exc:
            raise RemoteProtocolError(f"global state digest: {exc}") from None
        if not isinstance(kind, str) or not isinstance(name, str):
            raise RemoteProtocolError("global state digest: kind and name must be strings")
        held = self._sink.stamp_of(kind, name)
        if held is not None and held >= stamp:
            self._count("stale")
            return
        self._count("wanted")
        self._want(kind, name, stamp)

    def _count(self, key: str, n: int = 1) -> None:
        if n:
            self._stats[key] = self._stats.get(key, 0) + n


class _Mismatch(Exception):
    """Internal: the message came from a node with another primary datacenter."""
