"""The composition root: builds every component of a node and runs them together.

Rule: this is the only module that constructs components and owns their lifetime.
Construction is a chain of small ``build_*`` functions; ``Agent.components()`` lists
what runs, and ``Agent.run()`` starts them all in one ``asyncio.TaskGroup``. Shutdown is
the cancellation of that group (SIGINT/SIGTERM or ``Agent.stop()``), followed by
flushing what must survive a restart. Each part (HTTP, checks, gossip pools, node RPC,
the Connect service with the CA, global state and leaves, the proxy feed) is one
``build_*`` call and one row in ``components()``.

What other components (and the HTTP API) ask the agent goes through methods here —
``members()``, ``leader()``, ``datacenters()``, ``forward_read()``, ``call_server()``.

Cluster plumbing. Every node runs a LAN gossip pool (``agent.lan``) whose
single delegate is a ``DelegateMux`` (``agent.lan_delegate``; channel 1 = the catalog's
``CatalogSync``, further channels added with ``add_channel`` before ``run()``), and an
``RPCServer`` on ``ports.server`` (``agent.rpc_server``; ``register_rpc`` before
``run()``). Servers also join the WAN pool (``agent.wan``) as ``<node>.<dc>``. Gossip
tags: ``dc``, ``role`` (``server``/``node``), ``port`` (the bound RPC port), ``id``,
``build``. Pools and the RPC listener are bound in ``run()`` (so ``lan``/``wan`` are None
before it), RPC first because its real port goes into the tags. ``call_server`` routes a
call: own datacenter → a server dispatches to itself without a socket, a client picks an
alive server of its LAN; another datacenter → a server calls an alive WAN member of it,
a client asks a server of its own datacenter to forward (``Forward.Call``). The leader
is a stand-in (there is no raft): the alive server of the datacenter with the smallest
name, which every member computes the same from the same membership. Keyrings (LAN and
WAN) are opened from ``data_dir`` (a saved keyring beats ``encrypt``) and saved again
after every keyring operation; RPC is sealed with the LAN keyring, so datacenters that
talk RPC must share a key (``encrypt`` and cluster-wide keyring operations give that).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import random
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from node import __version__
from node.agent.cluster import KeyringPoolReport, keyring_reports, member_view, parse_join_addr
from node.agent.proxy import SERVICE_KIND, build_proxy_feed
from node.api.app import FORWARDABLE_READS, HTTPServer, make_app
from node.api.blocking import MAX_WAIT, QueryOptions
from node.api.read import ForwardedBody, ResponseCache, answer_read, read_table
from node.catalog.checks import CheckRunner
from node.catalog.local import LocalState, NodeIdentity
from node.catalog.store import CatalogStore
from node.catalog.sync import CatalogSync
from node.catalog.values import NodeRecord
from node.catalog.watch import IndexNotifier
from node.clock import Clock, MonotonicClock
from node.config.agent import AgentConfig
from node.connect.service import NodeSeams, build_connect
from node.errors import (
    ConfigError,
    DatacenterUnavailable,
    InvalidRequest,
    NodeError,
    NotFound,
    RPCUnreachable,
)
from node.gossip.config import GossipConfig
from node.gossip.delegate import UserBroadcastQueue
from node.gossip.keyring import LAN_KEYRING_FILE, WAN_KEYRING_FILE, Keyring, open_keyring, parse_key
from node.gossip.messages import Address, MemberStatus
from node.gossip.mux import CHANNEL_CATALOG, DelegateMux
from node.gossip.runtime import GossipRuntime, open_pool
from node.gossip.state import Member
from node.persist import atomic_write
from node.rpc.client import RPCClient, call_datacenter
from node.rpc.keyops import KEYRING_METHOD, KeyringOp, keyring_handler
from node.rpc.routing import ROLE_NODE, ROLE_SERVER, TAG_DC, TAG_ROLE, rpc_address, rpc_targets
from node.rpc.server import RPCServer

__all__ = ["Agent", "Component", "run_agent", "PORTS_FILE"]

log = logging.getLogger(__name__)

PORTS_FILE = "ports.json"  # the ports actually bound (for -http-port 0 in tests)
#: Default bound of one server call: a datacenter whose servers are all down answers
#: with DatacenterUnavailable within this many seconds, never hangs.
RPC_TIMEOUT = 5.0
#: Bound of a whole cluster-wide keyring operation, and of its hop to each other datacenter.
KEYRING_TIMEOUT = 30.0
KEYRING_HOP_TIMEOUT = 10.0
#: How long a graceful leave waits for the leave broadcast to go out.
LEAVE_TIMEOUT = 5.0
#: Pause between rounds fetching records CatalogSync.missing() asked for.
FETCH_INTERVAL = 0.5
#: How often a client refreshes its list of datacenters from a server.
DATACENTERS_REFRESH = 2.0
#: Extra member tags shown by /v1/agent/members (not gossiped: they never change).
SHOWN_TAGS: Final = MappingProxyType({"vsn": "2", "segment": ""})
MEMBER_ALIVE = 1  # serf.StatusAlive, as /v1/agent/members encodes it


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


def advertise_address(config: AgentConfig) -> str:
    """The address other nodes should use for us (config resolves advertise vs bind)."""
    return config.advertise_addr


def build_keyrings(config: AgentConfig) -> tuple[Keyring | None, Keyring | None]:
    """LAN and WAN keyrings: saved files in ``data_dir`` win over ``encrypt`` (as Consul).

    ``-dev`` (no data dir) keeps them in memory. The WAN keyring exists on servers only.
    """
    if config.dev or not config.data_dir:
        if config.encrypt is None:
            return None, None
        key = parse_key(config.encrypt)
        return Keyring(key), (Keyring(key) if config.server else None)
    rings: list[Keyring | None] = []
    for name in (LAN_KEYRING_FILE, WAN_KEYRING_FILE) if config.server else (LAN_KEYRING_FILE,):
        ring, warning = open_keyring(Path(config.data_dir) / name, config.encrypt)
        if warning:
            log.warning("%s", warning)
        rings.append(ring)
    return rings[0], (rings[1] if len(rings) > 1 else None)


def save_keyrings(config: AgentConfig, lan: Keyring | None, wan: Keyring | None) -> None:
    """Persist both keyrings after a keyring operation (nothing to do in ``-dev``)."""
    if config.dev or not config.data_dir:
        return
    for ring, name in ((lan, LAN_KEYRING_FILE), (wan, WAN_KEYRING_FILE)):
        if ring is not None:
            ring.save(Path(config.data_dir) / name)


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


def member_tags(config: AgentConfig, node_id: str, rpc_port: int) -> dict[str, str]:
    """Gossip tags of this node (LAN and WAN alike): what routing and members() read."""
    return {
        "dc": config.datacenter,
        "role": ROLE_SERVER if config.server else ROLE_NODE,
        "port": str(rpc_port),
        "id": node_id,
        "build": __version__,
    }


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
        self._bumps = 0  # bump_index() calls: the notifier runs this far above the store
        self.store.set_on_change(self._store_changed)
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
        self.proxies = build_proxy_feed(self)  # sidecar/gateway listeners and their feed
        # What other datacenters may read here: the API's reads plus the proxies' own.
        self._forwardable = read_table(*FORWARDABLE_READS.values(), SERVICE_KIND)

    def _connect_seams(self) -> NodeSeams:
        return NodeSeams(
            node_id=self.node_id, clock=self.clock, rng=self.rng, catalog=self.store,
            catalog_index=self.notifier, local=self.local, gossip=self.lan_delegate, rpc=self,
            members=lambda: [] if self.lan is None else self.lan.members(),
            bump_index=self.bump_index,
        )  # fmt: skip

    def _build_cluster(
        self, lan_gossip: GossipConfig | None, wan_gossip: GossipConfig | None
    ) -> None:
        config = self.config
        self.lan_config, self.wan_config = build_gossip_configs(config, lan_gossip, wan_gossip)
        self.lan_keyring, self.wan_keyring = build_keyrings(config)
        self.lan: GossipRuntime | None = None
        self.wan: GossipRuntime | None = None
        self.lan_delegate = DelegateMux()
        self.catalog_sync = build_catalog_sync(
            config, self.store, self.local, self._num_lan_nodes, self.lan_config.retransmit_mult
        )
        self.lan_delegate.add_channel(CHANNEL_CATALOG, self.catalog_sync)
        self._handlers: dict[str, Callable[[Any], Awaitable[Any]]] = {}
        self.rpc_server = RPCServer(
            {}, lambda: self.lan_keyring, verify_incoming=config.encrypt_verify_incoming
        )
        self.rpc_client = RPCClient(
            lambda: self.lan_keyring, verify_outgoing=config.encrypt_verify_outgoing
        )
        self._remote_dcs: list[str] = []  # a client's datacenters, as a server last said
        self._left = False
        for method, handler in self._builtin_handlers().items():
            self.register_rpc(method, handler)

    # -- lifecycle

    def components(self) -> list[Component]:
        """Everything that runs for the node's lifetime, in start order (after binding)."""
        rows = [
            Component(name="http", run=self.http.serve),
            Component(name="checks", run=self.checks.run),
            Component(name="connect", run=self.connect.run),
            Component(name="proxies", run=self.proxies.run),
        ]
        if self.lan is not None:
            rows.append(Component(name="gossip-lan", run=self.lan.run))
            rows.append(Component(name="catalog-fetch", run=self._fetch_missing_loop))
            rows.append(Component(name="retry-join", run=self._retry_join_lan))
        if self.wan is not None:
            rows.append(Component(name="gossip-wan", run=self.wan.run))
            rows.append(Component(name="retry-join-wan", run=self._retry_join_wan))
        if self.lan is not None and not self.is_server:
            rows.append(Component(name="datacenters", run=self._refresh_datacenters_loop))
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

    async def _bind_listeners(self) -> None:
        try:
            host, port = await self.http.start()
        except OSError as exc:
            where = f"{self.config.client_addr}:{self.config.ports.http}"
            raise ConfigError(
                f"cannot listen on {where}: {exc.strerror or exc}", key="ports.http"
            ) from None
        self.bound["http"] = (host, port)
        await self._bind_cluster()
        # The file first, then the log line: whoever saw the line can read the file.
        if self.config.data_dir and not self.config.dev:
            ports = {name: addr[1] for name, addr in self.bound.items()}
            atomic_write(Path(self.config.data_dir) / PORTS_FILE, json.dumps(ports).encode())
        log.info("http server listening", extra={"addr": f"{host}:{port}"})

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
        if self.config.leave_on_terminate and not self._left:
            await self.leave_pools()
        raise _Shutdown

    async def _shutdown(self) -> None:
        # LocalState persists every acknowledged write synchronously (atomic_write), so
        # closing the listeners is all that is left: no request can start a new write.
        await self.http.aclose()
        await self.rpc_server.close()
        await self.rpc_client.close()  # pooled connections to other nodes
        for pool in (self.lan, self.wan):
            if pool is not None:
                await pool.transport.close()
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

    # -- cluster: binding and membership callbacks

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
        self.lan = await self._open_pool(
            name=cfg.node_name, port=cfg.ports.serf_lan, advertise=advertise_address(cfg),
            config=self.lan_config, tags=tags, keyring=self.lan_keyring, pool="lan",
            delegate=self.lan_delegate, on_change=self._on_lan_member, on_reaped=self._on_lan_reaped,
        )  # fmt: skip
        self.bound["serf_lan"] = self.lan.transport.local_addr
        # Our record was published before the pool existed: announce it once, or peers
        # that did not push-pull with us would wait for a periodic push-pull (30 s+).
        own = self.store.entry(cfg.node_name)
        self.catalog_sync.local_record_changed(None, own.record if own else self.local.record())
        if self.is_server:
            self.wan = await self._open_pool(
                name=f"{cfg.node_name}.{cfg.datacenter}", port=cfg.ports.serf_wan,
                advertise=cfg.advertise_addr_wan or advertise_address(cfg), config=self.wan_config,
                tags=tags, keyring=self.wan_keyring, pool="wan", delegate=None,
                on_change=self._on_wan_member, on_reaped=None,
            )  # fmt: skip
            self.bound["serf_wan"] = self.wan.transport.local_addr

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
        # Our own record is LocalState's business: never let gossip about us remove it.
        if member.name != self.config.node_name:
            self.catalog_sync.on_member_change(member, old)
            if member.status is MemberStatus.ALIVE and old in (
                None,
                MemberStatus.DEAD,
                MemberStatus.LEFT,
            ):
                self._regossip_record(member.name)
        if member.tags.get(TAG_ROLE) == ROLE_SERVER:
            self.bump_index()  # leader/peers answers changed

    def _regossip_record(self, name: str) -> None:
        """A member (re)joined: pass its record on, as memberlist re-broadcasts the alive
        state it merged from a push-pull. Members that never push-pulled with the
        newcomer learn its record from this instead of waiting for anti-entropy (30 s+).
        The runtime reports a push-pull's member changes after merging its catalog state,
        so the newcomer's record is already here when it came along."""
        entry = self.store.entry(name)
        if entry is not None:
            self.catalog_sync.local_record_changed(None, entry.record)

    def _on_lan_reaped(self, member: Member) -> None:
        if member.name != self.config.node_name:
            self.catalog_sync.member_left(member.name)

    def _on_wan_member(self, member: Member, old: MemberStatus | None) -> None:
        del member, old
        self.bump_index()  # datacenters / WAN members answers changed

    def _num_lan_nodes(self) -> int:
        return self.lan.protocol.num_live() if self.lan is not None else 1

    def _store_changed(self, index: int) -> None:
        self.notifier.notify(index + self._bumps)

    def bump_index(self) -> int:
        """Wake blocking queries after a change outside the catalog (global state, members).

        The notifier's index then runs one above the store's for good, so a later store
        change still raises it (``IndexNotifier`` ignores indexes it has already seen).
        Returns the new index (use it as the index of the changed state's answers).
        """
        self._bumps += 1
        self.notifier.notify(self.store.index + self._bumps)
        return self.notifier.index

    # -- cluster: background loops

    async def _retry_join_lan(self) -> None:
        await self._retry_join(self.lan, self.config.retry_join, self.config.ports.serf_lan,
                               self.config.retry_interval, "LAN")  # fmt: skip

    async def _retry_join_wan(self) -> None:
        await self._retry_join(self.wan, self.config.retry_join_wan, self.config.ports.serf_wan,
                               self.config.retry_interval_wan, "WAN")  # fmt: skip

    async def _retry_join(
        self,
        pool: GossipRuntime | None,
        addrs: Sequence[str],
        port: int,
        interval: float,
        what: str,
    ) -> None:
        if pool is None or not addrs:
            return
        targets = [parse_join_addr(a, port) for a in addrs]
        log.info("retry_join: joining", extra={"pool": what, "addrs": ",".join(addrs)})
        joined = await pool.retry_join(targets, interval)
        log.info("retry_join: joined", extra={"pool": what, "answered": joined})

    async def _fetch_missing_loop(self) -> None:
        """Fetch records CatalogSync heard of (digest/delta) but cannot build, from their owner."""
        while True:
            await asyncio.sleep(FETCH_INTERVAL)
            wanted = dict(self.catalog_sync.missing())
            if wanted and self.lan is not None:
                targets = {m.name: rpc_address(m) for m in self.lan.members()}
                names = [n for n in wanted if targets.get(n) is not None][:16]
                await asyncio.gather(*(self._fetch_record(n, targets[n]) for n in names))  # type: ignore[arg-type]

    async def _fetch_record(self, name: str, addr: Address) -> None:
        try:
            raw = await self.rpc_client.call(
                addr, "Catalog.NodeRecord", {"node": name}, timeout=RPC_TIMEOUT
            )
            if raw is not None:
                self.catalog_sync.apply_fetched(NodeRecord.from_wire(raw))
        except (NodeError, ValueError, TypeError) as exc:
            log.warning(
                "catalog fetch failed",
                extra={"node": name, "from": f"{addr[0]}:{addr[1]}", "error": str(exc)},
            )

    async def _refresh_datacenters_loop(self) -> None:
        """A client learns the datacenters from a server of its own (it is in no WAN pool)."""
        while True:
            with contextlib.suppress(NodeError):
                got = await self.call_server("Catalog.Datacenters", None, timeout=RPC_TIMEOUT)
                if isinstance(got, list) and got != self._remote_dcs:
                    self._remote_dcs = [str(dc) for dc in got]
                    self.bump_index()
            await asyncio.sleep(DATACENTERS_REFRESH)

    # -- cluster: RPC

    def register_rpc(self, method: str, handler: Callable[[Any], Awaitable[Any]]) -> None:
        """Serve ``method`` ("Area.Verb") over node RPC; call before ``run()``."""
        self._handlers[method] = handler
        self.rpc_server.add_handler(method, handler)

    def _builtin_handlers(self) -> dict[str, Callable[[Any], Awaitable[Any]]]:
        return {
            "Catalog.NodeRecord": self._rpc_node_record,
            "Catalog.Read": self._rpc_read,
            "Catalog.Datacenters": self._rpc_datacenters,
            "Forward.Call": self._rpc_forward,
            KEYRING_METHOD: self._rpc_keyring_op,
            "Keyring.Cluster": self._rpc_keyring_cluster,
        }

    async def _rpc_node_record(self, args: Any) -> Any:
        name = args.get("node") if isinstance(args, dict) else None
        if not isinstance(name, str):
            raise InvalidRequest("Catalog.NodeRecord needs {'node': name}", field="node")
        entry = self.store.entry(name)
        return entry.record.to_wire() if entry is not None else None

    async def _rpc_read(self, args: Any) -> Any:
        if not isinstance(args, dict) or not isinstance(args.get("name"), str):
            raise InvalidRequest(
                "Catalog.Read needs {'name', 'args', 'index', 'wait'}", field="name"
            )
        read_args = args.get("args") or {}
        if not isinstance(read_args, dict):
            raise InvalidRequest("Catalog.Read args must be a map", field="args")
        wait = args.get("wait") or 0.0
        if isinstance(wait, bool) or not isinstance(wait, int | float) or wait < 0:
            raise InvalidRequest("Catalog.Read 'wait' must be a non-negative number", field="wait")
        opts = QueryOptions(index=_int_arg(args, "index"), wait=min(float(wait), MAX_WAIT))
        body, index = await answer_read(
            self,
            args["name"],
            read_args,
            opts,
            random.Random(self.rng.random()),
            reads=self._forwardable,
        )
        return {"body": body, "index": index}

    async def _rpc_datacenters(self, args: Any) -> Any:
        del args
        return self.datacenters()

    async def _rpc_forward(self, args: Any) -> Any:
        if not self.is_server:
            raise InvalidRequest("Forward.Call must be sent to a server", field="method")
        if (
            not isinstance(args, dict)
            or not isinstance(args.get("dc"), str)
            or not isinstance(args.get("method"), str)
        ):
            raise InvalidRequest(
                "Forward.Call needs {'dc', 'method', 'args', 'timeout'}", field="dc"
            )
        timeout = min(float(args.get("timeout") or RPC_TIMEOUT), 660.0)
        return await self.call_server(
            args["method"], args.get("args"), dc=args["dc"], timeout=timeout
        )

    async def call_server(self, method: str, args: Any = None, *, dc: str | None = None,
                          timeout: float = RPC_TIMEOUT) -> Any:  # fmt: skip
        """Call ``method`` on a server of ``dc`` (default: our own datacenter).

        Raises ``DatacenterUnavailable`` (unknown datacenter, or no server answered within
        ``timeout``), ``RPCUnreachable``, or the remote ``NodeError`` class.
        """
        own = dc is None or dc == self.config.datacenter
        if own and self.is_server:
            return await self._call_local(method, args, timeout)
        if not own and self.is_server and dc not in self.datacenters():
            raise DatacenterUnavailable(f"No path to datacenter {dc!r}")
        if self.lan is None:
            where = "a server" if own else f"datacenter {dc!r}"
            raise DatacenterUnavailable(f"No path to {where}: the agent's pools are not running")
        if own:
            return await call_datacenter(
                self.rpc_client, self.lan.members(), self.config.datacenter, method, args,
                timeout=timeout, rng=self.rng,
            )  # fmt: skip
        assert dc is not None
        if self.wan is not None:
            return await call_datacenter(
                self.rpc_client, self.wan.members(), dc, method, args, timeout=timeout, rng=self.rng
            )
        forward = {"dc": dc, "method": method, "args": args, "timeout": timeout}
        # The server needs the whole bound for its own attempts; we add a margin for the hop.
        return await call_datacenter(self.rpc_client, self.lan.members(), self.config.datacenter,
                                     "Forward.Call", forward, timeout=timeout + 1.0, rng=self.rng)  # fmt: skip

    async def call_peer_server(
        self, method: str, args: Any = None, *, timeout: float = RPC_TIMEOUT
    ) -> Any:
        """Call another alive server of our own datacenter, never this node (CA.RootKey)."""
        me = self.config.node_name
        peers = [m for m in self.lan.members() if m.name != me] if self.lan is not None else []
        return await call_datacenter(self.rpc_client, peers, self.config.datacenter, method,
                                     args, timeout=timeout, rng=self.rng)  # fmt: skip

    async def _call_local(self, method: str, args: Any, timeout: float) -> Any:
        handler = self._handlers.get(method)
        if handler is None:
            raise InvalidRequest(f"unknown RPC method {method!r}", field="method")
        try:
            async with asyncio.timeout(timeout):
                return await handler(args)
        except TimeoutError:
            raise RPCUnreachable(
                f"{method} on this server did not finish within {timeout:g}s"
            ) from None

    async def forward_read(
        self, dc: str, name: str, args: dict[str, Any], opts: Any
    ) -> tuple[Any, int]:
        """Run read ``name`` in datacenter ``dc``: its encoded answer and index.

        Blocking arguments travel along (the remote side waits); the call's bound is the
        wait plus its jitter plus ``RPC_TIMEOUT``.
        """
        index = int(getattr(opts, "index", 0) or 0)
        wait = float(getattr(opts, "wait", 0.0) or 0.0) if index else 0.0
        request = {"name": name, "args": args, "index": index, "wait": wait}
        timeout = wait + wait / 16 + RPC_TIMEOUT
        reply = await self.call_server("Catalog.Read", request, dc=dc, timeout=timeout)
        if not isinstance(reply, dict) or not isinstance(reply.get("body"), bytes):
            raise RPCUnreachable(f"malformed Catalog.Read reply from datacenter {dc!r}")
        return ForwardedBody(reply["body"]), _int_arg(reply, "index")

    # -- cluster: keyring

    async def keyring_op(self, op: str, key: str | None = None) -> list[KeyringPoolReport]:
        """``op`` (list/install/use/remove) on the LAN and WAN keyrings of every node of
        every datacenter; Consul's per-pool reports (WAN first, then one per datacenter)."""
        _check_keyring_op(op, key)
        args = {"op": op, "key": key, "local": False}
        wire = await self.call_server("Keyring.Cluster", args, timeout=KEYRING_TIMEOUT)
        if not isinstance(wire, list):
            raise RPCUnreachable("malformed Keyring.Cluster reply")
        return [KeyringPoolReport.from_wire(r) for r in wire]

    async def _rpc_keyring_op(self, args: Any) -> Any:
        rings = [r for r in (self.lan_keyring, self.wan_keyring) if r is not None]
        inner = keyring_handler(lambda: rings, self._save_keyrings)
        result = await inner(args)
        if self.wan_keyring is not None:
            result["wan_keys"] = list(self.wan_keyring.keys_base64())
        return result

    def _save_keyrings(self) -> None:
        save_keyrings(self.config, self.lan_keyring, self.wan_keyring)
        log.info("keyring changed and saved", extra={"node": self.config.node_name})

    async def _rpc_keyring_cluster(self, args: Any) -> Any:
        """On a server: the operation on every node of this datacenter (``local``), or of
        every datacenter (each other one through one of its servers)."""
        if not self.is_server or self.lan is None:
            raise InvalidRequest("Keyring.Cluster must be sent to a running server", field="op")
        if not isinstance(args, dict):
            raise InvalidRequest("Keyring.Cluster needs {'op', 'key', 'local'}", field="op")
        op, key = args.get("op"), args.get("key")
        _check_keyring_op(op, key)
        here = await self._keyring_dc({"op": op, "key": key})
        if args.get("local"):
            return here
        remote = {"op": op, "key": key, "local": True}
        others = await asyncio.gather(
            *(self._keyring_remote_dc(dc, remote) for dc in self.datacenters()[1:])
        )
        results = [here, *others]
        return [r.to_wire() for r in keyring_reports(results)]

    async def _keyring_remote_dc(self, dc: str, args: dict[str, Any]) -> Any:
        try:
            got = await self.call_server(
                "Keyring.Cluster", args, dc=dc, timeout=KEYRING_HOP_TIMEOUT
            )
        except NodeError as exc:
            return {"dc": dc, "replies": {}, "failures": {"(datacenter)": str(exc)}}
        if not isinstance(got, dict) or not isinstance(got.get("replies"), dict):
            return {"dc": dc, "replies": {}, "failures": {"(datacenter)": "malformed reply"}}
        return got

    async def _keyring_dc(self, args: dict[str, Any]) -> dict[str, Any]:
        assert self.lan is not None
        targets = rpc_targets(self.lan.members())
        names = list(targets)
        got = await asyncio.gather(
            *(
                self.rpc_client.call(targets[n], KEYRING_METHOD, args, timeout=RPC_TIMEOUT)
                for n in names
            ),
            return_exceptions=True,
        )
        replies: dict[str, Any] = {}
        failures: dict[str, str] = {}
        for name, result in zip(names, got, strict=True):
            if isinstance(result, dict) and isinstance(result.get("keys"), list):
                replies[name] = result
            elif isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result
            else:
                failures[name] = str(result) if isinstance(result, Exception) else "malformed reply"
        return {"dc": self.config.datacenter, "replies": replies, "failures": failures}

    # -- cluster: join / leave

    async def join(self, addrs: Sequence[str], *, wan: bool = False) -> int:
        """Join the LAN (or WAN) pool through ``addrs``; how many answered."""
        pool = self.wan if wan else self.lan
        if pool is None:
            what = "WAN pool: this agent is not a server" if wan else "LAN pool: agent not running"
            raise InvalidRequest(f"cannot join the {what}", field="wan" if wan else "address")
        port = self.config.ports.serf_wan if wan else self.config.ports.serf_lan
        return await pool.join([parse_join_addr(a, port) for a in addrs])

    async def leave_pools(self) -> None:
        """Broadcast a graceful leave on every pool (waits at most ``LEAVE_TIMEOUT``)."""
        self._left = True
        pools = [p for p in (self.lan, self.wan) if p is not None]
        await asyncio.gather(*(p.leave(LEAVE_TIMEOUT) for p in pools))

    async def leave(self) -> None:
        """``meshnode leave``: leave gracefully, then shut the agent down."""
        await self.leave_pools()
        self.stop()

    def force_leave(self, node: str) -> None:
        """Mark a failed member left (in the WAN pool too for ``<node>.<dc>`` names)."""
        done = False
        for pool in (self.lan, self.wan):
            if pool is not None and pool.protocol.member(node) is not None:
                pool.force_leave(node)
                done = True
        if not done:
            raise NotFound(f"No node {node!r} in the member list")

    # -- what the API and later components ask

    def members(self, *, wan: bool = False) -> list[dict[str, Any]]:
        """Gossip members as /v1/agent/members shows them, this node first."""
        pool = self.wan if wan else self.lan
        if pool is None:
            return self._config_members(wan=wan)
        own = pool.protocol.local_name
        ordered = sorted(pool.members(), key=lambda m: (m.name != own, m.name))
        return [member_view(m, SHOWN_TAGS) for m in ordered]

    def _alive_servers(self) -> list[Member]:
        if self.lan is None:
            return []
        dc = self.config.datacenter
        return sorted(
            (m for m in self.lan.members() if m.tags.get(TAG_ROLE) == ROLE_SERVER
             and m.tags.get(TAG_DC) == dc and m.status in (MemberStatus.ALIVE, MemberStatus.SUSPECT)),
            key=lambda m: m.name,
        )  # fmt: skip

    def leader(self) -> str:
        """RPC address of the datacenter's leader, ``""`` if none is known.

        No raft here: the alive server with the smallest name stands in, which every
        member derives the same from the same membership.
        """
        if self.lan is None:
            return self._config_leader()
        for m in self._alive_servers():
            addr = rpc_address(m)
            if addr is not None:
                return f"{addr[0]}:{addr[1]}"
        return ""

    def peers(self) -> list[str]:
        """RPC addresses of the datacenter's alive servers."""
        if self.lan is None:
            leader = self._config_leader()
            return [leader] if leader else []
        return [f"{a[0]}:{a[1]}" for a in (rpc_address(m) for m in self._alive_servers()) if a]

    def datacenters(self) -> list[str]:
        """Known datacenters, ours first then by name (no RTT estimates to sort by)."""
        own = self.config.datacenter
        if self.wan is not None:
            dcs = {
                m.tags.get(TAG_DC, "")
                for m in self.wan.members()
                if m.status is not MemberStatus.LEFT
            }
        else:
            dcs = set(self._remote_dcs)
        dcs.discard("")
        dcs.discard(own)
        return [own, *sorted(dcs)]

    def _config_members(self, *, wan: bool) -> list[dict[str, Any]]:
        # Before run() binds the pools: this node alone, from its configuration.
        cfg = self.config
        if wan and not cfg.server:
            return []
        name = f"{cfg.node_name}.{cfg.datacenter}" if wan else cfg.node_name
        port = cfg.ports.serf_wan if wan else cfg.ports.serf_lan
        addr = (cfg.advertise_addr_wan or advertise_address(cfg)) if wan else advertise_address(cfg)
        tags = member_tags(cfg, self.node_id, cfg.ports.server)
        me = Member(name=name, addr=(addr, port), tags=tags, incarnation=0,
                    status=MemberStatus.ALIVE, status_since=0.0)  # fmt: skip
        return [member_view(me, SHOWN_TAGS)]

    def _config_leader(self) -> str:
        if not self.config.server:
            return ""
        return f"{advertise_address(self.config)}:{self.config.ports.server}"


def _check_keyring_op(op: Any, key: Any) -> None:
    """Validate before fanning out, so a typo is one clear error, not N node failures."""
    if op not in {o.value for o in KeyringOp}:
        raise InvalidRequest(f"unknown keyring operation {op!r}", field="op")
    if op != KeyringOp.LIST:
        if not isinstance(key, str) or not key:
            raise InvalidRequest(f"keyring {op} needs a base64 key", field="key")
        parse_key(key)


def _int_arg(args: Mapping[str, Any], key: str) -> int:
    value = args.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidRequest(f"{key!r} must be a non-negative integer", field=key)
    return value


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
