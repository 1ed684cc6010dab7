"""Fault injection on three real servers (bootstrap_expect = 3).

Each server is a real process (``node.testing.servers``); faults are real signals and
real link cuts. One group on loopback addresses serves, in order:

- racing ``?cas=`` writes from many clients, each on the index its own server showed:
  exactly one winner per index;
- the same intention (source, destination) created at once from many clients against
  every server: exactly one is created, the others are refused naming it (409), and
  every server ends with one;
- a stream of config-entry writes while the leader is SIGKILLed: a new leader within
  the election timeout, and every acknowledged write readable afterwards on every
  surviving server (then the killed server restarts and catches up);
- a recorded history of concurrent reads, writes and CAS on one config entry while
  the leader is SIGKILLed and restarted, which the Wing–Gong checker
  (``node.testing.linearizability``) must find linearizable.

A second group, in network namespaces (the topology of ``test_consensus_partition``),
records the same kind of history while the leader is cut off from the other two and
then healed.

In a history, reads are made on the leader, as Raft allows a leader to answer from its
own copy (see ``_Recorder``): a follower's default read may be stale, and ``?consistent``
is not served yet. A CAS goes to the server whose index it carries (a ModifyIndex is
numbered by each server) and is recorded as expecting the value that server showed.
"""

from __future__ import annotations

import concurrent.futures
import json
import random
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import pytest

from node.testing.linearizability import UNKNOWN, Cas, Operation, Read, Register, Write, check
from node.testing.servers import TRANSIENT, ServerProcesses, loopback
from tests.e2e import test_consensus_partition as partition
from tests.e2e.test_isolated_networks import _can_build_namespaces
from tests.helpers.poll import wait_for_blocking

pytestmark = pytest.mark.slow

#: PySyncObj's raftMaxTimeout, the group's default: the longest a follower waits without
#: hearing from a leader before it stands for election.
ELECTION_TIMEOUT = 1.4
#: Time allowed beyond the election timeout: a split vote costs one more, and the
#: machine is shared (ticks run late under load).
ELECTION_SLACK = 2.0


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcesses]:
    servers = ServerProcesses(tmp_path_factory.mktemp("faults"), loopback(77))
    with servers.running():
        _first_write(servers)
        yield servers


def _first_write(servers: ServerProcesses) -> None:
    wait_for_blocking(
        lambda: _put(servers, 1, "first", "http") == (200, "true"),
        "a first committed write", 60, ignoring=TRANSIENT,
    )  # fmt: skip


def _entry(name: str, protocol: str) -> dict[str, Any]:
    return {"Kind": "service-defaults", "Name": name, "Protocol": protocol}


def _put(
    servers: ServerProcesses, i: int, name: str, protocol: str, cas: int | None = None
) -> tuple[int, str]:
    query = "" if cas is None else f"?cas={cas}"
    status, body = servers.request(
        i, f"/v1/config{query}", method="PUT", body=_entry(name, protocol)
    )
    return status, body.strip()


def _read(servers: ServerProcesses, i: int, name: str) -> tuple[str | None, int]:
    """(Protocol, ModifyIndex) of entry ``name`` on server ``i`` (None, 0: absent)."""
    status, body = servers.request(i, f"/v1/config/service-defaults/{name}", timeout=5.0)
    if status == 404:
        return None, 0
    assert status == 200, (status, body)
    entry = json.loads(body)
    return entry["Protocol"], entry["ModifyIndex"]


def _on_all(servers: ServerProcesses, name: str, among: tuple[int, ...] = (1, 2, 3)) -> set[Any]:
    return {_read(servers, i, name)[0] for i in among}


# --------------------------------------------------------------------------- CAS


def _cas_round(
    group: ServerProcesses, name: str, value: str, round_: int, clients: int
) -> list[tuple[str, tuple[int, str]]]:
    """Every client reads its server's index, then all CAS at once: (value, answer) each."""
    seen = {i: _read(group, i, name) for i in (1, 2, 3)}
    assert {v for v, _ in seen.values()} == {value}
    start = threading.Barrier(clients)

    def race(c: int) -> tuple[str, tuple[int, str]]:
        i = c % 3 + 1
        start.wait(10)
        text = f"r{round_}-c{c}"
        return text, _put(group, i, name, text, cas=seen[i][1])

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        return list(pool.map(race, range(clients)))


def test_Cas_racing_writers_on_one_index_have_exactly_one_winner(group: ServerProcesses) -> None:
    name, clients = "cas-race", 12
    assert _put(group, 1, name, "c0") == (200, "true")
    value = "c0"
    for round_ in range(4):
        wait_for_blocking(
            lambda v=value: _on_all(group, name) == {v}, f"every server showing {value}", 20,
            ignoring=TRANSIENT,
        )  # fmt: skip
        answers = _cas_round(group, name, value, round_, clients)
        winners = [text for text, answer in answers if answer == (200, "true")]
        losers = [text for text, answer in answers if answer == (200, "false")]
        assert len(winners) == 1 and len(losers) == clients - 1, answers
        value = winners[0]
    wait_for_blocking(
        lambda: _on_all(group, name) == {value}, "every server showing the last winner", 20,
        ignoring=TRANSIENT,
    )  # fmt: skip


# --------------------------------------------------------------------------- intentions


def _create_intention(
    servers: ServerProcesses, i: int, source: str, destination: str, action: str
) -> tuple[int, str]:
    body = {"SourceName": source, "DestinationName": destination, "Action": action}
    return servers.request(i, "/v1/connect/intentions", method="POST", body=body)


def _pair_on(servers: ServerProcesses, i: int, source: str, destination: str) -> list[str]:
    listed = servers.get_json(i, "/v1/connect/intentions") or []
    return [
        x["ID"] for x in listed if (x["SourceName"], x["DestinationName"]) == (source, destination)
    ]


def test_Intentions_created_at_once_for_one_pair_leave_exactly_one(group: ServerProcesses) -> None:
    pairs = [(f"src{p}", f"dst{p}") for p in range(4)]
    per_pair = 9  # three clients per server
    jobs = [(pair, c) for pair in pairs for c in range(per_pair)]
    start = threading.Barrier(len(jobs))

    def create(job: tuple[tuple[str, str], int]) -> tuple[tuple[str, str], tuple[int, str]]:
        (source, destination), c = job
        start.wait(10)
        action = "allow" if c % 2 else "deny"
        return (source, destination), _create_intention(
            group, c % 3 + 1, source, destination, action
        )

    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(create, jobs))
    for pair in pairs:
        mine = [answer for p, answer in answers if p == pair]
        created = [json.loads(body)["ID"] for status, body in mine if status == 200]
        refused = [body for status, body in mine if status == 409]
        assert len(created) == 1 and len(refused) == per_pair - 1, (pair, mine)
        assert all(created[0] in body for body in refused), refused
        wait_for_blocking(
            lambda pair=pair, winner=created[0]: all(
                _pair_on(group, i, *pair) == [winner] for i in (1, 2, 3)
            ),
            f"every server holding exactly one intention {pair}", 20, ignoring=TRANSIENT,
        )  # fmt: skip


# --------------------------------------------------------------------------- leader kill


class _Clients:
    """Client threads running ``_run(k)`` until told to stop (leaving the ``with``)."""

    def __init__(self, clients: int) -> None:
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(k,)) for k in range(clients)]

    def __enter__(self) -> Self:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(60)

    def _run(self, k: int) -> None:
        raise NotImplementedError


class _Stream(_Clients):
    """Writers putting distinct entries to every server until told to stop."""

    def __init__(self, servers: ServerProcesses, writers: int) -> None:
        self.servers = servers
        self.acked: dict[str, float] = {}  # entry name → when its write was answered
        self.unknown = 0
        self.unexpected: list[tuple[int, str]] = []
        super().__init__(writers)

    def _run(self, w: int) -> None:
        for n in range(100_000):
            if self.stop.is_set():
                return
            name, i = f"stream-{w}-{n}", (w + n) % 3 + 1
            if not self.servers.alive(i):
                continue
            try:
                answer = _put(self.servers, i, name, "tcp")
            except TRANSIENT:
                answer = (0, "no answer")
            with self._lock:
                if answer == (200, "true"):
                    self.acked[name] = time.monotonic()
                elif answer[0] in (0, 500):  # no answer or No cluster leader: unknown
                    self.unknown += 1
                else:
                    self.unexpected.append(answer)

    def acked_after(self, moment: float) -> int:
        with self._lock:
            return sum(1 for at in self.acked.values() if at > moment)


def _entry_names(servers: ServerProcesses, i: int) -> set[str]:
    listed = servers.get_json(i, "/v1/config/service-defaults") or []
    return {entry["Name"] for entry in listed}


def test_LeaderKill_under_a_write_stream_loses_no_acknowledged_write(
    group: ServerProcesses,
) -> None:
    leader = wait_for_blocking(group.leader, "an agreed leader", 20, ignoring=TRANSIENT)
    survivors = tuple(i for i in (1, 2, 3) if i != leader)
    with _Stream(group, writers=6) as stream:
        wait_for_blocking(lambda: len(stream.acked) >= 30, "writes before the kill", 30)
        group.kill(leader)
        killed_at = time.monotonic()
        new = wait_for_blocking(
            lambda: group.leader(survivors), "a new leader among the survivors",
            ELECTION_TIMEOUT + ELECTION_SLACK + 10, interval=0.02, ignoring=TRANSIENT,
        )  # fmt: skip
        elected_in = time.monotonic() - killed_at
        wait_for_blocking(
            lambda: stream.acked_after(killed_at + elected_in) >= 30, "writes after the kill", 30
        )
    assert not stream.unexpected, stream.unexpected
    print(f"new leader after {elected_in:.2f}s; {len(stream.acked)} writes acknowledged, "
          f"{stream.unknown} unknown")  # fmt: skip
    assert new in survivors
    assert elected_in <= ELECTION_TIMEOUT + ELECTION_SLACK, f"new leader after {elected_in:.2f}s"
    acked = set(stream.acked)
    for i in survivors:
        wait_for_blocking(
            lambda i=i: not acked - _entry_names(group, i),
            lambda i=i: f"server {i} holding every acknowledged write "
            f"(missing: {sorted(acked - _entry_names(group, i))[:10]})",
            30, ignoring=TRANSIENT,
        )  # fmt: skip
    group.start_one(leader)
    wait_for_blocking(
        lambda: not acked - _entry_names(group, leader),
        "the killed server catching up", 60, ignoring=TRANSIENT,
    )  # fmt: skip


# --------------------------------------------------------------------------- history


class _Recorder(_Clients):
    """Clients running reads, writes and CAS on one entry, each operation recorded.

    Reads follow Raft's rule for a leader answering from its own copy (§8 of the Raft
    paper): only once it has committed an entry of its own term, here a write it
    answered itself while every server named it leader (``_ready``), and only if they
    still name it after the read. A new leader's copy lacks what its predecessor
    committed until then: plain reads of the leader right after a kill made a history
    the checker rightly refused.
    """

    def __init__(self, servers: ServerProcesses, name: str, clients: int, seed: int) -> None:
        self.servers = servers
        self.name = name
        self.history: list[Operation] = []
        self.counts = {"read": 0, "write": 0, "cas": 0, "unknown": 0}
        self.unexpected: list[tuple[int, str]] = []
        self._leader: int | None = None  # the leader all servers named when last asked
        self._ready: int | None = None  # ... once it has committed a write of its own
        self._rngs = [random.Random(seed * 1000 + c) for c in range(clients)]
        super().__init__(clients)

    def total(self) -> int:
        with self._lock:
            return len(self.history)

    def _record(self, c: int, input: Any, output: Any, call: float, ret: float | None) -> None:
        with self._lock:
            self.history.append(Operation(c, input, output, call, ret))
            kind = type(input).__name__.lower()
            self.counts["unknown" if output is UNKNOWN else kind] += 1

    def _alive_server(self, rng: random.Random) -> int | None:
        alive = [i for i in (1, 2, 3) if self.servers.alive(i)]
        return rng.choice(alive) if alive else None

    def _run(self, c: int) -> None:
        rng = self._rngs[c]
        for n in range(100_000):
            if self.stop.is_set():
                return
            choice = rng.random()
            try:
                if choice < 0.4:
                    self._read_leader(c)
                elif choice < 0.7:
                    self._write(c, f"w{c}-{n}", rng)
                else:
                    self._cas(c, f"c{c}-{n}", rng)
            except TRANSIENT:
                time.sleep(0.05)

    def _agreed(self) -> int | None:
        """The leader every running server names now (a change forgets ``_ready``)."""
        leader = self.servers.leader()
        with self._lock:
            if leader != self._leader:
                self._leader, self._ready = leader, None
        return leader

    def _committed_at(self, i: int, leader: int | None) -> None:
        """A write sent to ``i`` was committed: ``i`` is ready if it led throughout."""
        if leader == i and self._agreed() == i:
            with self._lock:
                if self._leader == i:
                    self._ready = i

    def _read_leader(self, c: int) -> None:
        leader = self._agreed()
        if leader is None or leader != self._ready:
            time.sleep(0.02)
            return
        call = time.monotonic()
        value, _ = _read(self.servers, leader, self.name)
        ret = time.monotonic()
        if self._agreed() == leader and self._ready == leader:
            self._record(c, Read(), value, call, ret)

    def _write(self, c: int, value: str, rng: random.Random) -> None:
        i = self._alive_server(rng)
        if i is None:
            return
        leader = self._agreed()
        call = time.monotonic()
        try:
            answer = _put(self.servers, i, self.name, value)
        except TRANSIENT:
            answer = (0, "")
        ret = time.monotonic()
        if answer == (200, "true"):
            self._record(c, Write(value), True, call, ret)
            self._committed_at(i, leader)
        elif answer[0] in (0, 500):
            self._record(c, Write(value), UNKNOWN, call, None)
        else:
            self.unexpected.append(answer)

    def _cas(self, c: int, value: str, rng: random.Random) -> None:
        i = self._alive_server(rng)
        if i is None:
            return
        expected, index = _read(self.servers, i, self.name)
        leader = self._agreed()
        call = time.monotonic()
        try:
            answer = _put(self.servers, i, self.name, value, cas=index)
        except TRANSIENT:
            answer = (0, "")
        ret = time.monotonic()
        if answer[0] == 200 and answer[1] in ("true", "false"):
            self._record(c, Cas(expected, value), answer[1] == "true", call, ret)
            if answer[1] == "true":
                self._committed_at(i, leader)
        elif answer[0] in (0, 500):
            self._record(c, Cas(expected, value), UNKNOWN, call, None)
        else:
            self.unexpected.append(answer)


def test_History_of_reads_writes_and_cas_under_a_leader_kill_is_linearizable(
    group: ServerProcesses,
) -> None:
    name = "lin"
    wait_for_blocking(
        lambda: group.leader() is not None, "an agreed leader", 30, ignoring=TRANSIENT
    )
    with _Recorder(group, name, clients=8, seed=11) as recorder:
        wait_for_blocking(lambda: recorder.total() >= 60, "operations before the fault", 30)
        leader = wait_for_blocking(group.leader, "an agreed leader", 20, ignoring=TRANSIENT)
        group.kill(leader)
        before_kill = recorder.total()
        wait_for_blocking(
            lambda: recorder.total() >= before_kill + 60 and group.leader() is not None,
            "operations under a new leader", 30, ignoring=TRANSIENT,
        )  # fmt: skip
        group.start_one(leader)
        wait_for_blocking(
            lambda: group.leader() is not None, "the restarted server following the leader",
            60, ignoring=TRANSIENT,
        )  # fmt: skip
        after_restart = recorder.total()
        wait_for_blocking(
            lambda: recorder.total() >= after_restart + 60, "operations after the restart", 30
        )
    _assert_linearizable(recorder)


def _assert_linearizable(recorder: _Recorder) -> None:
    assert not recorder.unexpected, recorder.unexpected
    counts = recorder.counts
    assert counts["read"] >= 20 and counts["write"] >= 10 and counts["cas"] >= 10, counts
    # The history says something: reads saw many versions, CAS both won and lost.
    seen = {o.output for o in recorder.history if isinstance(o.input, Read)}
    cas = {o.output for o in recorder.history if isinstance(o.input, Cas)}
    assert len(seen) >= 5 and {True, False} <= cas, (seen, cas)
    print(f"history: {counts}, {len(seen)} versions read")
    result = check(recorder.history, Register(initial=None))
    if result.linearizable is not True:
        dump = _dump(recorder.history)
        raise AssertionError(
            f"not linearizable ({counts}; history in {dump}); the longest linearizable "
            f"prefix ends with: {result.order[-3:]}"
        )


def _dump(history: list[Operation]) -> Path:
    """The history as JSON lines, in call order, for a look after a failure."""
    path = Path(tempfile.mkdtemp(prefix="history-")) / "history.jsonl"
    with path.open("w") as out:
        for o in sorted(history, key=lambda o: o.call):
            kind = type(o.input).__name__
            out.write(json.dumps({
                "client": o.client, "op": kind, "input": getattr(o.input, "value", None),
                "expected": getattr(o.input, "expected", None),
                "output": "UNKNOWN" if o.output is UNKNOWN else o.output,
                "call": o.call, "ret": o.ret,
            }) + "\n")  # fmt: skip
    return path


# --------------------------------------------------------------------------- partition


@pytest.fixture
def partitioned(tmp_path: Path) -> Iterator[ServerProcesses]:
    """Three servers in network namespaces (the topology of test_consensus_partition),
    where ``partition._cut`` sets a server's link to the others down."""
    reason = _can_build_namespaces()
    if reason is not None:
        pytest.skip(reason)
    servers = ServerProcesses(
        tmp_path, partition._raft_addr, client=partition._http_addr,
        wrap=lambda i: partition._in_ns(partition.NAMES[i - 1]),
    )  # fmt: skip
    try:
        partition._build()
        with servers.running():
            _first_write(servers)
            yield servers
    finally:
        partition._teardown()


def test_History_of_reads_writes_and_cas_across_a_partition_of_the_leader_is_linearizable(
    partitioned: ServerProcesses,
) -> None:
    group = partitioned
    leader = wait_for_blocking(group.leader, "an agreed leader", 30, ignoring=TRANSIENT)
    others = tuple(i for i in group.numbers if i != leader)
    with _Recorder(group, "lin", clients=8, seed=12) as recorder:
        wait_for_blocking(lambda: recorder.total() >= 60, "operations before the cut", 30)
        partition._cut(partition.NAMES[leader - 1], down=True)
        try:
            cut_at = recorder.total()
            wait_for_blocking(
                lambda: group.leader(others) is not None and recorder.total() >= cut_at + 60,
                "operations under the majority's leader", 60, ignoring=TRANSIENT,
            )  # fmt: skip
        finally:
            partition._cut(partition.NAMES[leader - 1], down=False)
        wait_for_blocking(
            lambda: group.leader() is not None, "the healed server following the leader", 60,
            ignoring=TRANSIENT,
        )  # fmt: skip
        healed_at = recorder.total()
        wait_for_blocking(
            lambda: recorder.total() >= healed_at + 60, "operations after the heal", 30
        )
    _assert_linearizable(recorder)
