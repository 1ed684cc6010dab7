"""The replicated state machine of a Raft group: committed commands, applied in log order.

Rule: every voter applies the same commands in the same order to its own
``GlobalState`` and so holds the same records with the same stamps. A command is a map
(msgpack bytes in the log) that carries everything it needs, the writer's wall time
included; ``apply`` reads nothing else, so a replay gives the same answer. The
conditions of a write are checked here, at its place in the log, never by the writer:
``cas`` (the stamp the writer last saw, ``None`` for absent), ``absent`` (write each
item only if no live record holds its name: bootstrap once) and each kind's
``check_put`` (an intention's source/destination pair is unique). A command that fails
its condition changes nothing and answers the error as data (its class name and text),
so a forwarded answer never carries an object. Records are stamped with the group's id
as the writer node, so every voter's stamps agree and the copies merge them everywhere
like any other record; ``commit_index`` is the log position of the last command applied
(the version of the committed state).

Commands: ``put`` (kind, name, value, optional cas), ``delete`` (kind, name, optional
cas), ``puts`` (items ``[kind, name, value]``, optional ``absent``), ``import``
(items, written only into an empty state: a copy kept before the group existed,
imported once) and ``noop`` (writes nothing: its commit proves that a leader still led
a quorum when it was appended, and that the committing voter has applied every earlier
command, which is what a consistent read waits for).

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Final

from node.errors import Conflict, InvalidRequest, NodeError, NotFound
from node.state.globalstate import GlobalState, Record
from node.wire import pack, unpack

__all__ = ["StateMachine", "ERRORS", "command", "error_of"]

#: The errors a command may answer, by class name.
ERRORS: Final[Mapping[str, type[NodeError]]] = {
    cls.__name__: cls for cls in (Conflict, InvalidRequest, NotFound)
}


def command(op: Mapping[str, Any], *, wall_ms: int) -> bytes:
    """The log entry of a write op made at ``wall_ms``."""
    return pack(dict(op) | {"wall": wall_ms})


def error_of(answer: Mapping[str, Any]) -> NodeError | None:
    """The error an answer carries, rebuilt as its class (``None``: it applied)."""
    error = answer.get("error")
    if error is None:
        return None
    name, message = error
    return ERRORS.get(name, InvalidRequest)(message)


class StateMachine:
    """One voter's copy of its group's state (see the module rule)."""

    __slots__ = ("_state", "_writable", "commit_index")

    def __init__(self, state: GlobalState, *, writable: Collection[str]) -> None:
        self._state = state
        self._writable = frozenset(writable)
        self.commit_index = 0

    @property
    def state(self) -> GlobalState:
        """The committed state (read it; only ``apply`` writes it)."""
        return self._state

    def apply(self, entry: bytes, index: int) -> dict[str, Any]:
        """Apply the log entry at ``index``: ``{"records": [...]}`` or ``{"error": [cls, text]}``."""
        self.commit_index = max(self.commit_index, index)
        try:
            records = self._apply(unpack(entry))
        except (Conflict, InvalidRequest, NotFound) as exc:
            return {"error": [type(exc).__name__, str(exc)]}
        except (NodeError, ValueError, TypeError, KeyError) as exc:
            return {"error": ["InvalidRequest", f"malformed state command: {exc!r}"]}
        schema = self._state.schema
        return {"records": [r.to_wire(schema) for r in records], "index": index}

    def _apply(self, cmd: Any) -> tuple[Record, ...]:
        if not isinstance(cmd, Mapping) or not isinstance(cmd.get("wall"), int):
            raise InvalidRequest("state command must be a map with a wall time")
        op, wall = cmd.get("op"), cmd["wall"]
        if op == "noop":
            return ()
        if op == "puts":
            return self._puts(cmd.get("items"), absent=cmd.get("absent") is True, wall=wall)
        if op == "import":
            if self._state.all_records():
                raise Conflict("the group's state is not empty: nothing to import")
            return self._puts(cmd.get("items"), absent=False, wall=wall)
        if op not in ("put", "delete"):
            raise InvalidRequest(f"unknown state command {op!r}")
        kind, name = cmd.get("kind"), cmd.get("name")
        if kind not in self._writable or not isinstance(name, str):
            raise InvalidRequest(f"State.Apply: kind {kind!r} cannot be written directly")
        self._check_cas(kind, name, cmd)
        if op == "delete":
            return (self._state.delete(kind, name, wall_ms=wall),)
        return (
            self._state.put(kind, name, self._decode(kind, name, cmd.get("value")), wall_ms=wall),
        )

    def _puts(self, items: Any, *, absent: bool, wall: int) -> tuple[Record, ...]:
        if not isinstance(items, list) or not items:
            raise InvalidRequest("puts: items must be a non-empty list")
        decoded = [(k, n, self._decode(k, n, v)) for k, n, v in items]
        if absent:
            for kind, name, _ in decoded:
                if self._state.get(kind, name) is not None:
                    raise Conflict(f"{kind} {name!r} is already written")
        return tuple(self._state.put(k, n, v, wall_ms=wall) for k, n, v in decoded)

    def _decode(self, kind: Any, name: Any, value: Any) -> Any:
        raw = {"k": kind, "n": name, "v": value, "s": [0, 0, ""]}
        decoded = Record.from_wire(raw, self._state.schema).value
        if decoded is None:
            raise InvalidRequest(f"{kind} {name!r}: a put needs a value")
        return decoded

    def _check_cas(self, kind: str, name: str, cmd: Mapping[str, Any]) -> None:
        if "cas" not in cmd:
            return
        current = self._state.get(kind, name)
        expected = cmd["cas"]
        held = None if current is None else current.stamp.to_wire()
        if (expected is None) != (held is None) or (held is not None and list(expected) != held):
            raise Conflict(f"CAS failed for {kind} {name!r}: it changed since it was read")

    # --- snapshots ----------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The whole committed state and its index (for log compaction)."""
        return pack({"index": self.commit_index, "state": self._state.to_wire()})

    def restore(self, raw: bytes) -> None:
        """Replace the state by a snapshot (``InvalidRequest`` if it is damaged)."""
        data = unpack(raw)
        if not isinstance(data, Mapping) or not isinstance(data.get("index"), int):
            raise InvalidRequest("damaged state snapshot")
        self._state = GlobalState.from_wire(data["state"], self._state.schema)
        self.commit_index = data["index"]
