"""pick_server tag rules, codec error mapping, cluster-wide keyring operations."""

from __future__ import annotations

import random
from types import MappingProxyType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.errors import CertificateExpired, InvalidRequest, NotFound, RemoteProtocolError, RPCError
from node.gossip.keyring import Keyring, encode_key
from node.gossip.messages import MemberStatus
from node.gossip.state import Member
from node.rpc.client import RPCClient
from node.rpc.codec import (
    RPCUnreachable,
    decode_reply,
    decode_request,
    encode_reply,
    error_from_wire,
    error_to_wire,
)
from node.rpc.keyops import KeyringOp, apply_keyring_op, keyring_handler, keyring_op_cluster
from node.rpc.routing import pick_server, rpc_targets, servers
from node.rpc.server import RPCServer

K1, K2, K3 = bytes(range(32)), bytes(range(32, 64)), bytes(range(16))


def member(name: str, host: str, status: MemberStatus = MemberStatus.ALIVE, **tags: str) -> Member:
    return Member(
        name=name,
        addr=(host, 8302),
        tags=MappingProxyType(dict(tags)),
        incarnation=1,
        status=status,
        status_since=0.0,
    )


MEMBERS = [
    member("s1.dc1", "10.0.0.1", dc="dc1", role="server", port="8300"),
    member("s2.dc1", "10.0.0.2", MemberStatus.SUSPECT, dc="dc1", role="server", port="8300"),
    member("s1.dc2", "10.0.1.1", dc="dc2", role="server", port="9300"),
    member("s2.dc2", "10.0.1.2", dc="dc2", role="server", port="9300"),
    member("s3.dc2", "10.0.1.3", MemberStatus.DEAD, dc="dc2", role="server", port="9300"),
    member("c1.dc2", "10.0.1.9", dc="dc2", role="node", port="9300"),
    member("bad.dc2", "10.0.1.8", dc="dc2", role="server", port="http"),
    member("zero.dc2", "10.0.1.7", dc="dc2", role="server", port="0"),
    member("s1.dc3", "10.0.2.1", MemberStatus.LEFT, dc="dc3", role="server", port="8300"),
]


def test_servers_filters_alive_servers_of_the_dc_with_valid_port() -> None:
    assert servers(MEMBERS, "dc1") == [("10.0.0.1", 8300)]
    assert servers(MEMBERS, "dc2") == [("10.0.1.1", 9300), ("10.0.1.2", 9300)]
    assert servers(MEMBERS, "dc3") == []


def test_rpc_targets_lists_every_alive_member_with_a_port() -> None:
    assert rpc_targets(MEMBERS) == {
        "s1.dc1": ("10.0.0.1", 8300),
        "s1.dc2": ("10.0.1.1", 9300),
        "s2.dc2": ("10.0.1.2", 9300),
        "c1.dc2": ("10.0.1.9", 9300),
    }


def test_pick_server_is_random_among_candidates_and_seedable() -> None:
    picks = {pick_server(MEMBERS, "dc2", random.Random(seed)) for seed in range(50)}
    assert picks == {("10.0.1.1", 9300), ("10.0.1.2", 9300)}
    assert pick_server(MEMBERS, "dc2", random.Random(7)) == pick_server(
        MEMBERS, "dc2", random.Random(7)
    )
    assert pick_server(MEMBERS, "dc3", random.Random(1)) is None
    assert pick_server(MEMBERS, "nope", random.Random(1)) is None


def test_codec_error_mapping() -> None:
    err = error_from_wire(error_to_wire(CertificateExpired("leaf expired")))
    assert type(err) is CertificateExpired and str(err) == "leaf expired"
    assert type(error_from_wire({"type": "SomethingNew", "message": "x"})) is RPCError
    assert type(error_from_wire({"type": "Exception", "message": "x"})) is RPCError
    assert "malformed remote error" in str(error_from_wire("junk"))
    assert type(error_from_wire(error_to_wire(RPCUnreachable("gone")))) is RPCUnreachable
    reply = decode_reply(encode_reply(3, error=NotFound("no such node")))
    assert reply.id == 3 and type(reply.error) is NotFound


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\x93\x01\x02\x03", "must be a map"),
        (b"\x81\xa2id\xa1x", "'id' must be an integer"),
        (b"\x82\xa2id\xc3\xa6method\xa1m", "'id' must be an integer"),
        (b"\x81\xa2id\x01", "'method' must be a non-empty string"),
        (b"\xc1", "malformed msgpack"),
    ],
)
def test_decode_request_rejects_bad_bodies(body: bytes, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        decode_request(body)


@given(st.binary(max_size=300))
def test_decoders_raise_only_remote_protocol_error_on_garbage(body: bytes) -> None:
    for decoder in (decode_request, decode_reply):
        try:
            decoder(body)
        except RemoteProtocolError:
            pass


def test_decode_reply_rejects_bad_bodies() -> None:
    with pytest.raises(RemoteProtocolError, match="integer 'id'"):
        decode_reply(b"\x01")
    with pytest.raises(RemoteProtocolError, match="neither 'result' nor 'error'"):
        decode_reply(b"\x81\xa2id\x01")


def test_apply_keyring_op_is_all_or_nothing() -> None:
    lan, wan = Keyring(K1), Keyring(K1)
    apply_keyring_op([lan, wan], KeyringOp.INSTALL, K2)
    assert lan.keys() == wan.keys() == (K1, K2)
    wan.remove(K2)  # make them disagree
    with pytest.raises(InvalidRequest, match="install it first"):
        apply_keyring_op([lan, wan], KeyringOp.USE, K2)
    assert lan.primary == K1  # nothing half-applied
    with pytest.raises(InvalidRequest, match="primary"):
        apply_keyring_op([lan, wan], KeyringOp.REMOVE, K1)


async def test_keyring_handler_validates_arguments() -> None:
    changes: list[int] = []
    handler = keyring_handler(lambda: [Keyring(K1)], lambda: changes.append(1))
    with pytest.raises(InvalidRequest, match="unknown keyring operation 'rotate'"):
        await handler({"op": "rotate"})
    with pytest.raises(InvalidRequest, match="needs a base64 key"):
        await handler({"op": "install"})
    with pytest.raises(InvalidRequest, match="16, 24 or 32 bytes"):
        await handler({"op": "install", "key": "AAAA"})
    with pytest.raises(InvalidRequest, match="must be a map"):
        await handler(["install"])
    assert (await handler({"op": "list"}))["keys"] == [encode_key(K1)]
    assert changes == []
    no_keys = keyring_handler(lambda: [], lambda: None)
    with pytest.raises(InvalidRequest, match="encryption is not enabled"):
        await no_keys({"op": "list"})


@pytest.mark.timeout(30)
async def test_cluster_wide_rotation_over_sealed_rpc() -> None:
    # Three nodes, each with LAN + WAN keyrings; node RPC is sealed with the LAN ring.
    rings = [(Keyring(K1), Keyring(K1)) for _ in range(3)]
    saved = [0, 0, 0]
    srvs = []
    for i, (lan, wan) in enumerate(rings):

        def on_change(i: int = i) -> None:
            saved[i] += 1

        srv = RPCServer({}, lambda lan=lan: lan)
        srv.add_handler(
            "Keyring.Op", keyring_handler(lambda lan=lan, wan=wan: [lan, wan], on_change)
        )
        await srv.start("127.0.0.1", 0)
        srvs.append(srv)
    try:
        operator = rings[0][0]
        client = RPCClient(lambda: operator)
        targets = {f"n{i}": s.addr for i, s in enumerate(srvs)}
        for op, key in [
            (KeyringOp.INSTALL, K2),
            (KeyringOp.USE, K2),
            (KeyringOp.REMOVE, K1),
        ]:
            report = await keyring_op_cluster(client, targets, op, encode_key(key), timeout=5)
            assert report.failures == {}, report.failures
        listing = await keyring_op_cluster(client, targets, KeyringOp.LIST, None, timeout=5)
        assert listing.key_counts == {encode_key(K2): 3}
        assert set(listing.primary.values()) == {encode_key(K2)}
        for lan, wan in rings:
            assert lan.keys() == wan.keys() == (K2,)
        assert saved == [3, 3, 3]
        # an outsider still on the old key is now refused
        with pytest.raises(RPCUnreachable):
            await RPCClient(lambda: Keyring(K1)).call(
                srvs[1].addr, "Keyring.Op", {"op": "list"}, timeout=5
            )
        # a bad op is reported per node, not raised
        report = await keyring_op_cluster(
            client, targets, KeyringOp.REMOVE, encode_key(K2), timeout=5
        )
        assert set(report.failures) == {"n0", "n1", "n2"}
        assert "InvalidRequest: removing the primary key is not allowed" in report.failures["n1"]
        # an unreachable node is a failure entry too
        await srvs[2].close()
        report = await keyring_op_cluster(client, targets, KeyringOp.LIST, None, timeout=2)
        assert set(report.keys) == {"n0", "n1"} and "RPCUnreachable" in report.failures["n2"]
    finally:
        for srv in srvs:
            await srv.close()
