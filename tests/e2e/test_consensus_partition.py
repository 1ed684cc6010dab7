"""Three servers of the primary decide by Raft: the one cut off refuses, the majority goes on.

Topology built by this test (root only; iproute2's ``ip netns``):

    ns mr<run>-s1 ─ veth 10.98.0.1 ─┐
    ns mr<run>-s2 ─ veth 10.98.0.2 ─┼─ bridge in ns mr<run>-raft   (gossip, RPC, Raft)
    ns mr<run>-s3 ─ veth 10.98.0.3 ─┘
    root ─ veth 10.<h>.i.1 ── 10.<h>.i.2 in ns mr<run>-si         (the test's HTTP)

Names and the root side's subnet carry this run's process id, so two sessions running
the suite on one machine never touch each other's namespaces.

The servers start with ``bootstrap_expect = 3`` and say that they wait; ``/v1/status``
tells the Raft leader and voters. Cutting a server sets its bridge link down: its gossip, RPC and Raft ports are
unreachable both ways, as a network partition would make them, while the test still
reaches its HTTP API over its own link. While s3 is cut off it refuses writes with
``No cluster leader``; the majority accepts them; racing ``?cas=`` writes have exactly
one winner; a second intention for the same pair is refused with a 409 naming the
first. After the heal every server holds the same entry and one intention for the pair.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import TRANSIENT, Proc
from tests.e2e.test_isolated_networks import _can_build_namespaces, _ip
from tests.helpers.poll import wait_for_blocking

pytestmark = pytest.mark.slow

NAMES = ("s1", "s2", "s3")
RUN = f"{os.getpid() % 0x10000:04x}"  # in every name this run creates
HTTP_NET = 100 + os.getpid() % 100  # second octet of the root side's links
KEY = "40ktMI6KLLRKJH/wwlQ1jp32056G4Dexno7mg5Y/k0s="


def _raft_addr(i: int) -> str:
    return f"10.98.0.{i}"


def _http_addr(i: int) -> str:
    return f"10.{HTTP_NET}.{i}.2"


def _ns(name: str) -> str:
    return f"mr{RUN}-{name}"


def _in_ns(name: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", _ns(name), *argv]


def _teardown() -> None:
    for ns in ("raft", *NAMES):
        _ip("netns", "del", _ns(ns), check=False)
    for i in range(1, 4):
        _ip("link", "del", f"r{RUN}h{i}", check=False)


def _build() -> None:
    _teardown()
    bridge = _ns("raft")
    _ip("netns", "add", bridge)
    _ip("-n", bridge, "link", "add", "br0", "type", "bridge")
    _ip("-n", bridge, "link", "set", "br0", "up")
    for i, name in enumerate(NAMES, 1):
        ns = _ns(name)
        _ip("netns", "add", ns)
        _ip("-n", ns, "link", "set", "lo", "up")
        wire, port = f"r{RUN}{i}w", f"r{RUN}{i}b"
        _ip("link", "add", wire, "type", "veth", "peer", "name", port)
        _ip("link", "set", wire, "netns", ns)
        _ip("link", "set", port, "netns", bridge)
        _ip("-n", ns, "link", "set", wire, "name", "raft0")
        _ip("-n", ns, "addr", "add", f"{_raft_addr(i)}/24", "dev", "raft0")
        _ip("-n", ns, "link", "set", "raft0", "up")
        _ip("-n", bridge, "link", "set", port, "master", "br0")
        _ip("-n", bridge, "link", "set", port, "up")
        # The test's own link to the server's HTTP API.
        host, inner = f"r{RUN}h{i}", f"r{RUN}h{i}n"
        _ip("link", "add", host, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", ns)
        _ip("addr", "add", f"10.{HTTP_NET}.{i}.1/24", "dev", host)
        _ip("link", "set", host, "up")
        _ip("-n", ns, "addr", "add", f"{_http_addr(i)}/24", "dev", inner)
        _ip("-n", ns, "link", "set", inner, "up")


def _cut(name: str, down: bool) -> None:
    _ip("-n", _ns(name), "link", "set", "raft0", "down" if down else "up")


def _request(i: int, path: str, *, method: str = "GET", body: Any = None) -> tuple[int, str]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{_http_addr(i)}:8500{path}", data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _entry(text: str) -> dict[str, Any]:
    return {"Kind": "service-defaults", "Name": "web", "Protocol": text}


def _put_entry(i: int, text: str, cas: int | None = None) -> tuple[int, str]:
    query = "" if cas is None else f"?cas={cas}"
    return _request(i, f"/v1/config{query}", method="PUT", body=_entry(text))


def _entry_on(i: int) -> dict[str, Any] | None:
    status, body = _request(i, "/v1/config/service-defaults/web")
    return json.loads(body) if status == 200 else None


def _pair_on(i: int) -> list[dict[str, Any]]:
    status, body = _request(i, "/v1/connect/intentions")
    ixns = json.loads(body) if status == 200 else []
    return [x for x in ixns if (x["SourceName"], x["DestinationName"]) == ("p", "q")]


class Servers:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[Proc] = []

    def start(self) -> None:
        for i in (1, 2, 3):
            self.start_one(i)

    def start_one(self, i: int) -> None:
        name = NAMES[i - 1]
        others = [f'"{_raft_addr(j)}"' for j in range(1, 4) if j != i]
        config = self.workdir / f"{name}.hcl"
        config.write_text(
            f'datacenter = "dc1"\nprimary_datacenter = "dc1"\nnode_name = "{name}"\n'
            f"server = true\nbootstrap_expect = 3\n"
            f'bind_addr = "{_raft_addr(i)}"\nclient_addr = "{_http_addr(i)}"\n'
            f'encrypt = "{KEY}"\nretry_join = [{", ".join(others)}]\n'
            f'data_dir = "{self.workdir / "data" / name}"\nlog_level = "INFO"\n'
            "connect {\n  enabled = true\n}\n"
        )
        argv = [sys.executable, "-m", "node", "agent", "-config-file", str(config)]
        proc = Proc(name, _in_ns(name, *argv), self.workdir / f"{name}.log")
        if len(self.procs) >= i:
            self.procs[i - 1] = proc
        else:
            self.procs.append(proc)
        proc.start()

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.tail(40)}" for p in self.procs)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    reason = _can_build_namespaces()
    if reason is not None:
        pytest.skip(reason)
    group = Servers(tmp_path_factory.mktemp("raft"))
    try:
        _build()
        group.start()
        wait_for_blocking(
            lambda: _put_entry(1, "http")[0] == 200, "a first committed write", 60,
            ignoring=TRANSIENT,
        )  # fmt: skip
        yield group
    except BaseException:
        print(group.logs())
        raise
    finally:
        group.stop()
        subprocess.run(["sleep", "0.2"], check=False)
        _teardown()


def test_RaftPartition_minority_refuses_majority_decides_and_all_agree_after_heal(
    servers: Servers,
) -> None:
    try:
        _run_partition()
    except BaseException:
        print(servers.logs())
        raise


def _status(i: int, what: str) -> Any:
    status, body = _request(i, f"/v1/status/{what}")
    return json.loads(body) if status == 200 else None


def test_RaftStatus_bootstrap_expect_was_awaited_and_status_tells_the_raft_truth(
    servers: Servers,
) -> None:
    for proc in servers.procs:
        text = proc.log.read_text(errors="replace")
        assert "waiting for 3 servers to join before forming the Raft group" in text
    voters = sorted(f"{_raft_addr(i)}:8300" for i in (1, 2, 3))
    wait_for_blocking(
        lambda: all(sorted(_status(i, "peers") or []) == voters for i in (1, 2, 3))
        and len({_status(i, "leader") for i in (1, 2, 3)}) == 1,
        "one leader and three voters on every server", 30, ignoring=TRANSIENT,
    )  # fmt: skip
    assert _status(1, "leader") in voters


def _run_partition() -> None:
    wait_for_blocking(
        lambda: all((_entry_on(i) or {}).get("Protocol") == "http" for i in (1, 2, 3)),
        "the first write on every server", 30, ignoring=TRANSIENT,
    )  # fmt: skip
    _cut("s3", down=True)
    try:
        # The cut-off server refuses, and changes nothing.
        status, body = _put_entry(3, "grpc")
        assert (status, body.strip()) == (500, "No cluster leader")
        status, body = _request(
            3, "/v1/connect/intentions", method="POST",
            body={"SourceName": "p", "DestinationName": "q", "Action": "deny"},
        )  # fmt: skip
        assert (status, body.strip()) == (500, "No cluster leader")
        wait_for_blocking(
            lambda: _status(3, "leader") == "", "s3 knowing it has no leader", 15,
            ignoring=TRANSIENT,
        )  # fmt: skip
        # The majority goes on (once it has a leader again, if s3 was the leader).
        wait_for_blocking(
            lambda: _put_entry(1, "tcp") == (200, "true"), "a majority write", 30,
            ignoring=TRANSIENT,
        )  # fmt: skip
        # Racing CAS writes with the index each side last saw: exactly one winner.
        wait_for_blocking(
            lambda: (_entry_on(2) or {}).get("Protocol") == "tcp", "s2 sees tcp", 10,
            ignoring=TRANSIENT,
        )  # fmt: skip
        seen = {i: (_entry_on(i) or {})["ModifyIndex"] for i in (1, 2, 3)}
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(lambda i: _put_entry(i, f"cas-{i}", cas=seen[i]), (1, 2, 3)))
        assert answers[2][0] == 500 and "No cluster leader" in answers[2][1]
        assert _status(1, "leader") in (f"{_raft_addr(1)}:8300", f"{_raft_addr(2)}:8300")
        assert sorted(a[1].strip() for a in answers[:2]) == ["false", "true"]
        # One intention per pair: the majority's second one is refused, naming the first.
        status, body = _request(
            1, "/v1/connect/intentions", method="POST",
            body={"SourceName": "p", "DestinationName": "q", "Action": "allow"},
        )  # fmt: skip
        assert status == 200, body
        first = json.loads(body)["ID"]
        status, body = _request(
            2, "/v1/connect/intentions", method="POST",
            body={"SourceName": "p", "DestinationName": "q", "Action": "deny"},
        )  # fmt: skip
        assert status == 409 and first in body, (status, body)
    finally:
        _cut("s3", down=False)
    winner = "cas-1" if answers[0][1].strip() == "true" else "cas-2"
    wait_for_blocking(
        lambda: all((_entry_on(i) or {}).get("Protocol") == winner for i in (1, 2, 3))
        and all(len(_pair_on(i)) == 1 for i in (1, 2, 3)),
        "every server agreeing after the heal", 60, ignoring=TRANSIENT,
    )  # fmt: skip
    assert {_pair_on(i)[0]["Action"] for i in (1, 2, 3)} == {"allow"}


def test_RaftDurability_a_killed_server_catches_up_and_a_whole_restart_keeps_every_write(
    servers: Servers,
) -> None:
    try:
        _run_restarts(servers)
    except BaseException:
        print(servers.logs())
        raise


def _run_restarts(servers: Servers) -> None:
    wait_for_blocking(
        lambda: _put_entry(1, "before-kill") == (200, "true"), "a write", 30, ignoring=TRANSIENT
    )
    servers.procs[1].kill()  # s2, SIGKILL
    for n in range(5):
        wait_for_blocking(
            lambda n=n: _put_entry(1, f"while-down-{n}") == (200, "true"),
            "a write with s2 down", 30, ignoring=TRANSIENT,
        )  # fmt: skip
    servers.start_one(2)
    wait_for_blocking(
        lambda: (_entry_on(2) or {}).get("Protocol") == "while-down-4",
        "s2 catching up after SIGKILL", 60, ignoring=TRANSIENT,
    )  # fmt: skip
    for proc in servers.procs:
        proc.kill()
    for i in (1, 2, 3):
        servers.start_one(i)
    wait_for_blocking(
        lambda: all((_entry_on(i) or {}).get("Protocol") == "while-down-4" for i in (1, 2, 3))
        and all(len(_pair_on(i)) == 1 for i in (1, 2, 3)),
        "every committed write after the whole group restarted", 60, ignoring=TRANSIENT,
    )  # fmt: skip
    # The group's own state came back from its log, not only each server's copy: a CAS
    # on the index just read holds, and the pair's intention still refuses a second one.
    index = (_entry_on(3) or {})["ModifyIndex"]
    wait_for_blocking(
        lambda: _put_entry(3, "after-restart", cas=index) == (200, "true"),
        "a CAS write after the restart", 60, ignoring=TRANSIENT,
    )  # fmt: skip
    status, body = _request(
        2, "/v1/connect/intentions", method="POST",
        body={"SourceName": "p", "DestinationName": "q", "Action": "deny"},
    )  # fmt: skip
    assert status == 409 and _pair_on(2)[0]["ID"] in body, (status, body)
