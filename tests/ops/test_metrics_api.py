"""/v1/agent/metrics: Consul's summary shape, telemetry options, Prometheus text."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import socket
from pathlib import Path
from typing import Any

import consul
import pytest
from aiohttp.test_utils import TestClient

from node.agent.agent import Agent
from node.api.app import make_app
from node.api.metrics import PROMETHEUS_DISABLED, Retention
from node.config.agent import TelemetryConfig, load
from node.proxy.metrics import ListenerStats
from tests.helpers.cluster import Cluster

Client = TestClient[Any, Any]
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d0 \+0000 UTC$")


def _agent(**telemetry: Any) -> Agent:
    config = load([], dev=True, overrides={"node": "m1", "http-port": 0})
    config = dataclasses.replace(config, telemetry=TelemetryConfig(**telemetry))
    agent = Agent(config)
    stats = agent.proxies.manager.metrics.get("mesh-gateway:lan", "mesh-gateway")
    stats.opened, stats.active, stats.closed, stats.bytes_in, stats.bytes_out = 5, 2, 3, 100, 40
    stats.reject("no_sni")
    return agent


async def _client(aiohttp_client: Any, agent: Agent) -> Client:
    c: Client = await aiohttp_client(make_app(agent))
    return c


def _by_name(entries: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        out.setdefault(entry["Name"], []).append(entry)
    return out


async def test_json_is_consuls_summary_with_listener_and_runtime_figures(
    aiohttp_client: Any,
) -> None:
    client = await _client(aiohttp_client, _agent())
    resp = await client.get("/v1/agent/metrics")
    assert resp.status == 200
    body = await resp.json()
    assert {"Timestamp", "Gauges", "Points", "Counters", "Samples"} <= set(body)
    assert TIMESTAMP.match(body["Timestamp"]), body["Timestamp"]
    assert body["Points"] == [] and body["Samples"] == []
    gauges = _by_name(body["Gauges"])
    host = socket.gethostname()
    for name in ("num_goroutines", "alloc_bytes", "sys_bytes", "total_gc_runs"):
        (gauge,) = gauges[f"consul.{host}.runtime.{name}"]
        assert gauge["Labels"] == {}
    assert gauges[f"consul.{host}.runtime.alloc_bytes"][0]["Value"] > 1_000_000
    assert gauges[f"consul.{host}.runtime.num_goroutines"][0]["Value"] >= 1
    labels = {"listener": "mesh-gateway:lan", "kind": "mesh-gateway"}
    assert gauges["meshnode.proxy.connections_active"] == [
        {"Name": "meshnode.proxy.connections_active", "Value": 2, "Labels": labels}
    ]
    counters = _by_name(body["Counters"])
    for name, total in (
        ("connections_opened", 5),
        ("connections_closed", 3),
        ("bytes_in", 100),
        ("bytes_out", 40),
    ):
        (entry,) = counters[f"meshnode.proxy.{name}"]
        assert entry["Count"] == total and entry["Sum"] == total
        assert entry["Labels"] == labels
        expected = {"Name", "Count", "Rate", "Sum", "Min", "Max", "Mean", "Stddev", "Labels"}
        assert set(entry) == expected
    (rejected,) = counters["meshnode.proxy.connections_rejected"]
    assert rejected["Labels"] == {**labels, "reason": "no_sni"} and rejected["Count"] == 1
    # meshnode's listener rows ride along for its own CLI and scripts.
    assert body["Listeners"][0]["ConnectionsOpened"] == 5


async def test_disable_hostname_and_prefix_name_the_gauges(aiohttp_client: Any) -> None:
    client = await _client(aiohttp_client, _agent(disable_hostname=True, metrics_prefix="mesh"))
    body = await (await client.get("/v1/agent/metrics")).json()
    names = {g["Name"] for g in body["Gauges"]}
    assert "mesh.runtime.num_goroutines" in names
    assert not any(socket.gethostname() in n for n in names)


async def test_prometheus_needs_a_retention_time(aiohttp_client: Any) -> None:
    client = await _client(aiohttp_client, _agent())
    resp = await client.get("/v1/agent/metrics", params={"format": "prometheus"})
    assert resp.status == 200
    assert await resp.text() == ""
    assert resp.headers["X-Consul-Reason"] == PROMETHEUS_DISABLED


async def test_prometheus_text_keeps_its_names_and_retains_stopped_listeners(
    aiohttp_client: Any,
) -> None:
    agent = _agent(prometheus_retention_time=60.0, disable_hostname=True)
    client = await _client(aiohttp_client, agent)
    resp = await client.get("/v1/agent/metrics", params={"format": "prometheus"})
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = await resp.text()
    want = (
        'meshnode_proxy_connections_opened_total{listener="mesh-gateway:lan",kind="mesh-gateway"} 5'
    )
    assert want in text.splitlines()
    assert re.search(r"^consul_runtime_alloc_bytes \d+", text, re.M)
    # The listener stops: its series stays for the retention time.
    agent.proxies.manager.metrics.drop("mesh-gateway:lan")
    text = await (await client.get("/v1/agent/metrics", params={"format": "prometheus"})).text()
    assert want in text.splitlines()
    assert (await client.get("/v1/agent/metrics", params={"format": "xml"})).status == 400


def test_retention_forgets_series_older_than_the_retention_time() -> None:
    retention = Retention()
    a, b = ListenerStats("a", "x"), ListenerStats("b", "x")
    assert retention.update([a, b], now=0.0, keep=10.0) == [a, b]
    assert retention.update([b], now=5.0, keep=10.0) == [a, b]
    assert retention.update([b], now=10.5, keep=10.0) == [b]


async def test_py_consul_reads_metrics(tmp_path: Path) -> None:
    async with Cluster(tmp_path) as cluster:
        agent = await cluster.start("m1", server=True)
        host, port = agent.bound["http"]
        c = consul.Consul(host=host, port=port)
        body = await asyncio.to_thread(c.agent.metrics)
        assert "Timestamp" in body and "Gauges" in body
        text = await asyncio.to_thread(c.agent.metrics, True)
        assert isinstance(text, str)


@pytest.mark.parametrize("value", ['"-1s"', '"soon"'])
def test_bad_retention_time_is_a_config_error(tmp_path: Path, value: str) -> None:
    from node.errors import ConfigError

    path = tmp_path / "a.hcl"
    path.write_text(
        f'data_dir = "{tmp_path}"\ntelemetry {{ prometheus_retention_time = {value} }}\n'
    )
    with pytest.raises(ConfigError, match="telemetry.prometheus_retention_time"):
        load([str(path)])
