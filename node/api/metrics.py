"""``/v1/agent/metrics``: Consul's metrics summary (JSON) or Prometheus text.

Rule: the figures are the proxy manager's listener counters (``agent.proxies``) and the
process's runtime gauges, read at request time and never reset by a request. The JSON
is go-metrics' in-memory summary shape (``Timestamp``, ``Gauges``, ``Points``,
``Counters``, ``Samples``); every listener counter is one entry with the listener and
its kind as ``Labels``, holding the running total since the listener started (``Count``
and ``Sum`` are the total of unit increments, ``Rate`` is per second over the agent's
uptime). Runtime gauges use Consul's names under ``telemetry.metrics_prefix`` with the
host name inserted unless ``telemetry.disable_hostname`` (``consul.<host>.runtime.…``);
meshnode's own series are named ``meshnode.proxy.…`` and ``meshnode.dns.…`` (the DNS
listener's counters, ``agent.dns.metrics``), and their Prometheus names are unchanged
(``meshnode_proxy_connections_opened_total``, ``meshnode_dns_queries_total``…). ``?format=prometheus`` is
served only with a positive ``telemetry.prometheus_retention_time`` (otherwise, as
Consul 1.11+ does, an empty 200 with the reason in ``X-Consul-Reason``), and a stopped
listener's series stay for that long. meshnode keys ride along for ``meshnode connect
gateway`` and the scripts: ``Listeners``, ``Proxies`` (addresses and readiness that
have no place in Consul's shape) and ``DNS``.
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from node.api import codec
from node.api.read import dump_json
from node.api.state import AGENT
from node.config.agent import TelemetryConfig
from node.dns.server import DNSMetrics
from node.dns.server import render_prometheus as render_dns_prometheus
from node.errors import InvalidRequest
from node.proxy.metrics import ListenerStats, render_prometheus

__all__ = ["routes", "PROMETHEUS_CONTENT_TYPE", "runtime_gauges", "summary", "Retention"]

routes = web.RouteTableDef()

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PROMETHEUS_DISABLED = "Prometheus is not enabled since its retention time is not positive"
#: go-metrics' in-memory interval (the summary's Timestamp is the current one's start).
INTERVAL = 10
#: When this process started serving metrics (the Rate denominator).
_STARTED = time.monotonic()
_COUNTERS = (
    ("connections_opened", "opened"),
    ("connections_closed", "closed"),
    ("bytes_in", "bytes_in"),
    ("bytes_out", "bytes_out"),
)


@dataclass(frozen=True, slots=True)
class Gauge:
    """One gauge: name parts (without prefix/host) and value."""

    name: str
    value: float


def runtime_gauges() -> list[Gauge]:
    """Consul's ``runtime.*`` gauges, measured on this Python process."""
    gauges = [Gauge("runtime.num_goroutines", float(_task_count()))]
    rss, vms = _memory()
    gauges.append(Gauge("runtime.alloc_bytes", float(rss)))
    gauges.append(Gauge("runtime.sys_bytes", float(vms)))
    gauges.append(
        Gauge("runtime.total_gc_runs", float(sum(s["collections"] for s in gc.get_stats())))
    )
    gauges.append(Gauge("runtime.num_threads", float(_thread_count())))
    return gauges


def _task_count() -> int:
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:  # no running loop (a synchronous caller)
        return 0


def _memory() -> tuple[int, int]:
    # /proc/self/statm: size and resident set, in pages (Linux, which meshnode runs on).
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            size, resident = (int(v) for v in fh.read().split()[:2])
    except (OSError, ValueError):
        return 0, 0
    page = os.sysconf("SC_PAGE_SIZE")
    return resident * page, size * page


def _thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def _counter(name: str, total: int, labels: dict[str, str], uptime: float) -> dict[str, Any]:
    mean = 1.0 if total else 0.0
    return {
        "Name": name,
        "Count": total,
        "Rate": total / uptime if uptime > 0 else 0.0,
        "Sum": float(total),
        "Min": mean,
        "Max": mean,
        "Mean": mean,
        "Stddev": 0.0,
        "Labels": labels,
    }


def _timestamp(now: float) -> str:
    start = datetime.fromtimestamp(now - now % INTERVAL, tz=UTC)
    return start.strftime("%Y-%m-%d %H:%M:%S +0000 UTC")


def gauge_name(telemetry: TelemetryConfig, name: str, host: str) -> str:
    """A runtime gauge's full name: prefix, the host unless disabled, then ``name``."""
    parts = [telemetry.metrics_prefix]
    if not telemetry.disable_hostname:
        parts.append(host)
    return ".".join([*parts, name])


def summary(
    telemetry: TelemetryConfig,
    stats: Iterable[ListenerStats],
    *,
    now: float,
    uptime: float,
    host: str,
    dns: DNSMetrics | None = None,
) -> dict[str, Any]:
    """go-metrics' ``MetricsSummary`` of the listeners' counters and the runtime gauges."""
    gauges = [
        {"Name": gauge_name(telemetry, g.name, host), "Value": g.value, "Labels": {}}
        for g in runtime_gauges()
    ]
    counters: list[dict[str, Any]] = []
    for s in stats:
        labels = {"listener": s.name, "kind": s.kind}
        gauges.append(
            {
                "Name": "meshnode.proxy.connections_active",
                "Value": float(s.active),
                "Labels": labels,
            }
        )
        for suffix, attr in _COUNTERS:
            counters.append(_counter(f"meshnode.proxy.{suffix}", getattr(s, attr), labels, uptime))
        for reason, count in sorted(s.rejected.items()):
            labels_r = {**labels, "reason": reason}
            counters.append(
                _counter("meshnode.proxy.connections_rejected", count, labels_r, uptime)
            )
    if dns is not None:
        counters += _dns_counters(dns, uptime)
    return {
        "Timestamp": _timestamp(now),
        "Gauges": gauges,
        "Points": [],
        "Counters": counters,
        "Samples": [],
    }


def _dns_counters(dns: DNSMetrics, uptime: float) -> list[dict[str, Any]]:
    rows = [
        ("meshnode.dns.queries", dns.queries_udp, {"transport": "udp"}),
        ("meshnode.dns.queries", dns.queries_tcp, {"transport": "tcp"}),
        ("meshnode.dns.cache_hits", dns.cache_hits, {}),
        ("meshnode.dns.recursed", dns.recursed, {}),
        ("meshnode.dns.forwarded", dns.forwarded, {}),
    ]
    rows += [("meshnode.dns.replies", n, {"rcode": k}) for k, n in sorted(dns.replies.items())]
    rows += [("meshnode.dns.rejected", n, {"reason": k}) for k, n in sorted(dns.rejected.items())]
    return [_counter(name, total, labels, uptime) for name, total, labels in rows]


class Retention:
    """Listener stats seen within the Prometheus retention time (stopped ones included)."""

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: dict[str, tuple[ListenerStats, float]] = {}

    def update(
        self, current: Iterable[ListenerStats], now: float, keep: float
    ) -> list[ListenerStats]:
        """Record ``current`` at ``now``; every stats object seen in the last ``keep`` s."""
        for s in current:
            self._seen[s.name] = (s, now)
        for name in [n for n, (_, seen) in self._seen.items() if now - seen > keep]:
            del self._seen[name]
        return [self._seen[name][0] for name in sorted(self._seen)]


RETENTION: web.AppKey[Retention] = web.AppKey("metrics_retention", Retention)


def _prometheus(request: web.Request) -> web.Response:
    agent = request.app[AGENT]
    telemetry = agent.config.telemetry
    if telemetry.prometheus_retention_time <= 0:
        # Consul 1.11+: an empty 200 that says why in a header (py-consul reads it so).
        return web.Response(status=200, headers={"X-Consul-Reason": PROMETHEUS_DISABLED})
    stats = request.app[RETENTION].update(
        agent.proxies.manager.metrics.all(), time.monotonic(), telemetry.prometheus_retention_time
    )
    host = socket.gethostname()
    lines = [render_prometheus(stats)]
    if agent.dns is not None:
        lines.append(render_dns_prometheus(agent.dns.metrics))
    for g in runtime_gauges():
        name = gauge_name(telemetry, g.name, host).replace(".", "_").replace("-", "_")
        lines.append(f"# TYPE {name} gauge\n{name} {g.value:g}\n")
    return web.Response(
        body="".join(lines).encode(), headers={"Content-Type": PROMETHEUS_CONTENT_TYPE}
    )


@routes.get("/v1/agent/metrics")
async def metrics(request: web.Request) -> web.Response:
    """The metrics summary (JSON) or, with ``?format=prometheus``, text exposition."""
    feed = request.app[AGENT].proxies
    fmt = request.query.get("format", "")
    if fmt == "prometheus":
        return _prometheus(request)
    if fmt:
        raise InvalidRequest(
            f"unknown metrics format {fmt!r} (use format=prometheus, or none for JSON)",
            field="format",
        )
    agent = request.app[AGENT]
    body = summary(
        agent.config.telemetry,
        feed.manager.metrics.all(),
        now=time.time(),
        uptime=time.monotonic() - _STARTED,
        host=socket.gethostname(),
        dns=None if agent.dns is None else agent.dns.metrics,
    )
    body.update(codec.encode_proxy_metrics(feed.manager.listener_rows(), feed.manager.status()))
    if agent.dns is not None:
        body["DNS"] = codec.encode_dns_metrics(agent.dns.metrics)
    return web.Response(body=dump_json(body), content_type="application/json")
