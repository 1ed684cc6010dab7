"""Connect on one node: the read facade over its components, and how they are built.

Rule: every node holds a copy of the global state (CA roots and config, intentions,
config entries) and serves reads from it (``node.state.replica``); writes go to the
primary datacenter (``node.state.writer``); secondary servers pull from it
(``node.state.replicator``). Servers run the CA role (``cadriver`` over the pure
``carole``) and sign leaves for their datacenter (``leafsign``); every node keeps the
leaves of its local Connect services (``hosting``) and refuses to split the trust
domain (``federation``). ``ConnectService`` composes them: the HTTP API and the proxies
read and write through it, and ``run()`` runs their loops. Every change of the state,
a leaf or the signing material calls the listeners (the proxy manager).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from node.catalog.values import ServiceDefinition
from node.clock import Clock
from node.config.agent import AgentConfig, IntentionPolicy
from node.connect import intentions as ixns
from node.connect.authority import Authority
from node.connect.cadriver import CA_CONFIG_OP, CARole, LanMember, configured_ca
from node.connect.castate import CAConfig, CARoots, parse_ca_configuration
from node.connect.chain import validate_proposed
from node.connect.entries import CONFIG_ENTRY_KINDS, ConfigEntry
from node.connect.federation import Datacenters, FederationGuard
from node.connect.hosting import LeafHosting, LocalServices
from node.connect.intentions import Intention
from node.connect.leaf import Leaf
from node.connect.leafsign import IndexWaiter, LeafSigning, NodeLookup, registered_in
from node.connect.records import (
    CA_KINDS,
    CONNECT_SCHEMA,
    KIND_CA_ROOTS,
    KIND_INTENTION,
    WRITABLE_KINDS,
    ca_config_of,
    roots_of,
)
from node.connect.resolve import ResolvedUpstream, resolve_upstreams
from node.connect.timing import Timing
from node.errors import ConfigError, NotFound
from node.gossip.delegate import Delegate
from node.gossip.messages import MemberStatus
from node.rpc.routing import RAFT_TAG, ROLE_SERVER, TAG_DC, TAG_ROLE
from node.state.consensus import StateMachine
from node.state.globalstate import GlobalState, Record
from node.state.hlc import Stamp
from node.state.raft import FormingGroup, RaftGroup, RaftOperations, SoloGroup
from node.state.replica import Replica, load_state
from node.state.replicator import Fetcher, PeerCaller, PullService, Replicator
from node.state.statesync import GLOBAL_STATE_CHANNEL, StateSync
from node.state.writer import StateWriter

__all__ = ["ConnectService", "build_connect", "Timing", "STATE_FILE", "WRITABLE_KINDS"]

log = logging.getLogger(__name__)

STATE_FILE: Final = "connect/globalstate.msgpack"
#: The primary servers' Raft log and snapshots (in ``data_dir``).
RAFT_DIR: Final = "raft"

Job = Callable[[], Coroutine[Any, Any, None]]


class Listeners:
    """Callbacks told about any change of roots, leaves, intentions or entries."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[[], None]] = []

    def add(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after every change."""
        self._callbacks.append(callback)

    def notify(self) -> None:
        """Tell every callback; one that fails is logged, the others still run."""
        for callback in list(self._callbacks):
            try:
                callback()
            except Exception:  # a listener's bug must not stop state from spreading
                log.exception("connect listener failed")


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """The configuration the reads answer by."""

    datacenter: str
    default_allow: bool
    central_config: bool


class ConnectService:
    """The facade (see the module rule); build it with ``build_connect``."""

    def __init__(
        self,
        *,
        replica: Replica,
        writer: StateWriter,
        hosting: LeafHosting,
        listeners: Listeners,
        policy: Policy,
        ca: CARole | None,
        jobs: Sequence[Job],
        group: RaftOperations | None = None,
    ) -> None:
        self.replica = replica
        self._group = group
        self._writer = writer
        self.hosting = hosting
        self._listeners = listeners
        self._policy = policy
        self._ca = ca
        self._jobs = tuple(jobs)

    @property
    def authority(self) -> Authority | None:
        """A server's signing material (``None`` on a client)."""
        return None if self._ca is None else self._ca.authority

    @property
    def group(self) -> RaftOperations | None:
        """A primary server's Raft group (of one or several voters); ``None`` elsewhere."""
        return self._group

    def raft(self) -> tuple[str, tuple[str, ...]] | None:
        """A primary server's Raft group of several voters: (leader or "", voters' Raft
        addresses); ``None`` elsewhere (a group of one leads itself)."""
        if self._group is None or isinstance(self._group, SoloGroup):
            return None
        return self._group.leader() or "", self._group.voters()

    @property
    def sync(self) -> StateSync:
        """The global state's gossip delegate."""
        return self.replica.sync

    # ================================================================== reads

    def roots(self) -> CARoots | None:
        """The trust bundle, active root and trust domain; ``None`` before bootstrap."""
        return roots_of(self.replica.state)

    @property
    def trust_domain(self) -> str | None:
        """``<cluster id>.consul`` once the CA exists."""
        roots = self.roots()
        return None if roots is None else roots.trust_domain

    def ca_config(self) -> CAConfig | None:
        """The replicated CA configuration (never a key)."""
        return ca_config_of(self.replica.state)

    def intentions(self) -> tuple[Intention, ...]:
        """Every intention, in evaluation order, carrying this node's indexes."""
        out = []
        for record in self.replica.state.list(KIND_INTENTION):
            create, modify = self.indexes(KIND_INTENTION, record.name)
            out.append(ixns.with_indexes(record.value, create_index=create, modify_index=modify))
        return ixns.sort_intentions(out)

    def intention(self, intention_id: str) -> Intention:
        """One intention by id; ``NotFound`` names it."""
        for ixn in self.intentions():
            if ixn.id == intention_id:
                return ixn
        raise NotFound(f"Intention not found: {intention_id!r}")

    def config_entries(self) -> Mapping[tuple[str, str], ConfigEntry]:
        """Every config entry, keyed ``(kind, name)``."""
        state = self.replica.state
        return {(r.kind, r.name): r.value for k in CONFIG_ENTRY_KINDS for r in state.list(k)}

    def config_entry(self, kind: str, name: str) -> ConfigEntry:
        """One entry; ``NotFound`` with Consul's message."""
        record = self.replica.state.get(kind, name)
        if record is None:
            raise NotFound(f'Config entry not found for "{kind}" / "{name}"')
        value: ConfigEntry = record.value
        return value

    def indexes(self, kind: str, name: str) -> tuple[int, int]:
        """(CreateIndex, ModifyIndex) of a record in this node's blocking-query index."""
        return self.replica.indexes(kind, name)

    def index_of(self, *kinds: str) -> int:
        """The agent index of the latest change to any of ``kinds``."""
        return self.replica.index_of(*kinds)

    def stamp_of(self, kind: str, name: str) -> Stamp | None:
        """The stamp held for (kind, name), tombstone or not."""
        return self.replica.stamp_of(kind, name)

    @property
    def default_allow(self) -> bool:
        """``connect { default_intention_policy }`` (allow unless set to deny)."""
        return self._policy.default_allow

    def authorize(self, source_service: str, destination: str) -> tuple[bool, str]:
        """Intentions first, then the default policy: (allowed, reason)."""
        allowed, ixn = ixns.check(
            self.intentions(), source_service, destination, self.default_allow
        )
        if ixn is not None:
            return allowed, f"Matched intention: {ixn}"
        policy = "allow" if self.default_allow else "deny"
        return allowed, f"Default behavior configured by default_intention_policy ({policy})"

    def authorize_uri(self, target: str, client_cert_uri: str) -> tuple[bool, str]:
        """``POST /v1/agent/connect/authorize``: a client certificate URI against a target."""
        return ixns.authorize(
            self.intentions(), target=target, client_cert_uri=client_cert_uri,
            default_allow=self.default_allow,
        )  # fmt: skip

    def resolve(self, proxy_service: ServiceDefinition) -> tuple[ResolvedUpstream, ...]:
        """Each upstream's mesh-gateway mode and the level that decided it."""
        return resolve_upstreams(
            proxy_service, self.config_entries(), self._policy.central_config,
            local_datacenter=self._policy.datacenter,
        )  # fmt: skip

    def leaf(self, service: str) -> Leaf | None:
        """The current leaf of a Connect service hosted here."""
        return self.hosting.leaf(service)

    def ensure_leaf(self, service: str) -> None:
        """Keep a leaf for ``service`` too (``NotFound`` unless it is registered here)."""
        self.hosting.ensure_leaf(service)

    async def wait_leaf(self, service: str, index: int, timeout: float) -> Leaf | None:
        """Blocking: a leaf newer than ``index`` (leaf-manager index) or the current one."""
        return await self.hosting.leaves.wait_for_leaf(service, min_index=index, timeout=timeout)

    async def sign_csr(self, csr_pem: str, service: str) -> str:
        """Have a server of this datacenter sign a leaf CSR (batched with concurrent ones)."""
        return await self.hosting.sign_csr(csr_pem, service)

    async def wait_roots_change(self, index: int, timeout: float) -> int:
        """Wait until the roots' agent index exceeds ``index`` (or timeout); return it."""
        await self.replica.wait_until(lambda: self.index_of(KIND_CA_ROOTS) > index, timeout)
        return self.index_of(KIND_CA_ROOTS)

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after any change of roots, leaves, intentions or entries."""
        self._listeners.add(callback)

    # ================================================================== writes

    async def put_config_entry(self, entry: ConfigEntry, *, cas: int | None = None) -> bool:
        """``PUT /v1/config``: True when applied, False when ``cas`` did not hold."""
        proposed = dict(self.config_entries())
        proposed[(entry.kind, entry.name)] = entry
        validate_proposed(proposed, entry.kind, entry.name)  # a broken chain is refused
        return await self._writer.write_if(self._writer.put_op(entry.kind, entry.name, entry), cas)

    async def delete_config_entry(self, kind: str, name: str, *, cas: int | None = None) -> bool:
        """``DELETE /v1/config/:kind/:name`` (deleting what is absent is a no-op, as Consul)."""
        if self.replica.state.get(kind, name) is None and cas is None:
            return True
        proposed = dict(self.config_entries())
        proposed.pop((kind, name), None)
        validate_proposed(proposed, kind, name)
        return await self._writer.write_if(self._writer.delete_op(kind, name), cas)

    async def put_intention(self, intention: Intention) -> Intention:
        """Create or update an intention (validated by the caller's parse)."""
        ixns.check_unique((r.value for r in self.replica.state.list(KIND_INTENTION)), intention)
        await self._writer.write(self._writer.put_op(KIND_INTENTION, intention.id, intention))
        return self.intention(intention.id)

    async def delete_intention(self, intention_id: str) -> None:
        """Delete an intention by id; ``NotFound`` if it does not exist."""
        self.intention(intention_id)
        await self._writer.write(self._writer.delete_op(KIND_INTENTION, intention_id))

    async def set_ca_configuration(self, body: Mapping[str, Any]) -> None:
        """``PUT /v1/connect/ca/configuration`` (validated here, applied on the primary)."""
        parse_ca_configuration(body)  # a 400 before anything travels
        await self._writer.write({"op": CA_CONFIG_OP, "body": dict(body)})

    # ================================================================== run

    async def run(self) -> None:
        """Serve until cancelled; raises ``ConfigError`` on a primary_datacenter mismatch."""
        try:
            async with asyncio.TaskGroup() as tg:
                for job in self._jobs:
                    tg.create_task(job())
        except* ConfigError as group:
            raise group.exceptions[0] from None


# ====================================================================== building


class ConnectRPC(PeerCaller, Datacenters, Protocol):
    """The node's RPC: serving methods, calling servers, knowing datacenters."""

    def register_rpc(self, method: str, handler: Callable[[Any], Awaitable[Any]]) -> None:
        """Serve RPC ``method`` with ``handler(args)``."""
        ...


class GossipChannels(Protocol):
    """The LAN gossip's delegate channels (``node.gossip.mux.DelegateMux``)."""

    def add_channel(self, number: int, delegate: Delegate) -> None:
        """Route channel ``number``'s messages and state to ``delegate``."""
        ...


class LocalRegistrations(LocalServices, Protocol):
    """This node's services and a hook on their changes (``node.catalog.local.LocalState``)."""

    def add_record_listener(self, callback: Callable[[Any, Any], None]) -> None:
        """Call ``callback(old, new)`` after every change of the node's record."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeSeams:
    """What the Connect components use of the node, each as narrow as it can be."""

    node_id: str
    clock: Clock
    rng: random.Random
    catalog: NodeLookup
    catalog_index: IndexWaiter
    local: LocalRegistrations
    members: Callable[[], Iterable[LanMember]]
    gossip: GossipChannels
    rpc: ConnectRPC
    bump_index: Callable[[], int]


def build_connect(
    config: AgentConfig, seams: NodeSeams, *, timing: Timing | None = None
) -> ConnectService:
    """Build every Connect component of a node, wire them and register their RPCs."""
    return _Builder(config, seams, timing or Timing()).build()


class _Builder:
    """The wiring of ``build_connect``, one component per method."""

    def __init__(self, config: AgentConfig, seams: NodeSeams, timing: Timing) -> None:
        self.cfg, self.seams, self.t = config, seams, timing
        self.rng = random.Random(seams.rng.random())
        self.dc, self.primary = config.datacenter, config.primary_datacenter
        self.server, self.in_primary = config.server, self.dc == self.primary
        self.identity = {"pdc": self.primary, "dc": self.dc, "node": config.node_name}
        self.data_dir = None if config.dev or not config.data_dir else config.data_dir
        self.listeners = Listeners()
        self.jobs: list[Job] = []
        self.handlers: dict[str, Callable[[Any], Any]] = {}

    def build(self) -> ConnectService:
        replica = self._replica()
        hosting = self._hosting()
        replica.add_listener(lambda records: self._state_changed(records, replica, hosting))
        roots = roots_of(replica.state)
        if roots is not None:
            hosting.leaves.set_roots(roots)
        self.jobs += [hosting.leaves.run, self.fetcher.run, self._reaper(replica), self.guard.watch]
        ca = self._server_parts(replica) if self.server else None
        group = self._group(replica)
        writer = StateWriter(
            replica, rpc=self.seams.rpc, primary=self.primary, is_server=self.server,
            in_primary=self.in_primary, writable=WRITABLE_KINDS,
            ops={} if ca is None else {CA_CONFIG_OP: ca.reconfigure},
            rpc_timeout=self.t.rpc_timeout, group=group,
        )  # fmt: skip
        if ca is not None:
            ca.commit = writer.commit
        if ca is not None and self.in_primary:
            self.jobs.append(lambda: self._bootstrap_entries(writer))
        self.handlers |= writer.rpc_handlers()
        self.seams.gossip.add_channel(GLOBAL_STATE_CHANNEL, replica.sync)
        for method, handler in self.handlers.items():
            self.seams.rpc.register_rpc(method, handler)
        self.seams.local.add_record_listener(lambda old, new: hosting.local_changed())
        hosting.local_changed()
        policy = Policy(
            datacenter=self.dc,
            default_allow=self.cfg.connect.default_intention_policy is IntentionPolicy.ALLOW,
            central_config=self.cfg.enable_central_service_config,
        )
        return ConnectService(
            replica=replica, writer=writer, hosting=hosting, listeners=self.listeners,
            policy=policy, ca=ca, jobs=self.jobs, group=group,
        )  # fmt: skip

    def _group(self, replica: Replica) -> RaftOperations | None:
        """The primary servers' Raft group: one voter, or ``bootstrap_expect`` of them."""
        if not (self.server and self.in_primary):
            return None
        schema_kinds = replica.state.schema.kinds
        if self.cfg.dev or self.cfg.bootstrap_expect <= 1:
            machine = StateMachine(replica.state, writable=schema_kinds)
            on_commit = lambda records: replica.changed(records, announce=True)  # noqa: E731
            return SoloGroup(machine, clock=self.seams.clock, on_commit=on_commit)
        password = self.cfg.encrypt_key
        if password is None:
            raise ConfigError(
                f"bootstrap_expect = {self.cfg.bootstrap_expect} needs a gossip key: the servers' "
                "Raft traffic is sealed with it (set encrypt; make one with `meshnode keygen`)",
                key="encrypt",
            )
        bind = self.cfg.bind_addr

        group_id = f"raft.{self.dc}"
        raft_dir = None if self.data_dir is None else Path(self.data_dir) / RAFT_DIR
        kept = [
            [r.kind, r.name, CONNECT_SCHEMA.codec(r.kind).to_wire(r.value)]
            for r in replica.state.all_records()
            if not r.is_tombstone and r.stamp.node != group_id
        ]

        def build(me: str, peers: Sequence[str]) -> RaftGroup:
            return RaftGroup(
                StateMachine(GlobalState(group_id, CONNECT_SCHEMA), writable=schema_kinds),
                address=me, peers=peers, password=password, bind=bind,
                clock=self.seams.clock, leader_wait=self.t.leader_wait,
                loop=asyncio.get_running_loop(), data_dir=raft_dir,
                on_commit=lambda records: replica.merge_records(records, announce=True),
            )  # fmt: skip

        forming = FormingGroup(
            expected=self.cfg.bootstrap_expect, servers=self._raft_servers,
            me=self.cfg.node_name, build=build, clock=self.seams.clock,
            leader_wait=self.t.leader_wait, imported=kept,
        )  # fmt: skip
        self.jobs.append(forming.run)
        return forming

    def _raft_servers(self) -> dict[str, str]:
        """Alive servers of this datacenter that announce a Raft address: name → address."""
        return {
            m.name: m.tags[RAFT_TAG]
            for m in self.seams.members()
            if m.status is MemberStatus.ALIVE and m.tags.get(TAG_ROLE) == ROLE_SERVER
            and m.tags.get(TAG_DC) == self.dc and RAFT_TAG in m.tags
        }  # fmt: skip

    def _replica(self) -> Replica:
        path = None if self.data_dir is None else Path(self.data_dir) / STATE_FILE
        seams = self.seams
        # The guard and the fetcher read the replica, which calls them back: bound late.
        self.guard = FederationGuard(
            rpc=seams.rpc, cluster=seams.rpc, roots=lambda: roots_of(replica.state), dc=self.dc,
            primary=self.primary, is_server=self.server, rpc_timeout=self.t.rpc_timeout,
            interval=self.t.maintenance,
        )  # fmt: skip
        replica = Replica(
            load_state(path, seams.node_id, CONNECT_SCHEMA), clock=seams.clock,
            bump_index=seams.bump_index, path=path, primary=self.primary,
            lan_size=lambda: max(1, len(list(seams.members()))),
            on_want=lambda kind, name, stamp: self.fetcher.want(kind, name, stamp),
            on_mismatch=self.guard.on_lan_mismatch,
        )  # fmt: skip
        self.fetcher = Fetcher(
            replica, rpc=seams.rpc, identity=self.identity, is_server=self.server,
            rpc_timeout=self.t.rpc_timeout, retry=self.t.retry, rng=self.rng,
        )  # fmt: skip
        return replica

    def _hosting(self) -> LeafHosting:
        return LeafHosting(
            local=self.seams.local, rpc=self.seams.rpc, node_name=self.cfg.node_name,
            datacenter=self.dc, enabled=self.cfg.connect.enabled, clock=self.seams.clock,
            rng=random.Random(self.rng.random()), rpc_timeout=self.t.rpc_timeout,
            on_change=self.listeners.notify,
        )  # fmt: skip

    def _server_parts(self, replica: Replica) -> CARole:
        seams, t = self.seams, self.t
        is_registered = registered_in(seams.catalog)
        authority = Authority(
            datacenter=self.dc, primary=self.in_primary, is_registered=is_registered,
            data_dir=self.data_dir,
        )  # fmt: skip
        connect = self.cfg.connect
        ca = CARole(
            authority, replica, rpc=seams.rpc, members=seams.members, clock=seams.clock,
            rng=self.rng, identity=self.identity,
            configured=configured_ca(connect.ca_provider, connect.ca_config), timing=t,
            on_signer_change=self.listeners.notify,
        )  # fmt: skip
        signing = LeafSigning(
            authority, is_registered=is_registered, catalog_index=seams.catalog_index,
            clock=seams.clock, registration_wait=t.registration_wait,
        )  # fmt: skip
        pulls = PullService(replica, dc=self.dc, primary=self.primary)
        self.handlers |= pulls.rpc_handlers() | self.guard.rpc_handlers()
        self.handlers |= ca.rpc_handlers() | signing.rpc_handlers()
        self.jobs += [ca.run, self.guard.run]
        if not self.in_primary:
            replicator = Replicator(
                replica, rpc=seams.rpc, identity=self.identity, pull_wait=t.pull_wait,
                rpc_timeout=t.rpc_timeout, retry=t.retry, rng=self.rng, fail=self.guard.fail,
            )  # fmt: skip
            self.jobs.append(replicator.run)
        return ca

    def _state_changed(
        self, records: tuple[Record, ...], replica: Replica, hosting: LeafHosting
    ) -> None:
        if any(r.kind in CA_KINDS for r in records):
            roots = roots_of(replica.state)
            if roots is not None:
                hosting.leaves.set_roots(roots)
        self.listeners.notify()

    def _reaper(self, replica: Replica) -> Job:
        return lambda: replica.run(every=self.t.maintenance, grace=self.t.tombstone_grace)

    async def _bootstrap_entries(self, writer: StateWriter) -> None:
        """``config_entries { bootstrap }``: written once each, only if absent (as Consul)."""
        await asyncio.sleep(self.t.bootstrap_delay)
        entries = self.cfg.config_entries_bootstrap
        for record in await writer.seed((e.kind, e.name, e) for e in entries):
            log.info(
                "bootstrap config entry written", extra={"kind": record.kind, "entry": record.name}
            )
