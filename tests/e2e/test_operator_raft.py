"""The operator's Raft commands against three real servers on loopback addresses.

Each server has its own loopback address (``127.<run>.77.<i>``, the second octet from
this run's process id) with Consul's ports, so the Raft port is 18300 everywhere. The
test lists the peers (``meshnode operator raft list-peers``, Consul's table), hands
leadership to a chosen follower (``transfer-leader -id``), lets a server leave
gracefully (``meshnode leave``: it is removed from the configuration), starts a new
server that the leader adds, SIGKILLs it and removes it with ``remove-peer``, and checks
that the two servers left still commit writes.
"""

from __future__ import annotations

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

from tests.e2e.harness import ROOT, TRANSIENT, Proc
from tests.helpers.poll import wait_for_blocking

pytestmark = pytest.mark.slow

NET = 150 + os.getpid() % 100
KEY = "40ktMI6KLLRKJH/wwlQ1jp32056G4Dexno7mg5Y/k0s="


def _ip(i: int) -> str:
    return f"127.{NET}.77.{i}"


def _request(i: int, path: str, *, method: str = "GET", body: Any = None) -> tuple[int, str]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{_ip(i)}:8500{path}", data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _json(i: int, path: str) -> Any:
    status, body = _request(i, path)
    return json.loads(body) if status == 200 else None


def _cli(i: int, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "node", "operator", "raft", *args, "-http-addr", f"{_ip(i)}:8500"]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)


def _voters(i: int) -> list[str]:
    config = _json(i, "/v1/operator/raft/configuration") or {"Servers": []}
    return sorted(s["Node"] for s in config["Servers"])


def _put(i: int, text: str) -> tuple[int, str]:
    entry = {"Kind": "service-defaults", "Name": "web", "Protocol": text}
    return _request(i, "/v1/config", method="PUT", body=entry)


class Servers:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: dict[int, Proc] = {}

    def start(self, i: int, join: tuple[int, ...]) -> None:
        name = f"s{i}"
        config = self.workdir / f"{name}.hcl"
        peers = ", ".join(f'"{_ip(j)}"' for j in join)
        config.write_text(
            f'datacenter = "dc1"\nprimary_datacenter = "dc1"\nnode_name = "{name}"\n'
            f"server = true\nbootstrap_expect = 3\n"
            f'bind_addr = "{_ip(i)}"\nclient_addr = "{_ip(i)}"\n'
            f'encrypt = "{KEY}"\nretry_join = [{peers}]\n'
            f'data_dir = "{self.workdir / "data" / name}"\nlog_level = "INFO"\n'
        )
        argv = [sys.executable, "-m", "node", "agent", "-config-file", str(config)]
        self.procs[i] = Proc(name, argv, self.workdir / f"{name}.log")
        self.procs[i].start()

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.kill()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.tail(40)}" for p in self.procs.values())


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    group = Servers(tmp_path)
    try:
        for i in (1, 2, 3):
            group.start(i, tuple(j for j in (1, 2, 3) if j != i))
        wait_for_blocking(lambda: _put(1, "http")[0] == 200, "a first committed write", 60,
                          ignoring=TRANSIENT)  # fmt: skip
        yield group
    except BaseException:
        print(group.logs())
        raise
    finally:
        group.stop()


def test_OperatorRaft_list_transfer_leave_join_and_remove_a_failed_server(
    servers: Servers,
) -> None:
    try:
        _run(servers)
    except BaseException:
        print(servers.logs())
        raise


def _run(servers: Servers) -> None:
    wait_for_blocking(lambda: _voters(1) == ["s1", "s2", "s3"], "three voters", 30,
                      ignoring=TRANSIENT)  # fmt: skip
    listed = _cli(2, "list-peers")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["Node", "ID", "Address", "State", "Voter", "RaftProtocol"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert sorted(rows) == ["s1", "s2", "s3"]
    assert [r[3] for r in rows.values()].count("leader") == 1
    assert {r[2] for r in rows.values()} == {f"{_ip(i)}:8300" for i in (1, 2, 3)}

    # Leadership moves to the follower chosen by id.
    target = next(name for name, r in rows.items() if r[3] == "follower")
    moved = _cli(1, "transfer-leader", "-id", rows[target][1])
    assert (moved.returncode, moved.stdout.strip()) == (0, "Success"), moved.stderr
    wait_for_blocking(lambda: _json(1, "/v1/status/leader") == rows[target][2],
                      "the chosen server leading", 15, ignoring=TRANSIENT)  # fmt: skip

    # The leader leaves gracefully: it hands over, and is removed from the configuration.
    leaving = int(target[1])
    left = subprocess.run(
        [sys.executable, "-m", "node", "leave", "-http-addr", f"{_ip(leaving)}:8500"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert left.returncode == 0, left.stderr
    rest = [i for i in (1, 2, 3) if i != leaving]
    wait_for_blocking(
        lambda: all(_voters(i) == sorted(f"s{j}" for j in rest) for i in rest),
        "the leaver removed from the configuration", 30, ignoring=TRANSIENT,
    )  # fmt: skip
    assert sorted(_json(rest[0], "/v1/status/peers")) == [f"{_ip(i)}:8300" for i in rest]
    assert _put(rest[0], "after-leave") == (200, "true")

    # A new server joins later: the leader adds it.
    servers.start(4, tuple(rest))
    wait_for_blocking(
        lambda: _voters(rest[0]) == sorted([*(f"s{j}" for j in rest), "s4"]),
        "the new server added", 45, ignoring=TRANSIENT,
    )  # fmt: skip
    wait_for_blocking(lambda: _json(4, "/v1/config/service-defaults/web") is not None,
                      "the new server holding the state", 30, ignoring=TRANSIENT)  # fmt: skip

    # It fails; the operator removes it; two voters of two go on committing.
    servers.procs[4].kill()
    wait_for_blocking(
        lambda: {m["Name"]: m["Status"] for m in _json(rest[0], "/v1/agent/members") or []}.get(
            "s4"
        ) == 4,
        "the killed server seen failed", 30, ignoring=TRANSIENT,
    )  # fmt: skip
    removed = _cli(rest[0], "remove-peer", "-address", f"{_ip(4)}:8300")
    assert (removed.returncode, removed.stdout.strip()) == (
        0, f'Removed peer with address "{_ip(4)}:8300"',
    ), removed.stderr  # fmt: skip
    assert _voters(rest[1]) == sorted(f"s{j}" for j in rest)
    wait_for_blocking(lambda: _put(rest[1], "two-of-two") == (200, "true"),
                      "a write with two voters", 30, ignoring=TRANSIENT)  # fmt: skip
    unknown = _cli(rest[0], "remove-peer", "-address", f"{_ip(4)}:8300")
    assert unknown.returncode == 1
    assert f'address \\"{_ip(4)}:8300\\" was not found' in unknown.stderr or (
        f'address "{_ip(4)}:8300" was not found in the Raft configuration' in unknown.stderr
    )
