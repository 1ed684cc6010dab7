"""What Connect keeps in the global state: its record kinds and how each is stored.

Rule: CA roots and CA configuration are singletons (``ca-roots``/``roots``,
``ca-config``/``config``); intentions are named by id, config entries by their name.
CA roots are *joined* on merge (``castate.merge_roots``: a set that never drops a root
that may have signed a live leaf) and are never deleted, only rotated; a local write may
retire roots but never silently lose one. Intentions stay unique per (source,
destination). ``CONNECT_SCHEMA`` hands all of this to ``node.state``, which knows none
of it.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final

from node.connect.castate import (
    CAConfig,
    CARoots,
    ca_config_from_wire,
    ca_config_to_wire,
    merge_roots,
    roots_from_wire,
    roots_to_wire,
)
from node.connect.entries import (
    CONFIG_ENTRY_KINDS,
    PROXY_DEFAULTS,
    SERVICE_DEFAULTS,
    SERVICE_RESOLVER,
    SERVICE_ROUTER,
    SERVICE_SPLITTER,
    ProxyDefaults,
    ServiceDefaults,
    ServiceResolver,
    ServiceRouter,
    ServiceSplitter,
    entry_to_wire,
    parse_config_entry,
)
from node.connect.intentions import (
    Intention,
    check_unique,
    intention_from_wire,
    intention_to_wire,
)
from node.errors import InvalidRequest
from node.state.globalstate import GlobalState, KindCodec, Schema

__all__ = [
    "KIND_CA_ROOTS",
    "KIND_CA_CONFIG",
    "KIND_INTENTION",
    "KIND_PROXY_DEFAULTS",
    "KIND_SERVICE_DEFAULTS",
    "KINDS",
    "CA_ROOTS_NAME",
    "CA_CONFIG_NAME",
    "CA_KINDS",
    "WRITABLE_KINDS",
    "CONNECT_SCHEMA",
    "roots_of",
    "ca_config_of",
    "roots_created",
]

KIND_CA_ROOTS: Final = "ca-roots"
KIND_CA_CONFIG: Final = "ca-config"
KIND_INTENTION: Final = "intention"
KIND_PROXY_DEFAULTS: Final = PROXY_DEFAULTS
KIND_SERVICE_DEFAULTS: Final = SERVICE_DEFAULTS
#: The single names under which the CA's two singletons live.
CA_ROOTS_NAME: Final = "roots"
CA_CONFIG_NAME: Final = "config"
#: Kinds whose change the CA role and the leaves follow.
CA_KINDS: Final = frozenset({KIND_CA_ROOTS, KIND_CA_CONFIG})
#: Kinds a ``State.Apply`` put/delete may touch; the CA's two go through ``ca-config``.
WRITABLE_KINDS: Final = (KIND_INTENTION, *CONFIG_ENTRY_KINDS)


def _config_entry_from_wire(kind: str) -> Callable[[Any], Any]:
    def decode(raw: Any) -> Any:
        entry = parse_config_entry(raw)
        if entry.kind != kind:
            raise InvalidRequest(f"record of kind {kind!r} holds a {entry.kind!r} entry")
        return entry

    return decode


def _check_no_root_dropped(current: CARoots | None, new: CARoots, live: Iterable[Any]) -> None:
    """A write may retire roots (list them in ``removed``) but never silently lose one."""
    del live
    if current is None:
        return
    kept = {r.id for r in new.roots} | new.removed
    lost = sorted(r.id for r in current.roots if r.id not in kept)
    if lost:
        raise InvalidRequest(
            f"CA roots write would drop root(s) {', '.join(lost)} without retiring them"
        )


def _check_unique_intention(current: Any, new: Intention, live: Iterable[Intention]) -> None:
    del current
    check_unique(live, new)


CONNECT_SCHEMA: Final = Schema(
    {
        KIND_CA_ROOTS: KindCodec(
            type=CARoots, name_of=lambda v: CA_ROOTS_NAME, to_wire=roots_to_wire,
            from_wire=roots_from_wire, join=merge_roots, check_put=_check_no_root_dropped,
            undeletable="the CA roots cannot be deleted, only rotated",
        ),
        KIND_CA_CONFIG: KindCodec(
            type=CAConfig, name_of=lambda v: CA_CONFIG_NAME, to_wire=ca_config_to_wire,
            from_wire=ca_config_from_wire,
        ),
        KIND_INTENTION: KindCodec(
            type=Intention, name_of=lambda v: v.id, to_wire=intention_to_wire,
            from_wire=intention_from_wire, check_put=_check_unique_intention,
        ),
        KIND_PROXY_DEFAULTS: KindCodec(
            type=ProxyDefaults, name_of=lambda v: v.name, to_wire=entry_to_wire,
            from_wire=_config_entry_from_wire(PROXY_DEFAULTS),
        ),
        KIND_SERVICE_DEFAULTS: KindCodec(
            type=ServiceDefaults, name_of=lambda v: v.name, to_wire=entry_to_wire,
            from_wire=_config_entry_from_wire(SERVICE_DEFAULTS),
        ),
        SERVICE_RESOLVER: KindCodec(
            type=ServiceResolver, name_of=lambda v: v.name, to_wire=entry_to_wire,
            from_wire=_config_entry_from_wire(SERVICE_RESOLVER),
        ),
        SERVICE_ROUTER: KindCodec(
            type=ServiceRouter, name_of=lambda v: v.name, to_wire=entry_to_wire,
            from_wire=_config_entry_from_wire(SERVICE_ROUTER),
        ),
        SERVICE_SPLITTER: KindCodec(
            type=ServiceSplitter, name_of=lambda v: v.name, to_wire=entry_to_wire,
            from_wire=_config_entry_from_wire(SERVICE_SPLITTER),
        ),
    }
)  # fmt: skip
KINDS: Final = CONNECT_SCHEMA.kinds


def roots_of(state: GlobalState) -> CARoots | None:
    """The trust bundle, active root and trust domain; ``None`` before bootstrap."""
    record = state.get(KIND_CA_ROOTS, CA_ROOTS_NAME)
    return None if record is None else record.value  # type: ignore[no-any-return]


def ca_config_of(state: GlobalState) -> CAConfig | None:
    """The replicated CA configuration (never a key)."""
    record = state.get(KIND_CA_CONFIG, CA_CONFIG_NAME)
    return None if record is None else record.value  # type: ignore[no-any-return]


def roots_created(roots: CARoots | None) -> str | None:
    """When the CA was made (its oldest root's start, ISO 8601); ``None`` without one."""
    return None if roots is None else min(r.not_before for r in roots.roots).isoformat()
