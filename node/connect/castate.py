"""The public half of the Connect CA: roots, trust domain, cluster id and CA configuration.

Rule: everything here may travel to every node of every datacenter (it rides the global
state), so nothing here ever holds a private key; signing material lives in ``ca.py``
objects on servers only. The roots set merges as a join-semilattice so that any two
copies, merged in any order, converge on the same value:

- roots: union by root id, minus the union of ``removed`` ids (a pruned root never
  comes back from a stale copy);
- per root, ``retain_until`` (the instant after which no leaf it signed is alive): the
  later of the two;
- scalars (trust domain, cluster id, active root id): those of the copy with the larger
  stamp. Stamps are totally ordered (HLC wall, counter, writer node id), so a bootstrap
  race between two servers ends with exactly one active root: the one the later writer
  made; the loser's root stays trusted until the leaves it signed have expired.

Pure: no I/O, no clock; ``now`` comes in as an aware UTC ``datetime``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Final

from node.config.duration import format_go_duration, parse_go_duration
from node.config.reader import Names, read_keys
from node.errors import InvalidRequest
from node.wire import from_timestamp, timestamp

__all__ = [
    "DEFAULT_LEAF_CERT_TTL",
    "DEFAULT_ROTATION_PERIOD",
    "MIN_LEAF_CERT_TTL",
    "MAX_LEAF_CERT_TTL",
    "CAConfig",
    "CAConfigRequest",
    "CARoot",
    "CARoots",
    "parse_duration",
    "format_duration",
    "parse_ca_configuration",
    "merge_roots",
    "rotate_roots",
    "prune_roots",
    "retire_inactive",
    "note_leaf_expiry",
    "roots_to_wire",
    "roots_from_wire",
    "ca_config_to_wire",
    "ca_config_from_wire",
]

DEFAULT_LEAF_CERT_TTL: Final = timedelta(hours=72)
DEFAULT_ROTATION_PERIOD: Final = timedelta(hours=2160)
#: Consul's ``CAConfiguration.Validate`` bounds: at least 1 h, less than a year.
MIN_LEAF_CERT_TTL: Final = timedelta(hours=1)
MAX_LEAF_CERT_TTL: Final = timedelta(days=365)
ROOT_NAME: Final = "Consul CA Root Cert"
PROVIDER_CONSUL: Final = "consul"


# --- durations ------------------------------------------------------------------------------


def parse_duration(text: str, *, what: str = "duration") -> timedelta:
    """Parse a Go duration (``"72h"``, ``"1h30m"``, ``"2160h"``); raise naming ``what``."""
    if not isinstance(text, str) or not text:
        raise InvalidRequest(f'{what}: expected a duration like "72h", got {text!r}', field=what)
    try:
        seconds = parse_go_duration(text)
    except ValueError:
        raise InvalidRequest(f"{what}: invalid duration {text!r}", field=what) from None
    if seconds < 0:
        raise InvalidRequest(f"{what}: invalid duration {text!r}", field=what)
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """Go-style rendering of whole hours/minutes/seconds: ``72h0m0s`` → ``"72h"``."""
    return format_go_duration(float(int(value.total_seconds())))


# --- CA configuration -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CAConfig:
    """The replicated CA configuration (``GET /v1/connect/ca/configuration``), never a key."""

    provider: str = PROVIDER_CONSUL
    cluster_id: str = ""
    leaf_cert_ttl: timedelta = DEFAULT_LEAF_CERT_TTL
    rotation_period: timedelta = DEFAULT_ROTATION_PERIOD

    def __post_init__(self) -> None:
        if self.provider != PROVIDER_CONSUL:
            raise InvalidRequest(
                f"CA Provider {self.provider!r} is not supported (only {PROVIDER_CONSUL!r})",
                field="Provider",
            )
        if not MIN_LEAF_CERT_TTL <= self.leaf_cert_ttl < MAX_LEAF_CERT_TTL:
            raise InvalidRequest(
                f"LeafCertTTL must be at least 1h and less than 8760h, got "
                f"{format_duration(self.leaf_cert_ttl)}",
                field="Config.LeafCertTTL",
            )
        if self.rotation_period <= timedelta(0):
            raise InvalidRequest("RotationPeriod must be positive", field="Config.RotationPeriod")


@dataclass(frozen=True, slots=True, kw_only=True)
class CAConfigRequest:
    """A parsed ``PUT /v1/connect/ca/configuration``: the public config plus BYO root PEMs.

    ``private_key_pem`` is handed straight to ``ca.load_root`` on a primary server and is
    never stored in the global state; ``repr`` hides it.
    """

    config: CAConfig
    root_cert_pem: str | None = None
    private_key_pem: str | None = field(default=None, repr=False)


_CA_TOP_KEYS: Final = {"Provider": "provider", "Config": "config"}
_CA_CONFIG_KEYS: Final = {
    "LeafCertTTL": "leaf_cert_ttl",
    "RotationPeriod": "rotation_period",
    "PrivateKey": "private_key",
    "RootCert": "root_cert",
}
#: Consul echoes these back in GET; a body copied from a GET must still be accepted.
#: Consul 1.6 rate limits on signing (``CommonCAProviderConfig``) are accepted too, so existing
#: configurations load; meshnode does not implement them.
_CA_IGNORED: Final = frozenset(
    {
        "CreateIndex", "ModifyIndex", "ClusterID", "cluster_id",
        "CSRMaxPerSecond", "CSRMaxConcurrent", "csr_max_per_second", "csr_max_concurrent",
    }
)  # fmt: skip


def _pick(raw: Mapping[str, Any], table: Mapping[str, str], where: str) -> dict[str, Any]:
    read = read_keys(raw, Names.pascal_or_snake(table), ignored=_CA_IGNORED)
    if read.unknown:
        key = read.unknown[0]
        raise InvalidRequest(f"invalid CA configuration key {where}{key!r}", field=f"{where}{key}")
    if read.twice is not None:
        raise InvalidRequest(f"CA configuration key {where}{read.twice[1]} is given twice")
    return read.values


def _optional_pem(value: object, key: str) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"Config.{key} must be a PEM string", field=f"Config.{key}")
    return value


def parse_ca_configuration(raw: Mapping[str, Any], *, cluster_id: str = "") -> CAConfigRequest:
    """Parse a CA configuration body: ``{"Provider":"consul","Config":{"LeafCertTTL":...}}``."""
    if not isinstance(raw, Mapping):
        raise InvalidRequest("CA configuration must be an object")
    top = _pick(raw, _CA_TOP_KEYS, "")
    inner = top.get("Config") or {}
    if not isinstance(inner, Mapping):
        raise InvalidRequest("CA configuration Config must be an object", field="Config")
    conf = _pick(inner, _CA_CONFIG_KEYS, "Config.")
    ttl = conf.get("LeafCertTTL")
    period = conf.get("RotationPeriod")
    private_key = _optional_pem(conf.get("PrivateKey"), "PrivateKey")
    root_cert = _optional_pem(conf.get("RootCert"), "RootCert")
    if (private_key is None) != (root_cert is None):
        raise InvalidRequest(
            "Config.PrivateKey and Config.RootCert must be given together", field="Config"
        )
    config = CAConfig(
        provider=top.get("Provider") or PROVIDER_CONSUL,
        cluster_id=cluster_id,
        leaf_cert_ttl=DEFAULT_LEAF_CERT_TTL
        if ttl in (None, "")
        else parse_duration(ttl, what="Config.LeafCertTTL"),
        rotation_period=DEFAULT_ROTATION_PERIOD
        if period in (None, "")
        else parse_duration(period, what="Config.RotationPeriod"),
    )
    return CAConfigRequest(config=config, root_cert_pem=root_cert, private_key_pem=private_key)


def ca_config_to_wire(config: CAConfig) -> dict[str, Any]:
    """Plain dict for replication and persistence."""
    return {
        "provider": config.provider,
        "cluster_id": config.cluster_id,
        "leaf_cert_ttl_s": config.leaf_cert_ttl.total_seconds(),
        "rotation_period_s": config.rotation_period.total_seconds(),
    }


def ca_config_from_wire(raw: Mapping[str, Any]) -> CAConfig:
    """Inverse of ``ca_config_to_wire``; raises ``InvalidRequest`` on a malformed copy."""
    try:
        return CAConfig(
            provider=str(raw["provider"]),
            cluster_id=str(raw["cluster_id"]),
            leaf_cert_ttl=timedelta(seconds=float(raw["leaf_cert_ttl_s"])),
            rotation_period=timedelta(seconds=float(raw["rotation_period_s"])),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidRequest(f"malformed ca-config entry: {exc!r}") from None


# --- roots ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CARoot:
    """One trusted root (public parts only).

    ``id`` is the SHA-1 fingerprint of the DER (lowercase colon-hex) and
    ``signing_key_id`` its SubjectKeyId (SHA-256 of the public key), both as Consul.
    ``retain_until`` is set once the root is no longer active: the instant after which no
    leaf it (or an intermediate under it) signed can still be valid.
    """

    id: str
    name: str = ROOT_NAME
    serial_number: int
    signing_key_id: str
    not_before: datetime
    not_after: datetime
    root_cert: str
    private_key_type: str = "ec"
    private_key_bits: int = 256
    retain_until: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CARoots:
    """The ``ca-roots`` global entry: trust bundle, active root, trust domain, cluster id."""

    cluster_id: str
    trust_domain: str
    active_root_id: str
    roots: tuple[CARoot, ...]
    removed: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        ids = [r.id for r in self.roots]
        if len(set(ids)) != len(ids):
            raise InvalidRequest("CA roots contain the same root id twice")
        if self.active_root_id not in ids:
            raise InvalidRequest(f"active root {self.active_root_id!r} is not in the roots")
        # Canonical order (by id) so equal sets compare equal whatever the merge order.
        object.__setattr__(self, "roots", tuple(sorted(self.roots, key=lambda r: r.id)))

    @property
    def active_root(self) -> CARoot:
        """The root that signs new certificates."""
        return next(r for r in self.roots if r.id == self.active_root_id)

    def root(self, root_id: str) -> CARoot | None:
        """The root with this id, if trusted."""
        return next((r for r in self.roots if r.id == root_id), None)

    @property
    def trusted_pems(self) -> tuple[str, ...]:
        """Every trusted root certificate (the trust bundle), active first."""
        others = tuple(r.root_cert for r in self.roots if r.id != self.active_root_id)
        return (self.active_root.root_cert, *others)


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a if b is None else b
    return max(a, b)


def merge_roots(winner: CARoots, loser: CARoots) -> CARoots:
    """Join two copies; ``winner`` is the one with the larger stamp (see module rule)."""
    removed = winner.removed | loser.removed
    by_id: dict[str, CARoot] = {}
    for root in (*loser.roots, *winner.roots):
        if root.id in removed and root.id != winner.active_root_id:
            continue
        seen = by_id.get(root.id)
        keep = _later(seen.retain_until if seen else None, root.retain_until)
        by_id[root.id] = replace(root, retain_until=keep)
    return CARoots(
        cluster_id=winner.cluster_id,
        trust_domain=winner.trust_domain,
        active_root_id=winner.active_root_id,
        roots=tuple(by_id.values()),
        removed=removed - {winner.active_root_id},
    )


def rotate_roots(
    current: CARoots | None,
    new_root: CARoot,
    *,
    now: datetime,
    leaf_ttl: timedelta,
    cluster_id: str,
    trust_domain: str,
) -> CARoots:
    """Make ``new_root`` active; the old active root is kept until its leaves expire.

    The old root's ``retain_until`` is ``now + 2 × leaf_ttl`` (Consul's prune rule): one
    TTL for leaves it signed up to now, one more for signers that learn of the rotation
    late (a secondary's intermediate signs until the new roots reach it).
    """
    if current is None:
        return CARoots(
            cluster_id=cluster_id,
            trust_domain=trust_domain,
            active_root_id=new_root.id,
            roots=(new_root,),
        )
    if current.root(new_root.id) is not None:
        raise InvalidRequest(f"root {new_root.id} is already in the trust bundle")
    retire = now + 2 * leaf_ttl
    kept = tuple(
        replace(r, retain_until=_later(r.retain_until, retire))
        if r.id == current.active_root_id
        else r
        for r in current.roots
    )
    return replace(current, active_root_id=new_root.id, roots=(*kept, new_root))


def prune_roots(roots: CARoots, now: datetime) -> CARoots:
    """Drop inactive roots whose ``retain_until`` has passed (recorded in ``removed``)."""
    gone = {
        r.id
        for r in roots.roots
        if r.id != roots.active_root_id and r.retain_until is not None and r.retain_until < now
    }
    if not gone:
        return roots
    return replace(
        roots,
        roots=tuple(r for r in roots.roots if r.id not in gone),
        removed=roots.removed | gone,
    )


def retire_inactive(roots: CARoots, *, now: datetime, leaf_ttl: timedelta) -> CARoots:
    """Give every inactive root without a ``retain_until`` one of ``now + 2 × leaf_ttl``.

    Such roots come from a merge (a bootstrap race's loser, or a rotation seen only through
    a peer); until this runs they are simply kept, never dropped.
    """
    if all(r.retain_until is not None or r.id == roots.active_root_id for r in roots.roots):
        return roots
    retire = now + 2 * leaf_ttl
    updated = tuple(
        replace(r, retain_until=retire)
        if r.retain_until is None and r.id != roots.active_root_id
        else r
        for r in roots.roots
    )
    return replace(roots, roots=updated)


def note_leaf_expiry(roots: CARoots, root_id: str, expiry: datetime) -> CARoots:
    """Extend an inactive root's ``retain_until`` to cover a leaf known to expire later."""
    root = roots.root(root_id)
    if root is None or root_id == roots.active_root_id:
        return roots
    if root.retain_until is not None and root.retain_until >= expiry:
        return roots
    updated = tuple(replace(r, retain_until=expiry) if r.id == root_id else r for r in roots.roots)
    return replace(roots, roots=updated)


# --- wire -----------------------------------------------------------------------------------


def _root_to_wire(root: CARoot) -> dict[str, Any]:
    return {
        "id": root.id,
        "name": root.name,
        "serial_number": root.serial_number,
        "signing_key_id": root.signing_key_id,
        "not_before": timestamp(root.not_before),
        "not_after": timestamp(root.not_after),
        "root_cert": root.root_cert,
        "private_key_type": root.private_key_type,
        "private_key_bits": root.private_key_bits,
        "retain_until": timestamp(root.retain_until),
    }


def _root_from_wire(raw: Mapping[str, Any]) -> CARoot:
    not_before, not_after = from_timestamp(raw["not_before"]), from_timestamp(raw["not_after"])
    if not_before is None or not_after is None:
        raise InvalidRequest("CA root without validity dates")
    return CARoot(
        id=str(raw["id"]),
        name=str(raw["name"]),
        serial_number=int(raw["serial_number"]),
        signing_key_id=str(raw["signing_key_id"]),
        not_before=not_before,
        not_after=not_after,
        root_cert=str(raw["root_cert"]),
        private_key_type=str(raw["private_key_type"]),
        private_key_bits=int(raw["private_key_bits"]),
        retain_until=from_timestamp(raw.get("retain_until")),
    )


def roots_to_wire(roots: CARoots) -> dict[str, Any]:
    """Plain dict for replication and persistence."""
    return {
        "cluster_id": roots.cluster_id,
        "trust_domain": roots.trust_domain,
        "active_root_id": roots.active_root_id,
        "roots": [_root_to_wire(r) for r in roots.roots],
        "removed": sorted(roots.removed),
    }


def roots_from_wire(raw: Mapping[str, Any]) -> CARoots:
    """Inverse of ``roots_to_wire``; raises ``InvalidRequest`` on a malformed copy."""
    try:
        return CARoots(
            cluster_id=str(raw["cluster_id"]),
            trust_domain=str(raw["trust_domain"]),
            active_root_id=str(raw["active_root_id"]),
            roots=tuple(_root_from_wire(r) for r in _iter(raw["roots"])),
            removed=frozenset(str(x) for x in _iter(raw.get("removed", ()))),
        )
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise InvalidRequest(f"malformed ca-roots entry: {exc!r}") from None


def _iter(value: Any) -> Iterable[Any]:
    if not isinstance(value, list | tuple):
        raise TypeError(f"expected a list, got {type(value).__name__}")
    return value
