"""A server's signing material: root keys in the primary, an intermediate in a secondary.

Rule: private keys live here, in memory and in ``<data_dir>/connect/ca.json`` (mode
0600, written atomically), and nowhere else: never in the global state, an API answer,
a log line or an exception message. They leave a server only through
``export_root`` (for the sealed server-to-server ``CA.RootKey`` RPC, on the caller's
explicit request). ``sync(roots, config)`` is called whenever the public CA state
changes and says what this server still lacks to sign under the active root:

- a primary server signs with the active root itself, so it needs that root's key
  (``NEED_ROOT_KEY``: fetch it from the primary server that has it);
- a secondary server signs with its own intermediate, which the primary's root signs
  (``NEED_INTERMEDIATE``: make a key and CSR, ask the primary), renewed when the active
  root changes or a third of its life is left.

No asyncio: the service does the RPCs.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from node.connect.ca import (
    CAChange,
    CAServer,
    IssuedCert,
    RegisteredCheck,
    RootMaterial,
    bootstrap_ca,
    load_certificates,
    load_private_key,
    load_root,
    make_intermediate_csr,
    reconfigure_ca,
)
from node.connect.carole import Need
from node.connect.castate import CAConfig, CAConfigRequest, CARoots
from node.errors import CAError, InvalidRequest
from node.persist import atomic_write, read_or_none

__all__ = ["Authority", "Need", "CA_FILE"]

log = logging.getLogger(__name__)

CA_FILE: Final = "connect/ca.json"
#: An intermediate with less than this fraction of its life left is replaced.
INTERMEDIATE_RENEW_FRACTION: Final = 1 / 3


class Authority:
    """Signing material of one server (see the module rule)."""

    __slots__ = ("_dc", "_primary", "_is_registered", "_path", "_roots", "_signer", "_inter")

    def __init__(
        self,
        *,
        datacenter: str,
        primary: bool,
        is_registered: RegisteredCheck,
        data_dir: str | None,
    ) -> None:
        self._dc = datacenter
        self._primary = primary
        self._is_registered = is_registered
        self._path = None if data_dir is None else Path(data_dir) / CA_FILE
        self._roots: dict[str, RootMaterial] = {}
        self._signer: CAServer | None = None
        #: Secondary: exported intermediate material + trust domain, for restarts.
        self._inter: dict[str, Any] | None = None
        self._load()

    # --- reads ----------------------------------------------------------------------

    @property
    def signer(self) -> CAServer | None:
        """The CA that signs leaves now, once ``sync`` found everything it needs."""
        return self._signer

    def has_root_key(self, root_id: str) -> bool:
        """Whether this server holds the private key of root ``root_id``."""
        return root_id in self._roots

    def export_root(self, root_id: str) -> dict[str, str] | None:
        """Key and certificate PEMs of a root, for the sealed ``CA.RootKey`` RPC only."""
        material = self._roots.get(root_id)
        return None if material is None else material.export_private_material()

    # --- primary --------------------------------------------------------------------

    def bootstrap(self, *, cluster_id: str, now: datetime, config: CAConfig) -> CAChange:
        """Create the cluster's first root (the bootstrapping primary server)."""
        change = bootstrap_ca(cluster_id=cluster_id, now=now, config=config)
        assert change.new_root is not None
        self._add_root(change.new_root)
        return change

    def reconfigure(
        self, request: CAConfigRequest, *, roots: CARoots, config: CAConfig, now: datetime
    ) -> CAChange:
        """``PUT /v1/connect/ca/configuration`` on a primary server."""
        change = reconfigure_ca(request, roots=roots, config=config, now=now)
        if change.new_root is not None:
            self._add_root(change.new_root)
        return change

    def add_root_pems(self, material: Any, *, trust_domain: str, now: datetime) -> str:
        """Take a root key fetched from another primary server; returns its root id."""
        if not isinstance(material, dict):
            raise InvalidRequest("CA.RootKey answer must be a map")
        root = load_root(
            private_key_pem=str(material.get("private_key", "")),
            root_cert_pem=str(material.get("root_cert", "")),
            trust_domain=trust_domain,
            now=now,
        )
        self._add_root(root)
        return root.info.id

    def _add_root(self, root: RootMaterial) -> None:
        self._roots[root.info.id] = root
        self._save()

    # --- secondary ------------------------------------------------------------------

    @staticmethod
    def intermediate_request(*, trust_domain: str, datacenter: str) -> tuple[Any, str]:
        """A fresh intermediate key and its CSR (secondary servers)."""
        return make_intermediate_csr(trust_domain=trust_domain, datacenter=datacenter)

    def install_intermediate(
        self, key: Any, *, intermediate_pem: str, roots: CARoots, config: CAConfig | None,
        now: datetime,
    ) -> None:  # fmt: skip
        """Sign with the intermediate the primary returned (checked against the root)."""
        signer = CAServer.secondary(
            key=key,
            intermediate_pem=intermediate_pem,
            root_pem=roots.active_root.root_cert,
            datacenter=self._dc,
            trust_domain=roots.trust_domain,
            is_registered=self._is_registered,
            now=now,
        )
        if config is not None:
            signer.set_leaf_ttl(config.leaf_cert_ttl)
        self._signer = signer
        self._inter = signer.export_private_material() | {"trust_domain": roots.trust_domain}
        self._save()

    # --- both -----------------------------------------------------------------------

    def sync(self, roots: CARoots, config: CAConfig | None, now: datetime) -> Need:
        """Follow a change of the public CA state; say what is missing to sign."""
        active = roots.active_root_id
        if self._primary:
            if active not in self._roots:
                return Need.ROOT_KEY
            if self._signer is None or self._signer.root_id != active:
                self._signer = CAServer.primary(
                    self._roots[active], datacenter=self._dc,
                    trust_domain=roots.trust_domain, is_registered=self._is_registered,
                )  # fmt: skip
        elif not self._intermediate_ok(roots, now):
            return Need.INTERMEDIATE
        if config is not None and self._signer is not None:
            self._signer.set_leaf_ttl(config.leaf_cert_ttl)
        return Need.NOTHING

    def _intermediate_ok(self, roots: CARoots, now: datetime) -> bool:
        signer = self._signer
        if signer is None or signer.root_id != roots.active_root_id:
            return False
        if signer.trust_domain != roots.trust_domain:
            return False
        cert = load_certificates(signer.signing_cert_pem)[0]
        life = cert.not_valid_after_utc - cert.not_valid_before_utc
        return cert.not_valid_after_utc - now > life * INTERMEDIATE_RENEW_FRACTION

    def sign_leaf(self, csr_pem: str, node: str, now: datetime) -> IssuedCert:
        """Sign a service CSR (the checks are ``CAServer.sign_leaf``'s)."""
        if self._signer is None:
            raise CAError(f"the CA of datacenter {self._dc!r} is not ready on this server yet")
        return self._signer.sign_leaf(csr_pem, node, now)

    def sign_intermediate(self, csr_pem: str, now: datetime) -> str:
        """Sign a secondary's intermediate CSR (primary servers with the active root)."""
        if not self._primary or self._signer is None:
            raise CAError("only a ready server of the primary datacenter signs intermediates")
        return self._signer.sign_intermediate(csr_pem, now)

    # --- persistence ------------------------------------------------------------------

    def _save(self) -> None:
        if self._path is None:
            return
        body = {
            "roots": {rid: m.export_private_material() for rid, m in self._roots.items()},
            "intermediate": self._inter,
        }
        atomic_write(self._path, json.dumps(body).encode(), mode=0o600)

    def _load(self) -> None:
        raw = None if self._path is None else read_or_none(self._path)
        if raw is None:
            return
        try:
            body = json.loads(raw)
            for material in body.get("roots", {}).values():
                self._load_root(material)
            inter = body.get("intermediate")
            if inter and not self._primary:
                self._signer = CAServer.from_private_material(
                    inter, datacenter=self._dc, trust_domain=str(inter["trust_domain"]),
                    is_registered=self._is_registered,
                )  # fmt: skip
                self._inter = inter
        except (ValueError, KeyError, TypeError, AttributeError, InvalidRequest) as exc:
            # Never echo the file: it holds keys. The CA material is re-fetched or re-made.
            log.error(
                "CA material in data_dir is unreadable; ignoring it",
                extra={"error_type": type(exc).__name__},
            )

    def _load_root(self, material: Any) -> None:
        key = load_private_key(str(material["private_key"]), what="stored root key")
        cert = load_certificates(str(material["root_cert"]), what="stored root")[0]
        root = RootMaterial(key, cert)
        self._roots[root.info.id] = root
