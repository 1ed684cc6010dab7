"""Two datacenters in one process: app → upstream listener → gw1 → gw2 → public listener → app.

Each DC has a ``ProxyManager`` fed with snapshots and updates exactly as the agent will
feed it. Loopback addresses stand in for networks: gateways bind their LAN address on
127.0.0.1 and their WAN address on 127.0.0.2, so the gateways' per-listener metrics show
which address each hop used. The path each mode takes is proven by those metrics.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

import pytest

from node.proxy.manager import ProxyManager
from node.proxy.metrics import ListenerStats
from node.proxy.snapshot import (
    EndpointInfo,
    GatewayBind,
    GatewayEndpointsUpdate,
    Leaf,
    LeafUpdate,
    PublicSpec,
    Roots,
    RootsUpdate,
    ServiceEndpointsUpdate,
    UpstreamSpec,
    UpstreamsUpdate,
    new_gateway_snapshot,
    new_sidecar_snapshot,
)
from tests.helpers.ca import TD, MeshTestCA
from tests.helpers.poll import wait_for
from tests.proxy.proxy_helpers import Backend, read_until_closed

LAN, WAN = "127.0.0.1", "127.0.0.2"


def _wan_usable() -> bool:
    try:
        s = socket.socket()
        s.bind((WAN, 0))
        s.close()
        return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _wan_usable(), reason="127.0.0.2 not bindable")


def free_port(host: str = LAN) -> int:
    s = socket.socket()
    s.bind((host, 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


@dataclass
class World:
    ca: MeshTestCA
    m1: ProxyManager
    m2: ProxyManager
    apps: dict[str, Backend]
    gw1_port: int
    gw2_port: int
    public_ports: dict[str, int]
    upstream_ports: dict[str, int]

    def gw(self, manager: ProxyManager, name: str) -> ListenerStats:
        ls = manager.listener(name)
        assert ls is not None, name
        return ls.stats

    def gateway_counts(self) -> dict[str, int]:
        return {
            "gw1-lan": self.gw(self.m1, "gw1:default").opened,
            "gw1-wan": self.gw(self.m1, "gw1:wan").opened,
            "gw2-lan": self.gw(self.m2, "gw2:default").opened,
            "gw2-wan": self.gw(self.m2, "gw2:wan").opened,
        }


def roots_update(ca: MeshTestCA) -> RootsUpdate:
    return RootsUpdate(roots=Roots(trust_domain=TD, roots_pem=(ca.root_pem,)))


def leaf_update(ca: MeshTestCA, service: str, dc: str) -> LeafUpdate:
    cert, key = ca.leaf(service, dc)
    return LeafUpdate(leaf=Leaf(cert_pem=cert, key_pem=key))


def gateway_binds(port: int) -> tuple[GatewayBind, ...]:
    return (
        GatewayBind(name="default", address=LAN, port=port),
        GatewayBind(name="wan", address=WAN, port=port),
    )


def ep(port: int, *, healthy: bool = True) -> EndpointInfo:
    return EndpointInfo(address=LAN, port=port, wan_address=WAN, wan_port=port, healthy=healthy)


def sidecar_ep(port: int) -> EndpointInfo:
    # Sidecars have no WAN tag: their WAN address is their LAN address.
    return EndpointInfo(address=LAN, port=port, healthy=True)


SERVICES = ("api", "db", "logging")


async def build_world(ca: MeshTestCA, upstreams: tuple[UpstreamSpec, ...]) -> World:
    m1 = ProxyManager(authorizer_for=lambda svc: lambda src: src == "web", coalesce_delay=0.02)
    m2 = ProxyManager(authorizer_for=lambda svc: lambda src: src == "web", coalesce_delay=0.02)
    gw1_port, gw2_port = free_port(), free_port()
    apps = {svc: await Backend().start() for svc in SERVICES}
    public_ports = {svc: free_port() for svc in SERVICES}
    # dc2: one sidecar per service, and the gateway.
    for svc in SERVICES:
        pid = f"{svc}-sidecar-proxy"
        public = PublicSpec(
            bind_address=LAN, bind_port=public_ports[svc], local_port=apps[svc].port
        )
        m2.set_snapshot(
            new_sidecar_snapshot(proxy_id=pid, service=svc, local_dc="dc2", public=public)
        )
        m2.update(pid, roots_update(ca))
        m2.update(pid, leaf_update(ca, svc, "dc2"))
    m2.set_snapshot(
        new_gateway_snapshot(proxy_id="gw2", local_dc="dc2", binds=gateway_binds(gw2_port))
    )
    m2.update("gw2", roots_update(ca))
    for svc in SERVICES:
        eps = (sidecar_ep(public_ports[svc]),)
        m2.update("gw2", ServiceEndpointsUpdate(service=svc, datacenter="dc2", endpoints=eps))
    m2.update("gw2", GatewayEndpointsUpdate(datacenter="dc1", endpoints=(ep(gw1_port),)))
    # dc1: the gateway and web's sidecar (no public listener needed here).
    m1.set_snapshot(
        new_gateway_snapshot(proxy_id="gw1", local_dc="dc1", binds=gateway_binds(gw1_port))
    )
    m1.update("gw1", roots_update(ca))
    m1.update("gw1", GatewayEndpointsUpdate(datacenter="dc2", endpoints=(ep(gw2_port),)))
    web = new_sidecar_snapshot(
        proxy_id="web-sidecar-proxy", service="web", local_dc="dc1", public=None
    )
    m1.set_snapshot(web)
    for u in (
        roots_update(ca),
        leaf_update(ca, "web", "dc1"),
        UpstreamsUpdate(upstreams=upstreams),
        GatewayEndpointsUpdate(datacenter="dc1", endpoints=(ep(gw1_port),)),
        GatewayEndpointsUpdate(datacenter="dc2", endpoints=(ep(gw2_port),)),
    ):
        m1.update("web-sidecar-proxy", u)
    for svc in SERVICES:
        eps = (sidecar_ep(public_ports[svc]),)
        m1.update(
            "web-sidecar-proxy",
            ServiceEndpointsUpdate(service=svc, datacenter="dc2", endpoints=eps),
        )
    await m1.wait_idle()
    await m2.wait_idle()
    for m in (m1, m2):
        assert all(not s.errors for s in m.status().values()), m.status()
    return World(
        ca,
        m1,
        m2,
        apps,
        gw1_port,
        gw2_port,
        public_ports,
        {u.service: u.bind_port for u in upstreams},
    )


async def teardown(w: World) -> None:
    await w.m1.aclose()
    await w.m2.aclose()
    for app in w.apps.values():
        await app.aclose()


async def call(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(LAN, port)
    writer.write(payload)
    got = await asyncio.wait_for(reader.readexactly(len(payload)), 5)
    writer.close()
    return got


def upstream(svc: str, mode: str) -> UpstreamSpec:
    return UpstreamSpec(service=svc, datacenter="dc2", bind_port=free_port(), mode=mode)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("local", {"gw1-lan": 1, "gw1-wan": 0, "gw2-lan": 0, "gw2-wan": 1}),
        ("remote", {"gw1-lan": 0, "gw1-wan": 0, "gw2-lan": 0, "gw2-wan": 1}),
        ("none", {"gw1-lan": 0, "gw1-wan": 0, "gw2-lan": 0, "gw2-wan": 0}),
    ],
)
async def test_chain_mode_decides_path(ca: MeshTestCA, mode: str, expected: dict[str, int]) -> None:
    w = await build_world(ca, (upstream("api", mode),))
    try:
        assert await call(w.upstream_ports["api"], b"hello dc2") == b"hello dc2"
        assert bytes(w.apps["api"].received) == b"hello dc2"
        assert w.gateway_counts() == expected
        pub = w.m2.listener("api-sidecar-proxy:public")
        assert pub is not None and pub.stats.bytes_in == 9
    finally:
        await teardown(w)


async def test_chain_seed_three_upstreams(ca: MeshTestCA) -> None:
    # The seed's example: api through remote, db through local, logging direct (none).
    ups = (upstream("api", "remote"), upstream("db", "local"), upstream("logging", "none"))
    w = await build_world(ca, ups)
    try:
        for svc in SERVICES:
            assert await call(w.upstream_ports[svc], svc.encode()) == svc.encode()
            assert bytes(w.apps[svc].received) == svc.encode()
        # api: gw2-wan once; db: gw1-lan then gw2-wan; logging: no gateway.
        assert w.gateway_counts() == {"gw1-lan": 1, "gw1-wan": 0, "gw2-lan": 0, "gw2-wan": 2}
    finally:
        await teardown(w)


async def test_chain_deregistered_instance_never_dialled(ca: MeshTestCA) -> None:
    w = await build_world(ca, (upstream("api", "remote"),))
    try:
        assert await call(w.upstream_ports["api"], b"one") == b"one"
        # api's only instance goes away in dc2: gw2 must not dial it again.
        w.m2.update("gw2", ServiceEndpointsUpdate(service="api", datacenter="dc2", endpoints=()))
        await w.m2.wait_idle()
        reader, writer = await asyncio.open_connection(LAN, w.upstream_ports["api"])
        writer.write(b"two")
        assert await read_until_closed(reader) == b""
        writer.close()
        gw2 = w.gw(w.m2, "gw2:wan")
        await wait_for(lambda: gw2.rejected["unknown_service"] == 1, "the unknown service refused")
        assert w.apps["api"].connections == 1
    finally:
        await teardown(w)


async def test_chain_gateway_restart_recovers(ca: MeshTestCA) -> None:
    w = await build_world(ca, (upstream("api", "local"),))
    try:
        assert await call(w.upstream_ports["api"], b"before") == b"before"
        snap = w.m1.snapshot("gw1")
        assert snap is not None
        w.m1.remove("gw1")  # the gateway goes away ...
        await w.m1.wait_idle()
        reader, writer = await asyncio.open_connection(LAN, w.upstream_ports["api"])
        assert await read_until_closed(reader) == b""  # ... and calls fail
        writer.close()
        w.m1.set_snapshot(snap)  # ... and comes back on the same port
        await w.m1.wait_idle()
        assert await call(w.upstream_ports["api"], b"after") == b"after"
    finally:
        await teardown(w)


async def test_chain_port_in_use_is_reported(ca: MeshTestCA) -> None:
    blocker = socket.socket()
    blocker.bind((LAN, 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    m = ProxyManager(authorizer_for=lambda svc: lambda src: True, coalesce_delay=0.01)
    m.set_snapshot(
        new_gateway_snapshot(
            proxy_id="gw",
            local_dc="dc1",
            binds=(GatewayBind(name="default", address=LAN, port=port),),
        )
    )
    m.update("gw", roots_update(ca))
    await m.wait_idle()
    status = m.status()["gw"]
    assert status.ready and status.listeners == ()
    assert status.errors == (f"gw:default: cannot listen on {LAN}:{port}: address already in use",)
    blocker.close()
    m.update("gw", roots_update(ca))  # any change retries
    await m.wait_idle()
    assert m.status()["gw"].listeners == ("gw:default",) and not m.status()["gw"].errors
    await m.aclose()
