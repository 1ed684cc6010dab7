"""Intentions: who may open a Connect connection to whom.

Rule: an intention is validated once, when it is parsed, and its precedence is computed
from its names, never stored independently. Evaluation is Consul's
(``agent/connect_auth.go``): take the intentions whose destination matches, in precedence
order, and the first whose source matches decides; with no match, the configured default
(``connect { default_intention_policy }``) decides. Precedence (Consul
``UpdatePrecedence``): ``max − (2 − exact source values)``, where max is 9, 6 or 3 for 2,
1 or 0 exact destination values (namespace, name). With the namespace always ``default``
that is exact→exact 9, ``*``→exact 8, exact→``*`` 6, ``*``→``*`` 5.

Pure: no I/O, no clock; uuids and timestamps come in from the caller.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

from node.config.reader import Names, read_keys
from node.connect.spiffe import SpiffeID
from node.errors import Conflict, InvalidRequest
from node.wire import from_timestamp, timestamp

__all__ = [
    "WILDCARD",
    "IntentionAction",
    "Intention",
    "MatchBy",
    "parse_intention",
    "check_unique",
    "sort_intentions",
    "match_intentions",
    "check",
    "authorize",
    "intention_to_wire",
    "intention_from_wire",
    "with_indexes",
    "precedence_of",
]

WILDCARD: Final = "*"
DEFAULT_NS: Final = "default"
#: Consul's meta limits (``structs.validateMetaPair`` / ``metaMaxKeyPairs``).
MAX_META_PAIRS: Final = 64
MAX_META_KEY: Final = 128
MAX_META_VALUE: Final = 512
MAX_DESCRIPTION: Final = 4096
MAX_NAME: Final = 256


class IntentionAction(StrEnum):
    """What an intention does when it matches."""

    ALLOW = "allow"
    DENY = "deny"


class MatchBy(StrEnum):
    """Which side ``match_intentions`` looks at (``?by=source|destination``)."""

    SOURCE = "source"
    DESTINATION = "destination"


def _exact_count(ns: str, name: str) -> int:
    # An exact name under a wildcard namespace is rejected at validation, so this is 2/1/0.
    return (ns != WILDCARD) + (name != WILDCARD)


def precedence_of(source_ns: str, source: str, dest_ns: str, dest: str) -> int:
    """Consul's precedence number for a (source, destination) pair."""
    top = {2: 9, 1: 6, 0: 3}[_exact_count(dest_ns, dest)]
    return top - (2 - _exact_count(source_ns, source))


@dataclass(frozen=True, slots=True, kw_only=True)
class Intention:
    """One intention (Consul ``structs.Intention``); ``precedence`` is derived."""

    id: str
    source_name: str
    destination_name: str
    action: IntentionAction
    source_ns: str = DEFAULT_NS
    destination_ns: str = DEFAULT_NS
    source_type: str = "consul"
    description: str = ""
    meta: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    created_at: datetime | None = None
    updated_at: datetime | None = None
    create_index: int = 0
    modify_index: int = 0
    precedence: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        _validate(self)
        if not isinstance(self.meta, MappingProxyType):
            object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))
        prec = precedence_of(
            self.source_ns, self.source_name, self.destination_ns, self.destination_name
        )
        object.__setattr__(self, "precedence", prec)

    @property
    def pair(self) -> tuple[str, str, str, str]:
        """(source ns, source, destination ns, destination): unique per intention."""
        return (self.source_ns, self.source_name, self.destination_ns, self.destination_name)

    def source_matches(self, ns: str, name: str) -> bool:
        """Does this intention's source cover ``ns/name``?"""
        return _covers(self.source_ns, ns) and _covers(self.source_name, name)

    def destination_matches(self, ns: str, name: str) -> bool:
        """Does this intention's destination cover ``ns/name``?"""
        return _covers(self.destination_ns, ns) and _covers(self.destination_name, name)

    def __str__(self) -> str:
        # Consul's Intention.String(), used in the authorize Reason.
        return (
            f"{self.action.value.upper()} {self.source_ns}/{self.source_name} => "
            f"{self.destination_ns}/{self.destination_name} "
            f"(ID: {self.id}, Precedence: {self.precedence})"
        )


def _covers(pattern: str, value: str) -> bool:
    return pattern in (WILDCARD, value)


def _validate_name(value: object, what: str) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{what} must be set", field=what)
    if WILDCARD in value and value != WILDCARD:
        raise InvalidRequest(
            f"{what}: wildcard character '*' cannot be used with partial values", field=what
        )
    if len(value) > MAX_NAME or any(c.isspace() or c == "/" for c in value):
        raise InvalidRequest(f"{what}: {value!r} is not a valid name", field=what)


def _validate(ixn: Intention) -> None:
    """Consul's ``Intention.Validate``, message for message where it has one."""
    for side, ns, name in (
        ("Source", ixn.source_ns, ixn.source_name),
        ("Destination", ixn.destination_ns, ixn.destination_name),
    ):
        _validate_name(ns, f"{side}NS")
        _validate_name(name, f"{side}Name")
        if ns == WILDCARD and name != WILDCARD:
            raise InvalidRequest(
                f"{side}Name: exact value cannot follow wildcard namespace", field=f"{side}Name"
            )
    if not isinstance(ixn.action, IntentionAction):
        raise InvalidRequest("Action must be set to 'allow' or 'deny'", field="Action")
    if ixn.source_type != "consul":
        raise InvalidRequest("SourceType must be set to 'consul'", field="SourceType")
    if not isinstance(ixn.description, str) or len(ixn.description) > MAX_DESCRIPTION:
        raise InvalidRequest(
            f"Description must be a string of at most {MAX_DESCRIPTION} characters",
            field="Description",
        )
    _validate_meta(ixn.meta)
    try:
        uuid.UUID(ixn.id)
    except (ValueError, TypeError, AttributeError):
        raise InvalidRequest(f"intention ID {ixn.id!r} is not a UUID", field="ID") from None


def _validate_meta(meta: Mapping[str, str]) -> None:
    if len(meta) > MAX_META_PAIRS:
        raise InvalidRequest(f"Meta: at most {MAX_META_PAIRS} pairs are allowed", field="Meta")
    for key, value in meta.items():
        if not isinstance(key, str) or not key or len(key) > MAX_META_KEY:
            raise InvalidRequest(f"Meta key {key!r} is invalid (1..{MAX_META_KEY} chars)")
        if not isinstance(value, str) or len(value) > MAX_META_VALUE:
            raise InvalidRequest(f"Meta value for {key!r} must be a string of at most 512 chars")


# --- parsing a request body -----------------------------------------------------------------

_KEYS: Final = {
    "SourceName": "source_name",
    "DestinationName": "destination_name",
    "SourceNS": "source_ns",
    "DestinationNS": "destination_ns",
    "SourceType": "source_type",
    "Action": "action",
    "Description": "description",
    "Meta": "meta",
}
#: Output-only fields a client may echo back from a GET; ignored like Consul does.
_IGNORED: Final = frozenset(
    {
        "ID",
        "Precedence",
        "CreatedAt",
        "UpdatedAt",
        "CreateIndex",
        "ModifyIndex",
        "Hash",
        "DefaultAddr",
        "DefaultPort",
        "id",
        "precedence",
        "create_index",
        "modify_index",
    }
)


def _fields(raw: Mapping[str, Any]) -> dict[str, Any]:
    read = read_keys(raw, Names.pascal_or_snake(_KEYS), ignored=_IGNORED)
    if read.unknown:
        key = read.unknown[0]
        raise InvalidRequest(f"invalid intention field {key!r}", field=str(key))
    if read.twice is not None:
        key = read.twice[0]
        raise InvalidRequest(f"intention field {key!r} is given twice", field=key)
    return {_KEYS[pascal]: value for pascal, value in read.values.items()}


def _parse_action(value: object) -> IntentionAction:
    try:
        return IntentionAction(str(value)) if isinstance(value, str) else IntentionAction("")
    except ValueError:
        raise InvalidRequest("Action must be set to 'allow' or 'deny'", field="Action") from None


def parse_intention(
    raw: Mapping[str, Any],
    *,
    intention_id: str,
    now: datetime,
    previous: Intention | None = None,
) -> Intention:
    """Build an intention from a request body (PascalCase or snake_case keys).

    ``intention_id`` is a fresh UUID for a create, the path id for an update (then
    ``previous`` is the stored intention, whose creation time is kept). Namespaces
    default to ``default`` and SourceType to ``consul``, as in Consul.
    """
    if not isinstance(raw, Mapping):
        raise InvalidRequest("intention must be a JSON object")
    body_id = raw.get("ID") or raw.get("id")
    if body_id and body_id != intention_id:
        raise InvalidRequest(f"ID in body ({body_id!r}) does not match {intention_id!r}")
    fields = _fields(raw)
    meta = fields.pop("meta", None) or {}
    if not isinstance(meta, Mapping):
        raise InvalidRequest("Meta must be an object of strings", field="Meta")
    action = _parse_action(fields.pop("action", None))
    for key in ("source_ns", "destination_ns", "source_type"):
        if fields.get(key) in (None, ""):
            fields.pop(key, None)
    fields.setdefault("source_name", "")
    fields.setdefault("destination_name", "")
    return Intention(
        id=intention_id,
        action=action,
        meta=meta,
        created_at=previous.created_at if previous else now,
        updated_at=now,
        **{k: v for k, v in fields.items()},
    )


# --- sets of intentions ---------------------------------------------------------------------


def check_unique(existing: Iterable[Intention], candidate: Intention) -> None:
    """Raise ``Conflict`` if another intention has the same (source, destination)."""
    for other in existing:
        if other.id != candidate.id and other.pair == candidate.pair:
            raise Conflict(
                f"duplicate intention found: {other} (the pair "
                f"{candidate.source_name} => {candidate.destination_name} already exists)"
            )


def _sort_key(ixn: Intention) -> tuple[int, str, str, str, str, str]:
    # Consul's IntentionPrecedenceSorter, plus the id so that duplicates left behind by a
    # partition (two servers accepting the same pair) still order deterministically.
    return (-ixn.precedence, *ixn.pair, ixn.id)


def sort_intentions(intentions: Iterable[Intention]) -> tuple[Intention, ...]:
    """Precedence descending, then names ascending (evaluation order)."""
    return tuple(sorted(intentions, key=_sort_key))


def match_intentions(
    intentions: Iterable[Intention], by: MatchBy | str, name: str, *, namespace: str = DEFAULT_NS
) -> tuple[Intention, ...]:
    """``/v1/connect/intentions/match``: intentions whose source/destination covers ``name``."""
    try:
        side = MatchBy(by)
    except ValueError:
        raise InvalidRequest("by must be 'source' or 'destination'", field="by") from None
    if not name:
        raise InvalidRequest("name must be given", field="name")
    if side is MatchBy.SOURCE:
        hits = (i for i in intentions if i.source_matches(namespace, name))
    else:
        hits = (i for i in intentions if i.destination_matches(namespace, name))
    return sort_intentions(hits)


def check(
    intentions: Iterable[Intention],
    source: str,
    destination: str,
    default_allow: bool,
    *,
    source_ns: str = DEFAULT_NS,
    destination_ns: str = DEFAULT_NS,
) -> tuple[bool, Intention | None]:
    """Would ``source`` be allowed to reach ``destination``? Returns (allowed, deciding intention)."""
    if not source or not destination:
        raise InvalidRequest("source and destination must both be given")
    for ixn in match_intentions(
        intentions, MatchBy.DESTINATION, destination, namespace=destination_ns
    ):
        if ixn.source_matches(source_ns, source):
            return ixn.action is IntentionAction.ALLOW, ixn
    return default_allow, None


def authorize(
    intentions: Iterable[Intention], *, target: str, client_cert_uri: str, default_allow: bool
) -> tuple[bool, str]:
    """``POST /v1/agent/connect/authorize``: (Authorized, Reason) as Consul phrases them."""
    if not target:
        raise InvalidRequest("Target service must be specified", field="Target")
    identity = SpiffeID.parse(client_cert_uri)  # InvalidRequest (400) as in Consul
    allowed, ixn = check(
        intentions, identity.service, target, default_allow, source_ns=identity.namespace
    )
    if ixn is not None:
        return allowed, f"Matched intention: {ixn}"
    policy = "allow" if default_allow else "deny"
    return allowed, f"Default behavior configured by default_intention_policy ({policy})"


# --- wire -----------------------------------------------------------------------------------


def intention_to_wire(ixn: Intention) -> dict[str, Any]:
    """Plain dict for replication and persistence (indexes are per node, not sent)."""
    return {
        "id": ixn.id,
        "source_ns": ixn.source_ns,
        "source_name": ixn.source_name,
        "destination_ns": ixn.destination_ns,
        "destination_name": ixn.destination_name,
        "source_type": ixn.source_type,
        "action": ixn.action.value,
        "description": ixn.description,
        "meta": dict(ixn.meta),
        "created_at": timestamp(ixn.created_at),
        "updated_at": timestamp(ixn.updated_at),
    }


def intention_from_wire(raw: Mapping[str, Any]) -> Intention:
    """Inverse of ``intention_to_wire``; ``InvalidRequest`` on a malformed copy."""
    try:
        created, updated = raw.get("created_at"), raw.get("updated_at")
        return Intention(
            id=str(raw["id"]),
            source_ns=raw["source_ns"],
            source_name=raw["source_name"],
            destination_ns=raw["destination_ns"],
            destination_name=raw["destination_name"],
            source_type=raw["source_type"],
            action=_parse_action(raw["action"]),
            description=raw["description"],
            meta=dict(raw["meta"]),
            created_at=from_timestamp(created),
            updated_at=from_timestamp(updated),
        )
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise InvalidRequest(f"malformed intention entry: {exc!r}") from None


def with_indexes(ixn: Intention, *, create_index: int, modify_index: int) -> Intention:
    """A copy carrying this node's indexes (set by the global state when serving it)."""
    return replace(ixn, create_index=create_index, modify_index=modify_index)
