"""The global state: a last-writer-wins map of typed records, the same in every datacenter.

Rule: records are keyed ``(kind, name)``. Every value carries a ``Stamp`` (hybrid
logical clock wall ms, counter, writer node id); a merge keeps the larger stamp, so
copies that diverged during a partition converge deterministically on every node,
whatever order they exchange records in. A kind may declare a ``join`` instead: both
live values are then combined (a set that must never lose a member). Deletes are
tombstones (value ``None``) that win by stamp like any write and are reaped once they
are older than a grace period the caller chooses (longer than it takes them to spread).

What a kind holds is the owner's business: a ``Schema`` maps each kind to a
``KindCodec`` (its type, how a value is named, serialised, joined and checked before a
local write). This module knows no kind itself.

Indexes are local: each node numbers the changes it applies (``modify_index``, and one
store ``index``), which is what blocking queries and replication by index use. A reader
that asks for changes since an index older than a reaped tombstone gets a full snapshot
(``Delta.full``) instead, together with the stamp horizon below which a record missing
from the snapshot must have been deleted.

Pure: no I/O, no clock; wall time arrives as ``wall_ms``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from node.errors import Conflict, InvalidRequest, NotFound
from node.state.hlc import HybridClock, Stamp

__all__ = ["KindCodec", "Schema", "Record", "Delta", "GlobalState", "MAX_WIRE_RECORDS"]

#: Bound on records accepted from one wire message or persisted file.
MAX_WIRE_RECORDS: Final = 100_000


@dataclass(frozen=True, slots=True, kw_only=True)
class KindCodec:
    """How one kind is typed, named, serialised, joined and checked.

    ``check_put(current, value, live)`` may refuse a local write (raise a ``NodeError``):
    ``current`` is the live value under the same name or ``None``, ``live`` every live
    value of the kind. ``undeletable`` (a reason) forbids deletes of the kind.
    """

    type: type
    name_of: Callable[[Any], str]
    to_wire: Callable[[Any], Any]
    from_wire: Callable[[Any], Any]
    join: Callable[[Any, Any], Any] | None = None  # join(winner, loser)
    check_put: Callable[[Any, Any, Iterable[Any]], None] | None = None
    undeletable: str | None = None


class Schema:
    """The kinds a global state holds, by name (see the module rule)."""

    __slots__ = ("_codecs",)

    def __init__(self, codecs: Mapping[str, KindCodec]) -> None:
        self._codecs = dict(codecs)

    @property
    def kinds(self) -> tuple[str, ...]:
        """Every kind, in declaration order."""
        return tuple(self._codecs)

    def codec(self, kind: str) -> KindCodec:
        """The codec of ``kind``; ``InvalidRequest`` names the known kinds."""
        try:
            return self._codecs[kind]
        except (KeyError, TypeError):
            raise InvalidRequest(
                f"unknown global state kind {kind!r} (known: {', '.join(self._codecs)})",
                field="kind",
            ) from None


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    """One (kind, name) slot: its value (``None`` = tombstone), stamp and local indexes."""

    kind: str
    name: str
    value: Any
    stamp: Stamp
    create_index: int = 0
    modify_index: int = 0

    @property
    def is_tombstone(self) -> bool:
        """True if this records a delete."""
        return self.value is None

    @property
    def key(self) -> tuple[str, str]:
        """``(kind, name)``."""
        return (self.kind, self.name)

    def to_wire(self, schema: Schema) -> dict[str, Any]:
        """Replication form: kind, name, value, stamp (indexes are per node, not sent)."""
        value = None if self.value is None else schema.codec(self.kind).to_wire(self.value)
        return {"k": self.kind, "n": self.name, "v": value, "s": self.stamp.to_wire()}

    @classmethod
    def from_wire(cls, raw: Any, schema: Schema) -> Record:
        """Decode and validate one replicated record; ``InvalidRequest`` names the problem."""
        if not isinstance(raw, Mapping):
            raise InvalidRequest(f"global state record must be a map, got {type(raw).__name__}")
        try:
            kind, name, value, stamp = raw["k"], raw["n"], raw["v"], Stamp.from_wire(raw["s"])
        except (KeyError, ValueError) as exc:
            raise InvalidRequest(f"malformed global state record: {exc}") from None
        codec = schema.codec(kind)
        if not isinstance(name, str) or not name:
            raise InvalidRequest(f"global state record of kind {kind!r} has no name")
        decoded = None if value is None else codec.from_wire(value)
        if decoded is not None and codec.name_of(decoded) != name:
            raise InvalidRequest(
                f"record {kind}/{name} holds a value named {codec.name_of(decoded)!r}"
            )
        return cls(kind=kind, name=name, value=decoded, stamp=stamp)


@dataclass(frozen=True, slots=True, kw_only=True)
class Delta:
    """Changes since an index (``full``: a snapshot of every live record instead).

    ``horizon`` is the largest stamp of any tombstone the sender has reaped: on a full
    snapshot, a receiver's live record that is missing and stamped at or below it was
    deleted; one stamped above it simply has not reached the sender yet.
    """

    records: tuple[Record, ...]
    index: int
    full: bool = False
    horizon: Stamp | None = None

    def to_wire(self, schema: Schema) -> dict[str, Any]:
        """For the replication RPC."""
        return {
            "records": [r.to_wire(schema) for r in self.records],
            "index": self.index,
            "full": self.full,
            "horizon": None if self.horizon is None else self.horizon.to_wire(),
        }

    @classmethod
    def from_wire(cls, raw: Any, schema: Schema) -> Delta:
        """Inverse of ``to_wire``; ``InvalidRequest`` on malformed or oversized input."""
        if not isinstance(raw, Mapping) or not isinstance(raw.get("records"), list | tuple):
            raise InvalidRequest("malformed global state delta")
        if len(raw["records"]) > MAX_WIRE_RECORDS:
            raise InvalidRequest(f"global state delta has more than {MAX_WIRE_RECORDS} records")
        index, full, horizon = raw.get("index"), raw.get("full"), raw.get("horizon")
        if not isinstance(index, int) or not isinstance(full, bool):
            raise InvalidRequest("global state delta has a bad index or full flag")
        try:
            stamp = None if horizon is None else Stamp.from_wire(horizon)
        except ValueError as exc:
            raise InvalidRequest(f"global state delta horizon: {exc}") from None
        records = tuple(Record.from_wire(r, schema) for r in raw["records"])
        return cls(records=records, index=index, full=full, horizon=stamp)


class GlobalState:
    """The map itself, one per node (see the module rule)."""

    __slots__ = ("_schema", "_clock", "_records", "_index", "_reaped_floor", "_horizon")

    def __init__(self, node_id: str, schema: Schema) -> None:
        self._schema = schema
        self._clock = HybridClock(node_id)
        self._records: dict[tuple[str, str], Record] = {}
        self._index = 0
        self._reaped_floor = 0
        self._horizon: Stamp | None = None

    # --- reads --------------------------------------------------------------------------

    @property
    def index(self) -> int:
        """The store index: the modify index of the latest change applied here."""
        return self._index

    @property
    def schema(self) -> Schema:
        """The kinds this state holds."""
        return self._schema

    @property
    def node_id(self) -> str:
        """The id stamped on this node's writes."""
        return self._clock.node

    def get(self, kind: str, name: str) -> Record | None:
        """The live record, or ``None`` (absent or deleted)."""
        self._schema.codec(kind)
        record = self._records.get((kind, name))
        return None if record is None or record.is_tombstone else record

    def held(self, kind: str, name: str) -> Record | None:
        """The record held for (kind, name), a tombstone included (for gossip digests)."""
        return self._records.get((kind, name))

    def all_records(self) -> tuple[Record, ...]:
        """Every record held, tombstones included (what a push-pull carries)."""
        return tuple(self._records.values())

    def list(self, kind: str) -> tuple[Record, ...]:
        """Live records of one kind, by name."""
        self._schema.codec(kind)
        live = (r for (k, _), r in self._records.items() if k == kind and not r.is_tombstone)
        return tuple(sorted(live, key=lambda r: r.name))

    def kind_index(self, kind: str) -> int:
        """Highest modify index of any record (tombstones included) of ``kind``."""
        self._schema.codec(kind)
        return max((r.modify_index for (k, _), r in self._records.items() if k == kind), default=0)

    # --- local writes -------------------------------------------------------------------

    def put(
        self, kind: str, name: str, value: Any, *, wall_ms: int, cas: int | None = None
    ) -> Record:
        """Write ``value`` under (kind, name); ``cas`` as Consul's ``?cas=`` (0 = only if absent).

        Raises ``InvalidRequest`` for a wrong kind/type/name, ``Conflict`` for a failed CAS,
        or what the kind's ``check_put`` raises; nothing changes then.
        """
        codec = self._schema.codec(kind)
        if not isinstance(value, codec.type):
            raise InvalidRequest(f"{kind} value must be a {codec.type.__name__}")
        if codec.name_of(value) != name:
            raise InvalidRequest(f"{kind} value is named {codec.name_of(value)!r}, not {name!r}")
        current = self.get(kind, name)
        self._check_cas(kind, name, current, cas)
        if codec.check_put is not None:
            live = (r.value for r in self.list(kind))
            codec.check_put(None if current is None else current.value, value, live)
        return self._store(kind, name, value, self._clock.tick(wall_ms), current)

    def delete(self, kind: str, name: str, *, wall_ms: int, cas: int | None = None) -> Record:
        """Tombstone (kind, name); ``NotFound`` if it is not there."""
        undeletable = self._schema.codec(kind).undeletable
        if undeletable is not None:
            raise InvalidRequest(undeletable)
        current = self.get(kind, name)
        if current is None:
            raise NotFound(f"{kind} {name!r} not found")
        self._check_cas(kind, name, current, cas)
        return self._store(kind, name, None, self._clock.tick(wall_ms), current)

    @staticmethod
    def _check_cas(kind: str, name: str, current: Record | None, cas: int | None) -> None:
        if cas is None:
            return
        have = 0 if current is None else current.modify_index
        if cas < 0 or have != cas:
            raise Conflict(
                f"CAS failed for {kind} {name!r}: its modify index is {have}, the request said {cas}"
            )

    def _store(
        self, kind: str, name: str, value: Any, stamp: Stamp, current: Record | None
    ) -> Record:
        self._index += 1
        created = current.create_index if current is not None and value is not None else self._index
        record = Record(
            kind=kind,
            name=name,
            value=value,
            stamp=stamp,
            create_index=created,
            modify_index=self._index,
        )
        self._records[(kind, name)] = record
        return record

    # --- replication --------------------------------------------------------------------

    def merge(self, records: Iterable[Record], *, wall_ms: int) -> tuple[Record, ...]:
        """Merge records from a peer or the primary; returns the records that changed here."""
        changed = []
        for remote in records:
            self._clock.observe(remote.stamp, wall_ms)
            merged = self._merge_one(remote)
            if merged is not None:
                changed.append(merged)
        return tuple(changed)

    def _merge_one(self, remote: Record) -> Record | None:
        local = self._records.get(remote.key)
        if local is None:
            return self._store(remote.kind, remote.name, remote.value, remote.stamp, None)
        join = self._schema.codec(remote.kind).join
        both_live = not local.is_tombstone and not remote.is_tombstone
        if join is not None and both_live:
            winner, loser = (remote, local) if remote.stamp > local.stamp else (local, remote)
            value = join(winner.value, loser.value)
            if value == local.value and winner.stamp == local.stamp:
                return None
            return self._store(remote.kind, remote.name, value, winner.stamp, local)
        if remote.stamp <= local.stamp:
            return None
        return self._store(remote.kind, remote.name, remote.value, remote.stamp, local)

    def entries_since(self, index: int) -> Delta:
        """What a replica at ``index`` needs: the changed records, or a full snapshot.

        A full snapshot also answers an index *ahead* of ours: this store was rebuilt
        (a ``-dev`` primary restarted), so the replica's position means nothing here.
        """
        if index < self._reaped_floor or index > self._index:
            live = tuple(r for r in self._records.values() if not r.is_tombstone)
            return Delta(records=live, index=self._index, full=True, horizon=self._horizon)
        newer = sorted(
            (r for r in self._records.values() if r.modify_index > index),
            key=lambda r: r.modify_index,
        )
        return Delta(records=tuple(newer), index=self._index, horizon=self._horizon)

    def apply_delta(self, delta: Delta, *, wall_ms: int) -> tuple[Record, ...]:
        """Merge a ``Delta``; on a full snapshot, also drop what the sender has deleted."""
        changed = list(self.merge(delta.records, wall_ms=wall_ms))
        if not delta.full or delta.horizon is None:
            return tuple(changed)
        present = {r.key for r in delta.records}
        for key, local in list(self._records.items()):
            if key in present or local.is_tombstone or local.stamp > delta.horizon:
                continue
            # Same stamp as the live copy, so a stale peer offering it cannot revive it.
            changed.append(self._store(local.kind, local.name, None, local.stamp, local))
        return tuple(changed)

    def reap(self, *, wall_ms: int, grace_ms: int) -> int:
        """Forget tombstones older than ``grace_ms``; returns how many were dropped."""
        old = [
            r
            for r in self._records.values()
            if r.is_tombstone and r.stamp.wall_ms + grace_ms < wall_ms
        ]
        for record in old:
            del self._records[record.key]
            self._reaped_floor = max(self._reaped_floor, record.modify_index)
            if self._horizon is None or record.stamp > self._horizon:
                self._horizon = record.stamp
        return len(old)

    # --- persistence --------------------------------------------------------------------

    def to_wire(self) -> dict[str, Any]:
        """Everything needed to restart with the same indexes and clock (for ``data_dir``)."""
        wall, counter = self._clock.last
        return {
            "node": self._clock.node,
            "hlc": [wall, counter],
            "index": self._index,
            "reaped_floor": self._reaped_floor,
            "horizon": None if self._horizon is None else self._horizon.to_wire(),
            "records": [
                r.to_wire(self._schema) | {"ci": r.create_index, "mi": r.modify_index}
                for r in self._records.values()
            ],
        }

    @classmethod
    def from_wire(cls, raw: Any, schema: Schema) -> GlobalState:
        """Inverse of ``to_wire``; ``InvalidRequest`` if the file is damaged."""
        try:
            state = cls(str(raw["node"]), schema)
            wall, counter = raw["hlc"]
            state._clock = HybridClock(state.node_id, wall_ms=int(wall), counter=int(counter))
            state._index = int(raw["index"])
            state._reaped_floor = int(raw["reaped_floor"])
            horizon = raw.get("horizon")
            state._horizon = None if horizon is None else Stamp.from_wire(horizon)
            if len(raw["records"]) > MAX_WIRE_RECORDS:
                raise ValueError("too many records")
            for item in raw["records"]:
                rec = Record.from_wire(item, schema)
                state._records[rec.key] = Record(
                    kind=rec.kind,
                    name=rec.name,
                    value=rec.value,
                    stamp=rec.stamp,
                    create_index=int(item["ci"]),
                    modify_index=int(item["mi"]),
                )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidRequest(f"damaged global state: {exc!r}") from None
        return state
