"""/v1/agent/monitor and ``meshnode monitor``: live log lines, bounded per reader."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from node.api.monitor import BUFFER_LINES, Subscriber
from tests.helpers.cluster import Cluster
from tests.helpers.poll import wait_for

Client = TestClient[Any, Any]
ROOT = Path(__file__).resolve().parents[2]
log = logging.getLogger("node.test.monitor")


async def _read_until(resp: Any, marker: str, timeout: float = 5.0) -> list[str]:
    lines: list[str] = []
    async with asyncio.timeout(timeout):
        while True:
            raw = await resp.content.readline()
            assert raw, "the stream ended"
            lines.append(raw.decode())
            if marker in lines[-1]:
                return lines


async def test_monitor_streams_lines_at_the_level_asked(client: Client) -> None:
    before = logging.getLogger().level
    assert before > logging.DEBUG
    async with client.get("/v1/agent/monitor", params={"loglevel": "debug"}) as resp:
        assert resp.status == 200
        log.debug("a debug line", extra={"service": "web"})
        log.info("the marker")
        lines = await _read_until(resp, "the marker")
    text = "".join(lines)
    assert "[DEBUG] node.test.monitor: a debug line service=web" in text
    # The node's own level is back once nobody listens at debug.
    await wait_for(lambda: logging.getLogger().level == before, "the level restored", 5.0)


async def test_monitor_filters_below_its_level_and_speaks_json(client: Client) -> None:
    params = {"loglevel": "WARN", "logjson": ""}
    async with client.get("/v1/agent/monitor", params=params) as resp:
        assert resp.status == 200
        log.info("not shown")
        log.warning("shown", extra={"check_id": "c1"})
        log.error("the marker")
        lines = await _read_until(resp, "the marker")
    docs = [json.loads(line) for line in lines]
    assert [d["@message"] for d in docs] == ["shown", "the marker"]
    assert docs[0]["@level"] == "warn" and docs[0]["@module"] == "node.test.monitor"
    assert docs[0]["check_id"] == "c1" and docs[1]["@level"] == "error"


async def test_unknown_level_is_consuls_400(client: Client) -> None:
    resp = await client.get("/v1/agent/monitor", params={"loglevel": "loud"})
    assert resp.status == 400
    assert (await resp.text()).strip() == "Unknown log level: loud"


async def test_a_full_buffer_drops_new_lines_and_never_blocks() -> None:
    sub = Subscriber(logging.INFO, json=False, loop=asyncio.get_running_loop())
    for i in range(BUFFER_LINES + 88):
        sub.offer(f"line {i}\n")
    assert sub.dropped == 88
    lines = sub.take()
    assert len(lines) == BUFFER_LINES and lines[0] == "line 0\n"
    sub.offer("after\n")  # room again once read
    assert sub.take() == ["after\n"]


async def test_lines_from_another_thread_reach_the_reader(client: Client) -> None:
    async with client.get("/v1/agent/monitor") as resp:
        thread = threading.Thread(target=lambda: log.info("from a thread"))
        thread.start()
        thread.join()
        lines = await _read_until(resp, "from a thread")
    assert lines[-1].rstrip().endswith("from a thread")


async def test_meshnode_monitor_prints_the_stream(tmp_path: Path) -> None:
    async with Cluster(tmp_path) as cluster:
        agent = await cluster.start("m1", server=True)
        host, port = agent.bound["http"]
        argv = [sys.executable, "-m", "node", "monitor", "-http-addr", f"{host}:{port}"]
        proc = subprocess.Popen(argv + ["-log-json"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        try:
            got: list[str] = []

            def reader() -> None:
                assert proc.stdout is not None
                for line in proc.stdout:
                    got.append(line)

            threading.Thread(target=reader, daemon=True).start()

            def seen() -> bool:
                log.info("cli marker")
                return any("cli marker" in line for line in got)

            await wait_for(seen, "meshnode monitor prints a logged line", 15.0)
            assert json.loads(next(x for x in got if "cli marker" in x))["@message"] == "cli marker"
        finally:
            proc.terminate()
            proc.wait(10)
        bad = await asyncio.to_thread(
            subprocess.run, argv + ["-log-level", "loud"], cwd=ROOT, capture_output=True, text=True
        )
        assert bad.returncode == 1
        assert "Unknown log level: loud" in bad.stderr
