"""The node's copy of the global state: merge, index, persist, announce, tell listeners.

Rule: every node holds a copy and serves reads from it. Each change applied here (a
write the primary applied, a merge from gossip, replication or an RPC answer) bumps the
node's blocking-query index, which becomes the records' CreateIndex/ModifyIndex in this
node's answers; then the copy is written to ``data_dir`` (if any), the change is
announced on LAN gossip when asked (``statesync``), the waiters wake and the listeners
are called with the changed records. A copy restored from ``data_dir`` is indexed once
at start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Final

from node.clock import Clock
from node.errors import NodeError
from node.gossip.delegate import UserBroadcastQueue
from node.persist import atomic_write, read_or_none
from node.state.globalstate import Delta, GlobalState, Record, Schema
from node.state.hlc import Stamp
from node.state.statesync import MismatchFn, StateSync, WantFn
from node.wire import pack, unpack

__all__ = ["Replica", "load_state", "wait_event", "wall_ms_of"]

log = logging.getLogger(__name__)

#: Gossip retransmissions of a record, times log(n) (as the catalog's).
RETRANSMIT_MULT: Final = 4

Listener = Callable[[tuple[Record, ...]], None]


def wall_ms_of(now: datetime) -> int:
    """``now`` as the global state's stamps count it (ms since the epoch)."""
    return int(now.timestamp() * 1000)


def load_state(path: Path | None, node_id: str, schema: Schema) -> GlobalState:
    """The copy saved in ``path``, or an empty one (a damaged file is logged, not fatal)."""
    raw = None if path is None else read_or_none(path)
    if raw is None:
        return GlobalState(node_id, schema)
    try:
        return GlobalState.from_wire(unpack(raw), schema)
    except (NodeError, ValueError) as exc:
        log.error("global state in data_dir is damaged, starting empty", extra={"error": str(exc)})
        return GlobalState(node_id, schema)


async def wait_event(event: asyncio.Event, timeout: float) -> None:
    """Wait for ``event`` at most ``timeout`` seconds (``asyncio.timeout``: unlike 3.11's
    ``wait_for``, it never swallows a cancellation that races the event)."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        pass


class Replica:
    """One per node (see the module rule); ``sync`` is its gossip delegate."""

    def __init__(
        self,
        state: GlobalState,
        *,
        clock: Clock,
        bump_index: Callable[[], int],
        path: Path | None,
        primary: str,
        lan_size: Callable[[], int],
        on_want: WantFn,
        on_mismatch: MismatchFn,
    ) -> None:
        self._state = state
        self._clock = clock
        self._bump_index = bump_index
        self._path = path
        self._idx: dict[tuple[str, str], tuple[int, int]] = {}
        self._kind_idx: dict[str, int] = {}
        self._listeners: list[Listener] = []
        self._gen = asyncio.Event()
        queue = UserBroadcastQueue(retransmit_mult=RETRANSMIT_MULT, num_nodes=lan_size)
        self.sync = StateSync(
            self, schema=state.schema, primary=primary, queue=queue,
            on_want=on_want, on_mismatch=on_mismatch,
        )  # fmt: skip
        self._index_restored()

    # --- reads --------------------------------------------------------------------------

    @property
    def state(self) -> GlobalState:
        """The copy itself (writes to it must be followed by ``changed``)."""
        return self._state

    def indexes(self, kind: str, name: str) -> tuple[int, int]:
        """(CreateIndex, ModifyIndex) of a record in this node's blocking-query index."""
        return self._idx.get((kind, name), (0, 0))

    def index_of(self, *kinds: str) -> int:
        """The node index of the latest change to any of ``kinds``."""
        return max((self._kind_idx.get(k, 0) for k in kinds), default=0)

    def wall_ms(self) -> int:
        """Now, as the stamps count it."""
        return wall_ms_of(self._clock.utcnow())

    def next_change(self) -> asyncio.Event:
        """An event set by the next change (take it before looking, then wait on it)."""
        return self._gen

    async def wait_until(self, done: Callable[[], bool], timeout: float) -> None:
        """Wait, change after change, until ``done()`` or ``timeout`` seconds have passed."""
        deadline = self._clock.monotonic() + timeout
        while not done():
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                return
            await wait_event(self._gen, remaining)

    def add_listener(self, callback: Listener) -> None:
        """Call ``callback(records)`` after every change, with the records that changed."""
        self._listeners.append(callback)

    # --- StateSink ----------------------------------------------------------------------

    def records(self) -> Iterable[Record]:
        """Every record, tombstones included (push-pull)."""
        return self._state.all_records()

    def stamp_of(self, kind: str, name: str) -> Stamp | None:
        """The stamp held for (kind, name)."""
        record = self._state.held(kind, name)
        return None if record is None else record.stamp

    def merge_records(
        self, records: Iterable[Record], *, announce: bool = False
    ) -> tuple[Record, ...]:
        """Merge records from gossip, replication or an RPC answer; returns those changed."""
        changed = self._state.merge(records, wall_ms=self.wall_ms())
        self.changed(changed, announce=announce)
        return changed

    def apply_delta(self, delta: Delta) -> None:
        """Merge a delta pulled from the primary and pass it on by gossip."""
        self.changed(self._state.apply_delta(delta, wall_ms=self.wall_ms()), announce=True)

    # --- changes ------------------------------------------------------------------------

    def changed(self, records: Iterable[Record], *, announce: bool) -> None:
        """Index, persist, (announce) and tell everyone about records that changed here."""
        records = tuple(records)
        if not records:
            return
        index = self._bump_index()
        for record in records:
            create = self._idx.get(record.key, (index, index))[0]
            self._idx[record.key] = (
                index if record.create_index == record.modify_index else create,
                index,
            )
            self._kind_idx[record.kind] = index
        self._save()
        if announce:
            self.sync.announce(records)
        self._gen.set()
        self._gen = asyncio.Event()
        for callback in list(self._listeners):
            callback(records)

    def _index_restored(self) -> None:
        if not self._state.all_records():
            return
        index = self._bump_index()
        for record in self._state.all_records():
            self._idx[record.key] = (index, index)
            self._kind_idx[record.kind] = index

    def _save(self) -> None:
        if self._path is not None:
            atomic_write(self._path, pack(self._state.to_wire()))

    # --- maintenance --------------------------------------------------------------------

    async def run(self, *, every: float, grace: float) -> None:
        """Reap tombstones older than ``grace`` seconds, looking every ``every`` seconds."""
        grace_ms = int(grace * 1000)
        while True:
            await asyncio.sleep(every)
            if self._state.reap(wall_ms=self.wall_ms(), grace_ms=grace_ms):
                self._save()
