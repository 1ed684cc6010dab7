"""The proxy feed against a real catalog (store + LocalState) and fake Connect/remote seams.

Pure parts first (bind rules, endpoint addresses and health, remote health entries),
then ``ProxyFeed.sync`` building snapshots per mode, then ``run()`` with blocking fake
reads of another datacenter, and a listener that cannot bind showing on the proxy's
health. The feed runs on a ``FakeClock``: its backoffs and health refreshes wait on
fake time, which the tests move.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from typing import Any

import pytest

from node.catalog import queries
from node.catalog.local import LocalState, NodeIdentity
from node.catalog.parse import parse_service
from node.catalog.queries import CheckEntry, HealthEntry, NodeInfo
from node.catalog.store import CatalogStore
from node.catalog.values import (
    CheckKind,
    CheckState,
    Health,
    ServiceInstance,
    ServiceKind,
    TaggedAddress,
)
from node.catalog.watch import IndexNotifier
from node.connect.resolve import resolve_upstreams
from node.errors import RemoteProtocolError
from node.proxy.endpoints import endpoint_of, is_healthy, make_endpoint
from node.proxy.feed import RETRY_FAILED, FeedSources, ProxyFeed
from node.proxy.gather import gateway_binds
from node.proxy.health import listeners_check_id
from node.proxy.manager import ProxyManager
from node.proxy.snapshot import EndpointInfo, GatewayBind
from node.rpc.reads import HEALTH_ENTRIES
from node.testing.clock import FakeClock
from node.wire import pack, unpack
from tests.helpers.ca import TD, MeshTestCA
from tests.helpers.poll import wait_for

# --------------------------------------------------------------------------- pure


def _gateway(**config: Any) -> Any:
    return parse_service(
        {
            "kind": "mesh-gateway",
            "name": "mesh-gateway",
            "address": "10.0.0.1",
            "port": 8443,
            "tagged_addresses": {
                "lan": {"address": "10.0.0.1", "port": 8443},
                "wan": {"address": "198.51.100.1", "port": 443},
            },
            "proxy": {"config": config},
        }
    )


def test_gateway_binds_default_tagged_and_named() -> None:
    assert gateway_binds(_gateway()) == (
        GatewayBind(name="default", address="10.0.0.1", port=8443),
    )
    tagged = gateway_binds(
        _gateway(
            envoy_mesh_gateway_no_default_bind=True, envoy_mesh_gateway_bind_tagged_addresses=True
        )
    )
    assert tagged == (
        GatewayBind(name="lan", address="10.0.0.1", port=8443),
        GatewayBind(name="wan", address="198.51.100.1", port=443),
    )
    named = gateway_binds(
        _gateway(
            envoy_mesh_gateway_no_default_bind=True,
            envoy_mesh_gateway_bind_addresses={"x": {"address": "127.0.0.2", "port": 9}},
        )
    )
    assert named == (GatewayBind(name="x", address="127.0.0.2", port=9),)


def test_gateway_binds_same_address_twice_is_one_listener() -> None:
    svc = parse_service(
        {
            "kind": "mesh-gateway",
            "name": "gw",
            "address": "127.0.1.2",
            "port": 8443,
            "tagged_addresses": {
                "lan": {"address": "127.0.1.2", "port": 8443},
                "wan": {"address": "127.0.1.2", "port": 8443},
            },
            "proxy": {"config": {"envoy_mesh_gateway_bind_tagged_addresses": True}},
        }
    )
    assert gateway_binds(svc) == (GatewayBind(name="default", address="127.0.1.2", port=8443),)


@pytest.mark.parametrize(
    ("statuses", "only_passing", "healthy"),
    [
        ((), False, True),
        (("passing", "passing"), False, True),
        (("passing", "warning"), False, True),  # warning still serves, as in Consul
        (("passing", "warning"), True, False),  # unless OnlyPassing
        (("passing", "critical"), False, False),
        (("maintenance",), False, False),  # a gateway in maintenance is not chosen (#15703)
    ],
)
def test_is_healthy(statuses: tuple[str, ...], only_passing: bool, healthy: bool) -> None:
    assert is_healthy(statuses, only_passing=only_passing) is healthy


@pytest.mark.parametrize(
    ("svc_addr", "svc_wan", "want_addr", "want_wan"),
    [
        ("", None, "10.0.0.9", ("203.0.113.9", 0)),  # node addresses
        ("10.1.1.1", None, "10.1.1.1", ("", 0)),  # a service address hides the node's WAN
        ("10.1.1.1", ("198.51.100.7", 8443), "10.1.1.1", ("198.51.100.7", 8443)),
    ],
)
def test_make_endpoint_best_address(
    svc_addr: str, svc_wan: tuple[str, int] | None, want_addr: str, want_wan: tuple[str, int]
) -> None:
    ep = make_endpoint(
        service_address=svc_addr,
        service_port=21000,
        service_wan=svc_wan,
        node_address="10.0.0.9",
        node_wan="203.0.113.9",
        healthy=True,
    )
    assert (ep.address, (ep.wan_address, ep.wan_port)) == (want_addr, want_wan)


def _remote_gateway_entry() -> HealthEntry:
    node = NodeInfo(
        name="gw-node", node_id="", address="10.0.0.9", datacenter="dc2",
        tagged_addresses={"wan": "203.0.113.9"}, meta={}, create_index=1, modify_index=1,
    )  # fmt: skip
    service = ServiceInstance(
        id="mesh-gateway", name="mesh-gateway", kind=ServiceKind.MESH_GATEWAY, port=8443,
        tagged_addresses={"wan": TaggedAddress(address="198.51.100.1", port=443)},
    )  # fmt: skip
    checks = tuple(
        CheckEntry(
            node="gw-node",
            create_index=1,
            modify_index=1,
            check=CheckState(id=f"c{i}", name=f"c{i}", kind=CheckKind.TTL, status=status),
        )  # fmt: skip
        for i, status in enumerate((Health.PASSING, Health.CRITICAL))
    )
    return HealthEntry(node=node, service=service, checks=checks, status=Health.CRITICAL,
                       create_index=1, modify_index=1)  # fmt: skip


def test_remote_health_entries_arrive_typed_and_garbage_is_rejected() -> None:
    wire = unpack(pack(HEALTH_ENTRIES.to_wire((_remote_gateway_entry(),))))
    (ep,) = (endpoint_of(e) for e in HEALTH_ENTRIES.from_wire(wire))
    assert ep == EndpointInfo(
        address="10.0.0.9", port=8443, healthy=False, wan_address="198.51.100.1", wan_port=443
    )
    with pytest.raises(RemoteProtocolError, match="health entries"):
        HEALTH_ENTRIES.from_wire([{"node": 1}])


# --------------------------------------------------------------------------- feed


@dataclass
class FakeRoots:
    trust_domain: str
    trusted_pems: tuple[str, ...]


@dataclass
class FakeLeaf:
    cert_pem: str
    private_key_pem: str


@dataclass
class FakeConnect:
    """ConnectService's read side: roots, leaves, resolve (the real resolver, no entries)."""

    ca: MeshTestCA
    dc: str = "dc1"
    leaves: dict[str, FakeLeaf] = field(default_factory=dict)
    listeners: list[Any] = field(default_factory=list)

    def roots(self) -> FakeRoots:
        return FakeRoots(trust_domain=TD, trusted_pems=(self.ca.root_pem,))

    def leaf(self, service: str) -> FakeLeaf | None:
        if service not in self.leaves:
            cert, key = self.ca.leaf(service, self.dc)
            self.leaves[service] = FakeLeaf(cert, key)
        return self.leaves[service]

    def resolve(self, svc: Any) -> Any:
        return resolve_upstreams(svc, {}, False, local_datacenter=self.dc)

    def add_listener(self, callback: Any) -> None:
        self.listeners.append(callback)


@dataclass
class FakeDC:
    """Another datacenter's answers, served as blocking reads (index, wait)."""

    answers: dict[tuple[str, str, str], tuple[EndpointInfo, ...]] = field(default_factory=dict)
    index: int = 1
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    calls: list[tuple[str, str, int]] = field(default_factory=list)

    def set(self, key: tuple[str, str, str], eps: tuple[EndpointInfo, ...]) -> None:
        self.answers[key] = eps
        self.index += 1
        self.changed.set()
        self.changed = asyncio.Event()

    def reader(self, kind: str) -> Any:
        async def read(dc: str, service: str, index: int, wait: float) -> Any:
            self.calls.append((kind, dc, index))
            if index >= self.index:
                event = self.changed
                await asyncio.wait_for(event.wait(), wait)
            return self.answers.get((kind, dc, service), ()), self.index

        return read


def _node(store: CatalogStore, name: str) -> LocalState:
    ident = NodeIdentity(
        name=name, datacenter="dc1", address="127.0.0.1", tagged_addresses={"wan": "127.0.0.1"}
    )
    return LocalState(identity=ident, store=store)


@dataclass
class Rig:
    feed: ProxyFeed
    local: LocalState
    other: LocalState
    remote: FakeDC
    clock: FakeClock


def _rig(ca: MeshTestCA, *, datacenters: tuple[str, ...] = ("dc1", "dc2")) -> Rig:
    store = CatalogStore()
    notifier = IndexNotifier(store.index)
    store.set_on_change(notifier.notify)
    local, other = _node(store, "n1"), _node(store, "n2")
    remote = FakeDC()
    sources = FeedSources(
        local_dc="dc1",
        node_address="127.0.0.1",
        local=local,
        connect=FakeConnect(ca),
        connect_health=lambda n: queries.health_service(store, n, connect=True),
        gateways=lambda: queries.services_of_kind(store, ServiceKind.MESH_GATEWAY),
        service_names=lambda: queries.services(store).value.keys(),
        datacenters=lambda: list(datacenters),
        wait_local=notifier.wait,
        local_index=lambda: notifier.index,
        remote_connect=remote.reader("connect"),
        remote_gateways=remote.reader("gateways"),
    )
    manager = ProxyManager(authorizer_for=lambda s: lambda src: True, coalesce_delay=0.01)
    clock = FakeClock()
    feed = ProxyFeed(sources, manager, clock=clock, sleep=clock.sleep)
    return Rig(feed, local, other, remote, clock)


async def _run_ready(passes: int = 50) -> None:
    """Let the ready tasks run for ``passes`` loop iterations; no time passes, real or fake."""
    for _ in range(passes):
        await asyncio.sleep(0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _web(upstreams: list[dict[str, Any]], port: int = 0) -> Any:
    return parse_service(
        {
            "name": "web",
            "port": 9090,
            "connect": {
                "sidecar_service": {"port": port or _free_port(), "proxy": {"upstreams": upstreams}}
            },
        }
    )


def _api_sidecar(name: str = "api", port: int = 21001) -> Any:
    return parse_service(
        {"name": name, "port": 9091, "connect": {"sidecar_service": {"port": port}}}
    )


def _gw(port: int) -> Any:
    return parse_service({"kind": "mesh-gateway", "name": "mesh-gateway", "port": port,
                          "address": "127.0.0.1"})  # fmt: skip


UPSTREAMS = [
    {"destination_name": "api", "local_bind_port": 10001},
    {"destination_name": "db", "datacenter": "dc2", "local_bind_port": 10002,
     "mesh_gateway": {"mode": "local"}},
    {"destination_name": "logging", "datacenter": "dc2", "local_bind_port": 10003},
    {"destination_name": "cache", "datacenter": "dc2", "local_bind_port": 10004,
     "mesh_gateway": {"mode": "remote"}},
]  # fmt: skip


async def test_ProxyFeed_sync_builds_sidecar_inputs_per_mode(ca: MeshTestCA) -> None:
    rig = _rig(ca)
    rig.local.register_service(_web(UPSTREAMS))
    rig.other.register_service(_api_sidecar())
    rig.other.register_service(_gw(8443))
    rig.feed.sync()
    snap = rig.feed.manager.snapshot("web-sidecar-proxy")
    assert snap is not None and snap.is_valid()
    modes = {u.service: (u.datacenter, u.mode) for u in snap.upstreams}
    assert modes == {
        "api": ("", ""),
        "db": ("dc2", "local"),
        "logging": ("dc2", "none"),
        "cache": ("dc2", "remote"),
    }
    # Same DC: api's sidecar on n2; local mode: this DC's gateway.
    assert [e.port for e in snap.service_endpoints[("api", "dc1")]] == [21001]
    assert [e.port for e in snap.gateway_endpoints["dc1"]] == [8443]
    # Other-DC inputs are empty until their blocking reads answer.
    assert ("logging", "dc2") not in snap.service_endpoints
    assert "dc2" not in snap.gateway_endpoints
    # Deregistering the only api instance removes it from the snapshot (Consul #11771).
    rig.other.deregister_service("api")
    rig.feed.sync()
    snap = rig.feed.manager.snapshot("web-sidecar-proxy")
    assert snap is not None and ("api", "dc1") not in snap.service_endpoints
    await rig.feed.manager.aclose()


async def test_ProxyFeed_run_follows_other_datacenters_with_blocking_reads(
    ca: MeshTestCA,
) -> None:
    rig = _rig(ca)
    rig.local.register_service(_web(UPSTREAMS))
    gw_eps = (EndpointInfo(address="10.9.9.9", port=443, healthy=True),)
    log_eps = (EndpointInfo(address="10.8.8.8", port=21000, healthy=True),)
    rig.remote.set(("gateways", "dc2", ""), gw_eps)
    task = asyncio.create_task(rig.feed.run())
    try:

        def snap() -> Any:
            return rig.feed.manager.snapshot("web-sidecar-proxy")

        await wait_for(lambda: snap() is not None and snap().gateway_endpoints.get("dc2") == gw_eps,
                       what="dc2 gateways arrive")  # fmt: skip
        rig.remote.set(("connect", "dc2", "logging"), log_eps)
        await wait_for(
            lambda: snap().service_endpoints.get(("logging", "dc2")) == log_eps,
            what="a blocked read wakes on the change",
        )
        # Blocking, not polling: a handful of calls per input, never a spin.
        for _ in range(3):
            rig.clock.jump(0.1)
            await _run_ready()
        assert len(rig.remote.calls) < 12, rig.remote.calls
        # Dropping the remote upstreams stops their reads.
        rig.local.register_service(_web(UPSTREAMS[:1]))
        await wait_for(lambda: not rig.feed._watches, what="remote reads stopped")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_ProxyFeed_gateway_snapshot_has_local_services_and_remote_gateways(
    ca: MeshTestCA,
) -> None:
    rig = _rig(ca, datacenters=("dc1", "dc2", "dc3"))
    rig.local.register_service(_gw(_free_port()))
    rig.other.register_service(_api_sidecar())
    rig.feed.sync()
    snap = rig.feed.manager.snapshot("mesh-gateway")
    assert snap is not None and snap.is_valid()
    assert set(snap.service_endpoints) == {("api", "dc1")}
    assert dict(snap.gateway_endpoints) == {}  # an empty answer is no group, as in Consul
    dc3 = (EndpointInfo(address="10.3.3.3", port=443, healthy=True),)
    rig.remote.set(("gateways", "dc3", ""), dc3)
    task = asyncio.create_task(rig.feed.run())
    try:
        await wait_for(
            lambda: (
                dict(rig.feed.manager.snapshot("mesh-gateway").gateway_endpoints) == {"dc3": dc3}
            ),
            what="dc3's gateways in the gateway's snapshot",
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_ProxyFeed_port_in_use_is_critical_on_the_proxy_health_then_recovers(
    ca: MeshTestCA,
) -> None:
    rig = _rig(ca)
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    rig.local.register_service(_gw(port))
    task = asyncio.create_task(rig.feed.run())
    cid = listeners_check_id("mesh-gateway")
    try:

        def state() -> Any:
            return rig.local.check_state(cid) if cid in rig.local.checks() else None

        await wait_for(lambda: state() is not None and "in use" in state().output,
                       timeout=10.0, what="critical with the bind error")  # fmt: skip
        assert state().status is Health.CRITICAL
        blocker.close()
        # The next health refresh retries the bind; the one after publishes the listener.
        rig.clock.jump(RETRY_FAILED)
        await wait_for(lambda: rig.feed.manager.status()["mesh-gateway"].listeners,
                       what="the retried listener runs")  # fmt: skip
        rig.clock.jump(RETRY_FAILED)
        await wait_for(lambda: state().status is Health.PASSING, what="retried")
        assert "listening" in state().output
        # Quiet once settled: no sync loop feeding on its own health updates.
        before = rig.feed.syncs
        for _ in range(2):
            rig.clock.jump(RETRY_FAILED)
            await _run_ready()
            await rig.feed.manager.wait_idle()
        assert rig.feed.syncs - before <= 2
    finally:
        blocker.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
