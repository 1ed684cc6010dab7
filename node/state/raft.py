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
- the membership starts as the servers seen when the group forms (``FormingGroup``: it
  forms once ``bootstrap_expect`` servers of the datacenter are alive in the LAN pool,
  and says in the log that it waits until then); later changes go through PySyncObj's
  own membership change (``add_voter`` / ``remove_voter``: one server per committed
  entry, applied when appended, as the Raft thesis's single-server changes are). A
  server is removed by the leader, never by itself (PySyncObj's leader cannot remove
  itself, and a removed follower never hears that its removal committed): a leader
  that leaves hands leadership over first. A removed server keeps its own list of
  voters, but the others no longer accept its connections;
- leadership transfer is PySyncObj's ``transferLeadership`` (Raft's ``TimeoutNow``: the
  leader asks a caught-up follower to start an election at once); it only reports that
  the request was sent, so ``transfer_leadership`` waits until another leader is known;
- PySyncObj keeps no time of last contact with the leader: the transport
  (``_ContactTransport``) notes when the last ``append_entries`` (a leader's heartbeat
  or entries) arrived. A follower that has not heard from a leader for
  ``CONTACT_BOUND`` seconds knows none (PySyncObj keeps naming it while no election can
  start, e.g. cut off from every peer);
- everything that touches PySyncObj's state beyond queueing a command runs in its
  thread: ``_in_raft_thread`` queues a function that the tick callback runs.
"""

from __future__ import annotations

import asyncio
import io
import logging
import pickle
import queue
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

import pysyncobj.pickle as _syncobj_pickle
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, SyncObjConsumer, replicated
from pysyncobj.transport import TCPTransport

from node.clock import Clock
from node.errors import Conflict, InvalidRequest, NoClusterLeader
from node.state.consensus import StateMachine, command, error_of
from node.state.globalstate import Record, Schema
from node.state.replica import wall_ms_of

__all__ = [
    "Consensus",
    "RaftOperations",
    "CONTACT_BOUND",
    "SoloGroup",
    "RaftGroup",
    "FormingGroup",
    "NO_LEADER",
    "records_of",
    "install_safe_unpickler",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

NO_LEADER: Final = "No cluster leader"
#: A follower that has not heard from its leader for this long (seconds) knows none:
#: past PySyncObj's ``leaderFallbackTimeout`` (2 s), a leader cut off has stepped down.
CONTACT_BOUND: Final = 2.5
#: The noop a consistent read commits (see ``node.state.consensus``).
NOOP: Final[Mapping[str, Any]] = {"op": "noop"}


#: Failures after which the command was not appended anywhere: safe to submit again.
_RETRYABLE: Final = frozenset(
    {FAIL_REASON.MISSING_LEADER, FAIL_REASON.NOT_LEADER, FAIL_REASON.DISCARDED,
     FAIL_REASON.QUEUE_FULL}
)  # fmt: skip
_RETRY_DELAY: Final = 0.1
#: How often PySyncObj's thread refreshes the voters it hands to other threads (s).
_VOTERS_REFRESH: Final = 0.1

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


class RaftOperations(Consensus, Protocol):
    """What an operator (and a consistent read) asks of a group, beyond writes."""

    @property
    def address(self) -> str:
        """This server's Raft address (``""`` in a group of one)."""
        ...

    @property
    def commit_index(self) -> int:
        """The index of the last command this server applied."""
        ...

    def last_contact(self) -> float | None:
        """Seconds since this server last heard from the leader (0 on the leader; ``None``:
        no leader is known)."""
        ...

    async def barrier(self) -> int:
        """Commit a noop through the leader (a quorum confirms its leadership); once it
        returns, every command committed before is applied here. Its index."""
        ...

    async def add_voter(self, address: str) -> None:
        """Make the server at Raft ``address`` a voter (committed before returning)."""
        ...

    async def remove_voter(self, address: str) -> None:
        """Remove the voter at Raft ``address`` (committed before returning)."""
        ...

    async def transfer_leadership(self, target: str | None = None) -> str:
        """This leader hands over to ``target`` (or the most caught-up voter); the new
        leader's Raft address once it is known."""
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

    @property
    def address(self) -> str:
        """This server's Raft address (none: it runs no Raft transport)."""
        return self._address

    @property
    def commit_index(self) -> int:
        """The last applied command's index."""
        return self._machine.commit_index

    def last_contact(self) -> float | None:
        """Always 0: this server is the leader."""
        return 0.0

    async def barrier(self) -> int:
        """Nothing to wait for: every command is applied when it is committed."""
        return self._machine.commit_index

    async def add_voter(self, address: str) -> None:
        """A group of one has no Raft transport to add a voter to."""
        raise InvalidRequest(
            f"cannot add {address}: this server runs a group of one (bootstrap_expect <= 1)"
        )

    async def remove_voter(self, address: str) -> None:
        """The only voter cannot be removed."""
        raise InvalidRequest("cannot remove the only voter of the Raft configuration")

    async def transfer_leadership(self, target: str | None = None) -> str:
        """There is no other voter to hand over to (hashicorp/raft's wording)."""
        raise InvalidRequest("cannot find peer")


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
        self._transport: _ContactTransport | None = None
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._voters: tuple[str, ...] = tuple(sorted({address, *others}))
        self._voters_at = 0.0
        self._sync = SyncObj(
            address, others, conf, consumers=[self._log], transportClass=self._make_transport
        )
        self._sync.addOnTickCallback(self._on_tick)
        log.info("raft group formed", extra={"self": address, "voters": sorted(peers)})

    def _make_transport(self, syncobj: Any, me: Any, others: Any) -> _ContactTransport:
        self._transport = _ContactTransport(syncobj, me, others, self._clock.monotonic)
        return self._transport

    def _on_tick(self) -> None:
        """In PySyncObj's thread, every tick: run queued jobs; refresh the voters now
        and then (membership changes only happen in this thread)."""
        while not self._jobs.empty():
            self._jobs.get_nowait()()
        now = self._clock.monotonic()
        if now - self._voters_at >= _VOTERS_REFRESH:
            self._voters_at = now
            others = (str(n.address) for n in self._sync.otherNodes)
            self._voters = tuple(sorted({self._address, *others}))

    async def _in_raft_thread(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in PySyncObj's thread (at its next tick); its result or error."""
        done: asyncio.Future[T] = self._loop.create_future()

        def job() -> None:
            try:
                result = fn()
            except Exception as exc:  # handed to the awaiting caller, never lost
                self._loop.call_soon_threadsafe(_fail, done, exc)
            else:
                self._loop.call_soon_threadsafe(_resolve, done, result)

        self._jobs.put(job)
        return await done

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
        """The leader this server knows: itself while it leads, else the one it heard from
        within ``CONTACT_BOUND`` seconds."""
        node = self._sync._getLeader()
        if node is None or self.last_contact() is None:
            return None
        return str(node.address)

    def voters(self) -> tuple[str, ...]:
        """Every voter's Raft address, this server's included."""
        return self._voters

    @property
    def address(self) -> str:
        """This server's Raft address."""
        return self._address

    @property
    def commit_index(self) -> int:
        """The index of the last entry applied here."""
        return int(self._sync.raftLastApplied)

    def last_contact(self) -> float | None:
        """0 while this server leads; else seconds since the leader's last message, or
        ``None`` if that is longer than ``CONTACT_BOUND`` (or no leader is known)."""
        if self._sync._isLeader():
            return 0.0
        heard = None if self._transport is None else self._transport.last_append
        if heard is None or self._sync._getLeader() is None:
            return None
        since = max(0.0, self._clock.monotonic() - heard)
        return since if since <= CONTACT_BOUND else None

    async def barrier(self) -> int:
        """Commit a noop (see ``RaftOperations.barrier``); ``NoClusterLeader`` without a
        leader within ``leader_wait``."""
        await self.submit(NOOP)
        return self.commit_index

    async def add_voter(self, address: str) -> None:
        """Add the server at Raft ``address`` (no-op if it already votes)."""
        if address in self._voters:
            return
        await self._change(
            self._sync.addNodeToCluster, address, done=lambda: address in self._voters
        )

    async def remove_voter(self, address: str) -> None:
        """Remove another voter at ``address`` (no-op if it votes no more). Not this
        server: a leader cannot remove itself in PySyncObj, and a follower would never
        hear that its own removal committed (the leader stops replicating to it at
        once), so a server leaves by asking the leader, after handing leadership over."""
        if address == self._address:
            raise InvalidRequest("a server is removed by the leader of its group, not by itself")
        if address not in self._voters:
            return
        await self._change(
            self._sync.removeNodeFromCluster, address, done=lambda: address not in self._voters
        )

    async def _change(self, request: Callable[..., None], address: str,
                      *, done: Callable[[], bool]) -> None:  # fmt: skip
        """Submit a membership change until it commits (retrying while leadership moves
        or the leader is still committing a previous change), within ``leader_wait``."""
        deadline = self._clock.monotonic() + self._leader_wait
        while True:
            future: asyncio.Future[tuple[Any, int]] = self._loop.create_future()

            def settle(result: Any, reason: int, future: asyncio.Future[Any] = future) -> None:
                self._loop.call_soon_threadsafe(_settle, future, result, reason)

            request(address, callback=settle)
            remaining = max(0.0, deadline - self._clock.monotonic())
            try:
                async with asyncio.timeout(remaining):
                    _, reason = await asyncio.shield(future)
            except TimeoutError:
                raise NoClusterLeader(NO_LEADER) from None
            await self._refresh_voters()
            if reason == FAIL_REASON.SUCCESS or done():
                return
            if self._clock.monotonic() >= deadline:
                raise NoClusterLeader(NO_LEADER)
            await asyncio.sleep(_RETRY_DELAY)

    async def _refresh_voters(self) -> None:
        def read() -> tuple[str, ...]:
            others = (str(n.address) for n in self._sync.otherNodes)
            self._voters = tuple(sorted({self._address, *others}))
            return self._voters

        await self._in_raft_thread(read)

    async def transfer_leadership(self, target: str | None = None) -> str:
        """Ask ``target`` (or the most caught-up voter) to take over, retrying while it
        catches up, and wait until a new leader is known (within ``leader_wait``)."""
        if not self._sync._isLeader():
            raise InvalidRequest("cannot transfer leadership: this server is not the leader")
        if target is not None and (target == self._address or target not in self._voters):
            raise InvalidRequest("cannot find peer")
        if len(self._voters) == 1:
            raise InvalidRequest("cannot find peer")
        deadline = self._clock.monotonic() + self._leader_wait
        while self._sync._isLeader():
            reason = await self._in_raft_thread(lambda: self._request_transfer(target))
            if reason not in (FAIL_REASON.SUCCESS, FAIL_REASON.REQUEST_DENIED):
                raise InvalidRequest(f"leadership transfer failed (PySyncObj reason {reason})")
            await asyncio.sleep(_RETRY_DELAY)
            if self._clock.monotonic() >= deadline:
                raise NoClusterLeader("leadership transfer did not complete in time")
        while True:
            leader = self.leader()
            if leader is not None and leader != self._address:
                return leader
            if self._clock.monotonic() >= deadline:
                raise NoClusterLeader(NO_LEADER)
            await asyncio.sleep(_RETRY_DELAY)

    def _request_transfer(self, target: str | None) -> int:
        """In PySyncObj's thread: its ``transferLeadership``, answered synchronously."""
        reasons: list[int] = []
        self._sync.transferLeadership(target, callback=lambda _r, reason: reasons.append(reason))
        return reasons[0] if reasons else FAIL_REASON.REQUEST_DENIED

    def close(self) -> None:
        """Stop the Raft thread and close its port."""
        self._sync.destroy()


class _ContactTransport(TCPTransport):  # type: ignore[misc]
    """PySyncObj's TCP transport, noting when a leader's ``append_entries`` last arrived."""

    def __init__(self, syncobj: Any, me: Any, others: Any, monotonic: Callable[[], float]) -> None:
        self.last_append: float | None = None
        self._monotonic = monotonic
        super().__init__(syncobj, me, others)

    def _onMessageReceived(self, node: Any, message: Any) -> None:
        if isinstance(message, dict) and message.get("type") == "append_entries":
            self.last_append = self._monotonic()
        super()._onMessageReceived(node, message)


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


def _resolve(done: asyncio.Future[T], result: T) -> None:
    if not done.done():
        done.set_result(result)


def _fail(done: asyncio.Future[Any], exc: BaseException) -> None:
    if not done.done():
        done.set_exception(exc)


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
        return await (await self._formed_group()).submit(op)

    async def _formed_group(self) -> RaftGroup:
        if self._group is None:
            try:
                async with asyncio.timeout(self._leader_wait):
                    await self._formed.wait()
            except TimeoutError:
                raise NoClusterLeader(NO_LEADER) from None
        assert self._group is not None
        return self._group

    @property
    def address(self) -> str:
        """This server's Raft address (``""`` before the group forms)."""
        return "" if self._group is None else self._group.address

    @property
    def commit_index(self) -> int:
        """The group's applied index here (0 before it forms)."""
        return 0 if self._group is None else self._group.commit_index

    def last_contact(self) -> float | None:
        """As ``RaftGroup.last_contact`` (``None`` before the group forms)."""
        return None if self._group is None else self._group.last_contact()

    async def barrier(self) -> int:
        """As ``RaftGroup.barrier``, once the group has formed (within ``leader_wait``)."""
        return await (await self._formed_group()).barrier()

    async def add_voter(self, address: str) -> None:
        """As ``RaftGroup.add_voter``, once formed."""
        await (await self._formed_group()).add_voter(address)

    async def remove_voter(self, address: str) -> None:
        """As ``RaftGroup.remove_voter``, once formed."""
        await (await self._formed_group()).remove_voter(address)

    async def transfer_leadership(self, target: str | None = None) -> str:
        """As ``RaftGroup.transfer_leadership``, once formed."""
        return await (await self._formed_group()).transfer_leadership(target)

    def leader(self) -> str | None:
        """The group's leader (``None`` before it forms)."""
        return None if self._group is None else self._group.leader()

    def voters(self) -> tuple[str, ...]:
        """The group's voters (none before it forms)."""
        return () if self._group is None else self._group.voters()
