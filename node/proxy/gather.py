"""The gather step: one proxy's registration and its inputs → its whole ``ConfigSnapshot``.

Rule: pure. ``gather`` reads the registration, CA roots, the destination service's
leaf, upstream modes (``connect.resolve``) and endpoints through the read callables it
is given, plus the last answers of other datacenters' reads, and folds them into a new
snapshot with ``new_*_snapshot`` + ``handle_update``. It reads no clock and starts no
reads of its own: it names the other-datacenter inputs it used (``Gathered.wanted``)
and the driver (``feed``) keeps those reads running. Rebuilding from scratch (rather
than patching) means an instance that left the catalog cannot survive in any table
(Consul issue #11771).

Where endpoints come from (reference/consul-connect.md §3.3, §1.2):
- same-DC upstream targets: the local catalog's Connect-capable instances;
- another DC, mode ``none``: the target's Connect instances in that DC (their WAN
  address), read there; ``local``: this DC's mesh gateways (LAN address); ``remote``:
  the target DC's mesh gateways, read there (their ``wan`` tagged address);
- a gateway: every local service with Connect instances, and each other DC's gateways.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from node.catalog.queries import HealthEntry, QueryResult
from node.catalog.values import ServiceDefinition, ServiceKind
from node.errors import NodeError
from node.proxy.endpoints import endpoint_of
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
    "PROXY_KINDS",
    "ConnectReads",
    "Gathered",
    "Reads",
    "RemoteAnswers",
    "RemoteKey",
    "gateway_binds",
    "gather",
]

log = logging.getLogger(__name__)

#: ("connect", dc, service) or ("gateways", dc, "") — one blocking read in another DC.
RemoteKey = tuple[str, str, str]
#: The last answer of each other-DC read.
RemoteAnswers = Mapping[RemoteKey, tuple[EndpointInfo, ...]]
#: The service kinds that get a snapshot.
PROXY_KINDS = (ServiceKind.CONNECT_PROXY, ServiceKind.MESH_GATEWAY)


class ConnectReads(Protocol):
    """What the gather step reads from Connect."""

    def roots(self) -> Any:
        """The trusted roots (``CARoots``), or None before the CA exists."""

    def leaf(self, service: str) -> Any:
        """The current ``connect.leaf.Leaf`` of ``service``, or None."""

    def resolve(self, proxy_service: ServiceDefinition) -> tuple[Any, ...]:
        """Each upstream of ``proxy_service`` with its resolved mesh gateway mode."""


class Reads(Protocol):
    """This datacenter's inputs, as read callables (the gather step never sees the store)."""

    @property
    def local_dc(self) -> str: ...

    @property
    def node_address(self) -> str: ...

    @property
    def connect(self) -> ConnectReads: ...

    @property
    def connect_health(self) -> Callable[[str], QueryResult[tuple[HealthEntry, ...]]]:
        """Connect-capable instances of a service in this DC (health, ``connect=True``)."""

    @property
    def gateways(self) -> Callable[[], QueryResult[tuple[HealthEntry, ...]]]:
        """This DC's mesh gateways with health."""

    @property
    def service_names(self) -> Callable[[], Iterable[str]]:
        """Every service name in this DC."""

    @property
    def datacenters(self) -> Callable[[], Sequence[str]]: ...


@dataclass(frozen=True, slots=True)
class Gathered:
    """One proxy's snapshot (None when its inputs cannot make one) and what it used."""

    snapshot: ConfigSnapshot | None
    #: The other-DC reads the snapshot depends on.
    wanted: frozenset[RemoteKey]
    #: Why parts of the registration were left out (or no snapshot was made).
    warnings: tuple[str, ...]


def gather(svc: ServiceDefinition, reads: Reads, remote: RemoteAnswers) -> Gathered:
    """The snapshot of the connect-proxy or mesh-gateway ``svc`` from its inputs."""
    step = _Step(reads, remote)
    try:
        if svc.kind is ServiceKind.MESH_GATEWAY:
            snap: ConfigSnapshot | None = step.gateway(svc)
        else:
            snap = step.sidecar(svc)
    except NodeError as exc:
        step.warnings.append(f"cannot build proxy snapshot: {exc}")
        snap = None
    return Gathered(snap, frozenset(step.wanted), tuple(step.warnings))


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


class _Step:
    """One gather: the reads, the remote answers, and what it used and skipped."""

    __slots__ = ("reads", "remote", "wanted", "warnings")

    def __init__(self, reads: Reads, remote: RemoteAnswers) -> None:
        self.reads = reads
        self.remote = remote
        self.wanted: set[RemoteKey] = set()
        self.warnings: list[str] = []

    def _roots(self) -> Roots | None:
        roots = self.reads.connect.roots()
        if roots is None:
            return None
        return Roots(trust_domain=roots.trust_domain, roots_pem=tuple(roots.trusted_pems))

    def _remote(self, key: RemoteKey) -> tuple[EndpointInfo, ...]:
        self.wanted.add(key)
        return self.remote.get(key, ())

    # -- sidecars
    def sidecar(self, svc: ServiceDefinition) -> ConfigSnapshot:
        assert svc.proxy is not None
        dest = svc.proxy.destination_service_name
        upstreams = self._upstreams(svc)
        snap = new_sidecar_snapshot(
            proxy_id=svc.id,
            service=dest,
            local_dc=self.reads.local_dc,
            public=self._public(svc),
            upstreams=upstreams,
        )
        roots = self._roots()
        if roots is not None:
            snap = handle_update(snap, RootsUpdate(roots=roots))
        leaf = self.reads.connect.leaf(dest)
        if leaf is not None:
            snap = handle_update(
                snap, LeafUpdate(leaf=Leaf(cert_pem=leaf.cert_pem, key_pem=leaf.private_key_pem))
            )
        for up in upstreams:
            for update in self._upstream_inputs(up):
                snap = handle_update(snap, update)
        return snap

    def _public(self, svc: ServiceDefinition) -> PublicSpec | None:
        assert svc.proxy is not None
        proxy = svc.proxy
        if not proxy.local_service_port:
            self.warnings.append("proxy has no local_service_port: no public listener")
            return None
        config = proxy.config
        bind_address = config.get("bind_address")
        bind_port = config.get("bind_port")
        # Not 0.0.0.0 (Envoy's default): several nodes share one host in tests and demos,
        # and peers dial the address the catalog gives, which is this one.
        return PublicSpec(
            bind_address=bind_address if isinstance(bind_address, str) and bind_address
            else (svc.address or self.reads.node_address),
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
        for resolved in self.reads.connect.resolve(svc):
            up = resolved.upstream
            if up.destination_type != "service":
                self.warnings.append(
                    f"upstream type {up.destination_type!r} is not supported; skipped"
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
        self, up: UpstreamSpec
    ) -> list[ServiceEndpointsUpdate | GatewayEndpointsUpdate]:
        local = self.reads.local_dc
        dc = up.datacenter or local
        if dc == local:
            eps = self._local_connect(up.service)
            return [ServiceEndpointsUpdate(service=up.service, datacenter=local, endpoints=eps)]
        if up.mode == "local":
            return [GatewayEndpointsUpdate(datacenter=local, endpoints=self._local_gateways())]
        if up.mode == "remote":
            eps = self._remote(("gateways", dc, ""))
            return [GatewayEndpointsUpdate(datacenter=dc, endpoints=eps)]
        eps = self._remote(("connect", dc, up.service))
        return [ServiceEndpointsUpdate(service=up.service, datacenter=dc, endpoints=eps)]

    def _local_connect(self, service: str) -> tuple[EndpointInfo, ...]:
        return tuple(endpoint_of(e) for e in self.reads.connect_health(service).value)

    def _local_gateways(self) -> tuple[EndpointInfo, ...]:
        return tuple(endpoint_of(e) for e in self.reads.gateways().value)

    # -- gateways
    def gateway(self, svc: ServiceDefinition) -> ConfigSnapshot:
        config = svc.proxy.config if svc.proxy is not None else {}
        local = self.reads.local_dc
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
        for name in self.reads.service_names():
            eps = self._local_connect(name)
            if eps:
                names.add(name)
                update = ServiceEndpointsUpdate(service=name, datacenter=local, endpoints=eps)
                snap = handle_update(snap, update)
        snap = handle_update(snap, ServicesUpdate(services=frozenset(names)))
        others = frozenset(dc for dc in self.reads.datacenters() if dc != local)
        for dc in sorted(others):
            eps = self._remote(("gateways", dc, ""))
            snap = handle_update(snap, GatewayEndpointsUpdate(datacenter=dc, endpoints=eps))
        return handle_update(snap, DatacentersUpdate(datacenters=others))
