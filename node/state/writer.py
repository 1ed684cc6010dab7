"""Writes to the global state: forwarded to the primary, applied there, merged back.

Rule: only servers of the primary datacenter *apply* writes. A write made anywhere
travels ``State.Apply`` → a server of the writer's datacenter → (from a secondary) a
server of the primary, which stamps and applies it; the answer carries the applied
records, which every hop merges at once (read your writes). A write is an op: ``put``
or ``delete`` of a writable kind, or one of the owner's own ops (``ops``: name →
apply function, run on a primary server, returning the records it wrote). An op may
carry ``cas``: the stamp the writer last saw (``None``: absent); the primary refuses it
with ``Conflict`` if the record changed since.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, Final, Protocol

from node.errors import Conflict, InvalidRequest
from node.state.globalstate import Record
from node.state.replica import Replica

__all__ = ["StateWriter", "ServerCaller", "ApplyFn", "APPLY_METHOD"]

APPLY_METHOD: Final = "State.Apply"

ApplyFn = Callable[[Any], tuple[Record, ...]]
"""An owner's op, applied on a primary server: the records it wrote to the replica's state."""


class ServerCaller(Protocol):
    """RPC to a server of this datacenter or of another (``node.agent.Agent``)."""

    async def call_server(
        self, method: str, args: Any, *, dc: str | None = None, timeout: float = ...
    ) -> Any:
        """Call a server of this datacenter (or of ``dc``)."""
        ...


class StateWriter:
    """See the module rule; ``rpc_handlers()`` serves ``State.Apply`` on servers."""

    def __init__(
        self,
        replica: Replica,
        *,
        rpc: ServerCaller,
        primary: str,
        is_server: bool,
        in_primary: bool,
        writable: Collection[str],
        ops: Mapping[str, ApplyFn],
        rpc_timeout: float,
    ) -> None:
        self._replica = replica
        self._rpc = rpc
        self._primary = primary
        self._server = is_server
        self._applies = is_server and in_primary
        self._in_primary = in_primary
        self._writable = frozenset(writable)
        self._ops = dict(ops)
        self._timeout = rpc_timeout

    # --- building ops -------------------------------------------------------------------

    def put_op(self, kind: str, name: str, value: Any) -> dict[str, Any]:
        """The op writing ``value`` under (kind, name)."""
        wire = self._replica.state.schema.codec(kind).to_wire(value)
        return {"op": "put", "kind": kind, "name": name, "value": wire}

    @staticmethod
    def delete_op(kind: str, name: str) -> dict[str, Any]:
        """The op deleting (kind, name)."""
        return {"op": "delete", "kind": kind, "name": name}

    # --- writing ------------------------------------------------------------------------

    async def write(self, op: Mapping[str, Any]) -> tuple[Record, ...]:
        """Apply here (primary server) or forward; returns the applied records."""
        if self._applies:
            return self.apply(op)
        reply = await self._rpc.call_server(APPLY_METHOD, op, timeout=self._timeout)
        records = self._records_of(reply)
        self._replica.merge_records(records, announce=True)
        return records

    async def write_if(self, op: dict[str, Any], cas: int | None) -> bool:
        """``write`` under Consul's ``?cas=`` (0: only if absent): False when it did not hold."""
        if cas is not None:
            current = self._replica.state.get(op["kind"], op["name"])
            if cas == 0:
                if current is not None:
                    return False
                op["cas"] = None
            else:
                if current is None or self._replica.indexes(op["kind"], op["name"])[1] != cas:
                    return False
                op["cas"] = current.stamp.to_wire()
        try:
            await self.write(op)
        except Conflict:
            if cas is None:
                raise
            return False
        return True

    def seed(self, values: Iterable[tuple[str, str, Any]]) -> tuple[Record, ...]:
        """Primary server: write each (kind, name, value) that is absent; returns the writes."""
        written = []
        for kind, name, value in values:
            if self._replica.state.get(kind, name) is None:
                record = self._replica.state.put(kind, name, value, wall_ms=self._replica.wall_ms())
                self._replica.changed((record,), announce=True)
                written.append(record)
        return tuple(written)

    # --- applying (primary) -------------------------------------------------------------

    def apply(self, op: Any) -> tuple[Record, ...]:
        """Apply a write on a primary server; raises before changing anything if invalid."""
        known = ("put", "delete", *self._ops)
        if not isinstance(op, Mapping) or op.get("op") not in known:
            raise InvalidRequest(f"State.Apply: op must be {', '.join(known[:-1])} or {known[-1]}")
        apply = self._ops.get(op["op"], self._put_or_delete)
        records = apply(op)
        self._replica.changed(records, announce=True)
        return records

    def _put_or_delete(self, op: Any) -> tuple[Record, ...]:
        state, wall = self._replica.state, self._replica.wall_ms()
        kind, name = op.get("kind"), op.get("name")
        if kind not in self._writable or not isinstance(name, str):
            raise InvalidRequest(f"State.Apply: kind {kind!r} cannot be written directly")
        self._check_cas(kind, name, op)
        if op["op"] == "delete":
            return (state.delete(kind, name, wall_ms=wall),)
        value = Record.from_wire(
            {"k": kind, "n": name, "v": op.get("value"), "s": [0, 0, ""]}, state.schema
        )
        return (state.put(kind, name, value.value, wall_ms=wall),)

    def _check_cas(self, kind: str, name: str, op: Mapping[str, Any]) -> None:
        if "cas" not in op:
            return
        current = self._replica.state.get(kind, name)
        expected = op["cas"]
        held = None if current is None else current.stamp.to_wire()
        if (expected is None) != (held is None) or (held is not None and list(expected) != held):
            raise Conflict(f"CAS failed for {kind} {name!r}: it changed since it was read")

    def _records_of(self, reply: Any) -> tuple[Record, ...]:
        if not isinstance(reply, Mapping) or not isinstance(reply.get("records"), list):
            raise InvalidRequest("State.Apply answer is malformed")
        schema = self._replica.state.schema
        return tuple(Record.from_wire(r, schema) for r in reply["records"])

    # --- RPC ----------------------------------------------------------------------------

    def rpc_handlers(self) -> dict[str, Callable[[Any], Any]]:
        """``State.Apply``: a write from a node of this datacenter (or a secondary's server)."""
        return {APPLY_METHOD: self._rpc_apply}

    async def _rpc_apply(self, args: Any) -> dict[str, Any]:
        if not self._server:
            raise InvalidRequest("State.Apply must be sent to a server")
        if self._in_primary:
            records = self.apply(args)
        else:
            reply = await self._rpc.call_server(
                APPLY_METHOD, args, dc=self._primary, timeout=self._timeout
            )
            received = self._records_of(reply)
            records = self._replica.merge_records(received, announce=True) or received
        schema = self._replica.state.schema
        return {"records": [r.to_wire(schema) for r in records]}
