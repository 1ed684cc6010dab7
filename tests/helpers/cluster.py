"""In-process clusters for tests: N real ``Agent`` objects in one event loop.

Every agent listens on 127.0.0.1 with port 0 for HTTP, RPC and both gossip pools and
keeps its data in its own temporary directory. Gossip runs a fast profile
(``FAST_GOSSIP``) so failures are detected in about a second. Use it from any test::

    from tests.helpers.cluster import Cluster, converged
    from tests.helpers.poll import wait_for

    async def test_x(tmp_path):
        async with Cluster(tmp_path) as cluster:
            s1 = await cluster.start("s1", server=True)
            c1 = await cluster.start("c1", join=[s1])
            await wait_for(lambda: converged([s1, c1], 2), "c1 and s1 see each other")

``kill`` simulates a crash (no leave broadcast); ``stop(leave=True)`` leaves gracefully;
``restart`` brings a crashed agent back on the ports it had.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from node.agent.agent import Agent
from node.config.agent import AgentConfig, Ports
from node.gossip.config import GossipConfig
from tests.helpers.poll import wait_for

__all__ = ["Cluster", "FAST_GOSSIP", "FAST_WAN_GOSSIP", "converged", "free_port"]

#: Loopback-fast gossip: ~0.2 s probes, suspicion of about a second.
FAST_GOSSIP = dataclasses.replace(
    GossipConfig.local(),
    probe_interval=0.2,
    probe_timeout=0.1,
    suspicion_mult=2,
    gossip_interval=0.05,
    push_pull_interval=2.0,
    reconnect_interval=1.0,
    tcp_timeout=1.0,
)
FAST_WAN_GOSSIP = FAST_GOSSIP


def free_port() -> int:
    """A port nobody listens on right now (bind 0, read, close)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def converged(agents: Sequence[Agent], n: int) -> bool:
    """Every one of ``agents`` sees exactly ``n`` alive members in its LAN pool."""
    return all(sum(m["status"] == 1 for m in a.members()) == n for a in agents)


class Cluster:
    """Starts and stops agents; ``async with`` stops every one still running."""

    def __init__(self, tmp_path: Path) -> None:
        self._tmp = tmp_path
        self.agents: dict[str, Agent] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Cluster:
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for name in list(self._tasks):
            await self.kill(name)
        if self._session is not None:
            await self._session.close()

    # ------------------------------------------------------------------ lifecycle

    def config(
        self, name: str, *, dc: str = "dc1", server: bool = False, **extra: Any
    ) -> AgentConfig:
        """A loopback config with port 0 everywhere and a data dir under tmp."""
        data_dir = self._tmp / f"{dc}-{name}"
        data_dir.mkdir(parents=True, exist_ok=True)
        return AgentConfig(
            node_name=name, datacenter=dc, primary_datacenter=extra.pop("primary_dc", "dc1"),
            data_dir=str(data_dir), server=server, bind_addr="127.0.0.1",
            advertise_addr="127.0.0.1", advertise_addr_wan="127.0.0.1", client_addr="127.0.0.1",
            ports=Ports(http=0, serf_lan=0, serf_wan=0, server=0, dns=0),
            leave_on_terminate=extra.pop("leave_on_terminate", not server), **extra,
        )  # fmt: skip

    async def start(
        self,
        name: str,
        *,
        dc: str = "dc1",
        server: bool = False,
        join: Sequence[Agent] = (),
        join_wan: Sequence[Agent] = (),
        lan_gossip: GossipConfig = FAST_GOSSIP,
        **extra: Any,
    ) -> Agent:
        """Build, run and (optionally) join an agent; returns once it is bound."""
        agent = Agent(
            self.config(name, dc=dc, server=server, **extra),
            lan_gossip=lan_gossip,
            wan_gossip=FAST_WAN_GOSSIP,
        )
        await self._run(agent)
        if join:
            assert await agent.join([self.lan_addr(a) for a in join]) > 0, f"{dc}/{name} LAN join"
        if join_wan:
            assert await agent.join([self.wan_addr(a) for a in join_wan], wan=True) > 0
        return agent

    async def restart(self, old: Agent, *, join: Agent) -> Agent:
        """Start a crashed agent again from its data dir on the ports it had (as a real
        restart does: gossip peers know it by address, a new port would be a new member)."""
        ports = dataclasses.replace(
            old.config.ports,
            http=old.bound["http"][1],
            serf_lan=old.bound["serf_lan"][1],
            server=old.bound["server"][1],
        )
        agent = Agent(
            dataclasses.replace(old.config, ports=ports),
            lan_gossip=FAST_GOSSIP,
            wan_gossip=FAST_WAN_GOSSIP,
        )
        await self._run(agent)
        assert await agent.join([self.lan_addr(join)]) > 0
        return agent

    async def _run(self, agent: Agent) -> None:
        """Run ``agent`` in a task and return once its pools are bound."""
        key = self._key(agent)
        self.agents[key] = agent
        self._tasks[key] = asyncio.create_task(agent.run(), name=f"agent-{key}")
        server = agent.config.server
        await wait_for(
            lambda: agent.lan is not None and (agent.wan is not None or not server),
            f"{key} bound",
            timeout=5.0,
        )

    async def kill(self, agent: Agent | str) -> None:
        """Crash-stop: cancel the agent's run task (no leave broadcast)."""
        key = self._key(agent)
        task = self._tasks.pop(key)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def stop(self, agent: Agent | str, *, leave: bool = True) -> None:
        """Graceful stop; with ``leave`` the agent broadcasts its leave first."""
        key = self._key(agent)
        a = self.agents[key]
        if leave:
            await a.leave_pools()
        a.stop()
        task = self._tasks.pop(key)
        await asyncio.wait_for(task, timeout=10.0)

    def _key(self, agent: Agent | str) -> str:
        if isinstance(agent, str):
            return agent if "/" in agent else f"dc1/{agent}"
        return f"{agent.config.datacenter}/{agent.config.node_name}"

    # ------------------------------------------------------------------ addresses / HTTP

    @staticmethod
    def lan_addr(agent: Agent) -> str:
        host, port = agent.bound["serf_lan"]
        return f"{host}:{port}"

    @staticmethod
    def wan_addr(agent: Agent) -> str:
        host, port = agent.bound["serf_wan"]
        return f"{host}:{port}"

    @staticmethod
    def url(agent: Agent, path: str) -> str:
        host, port = agent.bound["http"]
        return f"http://{host}:{port}{path}"

    async def get(self, agent: Agent, path: str, **params: Any) -> tuple[int, Any, dict[str, str]]:
        """GET ``path``: (status, JSON body or text, headers)."""
        assert self._session is not None
        async with self._session.get(self.url(agent, path), params=params) as resp:
            body: Any = await resp.text()
            if resp.content_type == "application/json":
                body = await resp.json()
            return resp.status, body, dict(resp.headers)

    async def put(
        self, agent: Agent, path: str, json: Any = None, **params: Any
    ) -> tuple[int, Any]:
        """PUT ``path`` with an optional JSON body: (status, JSON body or text)."""
        assert self._session is not None
        async with self._session.put(self.url(agent, path), json=json, params=params) as resp:
            body: Any = await resp.text()
            if resp.content_type == "application/json":
                body = await resp.json()
            return resp.status, body
