"""Real server processes: the cluster of the fault-injection tests and benchmarks.

Rule: each server is a ``python -m node agent`` process of its own session, with a
config file written here (Consul's default ports on its own address, by default a
loopback address (``loopback``), its own ``data_dir``, the others in ``retry_join``;
optionally started inside a network namespace by ``wrap``), so faults are dealt
the way they happen: ``kill`` sends a real signal to a real process. Nothing here waits
for a condition (callers poll with their own deadlines); ``kill`` reaps within a bound and
``stop`` kills every process started here.

The loopback addresses carry the process id, so two sessions running
tests or benchmarks on one machine never bind the same addresses.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

__all__ = ["ServerProcesses", "loopback", "KEY", "HTTP_PORT", "TRANSIENT"]

ROOT: Final = Path(__file__).resolve().parents[2]
#: A gossip key (the servers' Raft traffic is sealed with it).
KEY: Final = "40ktMI6KLLRKJH/wwlQ1jp32056G4Dexno7mg5Y/k0s="
HTTP_PORT: Final = 8500
#: Exceptions of a request to a server that is starting, stopping or cut off.
TRANSIENT: Final = (OSError, ValueError)


def loopback(second_octet: int) -> Callable[[int], str]:
    """Server ``i`` → ``127.<second_octet>.<from this process id>.<i>``: addresses no
    other session uses."""
    base = f"127.{second_octet}.{os.getpid() % 250 + 1}"
    return lambda i: f"{base}.{i}"


class ServerProcesses:
    """``count`` servers of datacenter ``dc1`` (see the module rule), numbered from 1.

    ``bind(i)`` is server ``i``'s gossip, RPC and Raft address; ``client(i)`` its HTTP
    address (default: the same); ``wrap(i)`` an argv prefix to start it with (e.g.
    ``ip netns exec <ns>``).
    """

    def __init__(
        self,
        workdir: Path,
        bind: Callable[[int], str],
        *,
        client: Callable[[int], str] | None = None,
        wrap: Callable[[int], Sequence[str]] = lambda i: (),
        count: int = 3,
        bootstrap_expect: int | None = 3,
        log_level: str = "INFO",
    ) -> None:
        self.workdir = workdir
        self.bind = bind
        self.client = client or bind
        self.wrap = wrap
        self.count = count
        self.bootstrap_expect = bootstrap_expect
        self.log_level = log_level
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def numbers(self) -> range:
        """The servers' numbers."""
        return range(1, self.count + 1)

    def http_url(self, i: int) -> str:
        """Server ``i``'s HTTP API."""
        return f"http://{self.client(i)}:{HTTP_PORT}"

    def log_path(self, i: int) -> Path:
        """Server ``i``'s output."""
        return self.workdir / f"s{i}.log"

    # --- processes ----------------------------------------------------------------------

    def start(self) -> None:
        """Start every server."""
        for i in self.numbers:
            self.start_one(i)

    def start_one(self, i: int) -> None:
        """Start (or restart, keeping its data_dir) server ``i``."""
        self.kill(i)
        config = self.workdir / f"s{i}.hcl"
        config.write_text(self._config(i))
        argv = [*self.wrap(i), sys.executable, "-m", "node", "agent", "-config-file", str(config)]
        with self.log_path(i).open("ab") as out:
            self.procs[i] = subprocess.Popen(
                argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def _config(self, i: int) -> str:
        others = ", ".join(f'"{self.bind(j)}"' for j in self.numbers if j != i)
        expect = (
            "" if self.bootstrap_expect is None else f"bootstrap_expect = {self.bootstrap_expect}\n"
        )
        return (
            f'datacenter = "dc1"\nprimary_datacenter = "dc1"\nnode_name = "s{i}"\n'
            f"server = true\n{expect}"
            f'bind_addr = "{self.bind(i)}"\nclient_addr = "{self.client(i)}"\n'
            f'encrypt = "{KEY}"\nretry_join = [{others}]\n'
            f'data_dir = "{self.workdir / "data" / f"s{i}"}"\nlog_level = "{self.log_level}"\n'
            "connect {\n  enabled = true\n}\n"
        )

    def alive(self, i: int) -> bool:
        """Whether server ``i``'s process runs."""
        proc = self.procs.get(i)
        return proc is not None and proc.poll() is None

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to server ``i``'s session and reap it (SIGKILL after 10 s)."""
        proc = self.procs.get(i)
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def stop(self) -> None:
        """Kill every server."""
        for i in list(self.procs):
            self.kill(i)

    def logs(self, lines: int = 40) -> str:
        """The last ``lines`` of every server's output."""
        parts = []
        for i in self.numbers:
            try:
                text = self.log_path(i).read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                text = []
            parts.append(f"--- s{i}\n" + "\n".join(text))
        return "\n".join(parts)

    @contextmanager
    def running(self) -> Iterator[ServerProcesses]:
        """Start them; stop them on the way out, printing their logs if it failed."""
        try:
            self.start()
            yield self
        except BaseException:
            print(self.logs())
            raise
        finally:
            self.stop()

    # --- HTTP ---------------------------------------------------------------------------

    def request(
        self, i: int, path: str, *, method: str = "GET", body: Any = None, timeout: float = 20.0
    ) -> tuple[int, str]:
        """One request to server ``i``'s API: (status, body text); raises ``OSError`` when
        no answer came."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.http_url(i) + path, data=data, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def get_json(self, i: int, path: str) -> Any:
        """A GET's JSON body, or ``None`` unless it answered 200."""
        status, body = self.request(i, path, timeout=5.0)
        return json.loads(body) if status == 200 else None

    def leader(self, among: Iterable[int] | None = None) -> int | None:
        """The number of the server that the servers ``among`` (default: every running one)
        all name as the Raft leader, if they agree on a running one."""
        asked = [i for i in (self.numbers if among is None else among) if self.alive(i)]
        named = set()
        for i in asked:
            try:
                named.add(self.get_json(i, "/v1/status/leader"))
            except TRANSIENT:
                return None
        if len(named) != 1:
            return None
        host = str(named.pop()).rsplit(":", 1)[0]
        for i in asked:
            if self.bind(i) == host:
                return i
        return None
