"""Writes to the global state: forwarded to the primary's servers, committed by their group.

Rule: only the servers of the primary datacenter *commit* writes, through their Raft
group (``node.state.raft``: a quorum commits, the state machine applies in log order).
A write made anywhere travels ``State.Apply`` → a server of the writer's datacenter →
(from a secondary) a server of the primary, which submits it to the group; the answer
carries the committed records, which every hop merges at once (read your writes). A
write is an op: ``put`` or ``delete`` of a writable kind, or one of the owner's own ops
(``ops``: name → a function run on the primary server that receives the op, returning
the (kind, name, value) items to commit). An op may carry ``cas``: the stamp the writer
last saw (``None``: absent); the group's state machine refuses it with ``Conflict`` if
the record changed since, at its place in the log.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, Final, Protocol

from node.errors import Conflict, InvalidRequest
from node.state.globalstate import Record
from node.state.raft import Consensus
from node.state.replica import Replica

__all__ = ["StateWriter", "ServerCaller", "PrepareFn", "Item", "APPLY_METHOD"]

APPLY_METHOD: Final = "State.Apply"

Item = tuple[str, str, Any]
"""(kind, name, value) to write."""

PrepareFn = Callable[[Any], Sequence[Item]]
"""An owner's op, run on the primary server that receives it: the items to commit."""


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
        ops: Mapping[str, PrepareFn],
        rpc_timeout: float,
        group: Consensus | None,
    ) -> None:
        self._replica = replica
        self._rpc = rpc
        self._primary = primary
        self._server = is_server
        self._group = group if is_server and in_primary else None
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
        """Commit here (primary server) or forward; returns the committed records."""
        if self._group is not None:
            return await self.apply(op)
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

    async def commit(self, items: Iterable[Item], *, absent: bool = False) -> tuple[Record, ...]:
        """Primary server: commit (kind, name, value) items of any kind (``absent``: only
        if none of them exists yet, else ``Conflict``)."""
        schema = self._replica.state.schema
        wire = [[k, n, schema.codec(k).to_wire(v)] for k, n, v in items]
        return await self._submit({"op": "puts", "items": wire, "absent": absent})

    async def seed(self, values: Iterable[Item]) -> tuple[Record, ...]:
        """Primary server: write each (kind, name, value) that is absent; returns the writes."""
        written: list[Record] = []
        for item in values:
            if self._replica.state.get(item[0], item[1]) is None:
                try:
                    written += await self.commit((item,), absent=True)
                except Conflict:
                    continue  # another server seeded it first
        return tuple(written)

    # --- applying (primary) -------------------------------------------------------------

    async def apply(self, op: Any) -> tuple[Record, ...]:
        """Commit a write on a primary server; raises before submitting if it is invalid."""
        known = ("put", "delete", *self._ops)
        if not isinstance(op, Mapping) or op.get("op") not in known:
            raise InvalidRequest(f"State.Apply: op must be {', '.join(known[:-1])} or {known[-1]}")
        prepare = self._ops.get(op["op"])
        if prepare is not None:
            return await self.commit(prepare(op))
        kind, name = op.get("kind"), op.get("name")
        if kind not in self._writable or not isinstance(name, str):
            raise InvalidRequest(f"State.Apply: kind {kind!r} cannot be written directly")
        fields = ("op", "kind", "name", "value", "cas")
        return await self._submit({k: op[k] for k in fields if k in op})

    async def _submit(self, command: Mapping[str, Any]) -> tuple[Record, ...]:
        if self._group is None:
            raise InvalidRequest("State.Apply: only the primary datacenter's servers commit")
        records = await self._group.submit(command)
        self._replica.merge_records(records, announce=True)
        return records

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
            records = await self.apply(args)
        else:
            reply = await self._rpc.call_server(
                APPLY_METHOD, args, dc=self._primary, timeout=self._timeout
            )
            received = self._records_of(reply)
            records = self._replica.merge_records(received, announce=True) or received
        schema = self._replica.state.schema
        return {"records": [r.to_wire(schema) for r in records]}
