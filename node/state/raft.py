"""A datacenter's servers decide every write of the state they own by Raft.

Rule: a write is submitted to the group (``Consensus.submit``) and answered only once a
quorum has committed it and the pure ``StateMachine`` (``node.state.consensus``) has
applied it, in log order, on this server; every applied command's records are handed to
the node's copy (``on_commit``), from where gossip and the secondaries' pulls carry them.
With no leader for ``leader_wait`` seconds the answer is ``NoClusterLeader`` (Consul's
``No cluster leader``) and nothing was queued to be applied later.

A group of one (``SoloGroup``: ``-dev``, a datacenter with one server) commits at once:
the state machine runs on the loop over the node's own copy, as a single voter would.

A larger group runs **PySyncObj** (``RaftGroup``). Why: it is a complete, proven Raft
(Patroni's built-in store) with leader election, log replication, log compaction by
snapshots, dynamic membership and leadership transfer, in pure Python with no service
to run beside the node, and it forwards a follower's command to the leader itself. Its
limits, and what this module does about them:

- it ticks in its own thread (``autoTick``): the state machine is only touched there,
  and results reach the loop by ``call_soon_threadsafe``;
- its messages and snapshots are pickled. The group's password is the gossip key (a
  group of several servers needs one), and PySyncObj authenticates every frame (Fernet:
  AES-CBC + HMAC-SHA256) before unpickling it; besides, its unpickler is replaced by one
  that builds only plain data and PySyncObj's own node classes, so even a peer holding
  the key cannot make it run code. A key rotated by ``keyring`` reaches the group only
  when the servers restart;
- it speaks on its own TCP port (``raft_port``), not over the node's RPC port;
- by default it sends new entries and commit indexes only with its heartbeat (every
  0.1 s), so a write waited about 0.2 s; ``appendEntriesUseBatch`` off sends them as
  soon as they are appended or committed (and wakes its thread for a new command);
- its log (with the current term and vote) and its snapshots live in ``data_dir/raft``
  (``-dev``: in memory). The log is a memory-mapped file: it survives a killed process,
  not a lost machine between two of its flushes (about a second);
- a command whose leader is lost after it was sent may still commit after its caller
  was told ``No cluster leader`` (as in any Raft client that times out);
- the membership is the servers seen when the group forms (``FormingGroup``: it forms
  once ``bootstrap_expect`` servers of the datacenter are alive in the LAN pool, and
  says in the log that it waits until then).
"""

from __future__ import annotations

import asyncio
import io
import logging
import pickle
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Protocol

import pysyncobj.pickle as _syncobj_pickle
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, SyncObjConsumer, replicated

from node.clock import Clock
from node.errors import Conflict, NoClusterLeader
from node.state.consensus import StateMachine, command, error_of
from node.state.globalstate import Record, Schema
from node.state.replica import wall_ms_of

__all__ = [
    "Consensus",
    "SoloGroup",
    "RaftGroup",
    "FormingGroup",
    "NO_LEADER",
    "records_of",
    "install_safe_unpickler",
]

log = logging.getLogger(__name__)

NO_LEADER: Final = "No cluster leader"


#: Failures after which the command was not appended anywhere: safe to submit again.
_RETRYABLE: Final = frozenset(
    {FAIL_REASON.MISSING_LEADER, FAIL_REASON.NOT_LEADER, FAIL_REASON.DISCARDED,
     FAIL_REASON.QUEUE_FULL}
)  # fmt: skip
_RETRY_DELAY: Final = 0.1

OnCommit = Callable[[tuple[Record, ...]], object]


def records_of(answer: Mapping[str, Any], schema: Schema) -> tuple[Record, ...]:
    """The records an applied command wrote; raises the error it answered instead."""
    error = error_of(answer)
    if error is not None:
        raise error
    return tuple(Record.from_wire(r, schema) for r in answer["records"])


class Consensus(Protocol):
    """Commits the writes of the state a group owns."""

    async def submit(self, op: Mapping[str, Any]) -> tuple[Record, ...]:
        """Commit ``op``; the records it wrote, or the error it answered."""
        ...

    def leader(self) -> str | None:
        """The leader's Raft address as this server last knew it (``None``: none)."""
        ...

    def voters(self) -> tuple[str, ...]:
        """The Raft addresses of the group's voters."""
        ...


class SoloGroup:
    """A group of one voter: commits at once, on the loop (see the module rule)."""

    def __init__(
        self, machine: StateMachine, *, clock: Clock, on_commit: OnCommit, address: str = ""
    ) -> None:
        self._machine = machine
        self._clock = clock
        self._on_commit = on_commit
        self._address = address

    async def submit(self, op: Mapping[str, Any]) -> tuple[Record, ...]:
        """Apply ``op`` as the next entry of the log."""
        entry = command(op, wall_ms=wall_ms_of(self._clock.utcnow()))
        answer = self._machine.apply(entry, self._machine.commit_index + 1)
        records = records_of(answer, self._machine.state.schema)
        self._on_commit(records)
        return records

    def leader(self) -> str | None:
        """Always this server."""
        return self._address

    def voters(self) -> tuple[str, ...]:
        """Only this server."""
        return (self._address,)


# --------------------------------------------------------------------------- PySyncObj

# Pickle protocol 2 (PySyncObj's) writes bytes as ``_codecs.encode(text, "latin1")``.
_SAFE_CLASSES: Final = frozenset(
    {("pysyncobj.node", "Node"), ("pysyncobj.node", "TCPNode"),
     ("builtins", "set"), ("builtins", "frozenset"), ("collections", "OrderedDict"),
     ("_codecs", "encode")}
)  # fmt: skip


class _PlainUnpickler(pickle.Unpickler):
    """Builds plain data and PySyncObj's node classes, nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_CLASSES:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to unpickle {module}.{name}")


def _safe_loads(data: bytes | str) -> Any:
    raw = data if isinstance(data, bytes) else data.encode()
    return _PlainUnpickler(io.BytesIO(raw)).load()


def _safe_load(file: Any) -> Any:
    return _PlainUnpickler(file).load()


def install_safe_unpickler() -> None:
    """Make PySyncObj unpickle through ``_PlainUnpickler`` (its wire and snapshots)."""
    _syncobj_pickle.loads = _safe_loads
    _syncobj_pickle.load = _safe_load


class _Log(SyncObjConsumer):  # type: ignore[misc]
    """The state machine as PySyncObj drives it, in its thread."""

    def __init__(self, machine: StateMachine, on_apply: Callable[[dict[str, Any]], None]) -> None:
        super().__init__()
        self.machine = machine
        self.on_apply = on_apply

    @replicated  # type: ignore[misc, untyped-decorator]
    def apply_entry(self, entry: bytes) -> dict[str, Any]:
        index = self._syncObj.raftLastApplied + 1
        answer = self.machine.apply(entry, index)
        self.on_apply(answer)
        return answer

    def _serialize(self) -> bytes:
        return self.machine.snapshot()

    def _deserialize(self, data: bytes) -> None:
        self.machine.restore(data)
        self.on_apply({"records": [r.to_wire(self.machine.state.schema)
                                   for r in self.machine.state.all_records()]})  # fmt: skip


class RaftGroup:
    """A group of several voters over PySyncObj (see the module rule)."""

    def __init__(
        self,
        machine: StateMachine,
        *,
        address: str,
        peers: Sequence[str],
        password: bytes | None,
        bind: str,
        clock: Clock,
        on_commit: OnCommit,
        leader_wait: float,
        loop: asyncio.AbstractEventLoop,
        data_dir: Path | None = None,
    ) -> None:
        install_safe_unpickler()
        self._machine = machine
        self._schema = machine.state.schema
        self._clock = clock
        self._on_commit = on_commit
        self._leader_wait = leader_wait
        self._loop = loop
        self._address = address
        self._log = _Log(machine, self._applied)
        conf = SyncObjConf(
            password=password, autoTick=True, commandsWaitLeader=False,
            appendEntriesUseBatch=False,
            dynamicMembershipChange=True, leaderFallbackTimeout=2.0,
            connectionRetryTime=1.0, connectionTimeout=2.0,
            bindAddress=f"{bind}:{address.rsplit(':', 1)[1]}",
            **_files(data_dir),
        )  # fmt: skip
        others = [p for p in peers if p != address]
        self._sync = SyncObj(address, others, conf, consumers=[self._log])
        log.info("raft group formed", extra={"self": address, "voters": sorted(peers)})

    def _applied(self, answer: dict[str, Any]) -> None:
        if error_of(answer) is None and answer["records"]:
            self._loop.call_soon_threadsafe(self._deliver, answer)

    def _deliver(self, answer: dict[str, Any]) -> None:
        self._on_commit(records_of(answer, self._schema))

    async def submit(self, op: Mapping[str, Any]) -> tuple[Record, ...]:
        """Submit until committed, retrying while no leader is known, for ``leader_wait``."""
        deadline = self._clock.monotonic() + self._leader_wait
        while True:
            answer, reason = await self._submit_once(op, deadline)
            if reason == FAIL_REASON.SUCCESS:
                return records_of(answer, self._schema)
            remaining = deadline - self._clock.monotonic()
            if reason not in _RETRYABLE or remaining <= 0:
                raise NoClusterLeader(NO_LEADER)
            await asyncio.sleep(min(_RETRY_DELAY, remaining))

    async def _submit_once(self, op: Mapping[str, Any], deadline: float) -> tuple[Any, int]:
        done: asyncio.Future[tuple[Any, int]] = self._loop.create_future()

        def settle(result: Any, reason: int) -> None:
            self._loop.call_soon_threadsafe(_settle, done, result, reason)

        entry = command(op, wall_ms=wall_ms_of(self._clock.utcnow()))
        self._log.apply_entry(entry, callback=settle)
        try:
            async with asyncio.timeout(max(0.0, deadline - self._clock.monotonic())):
                return await asyncio.shield(done)
        except TimeoutError:
            raise NoClusterLeader(NO_LEADER) from None

    async def import_once(self, items: Sequence[list[Any]], every: float = 0.5) -> None:
        """Once this server leads, import ``items`` (a copy kept before the group existed)
        if the group's state is still empty; whichever leader comes first does it."""
        while items and not self._machine.state.all_records():
            if self.leader() == self._address:
                try:
                    await self.submit({"op": "import", "items": list(items)})
                    log.info("imported the state kept before the Raft group",
                             extra={"records": len(items)})  # fmt: skip
                except (Conflict, NoClusterLeader):
                    pass
            await asyncio.sleep(every)

    def leader(self) -> str | None:
        """The leader this server last heard of."""
        node = self._sync._getLeader()
        return None if node is None else str(node.address)

    def voters(self) -> tuple[str, ...]:
        """Every voter's Raft address, this server's included."""
        status = self._sync.getStatus()
        others = [str(k).removeprefix("partner_node_status_server_") for k in status
                  if str(k).startswith("partner_node_status_server_")]  # fmt: skip
        return tuple(sorted({self._address, *others}))

    def close(self) -> None:
        """Stop the Raft thread and close its port."""
        self._sync.destroy()


def _files(data_dir: Path | None) -> dict[str, str]:
    """PySyncObj's log and snapshot under ``data_dir`` (nothing: in memory)."""
    if data_dir is None:
        return {}
    data_dir.mkdir(parents=True, exist_ok=True)
    return {
        "journalFile": str(data_dir / "journal"),
        "fullDumpFile": str(data_dir / "snapshot"),
    }


def _settle(done: asyncio.Future[tuple[Any, int]], result: Any, reason: int) -> None:
    if not done.done():
        done.set_result((result, reason))


class FormingGroup:
    """A group that forms once ``expected`` servers are seen; refuses writes until then."""

    def __init__(
        self,
        *,
        expected: int,
        servers: Callable[[], Mapping[str, str]],
        me: str,
        build: Callable[[str, Sequence[str]], RaftGroup],
        clock: Clock,
        leader_wait: float,
        imported: Sequence[list[Any]] = (),
    ) -> None:
        self._expected = expected
        self._imported = imported
        self._servers = servers
        self._me = me
        self._build = build
        self._clock = clock
        self._leader_wait = leader_wait
        self._group: RaftGroup | None = None
        self._formed = asyncio.Event()

    async def run(self, every: float = 0.5) -> None:
        """Wait for ``expected`` servers (saying so), form the group, import what this server
        kept before it (``imported``, once), close it when cancelled."""
        waited = -1
        while self._group is None:
            servers = dict(self._servers())
            if len(servers) >= self._expected and self._me in servers:
                self._group = self._build(servers[self._me], sorted(servers.values()))
                self._formed.set()
                break
            if len(servers) != waited:
                waited = len(servers)
                log.info(
                    "waiting for %d servers to join before forming the Raft group "
                    "(bootstrap_expect), %d known",
                    self._expected,
                    len(servers),
                )
            await asyncio.sleep(every)
        try:
            await self._group.import_once(self._imported)
            await asyncio.Event().wait()
        finally:
            self._group.close()

    async def submit(self, op: Mapping[str, Any]) -> tuple[Record, ...]:
        """Wait for the group to form (at most ``leader_wait``), then submit to it."""
        if self._group is None:
            try:
                async with asyncio.timeout(self._leader_wait):
                    await self._formed.wait()
            except TimeoutError:
                raise NoClusterLeader(NO_LEADER) from None
        assert self._group is not None
        return await self._group.submit(op)

    def leader(self) -> str | None:
        """The group's leader (``None`` before it forms)."""
        return None if self._group is None else self._group.leader()

    def voters(self) -> tuple[str, ...]:
        """The group's voters (none before it forms)."""
        return () if self._group is None else self._group.voters()
