"""The proxy feed: keeps one snapshot per local connect-proxy and mesh-gateway current.

Rule: the feed gathers, the manager runs. For every ``connect-proxy`` and
``mesh-gateway`` registered on this node it rebuilds the proxy's whole
``ConfigSnapshot`` from its inputs (registration, CA roots, the destination service's
leaf, upstream modes from ``connect.resolve``, endpoints) through the pure
``new_*_snapshot`` + ``handle_update``, and hands it to the manager only when it
differs from the one it has. Rebuilding from scratch (rather than patching) means an
instance that left the catalog cannot survive in any table (Consul issue #11771).

Where endpoints come from (reference/consul-connect.md §3.3, §1.2):
- same-DC upstream targets: the local catalog's Connect-capable instances;
- another DC, mode ``none``: the target's Connect instances in that DC (their WAN
  address), read there; ``local``: this DC's mesh gateways (LAN address); ``remote``:
  the target DC's mesh gateways, read there (their ``wan`` tagged address);
- a gateway: every local service with Connect instances, and each other DC's gateways.

Nothing polls. Local inputs wake the feed through the catalog's index notifier and
Connect's change listener; each other-DC input is one blocking read loop
(``index``/``wait`` forwarded to that DC, exponential backoff on errors, last answer
kept meanwhile), started and stopped as the set of needed inputs changes. Bursts are
coalesced by the manager (``COALESCE_DELAY``).

Health: each proxy gets a TTL check ``service:<id>:listeners`` that this feed keeps
current: critical with the manager's error (a port in use, unusable TLS material) or
while the proxy waits for its roots/leaf, passing once its listeners run. When a
gateway's (or sidecar's) listener comes up, its TCP checks aimed at that port are set
passing at once, so a gateway is healthy as soon as it listens even with no services
behind it (Consul issue #6543) instead of one check interval later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from node.catalog.model import (
    CheckDefinition,
    CheckKind,
    Health,
    ServiceDefinition,
    ServiceKind,
)
from node.catalog.queries import HealthEntry, QueryResult
from node.errors import NodeError
from node.proxy.endpoints import endpoint_of
from node.proxy.manager import ProxyManager, ProxyStatus
from node.proxy.snapshot import (
    DEFAULT_CONNECT_TIMEOUT,
    ConfigSnapshot,
    DatacentersUpdate,
    EndpointInfo,
    GatewayBind,
    GatewayEndpointsUpdate,
    Leaf,
    LeafUpdate,
    PublicSpec,
    Roots,
    RootsUpdate,
    ServiceEndpointsUpdate,
    ServicesUpdate,
    UpstreamSpec,
    handle_update,
    new_gateway_snapshot,
    new_sidecar_snapshot,
)

__all__ = [
    "CHECK_TTL",
    "ConnectView",
    "FeedSources",
    "LocalView",
    "ProxyFeed",
    "RemoteKey",
    "gateway_binds",
    "listeners_check_id",
]

log = logging.getLogger(__name__)

REMOTE_WAIT = 30.0  # seconds a blocking read in another DC waits for a change
LOCAL_WAIT = 60.0  # seconds between wake-ups when nothing changes locally
BACKOFF_MIN = 0.2  # seconds after the first failed remote read
BACKOFF_MAX = 10.0  # cap of the exponential backoff
FAST_RETURN = 0.05  # a blocking read answering faster than this with no change is throttled
CHECK_TTL = 90.0  # the listeners check's TTL; refreshed every CHECK_TTL / 3
RETRY_FAILED = 5.0  # seconds between retries of listeners that failed to start
CHECK_NAME = "Proxy Listeners"

#: ("connect", dc, service) or ("gateways", dc, "") — one blocking read in another DC.
RemoteKey = tuple[str, str, str]
_PROXY_KINDS = (ServiceKind.CONNECT_PROXY, ServiceKind.MESH_GATEWAY)


class ConnectView(Protocol):
    """What the feed reads from ``ConnectService``."""

    def roots(self) -> Any:
        """The trusted roots (``CARoots``), or None before the CA exists."""

    def leaf(self, service: str) -> Any:
        """The current ``connect.leaf.Leaf`` of ``service``, or None."""

    def resolve(self, proxy_service: ServiceDefinition) -> tuple[Any, ...]:
        """Each upstream of ``proxy_service`` with its resolved mesh gateway mode."""

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after every change of roots, leaves or config entries."""


class LocalView(Protocol):
    """What the feed uses from the node's ``LocalState`` (its own registrations)."""

    def services(self) -> Mapping[str, ServiceDefinition]:
        """Registered services by ID."""

    def checks(self) -> Mapping[str, CheckDefinition]:
        """Registered checks by ID."""

    def register_check(self, check: CheckDefinition) -> None:
        """Register (or replace) a check."""

    def update_ttl(self, check_id: str, status: Health, output: str = "") -> None:
        """Set a TTL check's status and restart its timer."""

    def set_check_status(self, check_id: str, status: Health, output: str) -> bool:
        """Publish a check result; whether anything changed."""


RemoteRead = Callable[[str, str, int, float], Awaitable[tuple[tuple[EndpointInfo, ...], int]]]


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedSources:
    """The query callables the agent passes in (the feed never sees the store)."""

    local_dc: str
    node_address: str
    local: LocalView
    connect: ConnectView
    #: Connect-capable instances of a service in this DC (health, ``connect=True``).
    connect_health: Callable[[str], QueryResult[tuple[HealthEntry, ...]]]
    #: This DC's mesh gateways with health.
    gateways: Callable[[], QueryResult[tuple[HealthEntry, ...]]]
    #: Every service name in this DC.
    service_names: Callable[[], Iterable[str]]
    datacenters: Callable[[], Sequence[str]]
    #: Blocks until the local index exceeds the argument (or the timeout); returns it.
    wait_local: Callable[[int, float], Awaitable[int]]
    local_index: Callable[[], int]
    #: (dc, service, index, wait) → Connect instances of ``service`` in ``dc`` + index.
    remote_connect: RemoteRead
    #: (dc, "", index, wait) → the mesh gateways of ``dc`` + index.
    remote_gateways: RemoteRead


def listeners_check_id(proxy_id: str) -> str:
    """ID of the TTL check the feed keeps on a proxy's health."""
    return f"service:{proxy_id}:listeners"


def _config_float_ms(config: Mapping[str, Any], key: str, default: float) -> float:
    value = config.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value) / 1000.0
    return default


def _config_addr(value: Any) -> tuple[str, int] | None:
    if not isinstance(value, Mapping):
        return None
    lowered = {str(k).lower(): v for k, v in value.items()}
    address, port = lowered.get("address", ""), lowered.get("port", 0)
    if not isinstance(address, str) or not isinstance(port, int) or not 0 < port < 65536:
        return None
    return address, port


def gateway_binds(svc: ServiceDefinition) -> tuple[GatewayBind, ...]:
    """Where a mesh gateway listens (Consul's ``envoy_mesh_gateway_*`` bind keys).

    The default bind is the service's address:port (``0.0.0.0`` when the address is
    empty) unless ``envoy_mesh_gateway_no_default_bind``; ``..._bind_tagged_addresses``
    adds the ``lan`` and ``wan`` tagged addresses; ``..._bind_addresses`` adds named
    ones. Two binds on the same address:port are one listener (the first name wins):
    ``-address`` and ``-wan-address`` are often the same.
    """
    config = svc.proxy.config if svc.proxy is not None else {}
    binds: list[GatewayBind] = []
    if not config.get("envoy_mesh_gateway_no_default_bind"):
        binds.append(GatewayBind(name="default", address=svc.address or "0.0.0.0", port=svc.port))
    if config.get("envoy_mesh_gateway_bind_tagged_addresses"):
        for name in ("lan", "wan"):
            tagged = svc.tagged_addresses.get(name)
            if tagged is not None and tagged.address:
                binds.append(
                    GatewayBind(name=name, address=tagged.address, port=tagged.port or svc.port)
                )
    extra = config.get("envoy_mesh_gateway_bind_addresses")
    if isinstance(extra, Mapping):
        for name in sorted(extra):
            addr = _config_addr(extra[name])
            if addr is None:
                log.warning("ignoring malformed gateway bind address", extra={"bind": name})
                continue
            binds.append(GatewayBind(name=str(name), address=addr[0], port=addr[1]))
    seen: set[tuple[str, int]] = set()
    unique = []
    for bind in binds:
        if (bind.address, bind.port) not in seen:
            seen.add((bind.address, bind.port))
            unique.append(bind)
    return tuple(unique)


class ProxyFeed:
    """Builds and refreshes the snapshots of this node's proxies and gateways."""

    def __init__(self, sources: FeedSources, manager: ProxyManager) -> None:
        self.sources = sources
        self.manager = manager
        self._wake = asyncio.Event()
        self._health_due = asyncio.Event()
        self._remote: dict[RemoteKey, tuple[EndpointInfo, ...]] = {}
        self._watches: dict[RemoteKey, asyncio.Task[None]] = {}
        self._group: asyncio.TaskGroup | None = None
        self._proxies: dict[str, ServiceDefinition] = {}
        self._warned: set[tuple[str, str]] = set()
        self._check_state: dict[str, tuple[Health, str]] = {}
        self._listening: dict[str, frozenset[str]] = {}
        self.syncs = 0  # how many times the inputs were gathered (tests, debugging)
        sources.connect.add_listener(self.wake)

    # ------------------------------------------------------------------ running
    def wake(self) -> None:
        """Something the snapshots depend on changed: gather again (cheap, coalesced)."""
        self._wake.set()

    async def run(self) -> None:
        """Feed the manager until cancelled; closes every listener on the way out."""
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                group.create_task(self._watch_local(), name="proxy-feed-local")
                group.create_task(self._health_loop(), name="proxy-feed-health")
                await self._main_loop()
        finally:
            self._group = None
            self._watches.clear()
            await self.manager.aclose()

    async def _main_loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                self.sync()
            except Exception:  # a task boundary: one bad input must not stop the feed
                log.exception("proxy feed sync failed")
            await self._wake.wait()

    async def _watch_local(self) -> None:
        seen = self.sources.local_index()
        while True:
            index = await self.sources.wait_local(seen, LOCAL_WAIT)
            if index != seen:
                seen = index
                self._wake.set()

    # ------------------------------------------------------------------ gathering
    def sync(self) -> None:
        """Gather every input once and push the snapshots that changed."""
        self.syncs += 1
        services = self.sources.local.services()
        proxies = {sid: svc for sid, svc in services.items() if svc.kind in _PROXY_KINDS}
        for pid in [p for p in self._proxies if p not in proxies]:
            self.manager.remove(pid)
            self._check_state.pop(pid, None)
            self._listening.pop(pid, None)
        self._proxies = proxies
        wanted: set[RemoteKey] = set()
        changed = False
        for pid, svc in proxies.items():
            snap = self._build(svc, wanted)
            if snap is not None and snap != self.manager.snapshot(pid):
                self.manager.set_snapshot(snap)
                changed = True
        self._reconcile_watches(wanted)
        if changed or proxies.keys() != self._check_state.keys():
            self._health_due.set()

    def _roots(self) -> Roots | None:
        roots = self.sources.connect.roots()
        if roots is None:
            return None
        return Roots(trust_domain=roots.trust_domain, roots_pem=tuple(roots.trusted_pems))

    def _build(self, svc: ServiceDefinition, wanted: set[RemoteKey]) -> ConfigSnapshot | None:
        try:
            if svc.kind is ServiceKind.MESH_GATEWAY:
                return self._build_gateway(svc, wanted)
            return self._build_sidecar(svc, wanted)
        except NodeError as exc:
            self._warn_once(svc.id, f"cannot build proxy snapshot: {exc}")
            return None

    def _warn_once(self, proxy_id: str, message: str) -> None:
        if (proxy_id, message) not in self._warned:
            self._warned.add((proxy_id, message))
            log.warning(message, extra={"proxy": proxy_id})

    # -- sidecars
    def _build_sidecar(self, svc: ServiceDefinition, wanted: set[RemoteKey]) -> ConfigSnapshot:
        assert svc.proxy is not None
        dest = svc.proxy.destination_service_name
        upstreams = self._upstreams(svc)
        snap = new_sidecar_snapshot(
            proxy_id=svc.id,
            service=dest,
            local_dc=self.sources.local_dc,
            public=self._public(svc),
            upstreams=upstreams,
        )
        roots = self._roots()
        if roots is not None:
            snap = handle_update(snap, RootsUpdate(roots=roots))
        leaf = self.sources.connect.leaf(dest)
        if leaf is not None:
            snap = handle_update(
                snap, LeafUpdate(leaf=Leaf(cert_pem=leaf.cert_pem, key_pem=leaf.private_key_pem))
            )
        for up in upstreams:
            for update in self._upstream_inputs(up, wanted):
                snap = handle_update(snap, update)
        return snap

    def _public(self, svc: ServiceDefinition) -> PublicSpec | None:
        assert svc.proxy is not None
        proxy = svc.proxy
        if not proxy.local_service_port:
            self._warn_once(svc.id, "proxy has no local_service_port: no public listener")
            return None
        config = proxy.config
        bind_address = config.get("bind_address")
        bind_port = config.get("bind_port")
        # Not 0.0.0.0 (Envoy's default): several nodes share one host in tests and demos,
        # and peers dial the address the catalog gives, which is this one.
        return PublicSpec(
            bind_address=bind_address if isinstance(bind_address, str) and bind_address
            else (svc.address or self.sources.node_address),
            bind_port=bind_port if isinstance(bind_port, int) and bind_port > 0 else svc.port,
            local_address=proxy.local_service_address or "127.0.0.1",
            local_port=proxy.local_service_port,
            connect_timeout=_config_float_ms(
                config, "local_connect_timeout_ms", DEFAULT_CONNECT_TIMEOUT
            ),
        )  # fmt: skip

    def _upstreams(self, svc: ServiceDefinition) -> tuple[UpstreamSpec, ...]:
        assert svc.proxy is not None
        proxy_timeout = _config_float_ms(
            svc.proxy.config, "connect_timeout_ms", DEFAULT_CONNECT_TIMEOUT
        )
        out = []
        for resolved in self.sources.connect.resolve(svc):
            up = resolved.upstream
            if up.destination_type != "service":
                self._warn_once(
                    svc.id, f"upstream type {up.destination_type!r} is not supported; skipped"
                )
                continue
            out.append(
                UpstreamSpec(
                    service=up.destination_name,
                    bind_port=up.local_bind_port,
                    bind_address=up.local_bind_address or "127.0.0.1",
                    namespace=up.destination_namespace or "default",
                    datacenter="" if resolved.same_datacenter else up.datacenter,
                    mode="" if resolved.same_datacenter else str(resolved.mode),
                    connect_timeout=_config_float_ms(
                        up.config, "connect_timeout_ms", proxy_timeout
                    ),
                )
            )
        return tuple(out)

    def _upstream_inputs(
        self, up: UpstreamSpec, wanted: set[RemoteKey]
    ) -> list[ServiceEndpointsUpdate | GatewayEndpointsUpdate]:
        local = self.sources.local_dc
        dc = up.datacenter or local
        if dc == local:
            eps = self._local_connect(up.service)
            return [ServiceEndpointsUpdate(service=up.service, datacenter=local, endpoints=eps)]
        if up.mode == "local":
            return [GatewayEndpointsUpdate(datacenter=local, endpoints=self._local_gateways())]
        key: RemoteKey = (
            ("gateways", dc, "") if up.mode == "remote" else ("connect", dc, up.service)
        )
        wanted.add(key)
        eps = self._remote.get(key, ())
        if key[0] == "gateways":
            return [GatewayEndpointsUpdate(datacenter=dc, endpoints=eps)]
        return [ServiceEndpointsUpdate(service=up.service, datacenter=dc, endpoints=eps)]

    def _local_connect(self, service: str) -> tuple[EndpointInfo, ...]:
        return tuple(endpoint_of(e) for e in self.sources.connect_health(service).value)

    def _local_gateways(self) -> tuple[EndpointInfo, ...]:
        return tuple(endpoint_of(e) for e in self.sources.gateways().value)

    # -- gateways
    def _build_gateway(self, svc: ServiceDefinition, wanted: set[RemoteKey]) -> ConfigSnapshot:
        config = svc.proxy.config if svc.proxy is not None else {}
        local = self.sources.local_dc
        snap = new_gateway_snapshot(
            proxy_id=svc.id,
            local_dc=local,
            binds=gateway_binds(svc),
            connect_timeout=_config_float_ms(config, "connect_timeout_ms", DEFAULT_CONNECT_TIMEOUT),
        )
        roots = self._roots()
        if roots is not None:
            snap = handle_update(snap, RootsUpdate(roots=roots))
        names = set()
        for name in self.sources.service_names():
            eps = self._local_connect(name)
            if eps:
                names.add(name)
                update = ServiceEndpointsUpdate(service=name, datacenter=local, endpoints=eps)
                snap = handle_update(snap, update)
        snap = handle_update(snap, ServicesUpdate(services=frozenset(names)))
        others = frozenset(dc for dc in self.sources.datacenters() if dc != local)
        for dc in sorted(others):
            key: RemoteKey = ("gateways", dc, "")
            wanted.add(key)
            eps = self._remote.get(key, ())
            snap = handle_update(snap, GatewayEndpointsUpdate(datacenter=dc, endpoints=eps))
        return handle_update(snap, DatacentersUpdate(datacenters=others))

    # ------------------------------------------------------------------ other datacenters
    def _reconcile_watches(self, wanted: set[RemoteKey]) -> None:
        for key in [k for k in self._watches if k not in wanted]:
            self._watches.pop(key).cancel()
            self._remote.pop(key, None)
        if self._group is None:
            return  # sync() called outside run() (tests): no background reads
        for key in sorted(wanted - self._watches.keys()):
            name = f"proxy-feed-remote:{'/'.join(key)}"
            self._watches[key] = self._group.create_task(self._watch_remote(key), name=name)

    async def _watch_remote(self, key: RemoteKey) -> None:
        kind, dc, service = key
        read = self.sources.remote_gateways if kind == "gateways" else self.sources.remote_connect
        index, failures = 0, 0
        while True:
            started = time.monotonic()
            try:
                eps, new_index = await read(dc, service, index, REMOTE_WAIT)
            except NodeError as exc:
                failures += 1
                delay = min(BACKOFF_MAX, BACKOFF_MIN * 2 ** (failures - 1))
                log.info("remote proxy input unavailable, retrying",
                         extra={"input": "/".join(key), "error": str(exc), "retry_in": delay})  # fmt: skip
                await asyncio.sleep(delay)
                continue
            failures = 0
            if self._remote.get(key) != eps or key not in self._remote:
                self._remote[key] = eps
                self._wake.set()
            unchanged = new_index == index
            index = new_index if new_index >= index else 0  # a restarted DC starts over
            if unchanged and time.monotonic() - started < FAST_RETURN:
                await asyncio.sleep(BACKOFF_MIN)  # never spin on a DC that will not block

    # ------------------------------------------------------------------ health
    async def _health_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(CHECK_TTL / 3, RETRY_FAILED)):
                    await self._health_due.wait()
            self._health_due.clear()
            await self.manager.wait_idle()
            try:
                self.report_health()
            except Exception:  # a task boundary
                log.exception("proxy health update failed")

    def report_health(self) -> None:
        """Set each proxy's listeners check from the manager's status; retry failures."""
        statuses = self.manager.status()
        for pid in self._proxies:
            status = statuses.get(pid)
            health, output = _health_of(status)
            try:
                self._ensure_check(pid)
                self.sources.local.update_ttl(listeners_check_id(pid), health, output)
            except NodeError:  # deregistered since the last sync: the next sync forgets it
                continue
            self._check_state[pid] = (health, output)
            if status is not None and status.errors:
                snap = self.manager.snapshot(pid)
                if snap is not None:
                    self.manager.set_snapshot(snap)  # the next reconcile retries the bind
            self._mark_listening(pid, status)

    def _ensure_check(self, pid: str) -> None:
        cid = listeners_check_id(pid)
        if cid in self.sources.local.checks():
            return
        self.sources.local.register_check(
            CheckDefinition(
                id=cid, name=CHECK_NAME, service_id=pid, kind=CheckKind.TTL, ttl=CHECK_TTL,
                notes="Set by meshnode's proxy manager: are this proxy's listeners running?",
            )
        )  # fmt: skip

    def _mark_listening(self, pid: str, status: ProxyStatus | None) -> None:
        names = frozenset(status.listeners) if status is not None else frozenset()
        if names == self._listening.get(pid):
            return
        self._listening[pid] = names
        ports = set()
        for name in names:
            listener = self.manager.listener(name)
            if listener is not None:
                with contextlib.suppress(AssertionError, OSError):  # not bound (any more)
                    ports.add(listener.address)
        for cid, check in self.sources.local.checks().items():
            if check.service_id == pid and check.kind is CheckKind.TCP:
                target = _split_target(check.tcp)
                if target is not None and _listens_on(ports, target):
                    self.sources.local.set_check_status(
                        cid, Health.PASSING, f"TCP connect {check.tcp}: listener started"
                    )

    # ------------------------------------------------------------------ outputs
    def listener_rows(self) -> list[tuple[Any, str, str]]:
        """Per listener with counters: (stats, "ip:port" or "", proxy id)."""
        owners = {n: pid for pid, st in self.manager.status().items() for n in st.listeners}
        rows = []
        for stats in self.manager.metrics.all():
            listener = self.manager.listener(stats.name)
            address = ""
            if listener is not None:
                with contextlib.suppress(AssertionError, OSError):
                    host, port = listener.address
                    address = f"{host}:{port}"
            pid = owners.get(stats.name) or stats.name.split(":", 1)[0]
            rows.append((stats, address, pid))
        return rows


def _health_of(status: ProxyStatus | None) -> tuple[Health, str]:
    if status is None or not status.ready:
        return Health.CRITICAL, "waiting for CA roots and the proxy's leaf certificate"
    if status.errors:
        return Health.CRITICAL, "; ".join(status.errors)
    if not status.listeners:
        return Health.CRITICAL, "no listener is running"
    return Health.PASSING, "listening: " + ", ".join(status.listeners)


def _split_target(target: str) -> tuple[str, int] | None:
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _listens_on(bound: set[tuple[str, int]], target: tuple[str, int]) -> bool:
    host, port = target
    return any(p == port and h in (host, "0.0.0.0", "::") for h, p in bound)
