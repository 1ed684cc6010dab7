"""This node's own services and checks: the authoritative copy, persisted in ``data_dir``.

Rule: every write is computed on copies, validated as a whole, persisted, and only then
swapped in and published to the store as a ``NodeRecord`` with a higher version; a
rejected or failed write changes nothing. Registration definitions live in one msgpack
file (``local-catalog.msgpack``), TTL check results in another (``check-status.msgpack``),
both written with ``atomic_write`` before the call returns, so what a call acknowledged
survives SIGKILL. Check *results* from the runner are published but not persisted (they
are recomputed after a restart); TTL updates are persisted, as Consul does. Per-item
values (instances, check states, serialised definitions) are cached by identity, so a
status change costs O(changed) allocations plus one pass over the node's record.
``data_dir=None`` keeps everything in memory (``-dev``).

Maintenance mode (``enable_maintenance``) is a critical check of kind ``maintenance``
kept with the others and persisted as ``service id → reason`` (``""`` for the node),
so a node or service in maintenance stays there across restarts until disabled.

Each service and check remembers its source (``ServiceSource``, persisted): the config
files own what they define, so ``load_config_services`` at start drops config-sourced
services, and config-sourced checks of config services, that the files no longer define,
while API registrations survive restarts untouched.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

from node import wire
from node.catalog.maintenance import (
    NODE_MAINT_CHECK_ID,
    is_maintenance,
    node_maintenance_check,
    service_maint_check_id,
    service_maintenance_check,
)
from node.catalog.parse import parse_check, parse_service
from node.catalog.sidecar import (
    SIDECAR_MAX_PORT,
    SIDECAR_MIN_PORT,
    SidecarPorts,
    expand_sidecar,
    sidecar_id_for,
)
from node.catalog.store import CatalogStore
from node.catalog.values import (
    CheckDefinition,
    CheckKind,
    CheckState,
    Health,
    NodeRecord,
    ServiceDefinition,
    ServiceInstance,
)
from node.clock import Clock, MonotonicClock
from node.errors import ConfigError, InvalidRequest, NotFound, RemoteProtocolError
from node.persist import atomic_write, read_or_none
from node.wire import pack

__all__ = [
    "LocalState",
    "NodeIdentity",
    "ServiceSource",
    "STATE_FILE",
    "STATUS_FILE",
    "NODE_ID_FILE",
    "load_node_id",
]

log = logging.getLogger(__name__)

STATE_FILE = "local-catalog.msgpack"
STATUS_FILE = "check-status.msgpack"
NODE_ID_FILE = "node-id"
_FORMAT = 1


class ServiceSource(StrEnum):
    """Who registered a service: the config files (owned by them) or the HTTP API."""

    CONFIG = "config"
    API = "api"


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeIdentity:
    """The node-level fields this node publishes."""

    name: str
    datacenter: str
    address: str
    node_id: str = ""
    tagged_addresses: Mapping[str, str] = field(default_factory=dict)
    meta: Mapping[str, str] = field(default_factory=dict)


def load_node_id(data_dir: str | Path | None) -> str:
    """The node's UUID: read from ``data_dir/node-id``, made (and saved) once if missing."""
    if data_dir is None:
        return str(uuid.uuid4())
    path = Path(data_dir) / NODE_ID_FILE
    raw = read_or_none(path)
    if raw is not None:
        text = raw.decode("utf-8", "replace").strip()
        try:
            return str(uuid.UUID(text))
        except ValueError:
            raise ConfigError(f"{path} does not hold a UUID: {text[:40]!r}") from None
    node_id = str(uuid.uuid4())
    atomic_write(path, node_id.encode())
    return node_id


@dataclass(slots=True)
class _State:
    """Mutable working copy of everything LocalState owns (copied per write)."""

    services: dict[str, ServiceDefinition]
    checks: dict[str, CheckDefinition]
    status: dict[str, tuple[Health, str]]
    sidecars: dict[str, str]  # sidecar id -> parent id
    ports: dict[str, int]
    sources: dict[str, ServiceSource]  # service id -> source
    check_sources: dict[str, ServiceSource]  # check id -> source

    def copy(self) -> _State:
        return _State(
            dict(self.services), dict(self.checks), dict(self.status), dict(self.sidecars),
            dict(self.ports), dict(self.sources), dict(self.check_sources),
        )  # fmt: skip


class LocalState:
    """The node's own registrations; publishes them to the store on every change."""

    def __init__(
        self,
        *,
        identity: NodeIdentity,
        store: CatalogStore,
        data_dir: str | Path | None = None,
        clock: Clock | None = None,
        sidecar_ports: tuple[int, int] = (SIDECAR_MIN_PORT, SIDECAR_MAX_PORT),
    ) -> None:
        self._clock = clock or MonotonicClock()
        self._data_dir = Path(data_dir) if data_dir is not None else None
        node_id = identity.node_id or load_node_id(self._data_dir)
        self._identity = replace(identity, node_id=node_id)
        self._store = store
        self._port_range = sidecar_ports
        self._state = _State({}, {}, {}, {}, {}, {}, {})
        self._version = 0
        self._critical_since: dict[str, float] = {}
        self._ttl_deadline: dict[str, float] = {}
        self._listeners: list[Callable[[], None]] = []
        self._record_listeners: list[Callable[[NodeRecord | None, NodeRecord], None]] = []
        self._published: NodeRecord | None = None
        self._instance_cache: dict[str, tuple[ServiceDefinition, ServiceInstance]] = {}
        self._state_cache: dict[str, tuple[object, ...]] = {}
        self._raw_cache: dict[str, tuple[object, dict[str, Any]]] = {}
        self._load()
        self._publish()

    # ------------------------------------------------------------------ reads

    @property
    def node_id(self) -> str:
        """This node's UUID."""
        return self._identity.node_id

    @property
    def identity(self) -> NodeIdentity:
        """Node-level fields as published."""
        return self._identity

    @property
    def version(self) -> int:
        """Version of the last published record."""
        return self._version

    def services(self) -> Mapping[str, ServiceDefinition]:
        """Registered services (sidecars expanded; each with its current checks)."""
        return MappingProxyType(
            {sid: self._with_checks(svc) for sid, svc in self._state.services.items()}
        )

    def service(self, service_id: str) -> ServiceDefinition:
        """One registered service; ``NotFound`` when unknown."""
        svc = self._state.services.get(service_id)
        if svc is None:
            raise NotFound(f'Unknown service ID "{service_id}"')
        return self._with_checks(svc)

    def checks(self) -> Mapping[str, CheckDefinition]:
        """Every registered check by ID."""
        return MappingProxyType(dict(self._state.checks))

    def check_state(self, check_id: str) -> CheckState:
        """The published state of one check; ``NotFound`` when unknown."""
        if check_id not in self._state.checks:
            raise NotFound(f'Unknown check ID "{check_id}"')
        return self._check_state(self._state, check_id)

    def source(self, service_id: str) -> ServiceSource:
        """Who registered ``service_id`` (config files or the API); ``NotFound`` when unknown."""
        if service_id not in self._state.services:
            raise NotFound(f'Unknown service ID "{service_id}"')
        return self._state.sources.get(service_id, ServiceSource.API)

    def is_sidecar(self, service_id: str) -> bool:
        """Whether ``service_id`` was made by sidecar expansion."""
        return service_id in self._state.sidecars

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after every change of the set of checks (for the runner)."""
        self._listeners.append(callback)

    def add_record_listener(
        self, callback: Callable[[NodeRecord | None, NodeRecord], None]
    ) -> None:
        """Call ``callback(old, new)`` after every published record (for gossip sync)."""
        self._record_listeners.append(callback)

    def republish_above(self, version: int) -> None:
        """A peer holds a record of ours at ``version`` or later (our clock went back, or
        an older incarnation of this node); publish again with a higher version."""
        if version >= self._version:
            self._version = version
            self._publish()

    def record(self) -> NodeRecord:
        """The NodeRecord currently published."""
        return self._build_record(self._state, self._version)

    # ------------------------------------------------------------------ writes

    def register_service(
        self,
        definition: ServiceDefinition,
        *,
        replace_existing_checks: bool = False,
        source: ServiceSource = ServiceSource.API,
    ) -> tuple[ServiceDefinition, ...]:
        """Register (or update) a service and its sidecar; returns what was registered.

        Without ``replace_existing_checks`` checks of an existing registration that the
        new definition does not mention are kept (Consul's default). The service and its
        sidecar take ``source``, so re-registering a config service through the API
        makes it an API service that outlives its removal from the config files.
        """
        work = self._state.copy()
        parts = self._register_into(work, definition, replace_existing_checks, source)
        self._commit(work, persist=True)
        return tuple(self.service(part.id) for part in parts)

    def load_config_services(
        self, definitions: tuple[ServiceDefinition, ...]
    ) -> tuple[ServiceDefinition, ...]:
        """At start: make the config files' services exactly ``definitions``, in one write.

        Registers (or updates) each of them as ``ServiceSource.CONFIG`` and removes, with
        their checks and sidecars, the config-sourced services that the files no longer
        define, and the config-sourced checks a kept service no longer defines. API
        registrations restored from ``data_dir`` (services and checks) are left as they are.
        """
        work = self._state.copy()
        parts = [
            part
            for definition in definitions
            for part in self._register_into(work, definition, False, ServiceSource.CONFIG)
        ]
        kept = {part.id for part in parts}
        defined_checks = {check.id for part in parts for check in part.checks}
        for cid, check in list(work.checks.items()):
            config_check = work.check_sources.get(cid) is ServiceSource.CONFIG
            if config_check and check.service_id in kept and cid not in defined_checks:
                _drop_check(work, cid)
        stale = [
            sid
            for sid, src in work.sources.items()
            if src is ServiceSource.CONFIG and sid not in kept and sid not in work.sidecars
        ]
        for service_id in stale:
            log.info("removing service no longer in config", extra={"service_id": service_id})
            self._remove_with_sidecar(work, service_id)
        if work != self._state:  # an unchanged config restarts without a write or a publish
            self._commit(work, persist=True)
        return tuple(self.service(part.id) for part in parts)

    def deregister_service(self, service_id: str) -> None:
        """Remove a service, its checks and its sidecar; ``NotFound`` when unknown."""
        work = self._state.copy()
        if service_id not in work.services:
            raise NotFound(f'Unknown service ID "{service_id}"')
        self._remove_with_sidecar(work, service_id)
        self._commit(work, persist=True)

    def register_check(self, check: CheckDefinition) -> None:
        """Register (or replace) a check; its ``service_id`` must be registered here."""
        work = self._state.copy()
        if check.service_id and check.service_id not in work.services:
            raise InvalidRequest(
                f'ServiceID "{check.service_id}" does not exist', field="service_id"
            )
        self._put_check(work, check, ServiceSource.API)
        self._commit(work, persist=True)

    def maintenance(self) -> Mapping[str, str]:
        """What is in maintenance: service ID (``""`` for the node) → reason."""
        return MappingProxyType(_maintenance_of(self._state.checks))

    def enable_maintenance(self, service_id: str = "", reason: str = "") -> bool:
        """Put the node (``service_id=""``) or a service into maintenance; whether it
        changed anything (an existing maintenance keeps its reason, as in Consul)."""
        if service_id:
            if service_id not in self._state.services:
                raise NotFound(f'No service registered with ID "{service_id}"')
            check = service_maintenance_check(service_id, reason)
        else:
            check = node_maintenance_check(reason)
        if check.id in self._state.checks:
            return False
        work = self._state.copy()
        self._put_check(work, check, ServiceSource.API)
        self._commit(work, persist=True)
        _log_maintenance(service_id, "entered")
        return True

    def disable_maintenance(self, service_id: str = "") -> bool:
        """Take the node (``service_id=""``) or a service out of maintenance; whether it
        was in maintenance."""
        if service_id and service_id not in self._state.services:
            raise NotFound(f'No service registered with ID "{service_id}"')
        check_id = service_maint_check_id(service_id) if service_id else NODE_MAINT_CHECK_ID
        if check_id not in self._state.checks:
            return False
        work = self._state.copy()
        _drop_check(work, check_id)
        self._commit(work, persist=True)
        _log_maintenance(service_id, "left")
        return True

    def deregister_check(self, check_id: str) -> None:
        """Remove a check; ``NotFound`` when unknown."""
        work = self._state.copy()
        if check_id not in work.checks:
            raise NotFound(f'Unknown check ID "{check_id}"')
        _drop_check(work, check_id)
        self._commit(work, persist=True)

    def update_ttl(self, check_id: str, status: Health, output: str = "") -> None:
        """``/v1/agent/check/pass|warn|fail|update``: set a TTL check and restart its timer."""
        check = self._state.checks.get(check_id)
        if check is None:
            raise NotFound(f'Unknown check ID "{check_id}"')
        if check.kind is not CheckKind.TTL:
            raise InvalidRequest(f'CheckID "{check_id}" does not have associated TTL')
        self._ttl_deadline[check_id] = self._clock.monotonic() + check.ttl
        self._set_status(check_id, status, output, persist=True)

    def set_check_status(self, check_id: str, status: Health, output: str) -> bool:
        """A check result from the runner; publishes only if something changed."""
        if check_id not in self._state.checks:
            return False  # the check was removed while its probe ran
        return self._set_status(check_id, status, output, persist=False)

    def ttl_deadlines(self) -> Mapping[str, float]:
        """TTL check ID → monotonic time at which it expires."""
        return MappingProxyType(dict(self._ttl_deadline))

    def expire_ttls(self, now: float) -> list[str]:
        """Mark TTL checks whose deadline passed critical; returns their IDs."""
        expired = [cid for cid, deadline in self._ttl_deadline.items() if deadline <= now]
        for cid in expired:
            del self._ttl_deadline[cid]
            self.set_check_status(cid, Health.CRITICAL, "TTL expired")
        return expired

    def reap_critical(self, now: float) -> list[str]:
        """Deregister services whose check is critical for longer than its
        ``deregister_critical_service_after``; returns the removed service IDs."""
        doomed: set[str] = set()
        for cid, check in self._state.checks.items():
            since = self._critical_since.get(cid)
            after = check.deregister_critical_service_after
            if after > 0 and check.service_id and since is not None and now - since >= after:
                doomed.add(check.service_id)
        removed = []
        for service_id in sorted(doomed):
            if service_id in self._state.services:
                log.warning("deregistering critical service", extra={"service_id": service_id})
                self.deregister_service(service_id)
                removed.append(service_id)
        return removed

    def next_deadline(self) -> float | None:
        """Earliest monotonic time at which ``expire_ttls`` or ``reap_critical`` has work."""
        times = list(self._ttl_deadline.values())
        for cid, since in self._critical_since.items():
            check = self._state.checks.get(cid)
            if check is not None and check.deregister_critical_service_after > 0:
                times.append(since + check.deregister_critical_service_after)
        return min(times) if times else None

    # ------------------------------------------------------------------ internals

    def _with_checks(self, svc: ServiceDefinition) -> ServiceDefinition:
        checks = tuple(c for c in self._state.checks.values() if c.service_id == svc.id)
        return replace(svc, checks=checks)

    def _register_into(
        self,
        work: _State,
        definition: ServiceDefinition,
        replace_checks: bool,
        source: ServiceSource,
    ) -> tuple[ServiceDefinition, ...]:
        # Expands the sidecar into ``work``; returns what was registered (parent first).
        ports = SidecarPorts(lo=self._port_range[0], hi=self._port_range[1], assigned=work.ports)
        ports.set_in_use({sid: svc.port for sid, svc in work.services.items() if svc.port})
        parts = expand_sidecar(
            definition, allocate_port=ports.allocate, node_address=self._identity.address
        )
        old_sidecar = sidecar_id_for(definition.id)
        if len(parts) == 1 and work.sidecars.get(old_sidecar) == definition.id:
            self._remove_service(work, old_sidecar)
        for part in parts:
            self._put_service(work, part, replace_checks, source)
        if len(parts) == 2:
            work.sidecars[parts[1].id] = definition.id
        work.ports = dict(ports.assigned)
        return parts

    def _remove_with_sidecar(self, work: _State, service_id: str) -> None:
        self._remove_service(work, service_id)
        sidecar = sidecar_id_for(service_id)
        if work.sidecars.get(sidecar) == service_id:
            self._remove_service(work, sidecar)

    def _put_service(
        self, work: _State, svc: ServiceDefinition, replace_checks: bool, source: ServiceSource
    ) -> None:
        if replace_checks:
            # Replacing checks never ends a maintenance the operator asked for.
            for cid in [
                cid
                for cid, c in work.checks.items()
                if c.service_id == svc.id and not is_maintenance(c)
            ]:
                if cid not in {c.id for c in svc.checks}:
                    _drop_check(work, cid)
        work.services[svc.id] = replace(svc, checks=())
        work.sources[svc.id] = source
        work.sidecars.pop(svc.id, None)  # re-marked by register_service if it is a sidecar
        for check in svc.checks:
            self._put_check(work, check, source)

    def _put_check(self, work: _State, check: CheckDefinition, source: ServiceSource) -> None:
        previous = work.checks.get(check.id)
        work.checks[check.id] = check
        work.check_sources[check.id] = source
        # An unchanged re-registration keeps its current result instead of flapping.
        if previous != check or check.id not in work.status:
            work.status[check.id] = (check.status, "")

    def _remove_service(self, work: _State, service_id: str) -> None:
        work.services.pop(service_id, None)
        work.sidecars.pop(service_id, None)
        work.sources.pop(service_id, None)
        for cid in [cid for cid, c in work.checks.items() if c.service_id == service_id]:
            _drop_check(work, cid)

    def _set_status(self, check_id: str, status: Health, output: str, *, persist: bool) -> bool:
        check = self._state.checks[check_id]
        output = _truncate(output, check.output_max_size)
        if self._state.status.get(check_id) == (status, output):
            return False
        work = self._state.copy()
        work.status[check_id] = (status, output)
        self._commit(work, persist=persist, status_only=True, touched=check_id)
        return True

    def _commit(
        self, work: _State, *, persist: bool, status_only: bool = False, touched: str = ""
    ) -> None:
        checks_changed = work.checks != self._state.checks
        version = self._next_version()
        if persist:
            # Raises before anything is swapped in.
            if status_only:
                self._persist_status(work, version)
            else:
                self._persist(work, version)
        self._state = work
        self._version = version
        if touched and not checks_changed:
            self._track_one(touched)
        else:
            self._track_timers()
        self._emit(self._build_record(work, version))
        if checks_changed:
            for callback in list(self._listeners):
                callback()

    def _next_version(self) -> int:
        # Wall-clock microseconds keep versions growing across restarts without data_dir.
        wall = int(self._clock.utcnow().timestamp() * 1_000_000)
        return max(self._version + 1, wall)

    def _track_one(self, check_id: str) -> None:
        # A status change of one existing check: only its critical timer can move.
        if self._state.status[check_id][0] is Health.CRITICAL:
            self._critical_since.setdefault(check_id, self._clock.monotonic())
        else:
            self._critical_since.pop(check_id, None)

    def _track_timers(self) -> None:
        now = self._clock.monotonic()
        for cid in list(self._critical_since):
            if self._state.status.get(cid, (Health.PASSING, ""))[0] is not Health.CRITICAL:
                del self._critical_since[cid]
        for cid, (status, _) in self._state.status.items():
            if status is Health.CRITICAL:
                self._critical_since.setdefault(cid, now)
        for cid in list(self._ttl_deadline):
            if cid not in self._state.checks:
                del self._ttl_deadline[cid]
        for cid, check in self._state.checks.items():
            if check.kind is CheckKind.TTL:
                self._ttl_deadline.setdefault(cid, now + check.ttl)

    def _publish(self) -> None:
        self._version = self._next_version()
        self._track_timers()
        self._emit(self._build_record(self._state, self._version))

    def _emit(self, record: NodeRecord) -> None:
        old, self._published = self._published, record
        self._store.upsert_node(record)
        for callback in list(self._record_listeners):
            callback(old, record)

    def _build_record(self, work: _State, version: int) -> NodeRecord:
        ident = self._identity
        instances = {sid: self._instance(svc) for sid, svc in work.services.items()}
        states = {cid: self._check_state(work, cid) for cid in work.checks}
        self._prune_caches(work)
        return NodeRecord(
            name=ident.name,
            node_id=ident.node_id,
            address=ident.address,
            datacenter=ident.datacenter,
            tagged_addresses=MappingProxyType(dict(ident.tagged_addresses)),
            meta=MappingProxyType(dict(ident.meta)),
            services=MappingProxyType(instances),
            checks=MappingProxyType(states),
            version=version,
        )

    def _instance(self, svc: ServiceDefinition) -> ServiceInstance:
        # Same definition object → same instance object, so the store's diff is O(1) per item.
        cached = self._instance_cache.get(svc.id)
        if cached is None or cached[0] is not svc:
            cached = (svc, svc.instance())
            self._instance_cache[svc.id] = cached
        return cached[1]

    def _check_state(self, work: _State, check_id: str) -> CheckState:
        check = work.checks[check_id]
        status = work.status.get(check_id, (check.status, ""))
        svc = work.services.get(check.service_id)
        cached = self._state_cache.get(check_id)
        if cached is not None and cached[0] is check and cached[1] == status and cached[2] is svc:
            result = cached[3]
            assert isinstance(result, CheckState)
            return result
        state = CheckState(
            id=check.id,
            name=check.name,
            kind=check.kind,
            status=status[0],
            output=status[1],
            notes=check.notes,
            service_id=check.service_id,
            service_name=svc.name if svc else "",
            service_tags=svc.tags if svc else (),
            interval=check.interval,
            timeout=check.timeout,
        )
        self._state_cache[check_id] = (check, status, svc, state)
        return state

    def _prune_caches(self, work: _State) -> None:
        if len(self._instance_cache) > len(work.services):
            for sid in self._instance_cache.keys() - work.services.keys():
                del self._instance_cache[sid]
        if len(self._state_cache) > len(work.checks):
            for cid in self._state_cache.keys() - work.checks.keys():
                del self._state_cache[cid]

    # ------------------------------------------------------------------ persistence

    def _persist(self, work: _State, version: int) -> None:
        if self._data_dir is None:
            return
        doc = {
            "format": _FORMAT,
            "version": version,
            "services": [self._raw("s", svc) for svc in work.services.values()],
            "checks": [
                self._raw("c", check) for check in work.checks.values() if not is_maintenance(check)
            ],
            "maintenance": _maintenance_of(work.checks),
            "sidecars": work.sidecars,
            "sidecar_ports": work.ports,
            "sources": {sid: str(src) for sid, src in work.sources.items()},
            "check_sources": {cid: str(src) for cid, src in work.check_sources.items()},
        }
        atomic_write(self._data_dir / STATE_FILE, pack(doc))
        keep = {f"s:{sid}" for sid in work.services} | {f"c:{cid}" for cid in work.checks}
        for key in self._raw_cache.keys() - keep:
            del self._raw_cache[key]

    def _raw(self, prefix: str, item: ServiceDefinition | CheckDefinition) -> dict[str, Any]:
        key = f"{prefix}:{item.id}"
        cached = self._raw_cache.get(key)
        if cached is None or cached[0] is not item:
            cached = (item, item.to_raw())
            self._raw_cache[key] = cached
        return cached[1]

    def _persist_status(self, work: _State, version: int) -> None:
        if self._data_dir is None:
            return
        doc = {
            "format": _FORMAT,
            "version": version,
            "ttl_status": {
                cid: [str(work.status[cid][0]), work.status[cid][1]]
                for cid, check in work.checks.items()
                if check.kind is CheckKind.TTL and cid in work.status
            },
        }
        atomic_write(self._data_dir / STATUS_FILE, pack(doc))

    def _load(self) -> None:
        if self._data_dir is None:
            return
        path = self._data_dir / STATE_FILE
        raw = read_or_none(path)
        if raw is None:
            return
        status_path = self._data_dir / STATUS_FILE
        try:
            self._state, self._version = _decode_state(_unpack(raw))
            status_raw = read_or_none(status_path)
            if status_raw is not None:
                self._version = max(self._version, _apply_status(self._state, _unpack(status_raw)))
        except (ValueError, TypeError, KeyError, InvalidRequest) as exc:
            raise ConfigError(
                f"cannot load saved services and checks: {exc}", file=str(path)
            ) from exc


def _unpack(data: bytes) -> Any:
    try:
        return wire.unpack(data)
    except RemoteProtocolError as exc:
        raise ValueError(f"malformed file ({exc})") from exc


def _apply_status(state: _State, doc: Any) -> int:
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
        raise ValueError("unknown status file format")
    for cid, (status, output) in dict(doc.get("ttl_status", {})).items():
        if cid in state.checks:
            state.status[cid] = (Health(status), str(output))
    return int(doc["version"])


def _decode_state(doc: Any) -> tuple[_State, int]:
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
        raise ValueError("unknown file format")
    services = {s.id: s for s in (parse_service(raw) for raw in doc["services"])}
    checks = {c.id: c for c in (parse_check(raw) for raw in doc["checks"])}
    status = {cid: (c.status, "") for cid, c in checks.items()}
    sidecars = {str(k): str(v) for k, v in dict(doc.get("sidecars", {})).items()}
    ports = {str(k): int(v) for k, v in dict(doc.get("sidecar_ports", {})).items()}
    # Files written before sources were recorded: treat every service as the API's, so
    # nothing is removed on the strength of a guess.
    recorded = dict(doc.get("sources", {}))
    sources = {sid: ServiceSource(recorded.get(sid, ServiceSource.API)) for sid in services}
    recorded = dict(doc.get("check_sources", {}))
    check_sources = {cid: ServiceSource(recorded.get(cid, ServiceSource.API)) for cid in checks}
    for service_id, reason in dict(doc.get("maintenance", {})).items():
        service_id, reason = str(service_id), str(reason)
        if service_id and service_id not in services:
            continue  # its service is gone; so is its maintenance
        check = (
            service_maintenance_check(service_id, reason)
            if service_id
            else node_maintenance_check(reason)
        )
        checks[check.id] = check
        status[check.id] = (check.status, "")
        check_sources[check.id] = ServiceSource.API
    state = _State(services, checks, status, sidecars, ports, sources, check_sources)
    return state, int(doc["version"])


def _log_maintenance(service_id: str, verb: str) -> None:
    if service_id:
        log.info(f"Service {verb} maintenance mode", extra={"service": service_id})
    else:
        log.info(f"Node {verb} maintenance mode")


def _maintenance_of(checks: Mapping[str, CheckDefinition]) -> dict[str, str]:
    return {c.service_id: c.notes for c in checks.values() if is_maintenance(c)}


def _drop_check(work: _State, check_id: str) -> None:
    del work.checks[check_id]
    work.status.pop(check_id, None)
    work.check_sources.pop(check_id, None)


def _truncate(output: str, limit: int) -> str:
    encoded = output.encode("utf-8", "replace")
    if len(encoded) <= limit:
        return output
    return encoded[:limit].decode("utf-8", "ignore")
