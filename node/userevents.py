"""User events (``consul event``): named payloads every node of a datacenter receives.

Rule: events ride LAN gossip as Serf's user events do, through ``EventDelegate`` on its
own ``DelegateMux`` channel: gossip carries bytes and never learns what an event is.
A fired event gets the next Lamport time of the event clock and is broadcast; a node
that hears an event for the first time rebroadcasts it (epidemic delivery, as Serf) and
keeps it in a ring of the last ``BUFFER_EVENTS`` if its filters admit this node. As
Serf does, push-pull carries the last ``PUSH_PULL_EVENTS`` events too, so a node that
missed a broadcast catches up at the next exchange; the events of a join's exchange
are only marked seen (Consul joins with Serf's ``ignoreOld``). Filters:
``NodeFilter`` matches the node name, ``ServiceFilter`` a local service ID and
``TagFilter`` one of that service's tags (Go regexps, unanchored). Wording and limits
are Consul's. Pure: no I/O, no clock; IDs come from the caller.
"""

from __future__ import annotations

import re
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from node.errors import InvalidRequest, LocalProtocolError, RemoteProtocolError
from node.gossip.delegate import UserBroadcastQueue
from node.wire import pack, unpack

__all__ = [
    "UserEvent",
    "EventDelegate",
    "validate_event",
    "accepts",
    "event_index",
    "BUFFER_EVENTS",
    "MAX_EVENT_BYTES",
]

#: Events a node keeps for ``/v1/event/list`` (Consul: 256).
BUFFER_EVENTS = 256
#: Largest encoded event (Serf's default ``UserEventSizeLimit``).
MAX_EVENT_BYTES = 512
#: Recent events (kept here or not) carried in every push-pull.
PUSH_PULL_EVENTS = 64
#: Event IDs remembered to drop rebroadcast duplicates.
_SEEN_IDS = 4096
_VERSION = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class UserEvent:
    """One user event (Consul ``UserEvent``)."""

    id: str
    name: str
    payload: bytes | None = None
    node_filter: str = ""
    service_filter: str = ""
    tag_filter: str = ""
    version: int = _VERSION
    ltime: int = 0

    def to_wire(self) -> dict[str, Any]:
        """A plain msgpack-able dict."""
        return {
            "id": self.id,
            "name": self.name,
            "payload": self.payload,
            "node_filter": self.node_filter,
            "service_filter": self.service_filter,
            "tag_filter": self.tag_filter,
            "version": self.version,
            "ltime": self.ltime,
        }

    @classmethod
    def from_wire(cls, raw: object) -> UserEvent:
        """Decode ``to_wire`` output from a peer; ``RemoteProtocolError`` on anything bad."""
        if not isinstance(raw, dict):
            raise RemoteProtocolError("user event: expected a map")
        strs = ("id", "name", "node_filter", "service_filter", "tag_filter")
        if not all(isinstance(raw.get(k), str) for k in strs) or not raw["id"] or not raw["name"]:
            raise RemoteProtocolError("user event: id, name and filters must be strings")
        payload, version, ltime = raw.get("payload"), raw.get("version"), raw.get("ltime")
        if payload is not None and not isinstance(payload, bytes):
            raise RemoteProtocolError("user event: payload must be bytes")
        for value in (version, ltime):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise RemoteProtocolError("user event: version and ltime must be integers")
        assert isinstance(version, int) and isinstance(ltime, int)
        return cls(
            id=raw["id"], name=raw["name"], payload=payload, node_filter=raw["node_filter"],
            service_filter=raw["service_filter"], tag_filter=raw["tag_filter"],
            version=version, ltime=ltime,
        )  # fmt: skip


def validate_event(event: UserEvent) -> None:
    """Consul's checks of a fired event: name, filters that compile, tag needs service, size."""
    if not event.name:
        raise InvalidRequest("User event missing name", field="name")
    if event.tag_filter and not event.service_filter:
        raise InvalidRequest("Cannot provide tag filter without service filter", field="tag")
    for what, pattern, field in (
        ("node", event.node_filter, "node"),
        ("service", event.service_filter, "service"),
        ("tag", event.tag_filter, "tag"),
    ):
        if pattern:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise InvalidRequest(f"Invalid {what} filter: {exc}", field=field) from None
    size = len(pack(event.to_wire()))
    if size > MAX_EVENT_BYTES:
        raise InvalidRequest(
            f"encoded length of user event exceeds configured limit of {MAX_EVENT_BYTES} "
            f"bytes after encoding ({size} bytes)",
            field="payload",
        )


def _search(pattern: str, text: str) -> bool:
    try:
        return re.search(pattern, text) is not None
    except re.error:  # a peer's filter this node cannot read admits nothing
        return False


def accepts(event: UserEvent, node: str, services: Mapping[str, Sequence[str]]) -> bool:
    """Whether a node named ``node`` with ``services`` (ID → tags) keeps ``event``."""
    if event.node_filter and not _search(event.node_filter, node):
        return False
    if not event.service_filter:
        return True
    for service_id, tags in services.items():
        if not _search(event.service_filter, service_id):
            continue
        if not event.tag_filter or any(_search(event.tag_filter, t) for t in tags):
            return True
    return False


def event_index(events: Sequence[UserEvent]) -> int:
    """Consul's ``X-Consul-Index`` of an event list: the last ID's two 64-bit halves
    XOR-ed, or 1 when there is none."""
    if not events:
        return 1
    raw = bytes.fromhex(events[-1].id.replace("-", ""))
    if len(raw) != 16:
        return 1
    return int.from_bytes(raw[:8], "big") ^ int.from_bytes(raw[8:], "big") or 1


class EventDelegate:
    """The events' gossip delegate and this node's ring of received events."""

    __slots__ = (
        "_queue", "_accept", "_buffer", "_recent", "_seen", "_clock", "_listeners", "_stats",
    )  # fmt: skip

    def __init__(
        self,
        queue: UserBroadcastQueue,
        accept: Callable[[UserEvent], bool],
    ) -> None:
        self._queue = queue
        self._accept = accept
        self._buffer: deque[UserEvent] = deque(maxlen=BUFFER_EVENTS)
        self._recent: deque[UserEvent] = deque(maxlen=PUSH_PULL_EVENTS)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._clock = 0
        self._listeners: list[Callable[[], None]] = []
        self._stats: dict[str, int] = {}

    @property
    def stats(self) -> Mapping[str, int]:
        """Counters: received, duplicates, dropped_malformed, filtered, not_relayed."""
        return dict(self._stats)

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after every event this node keeps."""
        self._listeners.append(callback)

    def events(self, name: str = "") -> list[UserEvent]:
        """Kept events, oldest first (only ``name``'s when given)."""
        return [e for e in self._buffer if not name or e.name == name]

    def fire(self, event: UserEvent) -> UserEvent:
        """Stamp ``event`` with the next event time, broadcast it and keep it if it
        applies here; returns it as sent. ``validate_event`` first."""
        stamped = replace(event, ltime=self._clock)
        self._clock += 1
        self._receive(stamped)
        return stamped

    # ------------------------------------------------------------------ Delegate

    def notify_msg(self, payload: bytes) -> None:
        """An event from a peer (untrusted bytes)."""
        try:
            event = UserEvent.from_wire(unpack(payload))
        except RemoteProtocolError:
            self._count("dropped_malformed")
            return
        self._clock = max(self._clock, event.ltime + 1)  # Lamport: witness the peer's time
        self._receive(event)

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        """Events waiting to be (re)broadcast."""
        return self._queue.get_broadcasts(overhead, limit)

    def local_state(self, join: bool) -> bytes:
        """The recent events, for a push-pull."""
        del join
        return pack([e.to_wire() for e in self._recent])

    def merge_remote_state(self, payload: bytes, join: bool) -> None:
        """A peer's recent events: the ones missed are taken (only marked seen on a join)."""
        try:
            raw = unpack(payload) if payload else []
            if not isinstance(raw, list):
                raise RemoteProtocolError("user events: expected a list")
            events = [UserEvent.from_wire(item) for item in raw]
        except RemoteProtocolError:
            self._count("dropped_malformed")
            return
        for event in events:
            self._clock = max(self._clock, event.ltime + 1)
            if join:
                self._mark_seen(event.id)
            else:
                self._receive(event)

    # ------------------------------------------------------------------ internals

    def _receive(self, event: UserEvent) -> None:
        if event.id in self._seen:
            self._count("duplicates")
            return
        self._mark_seen(event.id)
        self._recent.append(event)
        self._count("received")
        try:
            self._queue.queue(pack(event.to_wire()), key=("event", event.id))
        except LocalProtocolError:  # a peer's event too big to pass on: keep, not relay
            self._count("not_relayed")
        if not self._accept(event):
            self._count("filtered")
            return
        self._buffer.append(event)
        for callback in list(self._listeners):
            callback()

    def _mark_seen(self, event_id: str) -> None:
        self._seen[event_id] = None
        if len(self._seen) > _SEEN_IDS:
            self._seen.popitem(last=False)

    def _count(self, key: str) -> None:
        self._stats[key] = self._stats.get(key, 0) + 1
