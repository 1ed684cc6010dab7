"""ConnectService: the node's share of Connect — global state, CA, leaves — as one component.

Rule: every node holds a copy of the global state (CA roots and config, intentions,
config entries) and serves reads from it; only servers of the primary datacenter *apply*
writes. A write made anywhere travels ``State.Apply`` → a server of the writer's
datacenter → (from a secondary) a server of the primary, which stamps and applies it;
the answer carries the applied record, which the writer merges at once (read your
writes). Copies converge by last-writer-wins on the stamp: inside a datacenter by LAN
gossip (``statesync``, channel 2), across datacenters by secondary servers pulling from
the primary with blocking ``State.Pull`` RPCs. Every change bumps the agent's
blocking-query index and calls the listeners (the proxy manager).

CA roles: the primary's alive server with the smallest name bootstraps the CA once
(after ``bootstrap_delay``, so a first push-pull has had time to bring existing roots);
other primary servers fetch the active root's key with the sealed server-only
``CA.RootKey``; secondary servers get an intermediate signed over
``CA.SignIntermediate``. Leaves are signed over ``CA.SignLeaf`` by a server of the
node's own datacenter, which checks that the service is registered on the asking node.
Keys stay in ``authority.Authority``.

A node whose ``primary_datacenter`` differs from the cluster's stops with an error naming
both values instead of silently forming its own trust domain (Consul issue #6847).
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Protocol

from node.catalog.model import ServiceDefinition, ServiceKind
from node.clock import Clock
from node.config.agent import AgentConfig, IntentionPolicy
from node.connect import intentions as ixns
from node.connect.authority import Authority, Need
from node.connect.castate import (
    CAConfig,
    CARoots,
    parse_ca_configuration,
    prune_roots,
    retire_inactive,
)
from node.connect.entries import CONFIG_ENTRY_KINDS, ConfigEntry, entry_to_wire
from node.connect.intentions import Intention
from node.connect.leaf import Leaf, LeafManager
from node.connect.resolve import ResolvedUpstream, resolve_upstreams
from node.connect.signbatch import MAX_BATCH, SignBatcher
from node.errors import (
    CAError,
    ConfigError,
    Conflict,
    DatacenterUnavailable,
    InvalidRequest,
    NodeError,
    NotFound,
    TrustError,
)
from node.gossip.delegate import UserBroadcastQueue
from node.gossip.messages import MemberStatus
from node.persist import atomic_write, read_or_none
from node.rpc.codec import error_from_wire, error_to_wire
from node.state.globalstate import (
    CA_CONFIG_NAME,
    CA_ROOTS_NAME,
    KIND_CA_CONFIG,
    KIND_CA_ROOTS,
    KIND_INTENTION,
    Delta,
    GlobalState,
    Record,
)
from node.state.hlc import Stamp
from node.state.statesync import GLOBAL_STATE_CHANNEL, StateSync
from node.wire import pack, unpack

__all__ = ["ConnectService", "ConnectHost", "Timing", "STATE_FILE", "WRITABLE_KINDS"]

log = logging.getLogger(__name__)

STATE_FILE: Final = "connect/globalstate.msgpack"
#: Kinds a ``State.Apply`` put/delete may touch; the CA's two go through ``ca-config``.
WRITABLE_KINDS: Final = (KIND_INTENTION, *CONFIG_ENTRY_KINDS)
#: Longest a ``State.Pull`` may block on the primary.
MAX_PULL_WAIT_S: Final = 60.0
ROLE_SERVER: Final = "server"


@dataclass(frozen=True, slots=True, kw_only=True)
class Timing:
    """Delays and bounds of the service's loops (tests shrink them)."""

    bootstrap_delay: float = 2.0  # primary: wait this long for existing roots first
    pull_wait: float = 30.0  # blocking State.Pull wait
    rpc_timeout: float = 10.0  # any other RPC
    retry_min: float = 0.2
    retry_max: float = 30.0
    maintenance: float = 30.0  # roots pruning, tombstone reaping, federation checks
    tombstone_grace: float = 3600.0  # seconds a tombstone is kept before reaping
    registration_wait: float = 3.0  # CA.SignLeaf waits this long for a registration to arrive


class ConnectHost(Protocol):
    """What the service uses from the agent."""

    config: AgentConfig
    clock: Clock
    rng: random.Random
    store: Any  # CatalogStore
    local: Any  # LocalState
    notifier: Any  # IndexNotifier
    lan: Any  # GossipRuntime (members())
    lan_delegate: Any  # DelegateMux (add_channel)
    node_id: str
    is_server: bool

    def register_rpc(self, method: str, handler: Callable[[Any], Any]) -> None:
        """Serve RPC ``method`` with ``handler(args)``."""

    async def call_server(
        self, method: str, args: Any, *, dc: str | None = None, timeout: float = ...
    ) -> Any:
        """Call a server of this datacenter (or of ``dc``)."""

    async def call_peer_server(self, method: str, args: Any, *, timeout: float = ...) -> Any:
        """Call another server of this datacenter (not this node)."""

    def bump_index(self) -> int:
        """Advance the catalog index blocking queries wait on; returns the new index."""

    def datacenters(self) -> list[str]:
        """Known datacenters, sorted."""


def _wall_ms(now: datetime) -> int:
    return int(now.timestamp() * 1000)


class ConnectService:
    """One per agent; ``run()`` serves until cancelled (see the module rule)."""

    def __init__(self, host: ConnectHost, *, timing: Timing | None = None) -> None:
        cfg = host.config
        self._host = host
        self._cfg = cfg
        self._t = timing or Timing()
        self._rng = random.Random(host.rng.random())
        self._dc, self._primary = cfg.datacenter, cfg.primary_datacenter
        self._server = bool(host.is_server)
        self._in_primary = self._dc == self._primary
        data_dir = None if cfg.dev or not cfg.data_dir else cfg.data_dir
        self._state_path = None if data_dir is None else Path(data_dir) / STATE_FILE
        self._gs = self._load_state(host.node_id)
        self._idx: dict[tuple[str, str], tuple[int, int]] = {}
        self._kind_idx: dict[str, int] = {}
        self._listeners: list[Callable[[], None]] = []
        self._gen = asyncio.Event()
        self._wanted = asyncio.Event()
        self._fatal: ConfigError | None = None
        self._fatal_set = asyncio.Event()
        self._mismatch_logged: set[str] = set()
        self._started = host.clock.monotonic()
        self._hosted: set[str] = set()
        self._on_demand: set[str] = set()
        queue = UserBroadcastQueue(retransmit_mult=4, num_nodes=self._lan_size)
        self.sync = StateSync(self, primary=self._primary, queue=queue)
        self._batcher = SignBatcher(self._send_sign_batch)
        self.leaves = LeafManager(
            datacenter=self._dc, sign=self._sign_via_rpc, clock=host.clock,
            rng=random.Random(self._rng.random()), on_change=self._notify_listeners,
        )  # fmt: skip
        self.authority = (
            Authority(datacenter=self._dc, primary=self._in_primary,
                      is_registered=self._is_registered, data_dir=data_dir)
            if self._server else None
        )  # fmt: skip
        self._index_restored()
        host.lan_delegate.add_channel(GLOBAL_STATE_CHANNEL, self.sync)
        for method, handler in self.rpc_handlers().items():
            host.register_rpc(method, handler)
        host.local.add_record_listener(lambda old, new: self._local_changed())
        self._local_changed()

    # ================================================================== reads

    def roots(self) -> CARoots | None:
        """The trust bundle, active root and trust domain; ``None`` before bootstrap."""
        record = self._gs.get(KIND_CA_ROOTS, CA_ROOTS_NAME)
        return None if record is None else record.value

    @property
    def trust_domain(self) -> str | None:
        """``<cluster id>.consul`` once the CA exists."""
        roots = self.roots()
        return None if roots is None else roots.trust_domain

    def ca_config(self) -> CAConfig | None:
        """The replicated CA configuration (never a key)."""
        record = self._gs.get(KIND_CA_CONFIG, CA_CONFIG_NAME)
        return None if record is None else record.value

    def intentions(self) -> tuple[Intention, ...]:
        """Every intention, in evaluation order, carrying this node's indexes."""
        out = []
        for record in self._gs.list(KIND_INTENTION):
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
        return {(r.kind, r.name): r.value for k in CONFIG_ENTRY_KINDS for r in self._gs.list(k)}

    def config_entry(self, kind: str, name: str) -> ConfigEntry:
        """One entry; ``NotFound`` with Consul's message."""
        record = self._gs.get(kind, name)
        if record is None:
            raise NotFound(f'Config entry not found for "{kind}" / "{name}"')
        value: ConfigEntry = record.value
        return value

    def indexes(self, kind: str, name: str) -> tuple[int, int]:
        """(CreateIndex, ModifyIndex) of a record in this node's blocking-query index."""
        return self._idx.get((kind, name), (0, 0))

    def index_of(self, *kinds: str) -> int:
        """The agent index of the latest change to any of ``kinds``."""
        return max((self._kind_idx.get(k, 0) for k in kinds), default=0)

    @property
    def default_allow(self) -> bool:
        """``connect { default_intention_policy }`` (allow unless set to deny)."""
        return self._cfg.connect.default_intention_policy is IntentionPolicy.ALLOW

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
            proxy_service, self.config_entries(), self._cfg.enable_central_service_config,
            local_datacenter=self._dc,
        )  # fmt: skip

    def leaf(self, service: str) -> Leaf | None:
        """The current leaf of a Connect service hosted here."""
        return self.leaves.get(service)

    async def wait_leaf(self, service: str, index: int, timeout: float) -> Leaf | None:
        """Blocking: a leaf newer than ``index`` (leaf-manager index) or the current one."""
        return await self.leaves.wait_for_leaf(service, min_index=index, timeout=timeout)

    async def wait_roots_change(self, index: int, timeout: float) -> int:
        """Wait until the roots' agent index exceeds ``index`` (or timeout); return it."""
        deadline = self._host.clock.monotonic() + timeout
        while self.index_of(KIND_CA_ROOTS) <= index:
            remaining = deadline - self._host.clock.monotonic()
            if remaining <= 0:
                break
            await self._wait_gen(remaining)
        return self.index_of(KIND_CA_ROOTS)

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after any change of roots, leaves, intentions or entries."""
        self._listeners.append(callback)

    # ================================================================== writes

    async def put_config_entry(self, entry: ConfigEntry, *, cas: int | None = None) -> bool:
        """``PUT /v1/config``: True when applied, False when ``cas`` did not hold."""
        op: dict[str, Any] = {
            "op": "put", "kind": entry.kind, "name": entry.name, "value": entry_to_wire(entry),
        }  # fmt: skip
        return await self._conditional(op, cas)

    async def delete_config_entry(self, kind: str, name: str, *, cas: int | None = None) -> bool:
        """``DELETE /v1/config/:kind/:name`` (deleting what is absent is a no-op, as Consul)."""
        if self._gs.get(kind, name) is None and cas is None:
            return True
        return await self._conditional({"op": "delete", "kind": kind, "name": name}, cas)

    async def put_intention(self, intention: Intention) -> Intention:
        """Create or update an intention (validated by the caller's parse)."""
        ixns.check_unique((r.value for r in self._gs.list(KIND_INTENTION)), intention)
        op = {
            "op": "put", "kind": KIND_INTENTION, "name": intention.id,
            "value": ixns.intention_to_wire(intention),
        }  # fmt: skip
        await self._write(op)
        return self.intention(intention.id)

    async def delete_intention(self, intention_id: str) -> None:
        """Delete an intention by id; ``NotFound`` if it does not exist."""
        self.intention(intention_id)
        await self._write({"op": "delete", "kind": KIND_INTENTION, "name": intention_id})

    async def set_ca_configuration(self, body: Mapping[str, Any]) -> None:
        """``PUT /v1/connect/ca/configuration`` (validated here, applied on the primary)."""
        parse_ca_configuration(body)  # a 400 before anything travels
        await self._write({"op": "ca-config", "body": dict(body)})

    async def _conditional(self, op: dict[str, Any], cas: int | None) -> bool:
        if cas is not None:
            current = self._gs.get(op["kind"], op["name"])
            if cas == 0:
                if current is not None:
                    return False
                op["cas"] = None
            else:
                if current is None or self.indexes(op["kind"], op["name"])[1] != cas:
                    return False
                op["cas"] = current.stamp.to_wire()
        try:
            await self._write(op)
        except Conflict:
            if cas is None:
                raise
            return False
        return True

    async def _write(self, op: dict[str, Any]) -> tuple[Record, ...]:
        if self._server and self._in_primary:
            return self._apply_op(op)
        reply = await self._host.call_server("State.Apply", op, timeout=self._t.rpc_timeout)
        records = _records_of(reply)
        self.merge_records(records, announce=True)
        return records

    # ================================================================== applying (primary)

    def _apply_op(self, op: Any) -> tuple[Record, ...]:
        """Apply a write on a primary server; raises before changing anything if invalid."""
        if not isinstance(op, Mapping) or op.get("op") not in ("put", "delete", "ca-config"):
            raise InvalidRequest("State.Apply: op must be put, delete or ca-config")
        wall = _wall_ms(self._host.clock.utcnow())
        if op["op"] == "ca-config":
            records = self._reconfigure_ca(op.get("body"))
        else:
            kind, name = op.get("kind"), op.get("name")
            if kind not in WRITABLE_KINDS or not isinstance(name, str):
                raise InvalidRequest(f"State.Apply: kind {kind!r} cannot be written directly")
            self._check_cas(kind, name, op)
            if op["op"] == "put":
                value = Record.from_wire(
                    {"k": kind, "n": name, "v": op.get("value"), "s": [0, 0, ""]}
                )
                records = (self._gs.put(kind, name, value.value, wall_ms=wall),)
            else:
                records = (self._gs.delete(kind, name, wall_ms=wall),)
        self._changed(records, announce=True)
        return records

    def _check_cas(self, kind: str, name: str, op: Mapping[str, Any]) -> None:
        if "cas" not in op:
            return
        current = self._gs.get(kind, name)
        expected = op["cas"]
        held = None if current is None else current.stamp.to_wire()
        if (expected is None) != (held is None) or (held is not None and list(expected) != held):
            raise Conflict(f"CAS failed for {kind} {name!r}: it changed since it was read")

    def _reconfigure_ca(self, body: Any) -> tuple[Record, ...]:
        roots = self.roots()
        if roots is None or self.authority is None:
            raise CAError("the CA has not been bootstrapped yet; try again shortly")
        if not isinstance(body, Mapping):
            raise InvalidRequest("CA configuration must be an object")
        config = self.ca_config() or CAConfig(cluster_id=roots.cluster_id)
        request = parse_ca_configuration(body, cluster_id=roots.cluster_id)
        now = self._host.clock.utcnow()
        change = self.authority.reconfigure(request, roots=roots, config=config, now=now)
        wall = _wall_ms(now)
        records = [self._gs.put(KIND_CA_CONFIG, CA_CONFIG_NAME, change.config, wall_ms=wall)]
        if change.roots != roots:
            records.append(self._gs.put(KIND_CA_ROOTS, CA_ROOTS_NAME, change.roots, wall_ms=wall))
        if change.new_root is not None:
            log.info("CA root rotated", extra={"active_root": change.roots.active_root_id})
        return tuple(records)

    # ================================================================== change propagation

    def merge_records(
        self, records: Iterable[Record], *, announce: bool = False
    ) -> tuple[Record, ...]:
        """Merge records from gossip, replication or an RPC answer (``StateSink``)."""
        wall = _wall_ms(self._host.clock.utcnow())
        changed = self._gs.merge(records, wall_ms=wall)
        self._changed(changed, announce=announce)
        return changed

    def _changed(self, records: Iterable[Record], *, announce: bool) -> None:
        records = tuple(records)
        if not records:
            return
        index = self._bump()
        for record in records:
            create = self._idx.get(record.key, (index, index))[0]
            self._idx[record.key] = (
                index if record.create_index == record.modify_index else create,
                index,
            )
            self._kind_idx[record.kind] = index
        self._save_state()
        if announce:
            self.sync.announce(records)
        if any(r.kind in (KIND_CA_ROOTS, KIND_CA_CONFIG) for r in records):
            roots = self.roots()
            if roots is not None:
                self.leaves.set_roots(roots)
        self._notify_listeners()

    def _bump(self) -> int:
        self._host.bump_index()
        index: int = self._host.notifier.index
        return index

    def _notify_listeners(self) -> None:
        self._gen.set()
        self._gen = asyncio.Event()
        for callback in list(self._listeners):
            try:
                callback()
            except Exception:  # a listener's bug must not stop state from spreading
                log.exception("connect listener failed")

    async def _wait_gen(self, timeout: float) -> None:
        await _wait_event(self._gen, timeout)

    def _index_restored(self) -> None:
        if not self._gs.all_records():
            return
        index = self._bump()
        for record in self._gs.all_records():
            self._idx[record.key] = (index, index)
            self._kind_idx[record.kind] = index
        roots = self.roots()
        if roots is not None:
            self.leaves.set_roots(roots)

    # --- StateSink (gossip) ----------------------------------------------------------

    def records(self) -> Iterable[Record]:
        """Every record, tombstones included (push-pull)."""
        return self._gs.all_records()

    def stamp_of(self, kind: str, name: str) -> Stamp | None:
        """The stamp held for (kind, name)."""
        record = self._gs.held(kind, name)
        return None if record is None else record.stamp

    def want(self, kind: str, name: str, stamp: Stamp) -> None:
        """A digest named a newer record: the fetch loop pulls our DC's copy."""
        del kind, name, stamp
        self._wanted.set()

    def on_mismatch(self, peer_primary: str) -> None:
        """A LAN peer names another primary: a node without a CA of its own stops."""
        message = _mismatch_message(self._cfg, peer_primary, f"datacenter {self._dc!r} peers")
        if not self._server or self.roots() is None:
            self._fail(ConfigError(message, key="primary_datacenter"))
        elif peer_primary not in self._mismatch_logged:
            self._mismatch_logged.add(peer_primary)
            log.error("primary datacenter mismatch", extra={"error": message})

    def _members(self) -> list[Any]:
        lan = self._host.lan
        return [] if lan is None else list(lan.members())

    def _lan_size(self) -> int:
        return max(1, len(self._members()))

    def _fail(self, error: ConfigError) -> None:
        if self._fatal is None:
            log.error("connect cannot run", extra={"error": str(error)})
            self._fatal = error
            self._fatal_set.set()

    # ================================================================== persistence

    def _load_state(self, node_id: str) -> GlobalState:
        raw = None if self._state_path is None else read_or_none(self._state_path)
        if raw is None:
            return GlobalState(node_id)
        try:
            return GlobalState.from_wire(unpack(raw))
        except (NodeError, ValueError) as exc:
            log.error(
                "global state in data_dir is damaged, starting empty", extra={"error": str(exc)}
            )
            return GlobalState(node_id)

    def _save_state(self) -> None:
        if self._state_path is not None:
            atomic_write(self._state_path, pack(self._gs.to_wire()))

    # ================================================================== local services → leaves

    def ensure_leaf(self, service: str) -> None:
        """Keep a leaf for ``service`` too (the leaf endpoint asks for any local service)."""
        if service in self._hosted:
            return
        if not self._locally_registered(service):
            raise NotFound(f"service {service!r} is not registered on this node")
        self._on_demand.add(service)
        self._local_changed()

    def _locally_registered(self, service: str) -> bool:
        wanted = service.lower()
        for svc in self._host.local.services().values():
            instance = svc.instance()
            if instance.connect_target() == wanted or svc.name.lower() == wanted:
                return True
        return False

    def _local_changed(self) -> None:
        if not self._cfg.connect.enabled:
            return
        self._on_demand = {s for s in self._on_demand if self._locally_registered(s)}
        wanted = set(self._on_demand)
        for svc in self._host.local.services().values():
            if svc.kind is ServiceKind.CONNECT_PROXY and svc.proxy is not None:
                wanted.add(svc.proxy.destination_service_name)
            elif svc.connect_native:
                wanted.add(svc.name)
        for service in wanted - self._hosted:
            self.leaves.add_service(service)
        for service in self._hosted - wanted:
            self.leaves.remove_service(service)
        self._hosted = wanted

    async def sign_csr(self, csr_pem: str, service: str) -> str:
        """Have a server of this datacenter sign a leaf CSR (batched with concurrent ones)."""
        return await self._batcher.sign(csr_pem, service)

    async def _sign_via_rpc(self, csr_pem: str, service: str) -> str:
        return await self.sign_csr(csr_pem, service)

    async def _send_sign_batch(self, items: Sequence[tuple[str, str]]) -> list[str | BaseException]:
        args = {
            "node": self._cfg.node_name,
            "items": [{"csr": csr, "service": service} for csr, service in items],
        }
        reply = await self._host.call_server("CA.SignLeaves", args, timeout=self._t.rpc_timeout)
        results = reply.get("results") if isinstance(reply, Mapping) else None
        if not isinstance(results, list):
            raise CAError("CA.SignLeaves answered without results")
        out: list[str | BaseException] = []
        for result in results:
            if isinstance(result, Mapping) and isinstance(result.get("cert_pem"), str):
                out.append(str(result["cert_pem"]))
            elif isinstance(result, Mapping) and "error" in result:
                out.append(error_from_wire(result["error"]))
            else:
                out.append(CAError("CA.SignLeaves answered a malformed result"))
        return out

    def _is_registered(self, node: str, service: str) -> bool:
        entry = self._host.store.entry(node)
        if entry is None:
            return False
        wanted = service.lower()
        for svc in entry.record.services.values():
            if svc.connect_target() == wanted or svc.name.lower() == wanted:
                return True
        return False

    # ================================================================== RPC handlers

    def rpc_handlers(self) -> dict[str, Callable[[Any], Any]]:
        """Method name → handler, registered on the agent's RPC server."""
        return {
            "State.Apply": self._rpc_apply,
            "State.Pull": self._rpc_pull,
            "State.Info": self._rpc_info,
            "CA.RootKey": self._rpc_root_key,
            "CA.SignIntermediate": self._rpc_sign_intermediate,
            "CA.SignLeaf": self._rpc_sign_leaf,
            "CA.SignLeaves": self._rpc_sign_leaves,
        }

    async def _rpc_apply(self, args: Any) -> dict[str, Any]:
        if not self._server:
            raise InvalidRequest("State.Apply must be sent to a server")
        if self._in_primary:
            records = self._apply_op(args)
        else:
            reply = await self._host.call_server(
                "State.Apply", args, dc=self._primary, timeout=self._t.rpc_timeout
            )
            records = self.merge_records(_records_of(reply), announce=True) or _records_of(reply)
        return {"records": [r.to_wire() for r in records]}

    async def _rpc_pull(self, args: Any) -> dict[str, Any]:
        if not isinstance(args, Mapping):
            raise InvalidRequest("State.Pull: args must be a map")
        self._check_peer_primary(args)
        since = args.get("since", 0)
        wait = args.get("wait", 0)
        if not isinstance(since, int) or not isinstance(wait, int | float) or since < 0:
            raise InvalidRequest("State.Pull: since must be an index and wait seconds")
        if args.get("origin") != self._gs.node_id:
            since = 0  # that index was another server's: send everything
        deadline = self._host.clock.monotonic() + min(float(wait), MAX_PULL_WAIT_S)
        while self._gs.index <= since:
            remaining = deadline - self._host.clock.monotonic()
            if remaining <= 0:
                break
            await self._wait_gen(remaining)
        delta = self._gs.entries_since(since)
        return {"delta": delta.to_wire(), "origin": self._gs.node_id, "pdc": self._primary}

    def _check_peer_primary(self, args: Mapping[str, Any]) -> None:
        peer = args.get("pdc")
        if peer != self._primary:
            where = f"datacenter {args.get('dc')!r} (node {args.get('node')!r})"
            raise ConfigError(_mismatch_message_for(where, peer, self._dc, self._primary))

    async def _rpc_info(self, args: Any) -> dict[str, Any]:
        del args
        roots = self.roots()
        created = None if roots is None else min(r.not_before for r in roots.roots).isoformat()
        return {"dc": self._dc, "pdc": self._primary, "created": created,
                "cluster_id": None if roots is None else roots.cluster_id}  # fmt: skip

    async def _rpc_root_key(self, args: Any) -> dict[str, str]:
        if self.authority is None or not self._in_primary:
            raise TrustError("CA.RootKey is served by servers of the primary datacenter only")
        node = args.get("node") if isinstance(args, Mapping) else None
        if not isinstance(node, str) or not self._is_dc_server(node):
            raise TrustError(f"CA.RootKey refused: {node!r} is not a server of {self._dc!r}")
        root_id = args.get("root_id")
        material = self.authority.export_root(str(root_id))
        if material is None:
            raise NotFound(f"this server does not hold the key of root {root_id!r}")
        log.info("root key handed to a server", extra={"server": node, "root_id": root_id})
        return material

    def _is_dc_server(self, node: str) -> bool:
        for member in self._members():
            tags = member.tags
            if (
                member.name == node
                and tags.get("role") == ROLE_SERVER
                and tags.get("dc") == self._dc
            ):
                return member.status is MemberStatus.ALIVE
        return False

    async def _rpc_sign_intermediate(self, args: Any) -> dict[str, str]:
        if self.authority is None or not self._in_primary:
            raise CAError("CA.SignIntermediate is served by the primary datacenter only")
        if not isinstance(args, Mapping) or not isinstance(args.get("csr"), str):
            raise InvalidRequest("CA.SignIntermediate: args must carry a csr")
        self._check_peer_primary(args)
        pem = self.authority.sign_intermediate(args["csr"], self._host.clock.utcnow())
        log.info("intermediate signed", extra={"for_dc": args.get("dc"), "node": args.get("node")})
        return {"pem": pem}

    async def _rpc_sign_leaf(self, args: Any) -> dict[str, str]:
        if self.authority is None:
            raise CAError("CA.SignLeaf is served by servers only")
        if not isinstance(args, Mapping):
            raise InvalidRequest("CA.SignLeaf: args must be a map")
        csr, node, service = args.get("csr"), args.get("node"), args.get("service")
        if not all(isinstance(v, str) and v for v in (csr, node, service)):
            raise InvalidRequest("CA.SignLeaf: csr, node and service must be strings")
        await self._await_registration(str(node), str(service))
        issued = self.authority.sign_leaf(str(csr), str(node), self._host.clock.utcnow())
        return {"cert_pem": issued.cert_pem}

    async def _rpc_sign_leaves(self, args: Any) -> dict[str, Any]:
        """A batch of CSRs from one node; each item answers ``cert_pem`` or its ``error``."""
        if self.authority is None:
            raise CAError("CA.SignLeaves is served by servers only")
        node = args.get("node") if isinstance(args, Mapping) else None
        items = args.get("items") if isinstance(args, Mapping) else None
        if not isinstance(node, str) or not node or not isinstance(items, list):
            raise InvalidRequest("CA.SignLeaves: node and items must be given")
        if len(items) > MAX_BATCH:
            raise InvalidRequest(f"CA.SignLeaves: at most {MAX_BATCH} items per call")
        results: list[dict[str, Any]] = []
        for item in items:
            try:
                results.append(await self._sign_item(node, item))
            except NodeError as exc:
                results.append({"error": error_to_wire(exc)})
        return {"results": results}

    async def _sign_item(self, node: str, item: Any) -> dict[str, str]:
        csr = item.get("csr") if isinstance(item, Mapping) else None
        service = item.get("service") if isinstance(item, Mapping) else None
        if not isinstance(csr, str) or not isinstance(service, str) or not service:
            raise InvalidRequest("CA.SignLeaves: each item needs a csr and a service")
        return await self._rpc_sign_leaf({"csr": csr, "node": node, "service": service})

    async def _await_registration(self, node: str, service: str) -> None:
        # The registration may still be on its way here by gossip: give it a moment.
        deadline = self._host.clock.monotonic() + self._t.registration_wait
        notifier = self._host.notifier
        while not self._is_registered(node, service):
            remaining = deadline - self._host.clock.monotonic()
            if remaining <= 0:
                return  # sign_leaf refuses it with a clear TrustError
            await notifier.wait(notifier.index, min(remaining, 0.5))

    # ================================================================== run

    async def run(self) -> None:
        """Serve until cancelled; raises ``ConfigError`` on a primary_datacenter mismatch."""
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.leaves.run())
                tg.create_task(self._fetch_loop())
                tg.create_task(self._maintenance_loop())
                tg.create_task(self._watch_fatal())
                if self._server:
                    tg.create_task(self._ca_loop())
                    tg.create_task(self._federation_loop())
                    if self._in_primary:
                        tg.create_task(self._bootstrap_entries())
                    else:
                        tg.create_task(self._replicate_loop())
        except* ConfigError as group:
            raise group.exceptions[0] from None

    async def _watch_fatal(self) -> None:
        await self._fatal_set.wait()
        assert self._fatal is not None
        raise self._fatal

    def _backoff(self, failures: int) -> float:
        base = min(self._t.retry_max, self._t.retry_min * 2.0 ** max(0, failures - 1))
        return float(base * self._rng.uniform(0.5, 1.0))

    # --- CA ---------------------------------------------------------------------------

    async def _ca_loop(self) -> None:
        failures = 0
        while True:
            gen = self._gen
            delay = self._t.maintenance
            try:
                if await self._ca_step():
                    failures = 0
                    continue  # something changed: look again at once
            except ConfigError:
                raise
            except NodeError as exc:
                failures += 1
                delay = self._backoff(failures)
                log.warning(
                    "CA not ready on this server yet: %s",
                    exc,
                    extra={"retry_in_s": round(delay, 2)},
                )
            if self.roots() is None:
                delay = min(delay, max(self._t.retry_min, self._t.bootstrap_delay / 4))
            await _wait_event(gen, delay)

    async def _ca_step(self) -> bool:
        """One look at the CA; True if it changed something worth another look."""
        assert self.authority is not None
        roots, now = self.roots(), self._host.clock.utcnow()
        if roots is None:
            if self._in_primary and self._may_bootstrap():
                self._bootstrap_ca(now)
                return True
            return False
        need = self.authority.sync(roots, self.ca_config(), now)
        if need is Need.ROOT_KEY:
            await self._fetch_root_key(roots)
            return True
        if need is Need.INTERMEDIATE:
            await self._renew_intermediate(roots)
            return True
        if self._in_primary:
            self._maintain_roots(roots, now)
        return False

    def _may_bootstrap(self) -> bool:
        if self._host.clock.monotonic() - self._started < self._t.bootstrap_delay:
            return False
        names = {self._cfg.node_name}
        for member in self._members():
            tags = member.tags
            alive = member.status is MemberStatus.ALIVE
            if alive and tags.get("role") == ROLE_SERVER and tags.get("dc") == self._primary:
                names.add(member.name)
        return min(names) == self._cfg.node_name

    def _bootstrap_ca(self, now: datetime) -> None:
        assert self.authority is not None
        config = self._configured_ca()
        change = self.authority.bootstrap(cluster_id=str(uuid.uuid4()), now=now, config=config)
        wall = _wall_ms(now)
        records = (
            self._gs.put(KIND_CA_CONFIG, CA_CONFIG_NAME, change.config, wall_ms=wall),
            self._gs.put(KIND_CA_ROOTS, CA_ROOTS_NAME, change.roots, wall_ms=wall),
        )
        log.info("CA bootstrapped", extra={"trust_domain": change.roots.trust_domain,
                                          "root_id": change.roots.active_root_id})  # fmt: skip
        self._changed(records, announce=True)

    def _configured_ca(self) -> CAConfig:
        connect = self._cfg.connect
        raw = {"Provider": connect.ca_provider, "Config": dict(connect.ca_config)}
        try:
            return parse_ca_configuration(raw).config
        except InvalidRequest as exc:
            log.warning("connect.ca_config not used for the CA", extra={"error": str(exc)})
            return CAConfig()

    async def _fetch_root_key(self, roots: CARoots) -> None:
        assert self.authority is not None
        args = {"node": self._cfg.node_name, "root_id": roots.active_root_id}
        material = await self._host.call_peer_server(
            "CA.RootKey", args, timeout=self._t.rpc_timeout
        )
        now = self._host.clock.utcnow()
        self.authority.add_root_pems(material, trust_domain=roots.trust_domain, now=now)
        log.info("root key fetched from a primary server", extra={"root_id": roots.active_root_id})

    async def _renew_intermediate(self, roots: CARoots) -> None:
        assert self.authority is not None
        key, csr = self.authority.intermediate_request(
            trust_domain=roots.trust_domain, datacenter=self._dc
        )
        args = {"csr": csr, "dc": self._dc, "node": self._cfg.node_name, "pdc": self._primary}
        reply = await self._host.call_server(
            "CA.SignIntermediate", args, dc=self._primary, timeout=self._t.rpc_timeout
        )
        if not isinstance(reply, Mapping) or not isinstance(reply.get("pem"), str):
            raise CAError("CA.SignIntermediate answered without a certificate")
        now = self._host.clock.utcnow()
        self.authority.install_intermediate(
            key, intermediate_pem=reply["pem"], roots=roots, config=self.ca_config(), now=now
        )
        log.info("intermediate installed", extra={"root_id": roots.active_root_id})
        self._notify_listeners()

    def _maintain_roots(self, roots: CARoots, now: datetime) -> None:
        config = self.ca_config() or CAConfig(cluster_id=roots.cluster_id)
        updated = prune_roots(retire_inactive(roots, now=now, leaf_ttl=config.leaf_cert_ttl), now)
        if updated != roots:
            record = self._gs.put(KIND_CA_ROOTS, CA_ROOTS_NAME, updated, wall_ms=_wall_ms(now))
            self._changed((record,), announce=True)

    async def _bootstrap_entries(self) -> None:
        """``config_entries { bootstrap }``: written once each, only if absent (as Consul)."""
        await asyncio.sleep(self._t.bootstrap_delay)
        wall = _wall_ms(self._host.clock.utcnow())
        for entry in self._cfg.config_entries_bootstrap:
            if self._gs.get(entry.kind, entry.name) is None:
                record = self._gs.put(entry.kind, entry.name, entry, wall_ms=wall)
                self._changed((record,), announce=True)
                log.info(
                    "bootstrap config entry written",
                    extra={"kind": entry.kind, "entry": entry.name},
                )

    # --- replication ------------------------------------------------------------------

    async def _replicate_loop(self) -> None:
        """Secondary servers: blocking pulls from the primary, merged and gossiped on."""
        since, origin, failures = 0, None, 0
        while True:
            args = {"since": since, "wait": self._t.pull_wait, "origin": origin,
                    "pdc": self._primary, "dc": self._dc, "node": self._cfg.node_name}  # fmt: skip
            try:
                reply = await self._host.call_server(
                    "State.Pull", args, dc=self._primary,
                    timeout=self._t.pull_wait + self._t.rpc_timeout,
                )  # fmt: skip
                delta, origin = self._take_pull(reply)
                since, failures = delta.index, 0
            except ConfigError as exc:
                self._fail(exc)
                return
            except NodeError as exc:
                failures += 1
                delay = self._backoff(failures)
                # Before the WAN join the primary is simply unknown: warn only if it lasts.
                quiet = isinstance(exc, DatacenterUnavailable) and failures < 5
                log.log(
                    logging.DEBUG if quiet else logging.WARNING,
                    "replication from %s failed: %s",
                    self._primary,
                    exc,
                    extra={"retry_in_s": round(delay, 2)},
                )
                await asyncio.sleep(delay)

    def _take_pull(self, reply: Any) -> tuple[Delta, str]:
        if not isinstance(reply, Mapping) or not isinstance(reply.get("origin"), str):
            raise InvalidRequest("State.Pull answer is malformed")
        peer = reply.get("pdc")
        if peer != self._primary:
            raise ConfigError(_mismatch_message(self._cfg, peer, f"datacenter {self._primary!r}"))
        delta = Delta.from_wire(reply.get("delta"))
        wall = _wall_ms(self._host.clock.utcnow())
        self._changed(self._gs.apply_delta(delta, wall_ms=wall), announce=True)
        return delta, str(reply["origin"])

    async def _fetch_loop(self) -> None:
        """A gossip digest announced a record too big to broadcast: pull our DC's copy."""
        failures = 0
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            args = {"since": 0, "wait": 0, "origin": None, "pdc": self._primary,
                    "dc": self._dc, "node": self._cfg.node_name}  # fmt: skip
            try:
                # A server would answer itself through call_server: ask a peer instead.
                call = self._host.call_peer_server if self._server else self._host.call_server
                reply = await call("State.Pull", args, timeout=self._t.rpc_timeout)
                delta = Delta.from_wire(reply.get("delta") if isinstance(reply, Mapping) else None)
                self.merge_records(delta.records, announce=True)
                failures = 0
            except NodeError as exc:
                failures += 1
                self._wanted.set()
                await asyncio.sleep(self._backoff(failures))
                log.debug("fetching global state failed", extra={"error": str(exc)})

    # --- maintenance ------------------------------------------------------------------

    async def _maintenance_loop(self) -> None:
        grace_ms = int(self._t.tombstone_grace * 1000)
        while True:
            await asyncio.sleep(self._t.maintenance)
            wall = _wall_ms(self._host.clock.utcnow())
            if self._gs.reap(wall_ms=wall, grace_ms=grace_ms):
                self._save_state()

    async def _federation_loop(self) -> None:
        """Servers: ask each other datacenter which primary it names (issue #6847)."""
        checked: set[str] = set()
        while True:
            for dc in self._host.datacenters():
                if dc == self._dc or dc in checked:
                    continue
                try:
                    info = await self._host.call_server(
                        "State.Info", {}, dc=dc, timeout=self._t.rpc_timeout
                    )
                except ConfigError:
                    raise
                except NodeError:
                    continue  # not reachable now; asked again next round
                self._judge_federation(dc, info)
                checked.add(dc)
            await asyncio.sleep(min(self._t.maintenance, 1.0))  # datacenters() is cheap

    def _judge_federation(self, dc: str, info: Any) -> None:
        if not isinstance(info, Mapping) or info.get("pdc") == self._primary:
            return
        message = _mismatch_message(self._cfg, info.get("pdc"), f"datacenter {dc!r}")
        theirs, roots = info.get("created"), self.roots()
        mine = None if roots is None else min(r.not_before for r in roots.roots).isoformat()
        # The younger CA (or none) is the one that split off: that side stops.
        if mine is None or (isinstance(theirs, str) and theirs < mine):
            raise ConfigError(message, key="primary_datacenter")
        log.error(
            "primary datacenter mismatch; the other side's CA is younger, it must stop",
            extra={"error": message},
        )


async def _wait_event(event: asyncio.Event, timeout: float) -> None:
    """Wait for ``event`` at most ``timeout`` seconds (``asyncio.timeout``: unlike 3.11's
    ``wait_for``, it never swallows a cancellation that races the event)."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        pass


def _records_of(reply: Any) -> tuple[Record, ...]:
    if not isinstance(reply, Mapping) or not isinstance(reply.get("records"), list):
        raise InvalidRequest("State.Apply answer is malformed")
    return tuple(Record.from_wire(r) for r in reply["records"])


def _mismatch_message(cfg: AgentConfig, other: object, who: str) -> str:
    return _mismatch_message_for(who, other, cfg.datacenter, cfg.primary_datacenter)


def _mismatch_message_for(who: str, other: object, dc: str, mine: str) -> str:
    return (
        f"primary_datacenter mismatch: this node (datacenter {dc!r}) has primary_datacenter "
        f"{mine!r}, but {who} names {other!r}; every node of every datacenter must set the "
        f"same primary_datacenter (Consul issue #6847)"
    )
