"""Gossip wire messages: one type byte followed by a msgpack body.

Rule: bytes from a peer become typed, frozen messages *here* or a ``RemoteProtocolError``
naming what was wrong — nothing else leaves this module. Type numbers follow memberlist's
and are part of the protocol: ONLY APPEND to ``MessageType``. Bodies are positional msgpack
arrays (compact, fast); every string, blob and list has a named size limit below.

Compound packets carry several messages in one datagram:
``[COMPOUND][count u8][count x len u16 BE][msg][msg]...`` (memberlist's layout).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any, TypeAlias

import msgpack

from node.errors import LocalProtocolError, RemoteProtocolError
from node.wire import UNPACK_ERRORS

__all__ = [
    "Address",
    "MessageType",
    "MemberStatus",
    "Ping",
    "PingReq",
    "Ack",
    "Nack",
    "Suspect",
    "Alive",
    "Dead",
    "PushNodeState",
    "PushPull",
    "User",
    "Err",
    "Message",
    "MAX_NAME_BYTES",
    "MAX_HOST_BYTES",
    "MAX_META_BYTES",
    "MAX_TAGS",
    "MAX_ACK_PAYLOAD_BYTES",
    "MAX_ERROR_BYTES",
    "MAX_PUSH_NODES",
    "MAX_PUSH_STATE_BYTES",
    "MAX_COMPOUND_PARTS",
    "COMPOUND_HEADER_BYTES",
    "COMPOUND_PART_OVERHEAD",
    "encode",
    "decode",
    "decode_packet",
    "make_compound",
    "split_compound",
    "encode_tags",
    "decode_tags",
    "Decoder",
    "UnknownMessageType",
    "MAX_U32",
    "push_entry",
    "make_push_entry",
    "encode_push_pull",
]

Address: TypeAlias = tuple[str, int]

#: Longest node name (UTF-8 bytes).
MAX_NAME_BYTES = 128
#: Longest host string in an address.
MAX_HOST_BYTES = 255
#: Node metadata (encoded tags) cap, memberlist's MetaMaxSize.
MAX_META_BYTES = 512
#: Most tags one member may carry.
MAX_TAGS = 64
#: Ack payload cap (ping-delegate data such as coordinates).
MAX_ACK_PAYLOAD_BYTES = 512
#: Error text cap in an ``Err`` reply.
MAX_ERROR_BYTES = 1024
#: Most member entries in one push-pull (memberlist maxPushStateNodes).
MAX_PUSH_NODES = 1 << 20
#: Largest push-pull message; bounded by the stream frame limit of node.wire.
MAX_PUSH_STATE_BYTES = 16 * 1024 * 1024
#: Most messages in one compound packet (count is one byte).
MAX_COMPOUND_PARTS = 255
#: Type byte + count byte.
COMPOUND_HEADER_BYTES = 2
#: Length prefix per part.
COMPOUND_PART_OVERHEAD = 2
#: Largest incarnation / sequence number (u32, as memberlist).
MAX_U32 = 0xFFFFFFFF
#: First byte of encoded tags (Serf's magic), so empty meta and tags are distinguishable.
TAGS_MAGIC = 0xFF


class MessageType(IntEnum):
    """Wire tag of a message.

    WARNING: ONLY APPEND TO THIS LIST! The numeric values are part of the protocol
    itself (memberlist's numbering; 9, 10 and 12 are memberlist's compress/encrypt/crc
    framings, which meshnode does not produce — they decode as unsupported).
    """

    PING = 0
    PING_REQ = 1
    ACK = 2
    SUSPECT = 3
    ALIVE = 4
    DEAD = 5
    PUSH_PULL = 6
    COMPOUND = 7
    USER = 8
    NACK = 11
    ERR = 13


class MemberStatus(StrEnum):
    """What we believe about a member."""

    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


# Push-pull status codes on the wire (memberlist's NodeStateType order).
_STATUS_CODES: dict[MemberStatus, int] = {
    MemberStatus.ALIVE: 0,
    MemberStatus.SUSPECT: 1,
    MemberStatus.DEAD: 2,
    MemberStatus.LEFT: 3,
}
_CODE_STATUS = {v: k for k, v in _STATUS_CODES.items()}


@dataclass(frozen=True, slots=True, kw_only=True)
class Ping:
    """Are you alive? ``node`` names the intended target so a new process on the addr can refuse."""

    seq: int
    node: str
    source_addr: Address
    source_node: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PingReq:
    """Please ping ``target`` for me and forward its ack (and a nack if it stays silent)."""

    seq: int
    node: str
    target: Address
    nack: bool
    source_addr: Address
    source_node: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Ack:
    """Answer to a ping with the same ``seq``."""

    seq: int
    payload: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class Nack:
    """A relay could not reach the target: proof that the relay (and we) are working."""

    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Suspect:
    """``accuser`` suspects ``node`` at ``incarnation``."""

    incarnation: int
    node: str
    accuser: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Alive:
    """``node`` is alive at ``addr`` with ``incarnation`` and metadata ``meta`` (encoded tags)."""

    incarnation: int
    node: str
    addr: Address
    meta: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class Dead:
    """``accuser`` declares ``node`` dead; ``accuser == node`` means a graceful leave."""

    incarnation: int
    node: str
    accuser: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PushNodeState:
    """One member's entry in a push-pull."""

    name: str
    addr: Address
    meta: bytes
    incarnation: int
    status: MemberStatus


@dataclass(frozen=True, slots=True, kw_only=True)
class PushPull:
    """Full state exchange over a stream; ``user_state`` is the delegate's blob."""

    join: bool
    nodes: tuple[PushNodeState, ...]
    user_state: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class User:
    """Opaque delegate payload (a user broadcast)."""

    payload: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Err:
    """A stream request was refused; ``error`` says why."""

    error: str


Message: TypeAlias = Ping | PingReq | Ack | Nack | Suspect | Alive | Dead | PushPull | User | Err


# ----------------------------------------------------------------------------- encoding


def _pack(body: Any) -> bytes:
    return msgpack.packb(body, use_bin_type=True)  # type: ignore[no-any-return]


def _addr(a: Address) -> list[Any]:
    return [a[0], a[1]]


def encode(msg: Message) -> bytes:
    """Encode one message as ``[type][msgpack body]`` (``User`` bodies are raw bytes)."""
    match msg:
        case Ping():
            body: Any = [msg.seq, msg.node, _addr(msg.source_addr), msg.source_node]
            return b"\x00" + _pack(body)
        case PingReq():
            body = [msg.seq, msg.node, _addr(msg.target), msg.nack]
            body += [_addr(msg.source_addr), msg.source_node]
            return b"\x01" + _pack(body)
        case Ack():
            return b"\x02" + _pack([msg.seq, msg.payload])
        case Suspect():
            return b"\x03" + _pack([msg.incarnation, msg.node, msg.accuser])
        case Alive():
            return b"\x04" + _pack([msg.incarnation, msg.node, _addr(msg.addr), msg.meta])
        case Dead():
            return b"\x05" + _pack([msg.incarnation, msg.node, msg.accuser])
        case PushPull():
            return encode_push_pull(msg.join, [push_entry(n) for n in msg.nodes], msg.user_state)
        case User():
            return b"\x08" + msg.payload
        case Nack():
            return b"\x0b" + _pack([msg.seq])
        case Err():
            return b"\x0d" + _pack([msg.error[:MAX_ERROR_BYTES]])
    raise LocalProtocolError(f"cannot encode {type(msg).__name__}")


def push_entry(node: PushNodeState) -> list[Any]:
    """The msgpack-ready form of one push-pull entry (cacheable by the caller)."""
    return make_push_entry(node.name, node.addr, node.meta, node.incarnation, node.status)


def make_push_entry(
    name: str, addr: Address, meta: bytes, incarnation: int, status: MemberStatus
) -> list[Any]:
    """``push_entry`` without building a ``PushNodeState`` first."""
    return [name, [addr[0], addr[1]], meta, incarnation, _STATUS_CODES[status]]


def encode_push_pull(join: bool, entries: Sequence[list[Any]], user_state: bytes) -> bytes:
    """Encode a push-pull from pre-built entries (see ``push_entry``)."""
    data = b"\x06" + _pack([join, entries, user_state])
    if len(data) > MAX_PUSH_STATE_BYTES:
        raise LocalProtocolError(f"push-pull of {len(data)} bytes exceeds {MAX_PUSH_STATE_BYTES}")
    return data


# Precompiled per part count: formatting a struct per packet showed up in profiles.
_COMPOUND_HEADS = [struct.Struct(f">BB{i}H") for i in range(MAX_COMPOUND_PARTS + 1)]
_LENGTH_TABLES = [struct.Struct(f">{i}H") for i in range(MAX_COMPOUND_PARTS + 1)]


def make_compound(parts: Sequence[bytes]) -> bytes:
    """Pack up to ``MAX_COMPOUND_PARTS`` encoded messages into one compound message."""
    if len(parts) > MAX_COMPOUND_PARTS:
        raise LocalProtocolError(f"compound of {len(parts)} parts exceeds {MAX_COMPOUND_PARTS}")
    lengths = [len(p) for p in parts]
    if lengths and max(lengths) > 0xFFFF:
        raise LocalProtocolError("compound part longer than 65535 bytes")
    head = _COMPOUND_HEADS[len(parts)].pack(MessageType.COMPOUND, len(parts), *lengths)
    return head + b"".join(parts)


def split_compound(data: bytes) -> list[bytes]:
    """Split a compound message (type byte included) into its parts."""
    if len(data) < COMPOUND_HEADER_BYTES:
        raise RemoteProtocolError("compound: truncated header")
    count = data[1]
    start = COMPOUND_HEADER_BYTES + COMPOUND_PART_OVERHEAD * count
    if len(data) < start:
        raise RemoteProtocolError(f"compound: truncated length table for {count} parts")
    lengths = _LENGTH_TABLES[count].unpack_from(data, COMPOUND_HEADER_BYTES)
    parts = []
    for n in lengths:
        end = start + n
        if end > len(data):
            raise RemoteProtocolError("compound: part runs past end of packet")
        parts.append(data[start:end])
        start = end
    if start != len(data):
        raise RemoteProtocolError(f"compound: {len(data) - start} trailing bytes")
    return parts


def encode_tags(tags: Mapping[str, str]) -> bytes:
    """Encode tags as node metadata: magic byte + msgpack map, at most ``MAX_META_BYTES``."""
    if not tags:
        return b""
    if len(tags) > MAX_TAGS:
        raise LocalProtocolError(f"{len(tags)} tags exceed the limit of {MAX_TAGS}")
    for k, v in tags.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise LocalProtocolError(f"tag {k!r}: keys and values must be strings")
    meta = bytes([TAGS_MAGIC]) + _pack(dict(sorted(tags.items())))
    if len(meta) > MAX_META_BYTES:
        raise LocalProtocolError(f"encoded tags are {len(meta)} bytes, limit {MAX_META_BYTES}")
    return meta


def decode_tags(meta: bytes) -> dict[str, str]:
    """Decode node metadata produced by ``encode_tags``."""
    if not meta:
        return {}
    if meta[0] != TAGS_MAGIC:
        raise RemoteProtocolError("meta: missing tags magic byte")
    obj = _unpack_body(meta[1:], "meta")
    if not isinstance(obj, dict) or len(obj) > MAX_TAGS:
        raise RemoteProtocolError("meta: tags must be a map of at most 64 entries")
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise RemoteProtocolError("meta: tag keys and values must be strings")
    return obj


# ----------------------------------------------------------------------------- decoding


def _unpack_body(data: bytes, what: str) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)
    except UNPACK_ERRORS as exc:
        raise RemoteProtocolError(f"{what}: malformed msgpack body ({type(exc).__name__})") from exc


def _fields(body: Any, n: int, what: str) -> list[Any]:
    if not isinstance(body, list) or len(body) != n:
        raise RemoteProtocolError(f"{what}: body must be an array of {n} fields")
    return body


def _u32(v: Any, what: str) -> int:
    if type(v) is not int or not 0 <= v <= MAX_U32:
        raise RemoteProtocolError(f"{what}: expected an unsigned 32-bit integer, got {v!r:.40}")
    return v


def _str(v: Any, what: str, limit: int = MAX_NAME_BYTES, *, empty: bool = False) -> str:
    if not isinstance(v, str) or (not v and not empty) or len(v.encode()) > limit:
        raise RemoteProtocolError(f"{what}: expected a non-empty string of at most {limit} bytes")
    return v


def _bin(v: Any, what: str, limit: int) -> bytes:
    if not isinstance(v, bytes) or len(v) > limit:
        raise RemoteProtocolError(f"{what}: expected bytes of at most {limit}")
    return v


def _address(v: Any, what: str) -> Address:
    if not isinstance(v, list) or len(v) != 2:
        raise RemoteProtocolError(f"{what}: address must be [host, port]")
    host = _str(v[0], what, MAX_HOST_BYTES)
    port = v[1]
    if type(port) is not int or not 0 < port < 65536:
        raise RemoteProtocolError(f"{what}: port must be 1..65535")
    return (host, port)


def _bool(v: Any, what: str) -> bool:
    if type(v) is not bool:
        raise RemoteProtocolError(f"{what}: expected a boolean")
    return v


def _decode_ping(b: Any) -> Ping:
    f = _fields(b, 4, "ping")
    src = _address(f[2], "ping.source_addr")
    return Ping(seq=_u32(f[0], "ping.seq"), node=_str(f[1], "ping.node", empty=True),
                source_addr=src, source_node=_str(f[3], "ping.source_node"))  # fmt: skip


def _decode_ping_req(b: Any) -> PingReq:
    f = _fields(b, 6, "ping-req")
    return PingReq(
        seq=_u32(f[0], "ping-req.seq"),
        node=_str(f[1], "ping-req.node"),
        target=_address(f[2], "ping-req.target"),
        nack=_bool(f[3], "ping-req.nack"),
        source_addr=_address(f[4], "ping-req.source_addr"),
        source_node=_str(f[5], "ping-req.source_node"),
    )


def _decode_ack(b: Any) -> Ack:
    f = _fields(b, 2, "ack")
    return Ack(seq=_u32(f[0], "ack.seq"), payload=_bin(f[1], "ack.payload", MAX_ACK_PAYLOAD_BYTES))


def _decode_nack(b: Any) -> Nack:
    return Nack(seq=_u32(_fields(b, 1, "nack")[0], "nack.seq"))


def _decode_suspect(b: Any) -> Suspect:
    f = _fields(b, 3, "suspect")
    return Suspect(incarnation=_u32(f[0], "suspect.incarnation"),
                   node=_str(f[1], "suspect.node"), accuser=_str(f[2], "suspect.accuser"))  # fmt: skip


def _decode_alive(b: Any) -> Alive:
    f = _fields(b, 4, "alive")
    return Alive(
        incarnation=_u32(f[0], "alive.incarnation"),
        node=_str(f[1], "alive.node"),
        addr=_address(f[2], "alive.addr"),
        meta=_bin(f[3], "alive.meta", MAX_META_BYTES),
    )


def _decode_dead(b: Any) -> Dead:
    f = _fields(b, 3, "dead")
    return Dead(incarnation=_u32(f[0], "dead.incarnation"),
                node=_str(f[1], "dead.node"), accuser=_str(f[2], "dead.accuser"))  # fmt: skip


def _decode_push_entry(e: Any) -> PushNodeState:
    # Fast path for well-formed entries (push-pulls carry thousands); anything odd
    # falls through to the field-by-field checks that name the offending field.
    if type(e) is list and len(e) == 5:
        name, addr, meta, inc, code = e
        if (
            type(name) is str
            and 0 < len(name) <= MAX_NAME_BYTES // 4
            and type(addr) is list
            and len(addr) == 2
            and type(addr[0]) is str
            and 0 < len(addr[0]) <= MAX_HOST_BYTES // 4
            and type(addr[1]) is int
            and 0 < addr[1] < 65536
            and type(meta) is bytes
            and len(meta) <= MAX_META_BYTES
            and type(inc) is int
            and 0 <= inc <= MAX_U32
            and code in _CODE_STATUS
            and type(code) is int
        ):
            return PushNodeState(name=name, addr=(addr[0], addr[1]), meta=meta,
                                 incarnation=inc, status=_CODE_STATUS[code])  # fmt: skip
    f = _fields(e, 5, "push-pull.node")
    status = _CODE_STATUS.get(f[4]) if type(f[4]) is int else None
    if status is None:
        raise RemoteProtocolError(f"push-pull.node.status: unknown state {f[4]!r:.20}")
    return PushNodeState(
        name=_str(f[0], "push-pull.node.name"),
        addr=_address(f[1], "push-pull.node.addr"),
        meta=_bin(f[2], "push-pull.node.meta", MAX_META_BYTES),
        incarnation=_u32(f[3], "push-pull.node.incarnation"),
        status=status,
    )


def _decode_push_pull(b: Any, memo: dict[tuple[Any, ...], PushNodeState] | None = None) -> PushPull:
    f = _fields(b, 3, "push-pull")
    if not isinstance(f[1], list) or len(f[1]) > MAX_PUSH_NODES:
        raise RemoteProtocolError(f"push-pull.nodes: expected an array of at most {MAX_PUSH_NODES}")
    if memo is None:
        nodes = tuple(_decode_push_entry(e) for e in f[1])
    else:
        nodes = tuple(_memo_push_entry(e, memo) for e in f[1])
    user = _bin(f[2], "push-pull.user_state", MAX_PUSH_STATE_BYTES)
    return PushPull(join=_bool(f[0], "push-pull.join"), nodes=nodes, user_state=user)


def _memo_push_entry(e: Any, memo: dict[tuple[Any, ...], PushNodeState]) -> PushNodeState:
    """``_decode_push_entry`` through a memo keyed by the entry's scalar fields.

    The same member entry arrives in every push-pull until it changes; validating and
    building it once is enough. Only fully hashable, well-shaped entries are memoised.
    """
    try:
        key = (e[0], e[1][0], e[1][1], e[2], e[3], e[4]) if len(e) == 5 and len(e[1]) == 2 else None
        hit = memo.get(key) if key is not None else None
    except (TypeError, IndexError, KeyError):
        key = hit = None
    if hit is not None:
        return hit
    node = _decode_push_entry(e)
    if key is not None and len(memo) < _ENTRY_MEMO_SIZE:
        memo[key] = node
    return node


#: Push-pull entries memoised per Decoder (one per member and incarnation is typical).
_ENTRY_MEMO_SIZE = 1 << 16


def _decode_err(b: Any) -> Err:
    return Err(error=_str(_fields(b, 1, "err")[0], "err.error", MAX_ERROR_BYTES, empty=True))


_BODY_DECODERS: dict[MessageType, Callable[[Any], Message]] = {
    MessageType.PING: _decode_ping,
    MessageType.PING_REQ: _decode_ping_req,
    MessageType.ACK: _decode_ack,
    MessageType.NACK: _decode_nack,
    MessageType.SUSPECT: _decode_suspect,
    MessageType.ALIVE: _decode_alive,
    MessageType.DEAD: _decode_dead,
    MessageType.PUSH_PULL: _decode_push_pull,
    MessageType.ERR: _decode_err,
}


class UnknownMessageType(RemoteProtocolError):
    """The type byte names no message we understand (counted apart from malformed input)."""


def decode(data: bytes, *, max_bytes: int = MAX_PUSH_STATE_BYTES) -> Message:
    """Decode one (non-compound) message or raise ``RemoteProtocolError``."""
    if not data:
        raise RemoteProtocolError("empty message")
    if len(data) > max_bytes:
        raise RemoteProtocolError(f"message of {len(data)} bytes exceeds {max_bytes}")
    kind = data[0]
    if kind == MessageType.USER:
        return User(payload=bytes(data[1:]))
    try:
        decoder = _BODY_DECODERS[MessageType(kind)]
    except (ValueError, KeyError):
        raise UnknownMessageType(f"unsupported message type {kind}") from None
    return decoder(_unpack_body(data[1:], MessageType(kind).name.lower()))


def decode_packet(data: bytes, *, max_bytes: int) -> list[tuple[Message, bytes]]:
    """Decode a datagram into ``(message, raw part)`` pairs; compounds nest at most once."""
    if len(data) > max_bytes:
        raise RemoteProtocolError(f"packet of {len(data)} bytes exceeds {max_bytes}")
    if data[:1] != b"\x07":
        return [(decode(data, max_bytes=max_bytes), data)]
    out = []
    for part in split_compound(data):
        if part[:1] == b"\x07":
            raise RemoteProtocolError("compound: nested compound message")
        out.append((decode(part, max_bytes=max_bytes), part))
    return out


class Decoder:
    """``decode`` with a bounded memo keyed by the raw bytes.

    Broadcasts are forwarded byte-for-byte, so one process that hosts many cores (the
    simulator) sees the same part thousands of times; messages are frozen, so sharing the
    decoded value is safe. A real node uses a small cache or ``Decoder(cache_size=0)``.
    """

    __slots__ = ("_cache", "_size", "_entries")

    def __init__(self, cache_size: int = 4096) -> None:
        self._cache: dict[bytes, Message] = {}
        self._size = cache_size
        self._entries: dict[tuple[Any, ...], PushNodeState] = {}

    def decode_stream(self, data: bytes) -> Message:
        """Decode one stream message; push-pull entries go through a memo."""
        if data[:1] != b"\x06" or not self._size:
            return decode(data, max_bytes=MAX_PUSH_STATE_BYTES)
        if len(data) > MAX_PUSH_STATE_BYTES:
            raise RemoteProtocolError(
                f"message of {len(data)} bytes exceeds {MAX_PUSH_STATE_BYTES}"
            )
        return _decode_push_pull(_unpack_body(data[1:], "push_pull"), self._entries)

    @property
    def memo(self) -> Mapping[bytes, Message]:
        """The memo itself, for a caller's fast-path lookup (read-only use)."""
        return self._cache

    def decode_part(self, part: bytes, max_bytes: int) -> Message:
        """Decode one part, using the memo for broadcast kinds."""
        msg = self._cache.get(part)
        if msg is not None:
            return msg
        msg = decode(part, max_bytes=max_bytes)
        if self._size and part[0] in _CACHEABLE:
            if len(self._cache) >= self._size:
                # FIFO eviction: cheap, and hot broadcasts are re-inserted on the next miss.
                del self._cache[next(iter(self._cache))]
            self._cache[part] = msg
        return msg

    def decode_packet(self, data: bytes, max_bytes: int) -> list[tuple[Message, bytes]]:
        """As ``decode_packet`` with memoised parts."""
        if len(data) > max_bytes:
            raise RemoteProtocolError(f"packet of {len(data)} bytes exceeds {max_bytes}")
        if data[:1] != b"\x07":
            return [(self.decode_part(data, max_bytes), data)]
        out = []
        for part in split_compound(data):
            if part[:1] == b"\x07" or not part:
                raise RemoteProtocolError("compound: empty or nested part")
            out.append((self.decode_part(part, max_bytes), part))
        return out


# Gossiped kinds are the ones repeated verbatim across the cluster.
_CACHEABLE = frozenset({MessageType.SUSPECT, MessageType.ALIVE, MessageType.DEAD})


def iter_encoded(msgs: Iterable[Message]) -> list[bytes]:
    """Encode several messages (test helper and convenience)."""
    return [encode(m) for m in msgs]
