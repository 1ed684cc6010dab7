"""Two datacenters of real in-process agents, with mesh gateways, on 127.0.0.1.

dc1 = {s1 server, g1 gateway node, w1 web node}, dc2 = {s2 server (WAN-joined), g2 gateway
node, a2 api node}. The apps are small TCP servers that answer with their name. Every
path claim is proven by the gateways' own counters (``/v1/agent/metrics``): ``remote``
moves only dc2's gateway, ``local`` moves both, ``none`` moves neither. Ports: every
listener the test needs to know in advance (apps, sidecars, gateways, upstreams) gets a
free port picked by binding port 0 first; the agents bind port 0 themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from node.agent.agent import Agent
from node.catalog.values import Health
from node.proxy.health import listeners_check_id
from tests.helpers.cluster import Cluster, free_port
from tests.helpers.poll import wait_for

pytestmark = pytest.mark.timeout(120)

SERVICES = ("api", "db", "logging")


@dataclass
class App:
    """A TCP app that answers one line with its name and counts its connections."""

    name: str
    port: int = 0
    connections: int = 0
    server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            await reader.readline()
            writer.write(f"{self.name}\n".encode())
            await writer.drain()
        writer.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def request(port: int, timeout: float = 3.0) -> str:
    """One request through a local upstream port: the answering app's name, or ''."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"ping\n")
            await writer.drain()
            line = await reader.readline()
            writer.close()
            return line.decode().strip()
    except (OSError, TimeoutError):
        return ""


@dataclass
class Fed:
    """The running federation and what the test needs to reach it."""

    cluster: Cluster
    agents: dict[str, Agent]
    apps: dict[str, App]
    gw_ports: dict[str, int]
    up_ports: dict[str, int] = field(default_factory=dict)

    async def gateway_conns(self, dc: str) -> int:
        status, body, _ = await self.cluster.get(self.agents[f"g{dc[-1]}"], "/v1/agent/metrics")
        assert status == 200, body
        return sum(
            lst["ConnectionsOpened"] for lst in body["Listeners"] if lst["Kind"] == "mesh-gateway"
        )

    async def route(self, port: int) -> tuple[str, set[str]]:
        """One request: (who answered, which gateways counted a connection)."""
        before = {dc: await self.gateway_conns(dc) for dc in ("dc1", "dc2")}
        answer = await request(port)
        after = {dc: await self.gateway_conns(dc) for dc in ("dc1", "dc2")}
        return answer, {dc for dc in before if after[dc] > before[dc]}

    async def wait_route(
        self, port: int, answer: str, via: set[str], what: str, timeout: float = 15.0
    ) -> None:
        last: list[Any] = []

        async def ok() -> bool:
            got = await self.route(port)
            last[:] = [got]
            return got == (answer, via)

        await wait_for(ok, f"{what}: want {(answer, via)}", timeout=timeout)

    async def put(self, agent: str, path: str, body: Any) -> None:
        status, reply = await self.cluster.put(self.agents[agent], path, json=body)
        assert status == 200, (path, status, reply)


def gateway_registration(port: int) -> dict[str, Any]:
    addr = {"Address": "127.0.0.1", "Port": port}
    return {
        "Kind": "mesh-gateway",
        "Name": "mesh-gateway",
        "ID": "mesh-gateway",
        "Address": "127.0.0.1",
        "Port": port,
        "TaggedAddresses": {"lan": addr, "wan": addr},
        "Check": {"Name": "Mesh Gateway Listening", "TCP": f"127.0.0.1:{port}", "Interval": "10s"},
    }


def web_registration(up_ports: dict[str, int], **modes: str) -> dict[str, Any]:
    """web with a sidecar; ``modes`` may hold ``proxy`` and per-upstream modes."""
    upstreams = []
    for svc in SERVICES:
        up: dict[str, Any] = {
            "DestinationName": svc,
            "Datacenter": "dc2",
            "LocalBindPort": up_ports[svc],
        }
        if svc in modes:
            up["MeshGateway"] = {"Mode": modes[svc]}
        upstreams.append(up)
    proxy: dict[str, Any] = {"Upstreams": upstreams}
    if "proxy" in modes:
        proxy["MeshGateway"] = {"Mode": modes["proxy"]}
    return {
        "Name": "web",
        "Port": free_port(),
        "Connect": {"SidecarService": {"Port": up_ports["web-sidecar"], "Proxy": proxy}},
    }


def app_registration(app: App, sidecar_port: int) -> dict[str, Any]:
    return {
        "Name": app.name,
        "ID": f"{app.name}-{app.port}",
        "Port": app.port,
        "Connect": {"SidecarService": {"Port": sidecar_port}},
    }


@contextlib.asynccontextmanager
async def federation(tmp_path: Path) -> AsyncIterator[Fed]:
    apps = {name: App(name) for name in SERVICES}
    for app in apps.values():
        await app.start()
    async with Cluster(tmp_path) as cluster:
        extra = {"enable_central_service_config": True}
        s1 = await cluster.start("s1", server=True, **extra)
        s2 = await cluster.start("s2", dc="dc2", server=True, join_wan=[s1], **extra)
        agents = {
            "s1": s1,
            "s2": s2,
            "g1": await cluster.start("g1", join=[s1], **extra),
            "w1": await cluster.start("w1", join=[s1], **extra),
            "g2": await cluster.start("g2", dc="dc2", join=[s2], **extra),
            "a2": await cluster.start("a2", dc="dc2", join=[s2], **extra),
        }
        fed = Fed(cluster, agents, apps, {"dc1": free_port(), "dc2": free_port()})
        fed.up_ports = {name: free_port() for name in (*SERVICES, "web-sidecar")}
        await fed.put("g1", "/v1/agent/service/register", gateway_registration(fed.gw_ports["dc1"]))
        await fed.put("g2", "/v1/agent/service/register", gateway_registration(fed.gw_ports["dc2"]))
        for app in apps.values():
            await fed.put("a2", "/v1/agent/service/register", app_registration(app, free_port()))
        await fed.put("w1", "/v1/agent/service/register", web_registration(fed.up_ports))
        try:
            yield fed
        finally:
            for app in apps.values():
                app.close()


async def decided_by(fed: Fed, service: str) -> str:
    """Which precedence level set ``service``'s mode on w1 (the proxy-config endpoint)."""
    path = "/v1/agent/connect/proxy-config/web-sidecar-proxy"
    status, body, _ = await fed.cluster.get(fed.agents["w1"], path)
    assert status == 200, body
    return str(next(u["DecidedBy"] for u in body["Upstreams"] if u["DestinationName"] == service))


async def set_mode(fed: Fed, kind: str, name: str, mode: str) -> None:
    await fed.put("s1", "/v1/config", {"Kind": kind, "Name": name, "MeshGateway": {"Mode": mode}})


def upstream_mode(agent: Agent, service: str) -> str | None:
    for st in agent.proxies.manager.status().values():
        for name in st.listeners:
            if f":upstream:{service}." in name:
                listener = agent.proxies.manager.listener(name)
                return listener.plan.mode if listener is not None else None
    return None


async def plan_follows(agent: Agent, service: str, mode: str, change: Any) -> float:
    """Apply ``change`` and return seconds until ``service``'s upstream plan has ``mode``
    (measured from when the change is visible in the node's Connect state)."""
    await change()
    seen = time.monotonic()
    await wait_for(lambda: upstream_mode(agent, service) == mode, f"{service} in {mode}", 5.0)
    return time.monotonic() - seen


async def test_modes_and_precedence_route_through_the_right_gateways(tmp_path: Path) -> None:
    async with federation(tmp_path) as fed:
        api = fed.up_ports["api"]
        w1 = fed.agents["w1"]
        # Nothing configured anywhere: mode none, straight to api's sidecar in dc2.
        await fed.wait_route(api, "api", set(), "default (none) goes direct", timeout=40)
        assert await decided_by(fed, "api") == "default"

        # proxy-defaults (level 4) decides: local → both gateways.
        await set_mode(fed, "proxy-defaults", "global", "local")
        await fed.wait_route(api, "api", {"dc1", "dc2"}, "proxy-defaults local")
        assert await decided_by(fed, "api") == "proxy-defaults"
        # service-defaults of web (level 3) beats proxy-defaults: remote → dc2's only.
        await set_mode(fed, "service-defaults", "web", "remote")
        await fed.wait_route(api, "api", {"dc2"}, "service-defaults remote")
        assert await decided_by(fed, "api") == "service-defaults"
        # The proxy registration (level 2) beats service-defaults: none → direct.
        reg = web_registration(fed.up_ports, proxy="none")
        await fed.put("w1", "/v1/agent/service/register", reg)
        await fed.wait_route(api, "api", set(), "proxy registration none")
        assert await decided_by(fed, "api") == "proxy"
        # The upstream's own mode (level 1) beats the registration: local.
        reg = web_registration(fed.up_ports, proxy="none", api="local")
        await fed.put("w1", "/v1/agent/service/register", reg)
        await fed.wait_route(api, "api", {"dc1", "dc2"}, "upstream local")
        assert await decided_by(fed, "api") == "upstream"

        # The seed's three upstreams: api remote, db local, logging none.
        reg = web_registration(fed.up_ports, api="remote", db="local", logging="none")
        await fed.put("w1", "/v1/agent/service/register", reg)
        await fed.wait_route(api, "api", {"dc2"}, "seed: api remote")
        await fed.wait_route(fed.up_ports["db"], "db", {"dc1", "dc2"}, "seed: db local")
        await fed.wait_route(fed.up_ports["logging"], "logging", set(), "seed: logging none")
        status, body, _ = await fed.cluster.get(
            w1, "/v1/agent/connect/proxy-config/web-sidecar-proxy"
        )
        assert status == 200, body
        decided = {u["DestinationName"]: u["DecidedBy"] for u in body["Upstreams"]}
        assert decided == {"api": "upstream", "db": "upstream", "logging": "upstream"}

        # A config change reaches the plan within a second of arriving at the node.
        reg = web_registration(fed.up_ports)  # back to the central defaults: remote
        await fed.put("w1", "/v1/agent/service/register", reg)
        await wait_for(lambda: upstream_mode(w1, "api") == "remote", "api back to remote", 5.0)

        async def entry_arrives() -> None:
            await set_mode(fed, "service-defaults", "web", "local")
            await wait_for(
                lambda: (
                    str(w1.connect.config_entries()[("service-defaults", "web")].mesh_gateway)
                    == "local"
                ),
                "service-defaults reach w1",
                10.0,
            )

        took = await plan_follows(w1, "api", "local", entry_arrives)
        assert took < 1.0, f"new plan {took:.2f}s after the config change arrived"


async def test_gateway_faults_recover_and_deregistered_instances_are_never_dialled(
    tmp_path: Path,
) -> None:
    async with federation(tmp_path) as fed:
        api = fed.up_ports["api"]
        await set_mode(fed, "proxy-defaults", "global", "remote")
        await fed.wait_route(api, "api", {"dc2"}, "remote through dc2's gateway", timeout=40)
        g2 = fed.agents["g2"]

        # The gateway is healthy as soon as it listens (Consul #6543).
        status, checks, _ = await fed.cluster.get(g2, "/v1/agent/checks")
        assert status == 200
        assert checks[listeners_check_id("mesh-gateway")]["Status"] == Health.PASSING

        # A failing gateway is not chosen in remote mode (Consul #15703); warning still is.
        check = {"ID": "gw-ttl", "Name": "gw ttl", "ServiceID": "mesh-gateway", "TTL": "60s"}
        await fed.put("g2", "/v1/agent/check/register", check)
        await fed.put("g2", "/v1/agent/check/warn/gw-ttl", None)
        await fed.wait_route(api, "api", {"dc2"}, "a gateway in warning still serves")
        await fed.put("g2", "/v1/agent/check/fail/gw-ttl", None)
        await wait_for(lambda: _refused(api), "a failing gateway is skipped", 10.0)
        await fed.put("g2", "/v1/agent/check/pass/gw-ttl", None)
        await fed.wait_route(api, "api", {"dc2"}, "the gateway passes again")

        # Deregistering the gateway closes its listener: remote traffic fails at once ...
        status, _ = await fed.cluster.put(g2, "/v1/agent/service/deregister/mesh-gateway")
        assert status == 200
        await wait_for(lambda: _refused(api), "requests fail without dc2's gateway", 10.0)
        # ... and re-registering brings it back.
        await fed.put("g2", "/v1/agent/service/register", gateway_registration(fed.gw_ports["dc2"]))
        await fed.wait_route(api, "api", {"dc2"}, "traffic recovers after re-registration")

        # A gateway node crash and restart (same data dir): traffic recovers.
        await fed.cluster.kill(g2)
        await wait_for(lambda: _refused(api), "requests fail while dc2's gateway node is down")
        fed.agents["g2"] = await fed.cluster.restart(g2, join=fed.agents["s2"])
        await fed.wait_route(api, "api", {"dc2"}, "traffic recovers after the gateway restart")

        # A second api instance; then the first is deregistered and never dialled again.
        second = App("api")
        await second.start()
        try:
            await fed.put("a2", "/v1/agent/service/register", app_registration(second, free_port()))
            first = fed.apps["api"]
            await wait_for(
                lambda: _both_used(api, first, second), "both api instances answer", 20.0
            )
            a2 = fed.agents["a2"]
            sidecar = a2.local.services()[f"api-{first.port}-sidecar-proxy"].port
            status, _ = await fed.cluster.put(a2, f"/v1/agent/service/deregister/api-{first.port}")
            assert status == 200
            g2 = fed.agents["g2"]
            await wait_for(lambda: _gateway_forgot(g2, sidecar), "dc2 gateway drops it", 5.0)
            before = first.connections
            answers = [await request(api) for _ in range(20)]
            assert answers == ["api"] * 20
            assert first.connections == before, "a deregistered instance was dialled"
        finally:
            second.close()


async def _refused(port: int) -> bool:
    return await request(port, timeout=2.0) == ""


async def _both_used(port: int, first: App, second: App) -> bool:
    a, b = first.connections, second.connections
    for _ in range(10):
        await request(port)
    return first.connections > a and second.connections > b


def _gateway_forgot(g2: Agent, sidecar_port: int) -> bool:
    """The running gateway listener's routing table has api without that sidecar."""
    listener = g2.proxies.manager.listener("mesh-gateway:default")
    if listener is None:
        return False
    ports = {e.port for e in listener.plan.services.get("api", ())}
    return bool(ports) and sidecar_port not in ports
