"""The CA role's loop on a server: look, decide (``carole.step``), carry out, wait.

Rule: a look happens after every change of the global state, at least every
``maintenance`` seconds, and at once again after a decision that changed what this
server has (``carole.looks_again``). A failed RPC backs off; a ``ConfigError`` stops
the node. The role also serves the CA's server-to-server RPCs: ``CA.RootKey`` (the
active root's key, sealed, to another server of the primary datacenter) and
``CA.SignIntermediate`` (a secondary server's intermediate, on the primary), and it
applies the ``ca-config`` write (a new configuration, perhaps a new root) on the primary.
Keys stay in ``authority.Authority``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, Protocol

from node.clock import Clock
from node.connect import carole
from node.connect.authority import Authority
from node.connect.carole import (
    Bootstrap,
    CAView,
    Decision,
    FetchRootKey,
    RenewIntermediate,
    WriteRoots,
)
from node.connect.castate import CAConfig, CARoots, parse_ca_configuration
from node.connect.records import (
    CA_CONFIG_NAME,
    CA_ROOTS_NAME,
    KIND_CA_CONFIG,
    KIND_CA_ROOTS,
    ca_config_of,
    roots_of,
)
from node.connect.timing import Timing
from node.errors import (
    CAError,
    ConfigError,
    Conflict,
    InvalidRequest,
    NodeError,
    NotFound,
    TrustError,
)
from node.gossip.messages import MemberStatus
from node.rpc.routing import ROLE_SERVER, TAG_DC, TAG_ROLE
from node.state.globalstate import Record
from node.state.primary import check_peer_primary
from node.state.replica import Replica, wait_event
from node.state.replicator import PeerCaller
from node.state.retry import Uniform

__all__ = ["CARole", "LanMember", "CA_CONFIG_OP", "configured_ca"]

log = logging.getLogger(__name__)

#: The ``State.Apply`` op that reconfigures the CA on the primary.
CA_CONFIG_OP: Final = "ca-config"


class Commit(Protocol):
    """Commits items through the primary's group (``StateWriter.commit``)."""

    async def __call__(
        self, items: Iterable[tuple[str, str, Any]], *, absent: bool = ...
    ) -> tuple[Record, ...]:
        """Commit (kind, name, value) items (``absent``: only if none exists yet)."""
        ...


async def _not_wired(
    items: Iterable[tuple[str, str, Any]], *, absent: bool = False
) -> tuple[Record, ...]:
    raise CAError("the CA role has no writer yet")


class LanMember(Protocol):
    """A LAN gossip member as the role reads it (``node.gossip.state.Member``)."""

    @property
    def name(self) -> str:
        """The node name."""
        ...

    @property
    def tags(self) -> Mapping[str, str]:
        """Its gossip tags (``role``, ``dc``)."""
        ...

    @property
    def status(self) -> MemberStatus:
        """Alive, suspect, dead or left."""
        ...


class CARole:
    """One per server (see the module rule)."""

    def __init__(
        self,
        authority: Authority,
        replica: Replica,
        *,
        rpc: PeerCaller,
        members: Callable[[], Iterable[LanMember]],
        clock: Clock,
        rng: Uniform,
        identity: Mapping[str, str],
        configured: CAConfig,
        timing: Timing,
        on_signer_change: Callable[[], None],
    ) -> None:
        self.authority = authority
        self._replica = replica
        self._rpc = rpc
        self._members = members
        self._clock = clock
        self._rng = rng
        self._node, self._dc, self._primary = identity["node"], identity["dc"], identity["pdc"]
        self._in_primary = self._dc == self._primary
        self._configured = configured
        self._t = timing
        self._on_signer_change = on_signer_change
        self._started = clock.monotonic()
        # The writer takes ``reconfigure`` as an op, so it is built after the role.
        self.commit: Commit = _not_wired

    # --- the loop -----------------------------------------------------------------------

    async def run(self) -> None:
        """Look, decide, act and wait, until cancelled."""
        failures = 0
        while True:
            change = self._replica.next_change()
            wait = self._t.maintenance
            try:
                if await self._look():
                    failures = 0
                    continue  # something changed: look again at once
            except ConfigError:
                raise
            except NodeError as exc:
                failures += 1
                wait = self._t.retry.delay(failures, self._rng)
                log.warning(
                    "CA not ready on this server yet: %s", exc, extra={"retry_in_s": round(wait, 2)}
                )
            wait = carole.retry_wait(
                roots_known=self._roots() is not None, wait=wait,
                retry_min=self._t.retry_min, bootstrap_delay=self._t.bootstrap_delay,
            )  # fmt: skip
            await wait_event(change, wait)

    async def _look(self) -> bool:
        decision = carole.step(self.view())
        await self._carry_out(decision)
        return carole.looks_again(decision)

    def view(self) -> CAView:
        """What the role sees now (asks the authority what it lacks, once roots exist)."""
        roots, config, now = self._roots(), self._config(), self._clock.utcnow()
        need = None if roots is None else self.authority.sync(roots, config, now)
        rows = (
            (m.name, _is_server(m.tags), m.tags.get(TAG_DC, ""), m.status is MemberStatus.ALIVE)
            for m in self._members()
        )
        return CAView(
            roots=roots, config=config, need=need, in_primary=self._in_primary,
            node_name=self._node, primary_servers=carole.primary_servers(rows, self._primary),
            elapsed=self._clock.monotonic() - self._started,
            bootstrap_delay=self._t.bootstrap_delay, now=now,
        )  # fmt: skip

    async def _carry_out(self, decision: Decision) -> None:
        match decision:
            case Bootstrap():
                await self._bootstrap()
            case FetchRootKey(roots):
                await self._fetch_root_key(roots)
            case RenewIntermediate(roots):
                await self._renew_intermediate(roots)
            case WriteRoots(roots):
                await self._write((KIND_CA_ROOTS, CA_ROOTS_NAME, roots))

    def _roots(self) -> CARoots | None:
        return roots_of(self._replica.state)

    def _config(self) -> CAConfig | None:
        return ca_config_of(self._replica.state)

    async def _write(self, *items: tuple[str, str, Any], absent: bool = False) -> None:
        await self.commit(items, absent=absent)

    # --- decisions ----------------------------------------------------------------------

    async def _bootstrap(self) -> None:
        now = self._clock.utcnow()
        change = self.authority.bootstrap(
            cluster_id=str(uuid.uuid4()), now=now, config=self._configured
        )
        try:
            await self._write(
                (KIND_CA_CONFIG, CA_CONFIG_NAME, change.config),
                (KIND_CA_ROOTS, CA_ROOTS_NAME, change.roots),
                absent=True,
            )
        except Conflict:
            log.info("CA already bootstrapped by another server")
            return
        log.info("CA bootstrapped", extra={"trust_domain": change.roots.trust_domain,
                                          "root_id": change.roots.active_root_id})  # fmt: skip

    async def _fetch_root_key(self, roots: CARoots) -> None:
        args = {"node": self._node, "root_id": roots.active_root_id}
        material = await self._rpc.call_peer_server("CA.RootKey", args, timeout=self._t.rpc_timeout)
        now = self._clock.utcnow()
        self.authority.add_root_pems(material, trust_domain=roots.trust_domain, now=now)
        log.info("root key fetched from a primary server", extra={"root_id": roots.active_root_id})

    async def _renew_intermediate(self, roots: CARoots) -> None:
        key, csr = self.authority.intermediate_request(
            trust_domain=roots.trust_domain, datacenter=self._dc
        )
        args = {"csr": csr, "dc": self._dc, "node": self._node, "pdc": self._primary}
        reply = await self._rpc.call_server(
            "CA.SignIntermediate", args, dc=self._primary, timeout=self._t.rpc_timeout
        )
        if not isinstance(reply, Mapping) or not isinstance(reply.get("pem"), str):
            raise CAError("CA.SignIntermediate answered without a certificate")
        self.authority.install_intermediate(
            key, intermediate_pem=reply["pem"], roots=roots, config=self._config(),
            now=self._clock.utcnow(),
        )  # fmt: skip
        log.info("intermediate installed", extra={"root_id": roots.active_root_id})
        self._on_signer_change()

    # --- the ca-config write (primary) --------------------------------------------------

    def reconfigure(self, op: Any) -> tuple[tuple[str, str, Any], ...]:
        """Apply ``{"op": "ca-config", "body": ...}``: new TTLs, or a new root."""
        roots = self._roots()
        if roots is None:
            raise CAError("the CA has not been bootstrapped yet; try again shortly")
        body = op.get("body")
        if not isinstance(body, Mapping):
            raise InvalidRequest("CA configuration must be an object")
        config = self._config() or CAConfig(cluster_id=roots.cluster_id)
        request = parse_ca_configuration(body, cluster_id=roots.cluster_id)
        now = self._clock.utcnow()
        change = self.authority.reconfigure(request, roots=roots, config=config, now=now)
        items: list[tuple[str, str, Any]] = [(KIND_CA_CONFIG, CA_CONFIG_NAME, change.config)]
        if change.roots != roots:
            items.append((KIND_CA_ROOTS, CA_ROOTS_NAME, change.roots))
        if change.new_root is not None:
            log.info("CA root rotated", extra={"active_root": change.roots.active_root_id})
        return tuple(items)

    # --- RPC ----------------------------------------------------------------------------

    def rpc_handlers(self) -> dict[str, Callable[[Any], Any]]:
        """``CA.RootKey`` and ``CA.SignIntermediate``."""
        return {
            "CA.RootKey": self._rpc_root_key,
            "CA.SignIntermediate": self._rpc_sign_intermediate,
        }

    async def _rpc_root_key(self, args: Any) -> dict[str, str]:
        if not self._in_primary:
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
            if member.name == node and _is_server(tags) and tags.get(TAG_DC) == self._dc:
                return member.status is MemberStatus.ALIVE
        return False

    async def _rpc_sign_intermediate(self, args: Any) -> dict[str, str]:
        if not self._in_primary:
            raise CAError("CA.SignIntermediate is served by the primary datacenter only")
        if not isinstance(args, Mapping) or not isinstance(args.get("csr"), str):
            raise InvalidRequest("CA.SignIntermediate: args must carry a csr")
        check_peer_primary(args, dc=self._dc, primary=self._primary)
        pem = self.authority.sign_intermediate(args["csr"], self._clock.utcnow())
        log.info("intermediate signed", extra={"for_dc": args.get("dc"), "node": args.get("node")})
        return {"pem": pem}


def configured_ca(provider: str, config: Mapping[str, Any]) -> CAConfig:
    """The CA configuration of ``connect { ca_provider, ca_config }`` (defaults if invalid)."""
    raw = {"Provider": provider, "Config": dict(config)}
    try:
        return parse_ca_configuration(raw).config
    except InvalidRequest as exc:
        log.warning("connect.ca_config not used for the CA", extra={"error": str(exc)})
        return CAConfig()


def _is_server(tags: Mapping[str, str]) -> bool:
    return tags.get(TAG_ROLE) == ROLE_SERVER
