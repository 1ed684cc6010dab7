"""Listener counters rendered as JSON and Prometheus text."""

from __future__ import annotations

from node.proxy.metrics import MetricsRegistry, render_prometheus


def test_MetricsRegistry_json_and_prometheus() -> None:
    reg = MetricsRegistry()
    gw = reg.get("gw:default", "mesh-gateway")
    gw.opened, gw.active, gw.closed, gw.bytes_in, gw.bytes_out = 3, 1, 2, 100, 50
    gw.reject("no_sni")
    gw.reject("no_sni")
    up = reg.get('web:upstream:"odd"', "upstream")
    assert reg.get("gw:default", "mesh-gateway") is gw
    assert reg.as_json()["listeners"][0] == {
        "name": "gw:default",
        "kind": "mesh-gateway",
        "connections_opened": 3,
        "connections_active": 1,
        "connections_closed": 2,
        "bytes_in": 100,
        "bytes_out": 50,
        "rejected": {"no_sni": 2},
    }
    text = render_prometheus(reg.all())
    assert (
        'meshnode_proxy_connections_opened_total{listener="gw:default",kind="mesh-gateway"} 3\n'
        in text
    )
    assert 'meshnode_proxy_bytes_out_total{listener="gw:default",kind="mesh-gateway"} 50\n' in text
    assert (
        'meshnode_proxy_connections_rejected_total{listener="gw:default",kind="mesh-gateway",reason="no_sni"} 2\n'
        in text
    )
    assert 'listener="web:upstream:\\"odd\\""' in text
    assert "# TYPE meshnode_proxy_connections_active gauge" in text
    assert up.opened == 0
    reg.drop("gw:default")
    assert [s.name for s in reg.all()] == [up.name]
