"""The composition root: builds every component of a node and runs them together.

Rule: this is the only module that constructs components and owns their lifetime.
Construction is a chain of small ``build_*`` functions; ``Agent.components()`` lists
what runs, and ``Agent.run()`` starts them all in one ``asyncio.TaskGroup``. Shutdown is
the cancellation of that group (SIGINT/SIGTERM or ``Agent.stop()``), followed by
flushing what must survive a restart. Each part (HTTP, checks, gossip pools, node RPC,
the Connect service with the CA, global state and leaves, the proxy feed) is one
``build_*`` call and one row in ``components()``; each gets only what it uses.

Where the work is done: ``cluster.ClusterView`` (members, leader, peers, datacenters),
``pools.GossipPools`` (joins and leaves), ``forward.Router`` (which server answers a
call, ``Forward.Call``, reads of other datacenters) and ``forward.ReadServer``
(``Catalog.Read``), ``keyring.KeyringService`` (keyring fan-out), ``records`` (node
records beyond gossip) and ``index.NodeIndex``. The ``Agent`` methods the HTTP API
(``AgentAPI``) calls only hand over to them.

Cluster plumbing. Every node runs a LAN gossip pool whose single delegate is a
``DelegateMux`` (``agent.lan_delegate``; channel 1 = the catalog's ``CatalogSync``,
further channels added with ``add_channel`` before ``run()``), and an ``RPCServer`` on
``ports.server`` (``agent.router.register_rpc`` before ``run()``). Servers also
join the WAN pool as ``<node>.<dc>``. Gossip tags: ``dc``, ``role`` (``server``/``node``),
``port`` (the bound RPC port), ``id``, ``build``. Pools and the RPC listener are bound in
``run()`` (so ``lan``/``wan`` are None before it), RPC first because its real port goes
into the tags.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import random
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from node.agent.cluster import (
    ClusterView,
    KeyringPoolReport,
    advertise_address,
    member_tags,
)
from node.agent.forward import (
    DATACENTERS_METHOD,
    RAFT_STATUS_METHOD,
    ReadServer,
    Router,
    ServedRead,
    follow_server,
    raft_status,
    sync_handler,
    take_datacenters,
    take_raft_status,
)
from node.agent.index import NodeIndex
from node.agent.keyring import KeyringService, build_keyrings, keyring_saver
from node.agent.pools import GossipPools
from node.agent.proxy import build_proxy_feed
from node.agent.raftops import (
    CONFIGURATION_METHOD,
    REMOVE_PEER_METHOD,
    TRANSFER_LEADER_METHOD,
    RaftOperator,
)
from node.agent.records import RECORD_METHOD, RecordExchange
from node.api.app import FORWARDABLE_READS, AgentAPI, HTTPServer, make_app
from node.api.read import ReadSpec, ResponseCache
from node.catalog.checks import CheckRunner
from node.catalog.local import LocalState, NodeIdentity
from node.catalog.store import CatalogStore
from node.catalog.sync import CatalogSync
from node.catalog.watch import IndexNotifier
from node.clock import Clock, MonotonicClock
from node.config.agent import AgentConfig
from node.connect.service import NodeSeams, build_connect
from node.dns.server import DNSServer, DNSSources
from node.errors import ConfigError
from node.gossip.config import GossipConfig
from node.gossip.delegate import UserBroadcastQueue
from node.gossip.keyring import Keyring
from node.gossip.messages import MemberStatus
from node.gossip.mux import CHANNEL_CATALOG, CHANNEL_EVENTS, DelegateMux
from node.gossip.runtime import GossipRuntime, open_pool
from node.gossip.state import Member
from node.persist import atomic_write
from node.rpc.client import RPCClient
from node.rpc.reads import CATALOG_READ, ReadRequest, ValueCodec
from node.rpc.routing import ROLE_SERVER, TAG_ROLE
from node.rpc.server import RPCServer
from node.userevents import EventDelegate, UserEvent, accepts, validate_event

__all__ = ["Agent", "Component", "run_agent", "PORTS_FILE"]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: RPC that fires a user event in the callee's datacenter (``/v1/event/fire?dc=``).
EVENT_FIRE_METHOD = "Event.Fire"
PORTS_FILE = "ports.json"  # the ports actually bound (for -http-port 0 in tests)
#: How long a graceful leave waits for the leave broadcast to go out.
LEAVE_TIMEOUT = 5.0
#: How often a client refreshes its list of datacenters from a server.
DATACENTERS_REFRESH = 2.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Component:
    """One long-running part of the node: ``run()`` serves until cancelled."""

    name: str
    run: Callable[[], Awaitable[None]]


# ---------------------------------------------------------------------------- builders


def build_store() -> tuple[CatalogStore, IndexNotifier]:
    """The catalog of this datacenter and the notifier blocking queries wait on."""
    store = CatalogStore()
    notifier = IndexNotifier(store.index)
    store.set_on_change(notifier.notify)
    return store, notifier


def build_local_state(config: AgentConfig, store: CatalogStore, clock: Clock) -> LocalState:
    """The node's own services and checks, restored from ``data_dir`` unless dev.

    Services from config files are (re-)registered on every start, and config services
    the files no longer define are removed; API registrations are kept, as Consul does.
    """
    identity = NodeIdentity(
        name=config.node_name,
        datacenter=config.datacenter,
        address=advertise_address(config),
        node_id=config.node_id or "",
        tagged_addresses={"lan": advertise_address(config), "wan": config.advertise_addr_wan},
    )
    local = LocalState(
        identity=identity,
        store=store,
        data_dir=None if config.dev else config.data_dir,
        clock=clock,
        sidecar_ports=(config.ports.sidecar_min_port, config.ports.sidecar_max_port),
    )
    local.load_config_services(tuple(config.services))
    return local


def build_check_runner(
    local: LocalState,
    store: CatalogStore,
    notifier: IndexNotifier,
    clock: Clock,
    rng: random.Random,
) -> CheckRunner:
    """Runs HTTP/TCP/TTL/alias checks of the local services on the event loop."""
    return CheckRunner(local, store, notifier, clock=clock, rng=rng)


def build_gossip_configs(
    config: AgentConfig, lan: GossipConfig | None, wan: GossipConfig | None
) -> tuple[GossipConfig, GossipConfig]:
    """memberlist's LAN/WAN profiles (or a test's), with the configured reconnect timeouts."""
    lan_cfg = dataclasses.replace(
        lan or GossipConfig.lan(), reconnect_timeout=config.reconnect_timeout
    )
    wan_cfg = dataclasses.replace(
        wan or GossipConfig.wan(), reconnect_timeout=config.reconnect_timeout_wan
    )
    return lan_cfg, wan_cfg


def build_catalog_sync(
    config: AgentConfig,
    store: CatalogStore,
    local: LocalState,
    num_nodes: Callable[[], int],
    retransmit_mult: int,
) -> CatalogSync:
    """The catalog's gossip delegate, fed by every record LocalState publishes."""
    queue = UserBroadcastQueue(retransmit_mult=retransmit_mult, num_nodes=num_nodes)
    sync = CatalogSync(
        store, local_name=config.node_name, queue=queue, on_own_version=local.republish_above
    )
    local.add_record_listener(sync.local_record_changed)
    return sync


def build_events(
    config: AgentConfig, local: LocalState, num_nodes: Callable[[], int], retransmit_mult: int
) -> EventDelegate:
    """User events on their gossip channel, kept when their filters admit this node."""
    queue = UserBroadcastQueue(retransmit_mult=retransmit_mult, num_nodes=num_nodes)

    def accept(event: UserEvent) -> bool:
        services = {sid: svc.tags for sid, svc in local.services().items()}
        return accepts(event, config.node_name, services)

    return EventDelegate(queue, accept)


def build_served_reads(api: AgentAPI, reads: Mapping[str, ReadSpec]) -> dict[str, ServedRead]:
    """The reads other datacenters may run here: the API's queries with their codecs."""
    served = {}
    for name, spec in reads.items():
        assert spec.wire is not None  # read_table admits no read without one
        served[name] = ServedRead(query=functools.partial(spec.query, api), wire=spec.wire)
    return served


def build_dns(
    config: AgentConfig, store: CatalogStore, router: Router, view: ClusterView, clock: Clock,
    rng: random.Random,
) -> DNSServer | None:  # fmt: skip
    """Consul's DNS interface on ``ports.dns`` (None when it is -1)."""
    if config.ports.dns < 0:
        return None
    sources = DNSSources(
        store=store,
        forward_read=router.forward_read,
        servers=lambda: [(m.name, m.addr[0]) for m in view.alive_servers()],
    )
    wall = lambda: clock.utcnow().timestamp()  # noqa: E731
    return DNSServer(config.dns, datacenter=config.datacenter, sources=sources, wall=wall, rng=rng)


# ---------------------------------------------------------------------------- agent


class Agent:
    """One meshnode node: catalog, local state, checks, gossip, RPC and the HTTP API.

    ``lan_gossip`` / ``wan_gossip`` replace memberlist's LAN/WAN profiles (tests use
    ``GossipConfig.local()`` for fast failure detection).
    """

    def __init__(
        self,
        config: AgentConfig,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        lan_gossip: GossipConfig | None = None,
        wan_gossip: GossipConfig | None = None,
    ) -> None:
        self.config = config
        self.is_server = config.server
        self.clock: Clock = clock or MonotonicClock()
        self.rng = rng or random.Random()
        self.store, self.notifier = build_store()
        # Also wakes blocking queries on changes outside the catalog (members, global state).
        self.index = NodeIndex(self.store, self.notifier)
        self.local = build_local_state(config, self.store, self.clock)
        self.node_id = self.local.node_id
        self.checks = build_check_runner(
            self.local, self.store, self.notifier, self.clock, random.Random(self.rng.random())
        )
        self.response_cache = ResponseCache()
        self.app = make_app(self, rng=random.Random(self.rng.random()))
        self.http = HTTPServer(self.app, config.client_addr, config.ports.http)
        self.bound: dict[str, tuple[str, int]] = {}
        # Not bound to a loop until awaited (3.10+), so stop() works even before run().
        self._stop = asyncio.Event()
        self._build_cluster(lan_gossip, wan_gossip)
        self.connect = build_connect(config, self._connect_seams())  # channel 2, RPCs
        self.view.set_raft(self.connect.raft)
        self._build_raft_operator()
        self.proxies = build_proxy_feed(
            datacenter=config.datacenter, node_address=self.local.identity.address,
            store=self.store, notifier=self.notifier, local=self.local, connect=self.connect,
            datacenters=self.view.datacenters, forward_read=self.router.forward_read,
            rng=random.Random(self.rng.random()),
        )  # fmt: skip
        self.dns = build_dns(config, self.store, self.router, self.view, self.clock,
                             random.Random(self.rng.random()))  # fmt: skip

    def _connect_seams(self) -> NodeSeams:
        return NodeSeams(
            node_id=self.node_id, clock=self.clock, rng=self.rng, catalog=self.store,
            catalog_index=self.notifier, local=self.local, gossip=self.lan_delegate,
            rpc=self.router, members=lambda: [] if self.lan is None else self.lan.members(),
            bump_index=self.index.bump,
        )  # fmt: skip

    def _build_raft_operator(self) -> None:
        self.raft_ops = RaftOperator(
            config=self.config, node_id=self.node_id, view=self.view,
            members=lambda: [] if self.lan is None else self.lan.members(),
            group=lambda: self.connect.group, call_server=self.router.call_server,
            call_address=self.rpc_client.call,
            rpc_port=lambda: self.bound.get("server", ("", self.config.ports.server))[1],
        )  # fmt: skip
        if self.is_server:
            for method, handler in self.raft_ops.handlers().items():
                self.router.register_rpc(method, handler)

    def _build_cluster(
        self, lan_gossip: GossipConfig | None, wan_gossip: GossipConfig | None
    ) -> None:
        config = self.config
        self.lan_config, self.wan_config = build_gossip_configs(config, lan_gossip, wan_gossip)
        self.lan_keyring, self.wan_keyring = build_keyrings(config)
        self.pools = GossipPools(lan_port=config.ports.serf_lan, wan_port=config.ports.serf_wan)
        self.view = ClusterView(config, self.node_id, self.pools)
        self.lan_delegate = DelegateMux()
        self.catalog_sync = build_catalog_sync(
            config, self.store, self.local, self.pools.num_lan_nodes, self.lan_config.retransmit_mult
        )  # fmt: skip
        self.lan_delegate.add_channel(CHANNEL_CATALOG, self.catalog_sync)
        self.events = build_events(
            config, self.local, self.pools.num_lan_nodes, self.lan_config.retransmit_mult
        )
        self.lan_delegate.add_channel(CHANNEL_EVENTS, self.events)
        self._build_rpc()

    def _build_rpc(self) -> None:
        config = self.config
        self.rpc_server = RPCServer(
            {}, lambda: self.lan_keyring, verify_incoming=config.encrypt_verify_incoming
        )
        self.rpc_client = RPCClient(
            lambda: self.lan_keyring, verify_outgoing=config.encrypt_verify_outgoing
        )
        self.router = Router(
            datacenter=config.datacenter, node_name=config.node_name, is_server=self.is_server,
            client=self.rpc_client, pools=self.pools, datacenters=self.view.datacenters,
            serve=self.rpc_server.add_handler, rng=self.rng,
        )  # fmt: skip
        self.records = RecordExchange(
            node_name=config.node_name, store=self.store, sync=self.catalog_sync,
            client=self.rpc_client, pools=self.pools,
        )  # fmt: skip
        keyrings = (self.lan_keyring, self.wan_keyring)
        self.keyrings = KeyringService(
            datacenter=config.datacenter, is_server=self.is_server, keyrings=keyrings,
            save=keyring_saver(config, keyrings), pools=self.pools, client=self.rpc_client,
            call_server=self.router.call_server, datacenters=self.view.datacenters,
        )  # fmt: skip
        reads = ReadServer(
            build_served_reads(self, FORWARDABLE_READS), self.notifier,
            monotonic=self.clock.monotonic, rng=self.rng,
        )  # fmt: skip
        handlers = {
            RECORD_METHOD: self.records.serve_record,
            CATALOG_READ: reads.handle,
            DATACENTERS_METHOD: sync_handler(self.view.datacenters),
            RAFT_STATUS_METHOD: sync_handler(functools.partial(raft_status, self.view)),
            EVENT_FIRE_METHOD: self._serve_event_fire,
            **self.keyrings.handlers(),
        }
        for method, handler in handlers.items():
            self.router.register_rpc(method, handler)

    @property
    def lan(self) -> GossipRuntime | None:
        """The LAN gossip pool, once bound."""
        return self.pools.lan

    @property
    def wan(self) -> GossipRuntime | None:
        """The WAN gossip pool of a server, once bound."""
        return self.pools.wan

    # -- lifecycle

    def components(self) -> list[Component]:
        """Everything that runs for the node's lifetime, in start order (after binding)."""
        cfg, pools = self.config, self.pools
        rows = [
            Component(name="http", run=self.http.serve),
            Component(name="checks", run=self.checks.run),
            Component(name="connect", run=self.connect.run),
            Component(name="proxies", run=self.proxies.run),
        ]
        if self.dns is not None:
            rows.append(Component(name="dns", run=self.dns.serve))
        if pools.lan is not None:
            retry = functools.partial(pools.retry_join, cfg.retry_join, cfg.retry_interval)
            rows.append(Component(name="gossip-lan", run=pools.lan.run))
            rows.append(Component(name="catalog-fetch", run=self.records.fetch_missing))
            rows.append(Component(name="retry-join", run=retry))
        if pools.wan is not None:
            retry_wan = functools.partial(
                pools.retry_join, cfg.retry_join_wan, cfg.retry_interval_wan, wan=True
            )
            rows.append(Component(name="gossip-wan", run=pools.wan.run))
            rows.append(Component(name="retry-join-wan", run=retry_wan))
        if self.is_server:
            rows.append(Component(name="raft-membership", run=self.raft_ops.run))
        if pools.lan is not None and not self.is_server:
            view, call = self.view, self.router.call_server
            follow = functools.partial(
                follow_server, call, DATACENTERS_METHOD, functools.partial(take_datacenters, view),
                self.index.bump, interval=DATACENTERS_REFRESH,
            )  # fmt: skip
            rows.append(Component(name="datacenters", run=follow))
            follow_group = functools.partial(
                follow_server, call, RAFT_STATUS_METHOD, functools.partial(take_raft_status, view),
                self.index.bump, interval=DATACENTERS_REFRESH, when=view.runs_raft,
            )  # fmt: skip
            rows.append(Component(name="raft-status", run=follow_group))
        return rows

    async def run(self) -> None:
        """Start every component; return after ``stop()`` or SIGINT/SIGTERM, cleanly."""
        self._install_signal_handlers()
        await self._bind_listeners()
        log.info(
            "agent started", extra={"node": self.config.node_name, "dc": self.config.datacenter}
        )
        try:
            async with asyncio.TaskGroup() as group:
                for component in self.components():
                    group.create_task(self._supervise(component), name=component.name)
                group.create_task(self._wait_stop(), name="stop")
        except* _Shutdown:
            pass
        except* ConfigError as group:  # e.g. a primary_datacenter mismatch: say it plainly
            raise group.exceptions[0] from None
        finally:
            await self._shutdown()

    def stop(self) -> None:
        """Ask ``run()`` to finish (safe to call from a signal handler)."""
        self._stop.set()

    async def leave_pools(self) -> None:
        """Broadcast a graceful leave on every pool (waits at most ``LEAVE_TIMEOUT``); a
        server of a Raft group hands leadership over first and leaves the group after."""
        await self.raft_ops.hand_over()
        await self.pools.leave(LEAVE_TIMEOUT)
        await self.raft_ops.leave_group()

    async def leave(self) -> None:
        """``meshnode leave``: leave gracefully, then shut the agent down."""
        await self.leave_pools()
        self.stop()

    async def _bind_listeners(self) -> None:
        try:
            host, port = await self.http.start()
        except OSError as exc:
            where = f"{self.config.client_addr}:{self.config.ports.http}"
            raise ConfigError(
                f"cannot listen on {where}: {exc.strerror or exc}", key="ports.http"
            ) from None
        self.bound["http"] = (host, port)
        await self._bind_dns()
        await self._bind_cluster()
        # The file first, then the log line: whoever saw the line can read the file.
        if self.config.data_dir and not self.config.dev:
            ports = {name: addr[1] for name, addr in self.bound.items()}
            atomic_write(Path(self.config.data_dir) / PORTS_FILE, json.dumps(ports).encode())
        log.info("http server listening", extra={"addr": f"{host}:{port}"})

    async def _bind_dns(self) -> None:
        if self.dns is None:
            return
        cfg = self.config
        try:
            self.bound["dns"] = await self.dns.start(cfg.client_addr, cfg.ports.dns)
        except OSError as exc:
            where = f"{cfg.client_addr}:{cfg.ports.dns}"
            raise ConfigError(
                f"cannot listen on {where}: {exc.strerror or exc}", key="ports.dns"
            ) from None
        host, port = self.bound["dns"]
        log.info("dns server listening", extra={"addr": f"{host}:{port}"})

    async def _supervise(self, component: Component) -> None:
        # A component that fails takes the node down (TaskGroup), but says why first.
        try:
            await component.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("component failed", extra={"component": component.name})
            raise

    async def _wait_stop(self) -> None:
        await self._stop.wait()
        log.info("shutting down", extra={"node": self.config.node_name})
        # The leave must go out while the pools still run (before the group is cancelled).
        if self.config.leave_on_terminate and not self.pools.left:
            await self.leave_pools()
        raise _Shutdown

    async def _shutdown(self) -> None:
        # LocalState persists every acknowledged write synchronously (atomic_write), so
        # closing the listeners is all that is left: no request can start a new write.
        await self.http.aclose()
        if self.dns is not None:
            await self.dns.aclose()
        await self.rpc_server.close()
        await self.rpc_client.close()  # pooled connections to other nodes
        await self.pools.aclose()
        self._remove_signal_handlers()
        log.info("agent stopped", extra={"node": self.config.node_name})

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.stop)

    def _remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)

    # -- binding the cluster

    async def _bind_cluster(self) -> None:
        """RPC listener first (its real port goes into the gossip tags), then the pools."""
        cfg = self.config
        try:
            await self.rpc_server.start(cfg.bind_addr, cfg.ports.server)
        except OSError as exc:
            where = f"{cfg.bind_addr}:{cfg.ports.server}"
            raise ConfigError(
                f"cannot listen on {where}: {exc.strerror or exc}", key="ports.server"
            ) from None
        self.bound["server"] = self.rpc_server.addr
        tags = member_tags(cfg, self.node_id, self.rpc_server.addr[1])
        self.pools.lan = await self._open_pool(
            name=cfg.node_name, port=cfg.ports.serf_lan, advertise=advertise_address(cfg),
            config=self.lan_config, tags=tags, keyring=self.lan_keyring, pool="lan",
            delegate=self.lan_delegate, on_change=self._on_lan_member,
            on_reaped=self.records.on_member_reaped,
        )  # fmt: skip
        self.bound["serf_lan"] = self.pools.lan.transport.local_addr
        own = self.store.entry(cfg.node_name)
        self.records.announce(own.record if own else self.local.record())
        if self.is_server:
            self.pools.wan = await self._open_pool(
                name=f"{cfg.node_name}.{cfg.datacenter}", port=cfg.ports.serf_wan,
                advertise=cfg.advertise_addr_wan or advertise_address(cfg), config=self.wan_config,
                tags=tags, keyring=self.wan_keyring, pool="wan", delegate=None,
                on_change=self._on_wan_member, on_reaped=None,
            )  # fmt: skip
            self.bound["serf_wan"] = self.pools.wan.transport.local_addr

    async def _open_pool(
        self, *, name: str, port: int, advertise: str, config: GossipConfig,
        tags: Mapping[str, str], keyring: Keyring | None, pool: str, delegate: DelegateMux | None,
        on_change: Callable[[Member, MemberStatus | None], None] | None,
        on_reaped: Callable[[Member], None] | None,
    ) -> GossipRuntime:  # fmt: skip
        try:
            return await open_pool(
                name=name, bind=(self.config.bind_addr, port), advertise=(advertise, port),
                config=config, tags=tags, keyring=keyring, pool=pool, delegate=delegate,
                on_member_change=on_change, on_member_reaped=on_reaped,
                verify_incoming=self.config.encrypt_verify_incoming,
                verify_outgoing=self.config.encrypt_verify_outgoing,
                clock=self.clock, rng=random.Random(self.rng.random()),
            )  # fmt: skip
        except OSError as exc:
            key = "ports.serf_lan" if pool == "lan" else "ports.serf_wan"
            where = f"{self.config.bind_addr}:{port}"
            raise ConfigError(f"cannot listen on {where}: {exc.strerror or exc}", key=key) from None

    def _on_lan_member(self, member: Member, old: MemberStatus | None) -> None:
        self.records.on_member_change(member, old)
        if member.tags.get(TAG_ROLE) == ROLE_SERVER:
            self.index.bump()  # leader/peers answers changed

    def _on_wan_member(self, member: Member, old: MemberStatus | None) -> None:
        del member, old
        self.index.bump()  # datacenters / WAN members answers changed

    # -- what the HTTP API asks (AgentAPI): handed over to the component that knows

    def members(self, *, wan: bool = False) -> list[dict[str, Any]]:
        """Gossip members as /v1/agent/members shows them, this node first."""
        return self.view.members(wan=wan)

    def leader(self) -> str:
        """RPC address of the datacenter's leader, ``""`` if none is known."""
        return self.view.leader()

    def peers(self) -> list[str]:
        """RPC addresses of the datacenter's alive servers."""
        return self.view.peers()

    def datacenters(self) -> list[str]:
        """Known datacenters, ours first then by name."""
        return self.view.datacenters()

    async def join(self, addrs: Sequence[str], *, wan: bool = False) -> int:
        """Join the LAN (or WAN) pool through ``addrs``; how many answered."""
        return await self.pools.join(addrs, wan=wan)

    def force_leave(self, node: str) -> None:
        """Mark a failed member left."""
        self.pools.force_leave(node)

    async def keyring_op(self, op: str, key: str | None = None) -> list[KeyringPoolReport]:
        """A keyring operation on every node of every datacenter."""
        return await self.keyrings.op(op, key)

    async def forward_read(self, dc: str, read: ReadRequest, wire: ValueCodec[T]) -> tuple[T, int]:
        """Run ``read`` in datacenter ``dc``: its answer and index."""
        return await self.router.forward_read(dc, read, wire)

    async def fire_event(self, event: UserEvent, dc: str | None) -> UserEvent:
        """Broadcast ``event`` in our datacenter, or through a server of ``dc``."""
        validate_event(event)
        if dc is None or dc == self.config.datacenter:
            return self.events.fire(event)
        await self.router.call_server(EVENT_FIRE_METHOD, event.to_wire(), dc=dc)
        return event

    async def _serve_event_fire(self, args: Any) -> None:
        event = UserEvent.from_wire(args)
        validate_event(event)
        self.events.fire(event)

    async def raft_configuration(self, *, stale: bool, dc: str | None) -> Any:
        """The Raft configuration, as a server of ``dc`` answers it."""
        return await self.raft_ops.call(CONFIGURATION_METHOD, {"stale": stale}, dc)

    async def raft_remove_peer(self, *, server_id: str, address: str, dc: str | None) -> None:
        """Remove a server from the Raft configuration of ``dc``."""
        await self.raft_ops.call(REMOVE_PEER_METHOD, {"id": server_id, "address": address}, dc)

    async def raft_transfer_leader(self, *, server_id: str, dc: str | None) -> None:
        """Hand the Raft leadership of ``dc`` to ``server_id`` (or to any caught-up server)."""
        await self.raft_ops.call(TRANSFER_LEADER_METHOD, {"id": server_id}, dc)


class _Shutdown(Exception):
    """Raised inside the root TaskGroup to cancel every component."""


def run_agent(config: AgentConfig) -> None:
    """Run an agent to completion on a fresh event loop (uvloop when available)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a Linux-only dependency
        asyncio.run(_main(config))
        return
    uvloop.run(_main(config))


async def _main(config: AgentConfig) -> None:
    agent = Agent(config)
    await agent.run()
