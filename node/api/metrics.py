"""``/v1/agent/metrics``: the data plane's counters, per listener, and the DNS listener's.

Rule: the numbers come from the proxy manager's ``MetricsRegistry`` through the agent's
proxy feed (``agent.proxies``) and from ``agent.dns.metrics``; the JSON shape is
``codec.encode_proxy_metrics`` (plus ``"DNS"``: ``codec.encode_dns_metrics``) and the
Prometheus text ``proxy.render_prometheus`` (plus ``dns.server.render_prometheus``). ``?format=prometheus`` selects the latter,
any other format is a 400. Counters are read, never reset, by a request.
"""

from __future__ import annotations

from aiohttp import web

from node.api import codec
from node.api.read import dump_json
from node.api.state import AGENT
from node.dns.server import render_prometheus as render_dns_prometheus
from node.errors import InvalidRequest
from node.proxy.metrics import render_prometheus

__all__ = ["routes", "PROMETHEUS_CONTENT_TYPE"]

routes = web.RouteTableDef()

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@routes.get("/v1/agent/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Connections opened/active/closed, bytes each way, rejections by reason."""
    agent = request.app[AGENT]
    feed, dns = agent.proxies, agent.dns
    fmt = request.query.get("format", "")
    if fmt == "prometheus":
        text = render_prometheus(feed.manager.metrics.all())
        if dns is not None:
            text += render_dns_prometheus(dns.metrics)
        return web.Response(body=text.encode(), headers={"Content-Type": PROMETHEUS_CONTENT_TYPE})
    if fmt:
        raise InvalidRequest(
            f"unknown metrics format {fmt!r} (use format=prometheus, or none for JSON)",
            field="format",
        )
    body = codec.encode_proxy_metrics(feed.manager.listener_rows(), feed.manager.status())
    if dns is not None:
        body["DNS"] = codec.encode_dns_metrics(dns.metrics)
    return web.Response(body=dump_json(body), content_type="application/json")
