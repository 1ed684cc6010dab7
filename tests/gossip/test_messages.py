"""Wire messages: round-trips, the append-only tag table, limits, and decoder fuzzing."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.errors import LocalProtocolError, RemoteProtocolError
from node.gossip import GossipConfig, GossipProtocol
from node.gossip.messages import (
    MAX_META_BYTES,
    Ack,
    Alive,
    Dead,
    Decoder,
    Err,
    MemberStatus,
    MessageType,
    Nack,
    Ping,
    PingReq,
    PushNodeState,
    PushPull,
    Suspect,
    UnknownMessageType,
    User,
    decode,
    decode_packet,
    decode_tags,
    encode,
    encode_tags,
    make_compound,
    split_compound,
)

SRC = ("10.0.0.2", 7946)
SAMPLES = [
    Ping(seq=1, node="b", source_addr=SRC, source_node="a"),
    Ping(seq=2, node="", source_addr=SRC, source_node="a"),
    PingReq(
        seq=7, node="c", target=("10.0.0.3", 7946), nack=True, source_addr=SRC, source_node="a"
    ),
    Ack(seq=4_294_967_295, payload=b"coords"),
    Nack(seq=9),
    Suspect(incarnation=3, node="c", accuser="a"),
    Alive(
        incarnation=1, node="c", addr=("::1", 8301), meta=encode_tags({"dc": "dc1", "role": "node"})
    ),
    Dead(incarnation=2, node="c", accuser="c"),
    PushPull(
        join=True,
        nodes=(
            PushNodeState(name="c", addr=SRC, meta=b"", incarnation=4, status=MemberStatus.SUSPECT),
        ),
        user_state=b"catalog",
    ),  # fmt: skip
    User(payload=b"\x00\x01opaque"),
    Err(error="nope"),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_encode_decode_round_trip(msg: object) -> None:
    assert decode(encode(msg)) == msg  # type: ignore[arg-type]


def test_MessageType_numbers_are_append_only() -> None:
    # Snapshot: these numbers are the protocol. Adding a member is fine; changing one is not.
    assert {t.name: t.value for t in MessageType} == {
        "PING": 0, "PING_REQ": 1, "ACK": 2, "SUSPECT": 3, "ALIVE": 4, "DEAD": 5,
        "PUSH_PULL": 6, "COMPOUND": 7, "USER": 8, "NACK": 11, "ERR": 13,
    }  # fmt: skip


def test_compound_round_trip_and_limits() -> None:
    parts = [encode(m) for m in SAMPLES[:6]]
    packet = make_compound(parts)
    assert split_compound(packet) == parts
    assert [m for m, _ in decode_packet(packet, max_bytes=1400)] == SAMPLES[:6]
    with pytest.raises(LocalProtocolError, match="exceeds 255"):
        make_compound([b"\x0b\x91\x01"] * 256)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty message"),
        (b"\x63\x90", "unsupported message type 99"),
        (b"\x00\xc1", "ping: malformed msgpack"),
        (b"\x02\x91\x01", "ack: body must be an array of 2"),
        (b"\x03\x93\xff\xa1x\xa1y", "suspect.incarnation"),
        (b"\x04\x94\x01\xa1x\x92\xa1h\xce\x00\x01\x00\x00\xc4\x00", "alive.addr: port"),
        (b"\x07\x02\x00\x05", "compound: truncated"),
    ],
)
def test_decode_errors_name_what_was_wrong(data: bytes, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        decode_packet(data, max_bytes=1400)


def test_unknown_type_is_its_own_error() -> None:
    with pytest.raises(UnknownMessageType):
        decode(b"\x09anything")  # memberlist's compress framing: not produced, not accepted


def test_tags_round_trip_and_bounds() -> None:
    tags = {"dc": "dc1", "port": "8300"}
    assert decode_tags(encode_tags(tags)) == tags
    assert encode_tags({}) == b""
    with pytest.raises(LocalProtocolError, match=f"limit {MAX_META_BYTES}"):
        encode_tags({"big": "x" * 600})
    with pytest.raises(RemoteProtocolError, match="magic"):
        decode_tags(b"\x81\xa1a\xa1b")


def _core() -> GossipProtocol:
    return GossipProtocol(config=GossipConfig.lan(), name="a", addr=("10.0.0.1", 7946), tags={},
                          rng=random.Random(0), now=0.0)  # fmt: skip


def _dropped(p: GossipProtocol) -> int:
    return sum(v for k, v in p.stats.items() if k.startswith("dropped_"))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_receive_packet_never_raises_on_garbage(data: bytes) -> None:
    p = _core()
    p.receive_packet(data, SRC, 1.0)
    p.receive_stream(data, SRC, 1.0)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(SAMPLES[:7]), st.data())
def test_truncated_packets_are_dropped_and_counted(msg: object, data: st.DataObject) -> None:
    raw = make_compound([encode(msg), encode(Nack(seq=1))])  # type: ignore[arg-type]
    cut = data.draw(st.integers(1, len(raw) - 1))
    p = _core()
    assert p.receive_packet(raw[:cut], SRC, 1.0) == [] or _dropped(p) == 0
    assert _dropped(p) >= 1


def test_oversized_and_unknown_packets_are_counted() -> None:
    p = _core()
    assert p.receive_packet(b"\x04" + b"\x00" * 70_000, SRC, 1.0) == []
    assert p.stats["dropped_oversized"] == 1
    p.receive_packet(b"\x63\x90", SRC, 1.0)
    assert p.stats["dropped_unknown_type"] == 1
    reply, actions = p.receive_stream(b"\x63", SRC, 1.0)
    assert decode(reply or b"") == Err(error="unsupported message type 99")
    assert actions == []


def test_Decoder_memo_shares_gossiped_messages_only() -> None:
    d = Decoder(cache_size=2)
    part = encode(SAMPLES[5])
    assert d.decode_part(part, 1400) is d.decode_part(bytes(part), 1400)
    ping = encode(SAMPLES[0])
    assert d.decode_part(ping, 1400) is not d.decode_part(ping, 1400)
    for i in range(5):
        d.decode_part(encode(Suspect(incarnation=i, node="n", accuser="m")), 1400)
    assert len(d.memo) <= 2
