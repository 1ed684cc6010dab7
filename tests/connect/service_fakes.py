"""In-memory stand-ins for the node seams the Connect components use, for unit tests.

``FakeNet`` holds fake agents of any number of datacenters. RPC calls go straight to the
target's registered handler, through msgpack and the RPC error codec like the real wire;
gossip is a background task delivering each node's broadcasts to its datacenter's other
nodes and running push-pulls between them. ``partition(a, b)`` cuts RPC and gossip
between two groups of nodes; ``heal()`` restores it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from node.agent.agent import build_local_state, build_store
from node.api.read import ResponseCache
from node.catalog.parse import parse_service
from node.clock import MonotonicClock
from node.config.agent import AgentConfig
from node.connect.service import ConnectService, NodeSeams, Timing, build_connect
from node.errors import DatacenterUnavailable, NodeError, RPCUnreachable
from node.gossip.messages import MemberStatus
from node.rpc.codec import error_from_wire, error_to_wire
from node.wire import pack, unpack

FAST = Timing(
    bootstrap_delay=0.05, pull_wait=2.0, rpc_timeout=2.0, retry_min=0.02, retry_max=0.2,
    maintenance=0.2, tombstone_grace=3600.0, registration_wait=1.0,
)  # fmt: skip
#: What a service raises while its cluster is still coming up: a poll retries on these.
TRANSIENT = (NodeError, AssertionError, KeyError, AttributeError)


@dataclass(frozen=True)
class FakeMember:
    name: str
    tags: dict[str, str]
    status: MemberStatus = MemberStatus.ALIVE


class FakeMux:
    def __init__(self) -> None:
        self.channels: dict[int, Any] = {}

    def add_channel(self, number: int, delegate: Any) -> None:
        assert number not in self.channels
        self.channels[number] = delegate


class FakeLan:
    def __init__(self, net: FakeNet, agent: FakeAgent) -> None:
        self._net, self._agent = net, agent

    def members(self) -> list[FakeMember]:
        return [
            FakeMember(a.name, {"dc": a.config.datacenter, "role": a.role})
            for a in self._net.agents.values()
            if a.config.datacenter == self._agent.config.datacenter
            and self._net.reachable(self._agent, a)
        ]


class FakeAgent:
    """What the Connect components need from ``node.agent.Agent``."""

    def __init__(self, net: FakeNet, config: AgentConfig) -> None:
        self.config = config
        self.name = config.node_name
        self.role = "server" if config.server else "node"
        self.is_server = config.server
        self.clock = MonotonicClock()
        self.rng = random.Random(hash(config.node_name) & 0xFFFF)
        self.store, self.notifier = build_store()
        self._extra = 0
        self.store.set_on_change(lambda index: self.notifier.notify(index + self._extra))
        self.local = build_local_state(config, self.store, self.clock)
        self.node_id = self.local.node_id
        self.lan = FakeLan(net, self)
        self.lan_delegate = FakeMux()
        self.handlers: dict[str, Callable[[Any], Any]] = {}
        self._net = net
        self.local.add_record_listener(lambda old, new: net.spread_record(self, new))
        # What the HTTP API (node.api.app.AgentAPI) reads besides the seams.
        self.response_cache = ResponseCache()
        self.bound: dict[str, tuple[str, int]] = {}
        self.connect: ConnectService | None = None

    def members(self, *, wan: bool = False) -> list[dict[str, Any]]:
        return []

    def leader(self) -> str:
        return "127.0.0.1:8300"

    def peers(self) -> list[str]:
        return []

    async def forward_read(self, dc: str, name: str, args: Any, opts: Any) -> Any:
        raise DatacenterUnavailable(f"No path to datacenter {dc!r}")

    def register_rpc(self, method: str, handler: Callable[[Any], Any]) -> None:
        self.handlers[method] = handler

    def bump_index(self) -> int:
        self._extra += 1
        self.notifier.notify(self.store.index + self._extra)
        return self.store.index + self._extra

    def datacenters(self) -> list[str]:
        return sorted({a.config.datacenter for a in self._net.agents.values()})

    async def call_server(
        self, method: str, args: Any, *, dc: str | None = None, timeout: float = 10.0
    ) -> Any:
        return await self._net.call(self, method, args, dc or self.config.datacenter, timeout)

    async def call_peer_server(self, method: str, args: Any, *, timeout: float = 10.0) -> Any:
        return await self._net.call(
            self, method, args, self.config.datacenter, timeout, exclude=self.name
        )

    def register(self, raw: dict[str, Any]) -> None:
        self.local.register_service(parse_service(raw))


class FakeNet:
    def __init__(self, timing: Timing = FAST) -> None:
        self.agents: dict[str, FakeAgent] = {}
        self.services: dict[str, ConnectService] = {}
        self.timing = timing
        self._cut: set[frozenset[str]] = set()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._gossip: asyncio.Task[None] | None = None
        self.rpc_log: list[tuple[str, str, str]] = []
        self.errors: dict[str, BaseException] = {}

    # -- building
    def add(
        self, name: str, dc: str = "dc1", *, server: bool = False, primary: str = "dc1",
        data_dir: str | None = None, **extra: Any,
    ) -> ConnectService:  # fmt: skip
        config = AgentConfig(
            node_name=name, datacenter=dc, primary_datacenter=primary, server=server,
            dev=data_dir is None, data_dir=data_dir, **extra,
        )  # fmt: skip
        agent = FakeAgent(self, config)
        self.agents[name] = agent
        for other in self.agents.values():  # catalog records of the DC, as gossip would
            if other is not agent and other.config.datacenter == dc:
                agent.store.upsert_node(other.local.record())
                other.store.upsert_node(agent.local.record())
        seams = NodeSeams(
            node_id=agent.node_id, clock=agent.clock, rng=agent.rng, catalog=agent.store,
            catalog_index=agent.notifier, local=agent.local, members=agent.lan.members,
            gossip=agent.lan_delegate, rpc=agent, bump_index=agent.bump_index,
        )  # fmt: skip
        service = build_connect(config, seams, timing=self.timing)
        agent.connect = service
        self.services[name] = service
        return service

    def start(self, name: str | None = None) -> None:
        for n in [name] if name else list(self.services):
            if n not in self._tasks:
                self._tasks[n] = asyncio.create_task(self._run(n))
        if self._gossip is None:
            self._gossip = asyncio.create_task(self._gossip_loop())

    async def _run(self, name: str) -> None:
        try:
            await self.services[name].run()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # recorded for the test to inspect
            self.errors[name] = exc

    async def stop(self, name: str | None = None) -> None:
        names = [name] if name else list(self._tasks)
        for n in names:
            task = self._tasks.pop(n, None)
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if name is None and self._gossip is not None:
            self._gossip.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._gossip
            self._gossip = None

    def remove(self, name: str) -> None:
        self.agents.pop(name)
        self.services.pop(name)

    # -- faults
    def partition(self, a: Iterable[str], b: Iterable[str]) -> None:
        self._cut |= {frozenset((x, y)) for x in a for y in b}

    def heal(self) -> None:
        self._cut.clear()

    def reachable(self, a: FakeAgent, b: FakeAgent) -> bool:
        return frozenset((a.name, b.name)) not in self._cut and b.name in self._tasks

    # -- catalog and gossip
    def spread_record(self, source: FakeAgent, record: Any) -> None:
        for other in self.agents.values():
            if other is not source and other.config.datacenter == source.config.datacenter:
                other.store.upsert_node(record)

    async def _gossip_loop(self) -> None:
        rounds = 0
        while True:
            await asyncio.sleep(0.01)
            rounds += 1
            self.gossip_round(push_pull=rounds % 10 == 0)

    def gossip_round(self, *, push_pull: bool = False) -> None:
        live = [a for a in self.agents.values() if a.name in self._tasks]
        for src in live:
            peers = [
                p for p in live if p is not src and p.config.datacenter == src.config.datacenter
            ]
            sync = src.lan_delegate.channels[2]
            for payload in sync.get_broadcasts(2, 1400):
                for peer in peers:
                    if self.reachable(src, peer):
                        peer.lan_delegate.channels[2].notify_msg(payload)
            if push_pull:
                for peer in peers:
                    if self.reachable(src, peer):
                        peer.lan_delegate.channels[2].merge_remote_state(
                            sync.local_state(False), False
                        )

    # -- RPC
    async def call(
        self, caller: FakeAgent, method: str, args: Any, dc: str, timeout: float,
        exclude: str | None = None,
    ) -> Any:  # fmt: skip
        servers = [
            a for a in self.agents.values()
            if a.is_server and a.config.datacenter == dc and a.name in self._tasks
            and a.name != exclude
        ]  # fmt: skip
        if not servers:
            raise DatacenterUnavailable(f"No path to datacenter {dc!r}")
        target = caller.rng.choice(servers)
        if not self.reachable(caller, target):
            raise RPCUnreachable(f"{target.name} unreachable")
        handler = target.handlers.get(method)
        if handler is None:
            raise RPCUnreachable(f"no handler {method}")
        self.rpc_log.append((caller.name, target.name, method))
        try:
            async with asyncio.timeout(timeout):
                result = await handler(unpack(pack(args)))
        except TimeoutError:
            raise RPCUnreachable(f"{method} to {target.name} timed out") from None
        except NodeError as exc:
            raise error_from_wire(unpack(pack(error_to_wire(exc)))) from None
        return unpack(pack(result))


__all__ = ["FAST", "TRANSIENT", "FakeNet", "FakeAgent"]
