"""Keyring: key validation, AES-GCM envelope, rotation rules, persistence."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.errors import ConfigError, InvalidRequest, RemoteProtocolError
from node.gossip.keyring import (
    ENCRYPTION_OVERHEAD,
    ENCRYPTION_VERSION,
    NONCE_SIZE,
    Keyring,
    generate_key,
    open_keyring,
    parse_key,
)

K1 = bytes(range(32))
K2 = bytes(range(1, 17))
K3 = bytes(range(2, 26))


@pytest.mark.parametrize("size", [16, 24, 32])
def test_parse_key_accepts_aes_sizes(size: int) -> None:
    raw = bytes(range(size))
    assert parse_key(base64.b64encode(raw).decode()) == raw


@pytest.mark.parametrize("size", [0, 8, 15, 31, 33, 64])
def test_parse_key_rejects_other_sizes(size: int) -> None:
    with pytest.raises(InvalidRequest, match=f"16, 24 or 32 bytes.*got {size} bytes"):
        parse_key(base64.b64encode(bytes(size)).decode())


def test_parse_key_rejects_non_base64() -> None:
    with pytest.raises(InvalidRequest, match="not valid base64"):
        parse_key("not*base64!")


def test_generate_key_is_32_random_bytes() -> None:
    a, b = generate_key(), generate_key()
    assert len(parse_key(a)) == 32 and a != b


def test_envelope_layout_and_roundtrip() -> None:
    ring = Keyring(K1)
    sealed = ring.encrypt(b"hello", label=b"lan")
    assert sealed[0] == ENCRYPTION_VERSION
    assert len(sealed) == len(b"hello") + ENCRYPTION_OVERHEAD == 5 + 29
    assert ring.decrypt(sealed, label=b"lan") == b"hello"
    # A fresh nonce each time: equal plaintexts never produce equal envelopes.
    assert ring.encrypt(b"hello")[1 : 1 + NONCE_SIZE] != ring.encrypt(b"hello")[1 : 1 + NONCE_SIZE]


def test_wrong_key_is_refused() -> None:
    sealed = Keyring(K1).encrypt(b"secret")
    with pytest.raises(RemoteProtocolError, match="no installed keys could decrypt"):
        Keyring(K2).decrypt(sealed)


def test_wrong_label_is_refused() -> None:
    ring = Keyring(K1)
    with pytest.raises(RemoteProtocolError, match="no installed keys could decrypt"):
        ring.decrypt(ring.encrypt(b"x", label=b"packet"), label=b"stream")


def test_tampered_ciphertext_is_refused() -> None:
    ring = Keyring(K1)
    sealed = bytearray(ring.encrypt(b"payload"))
    sealed[-1] ^= 1
    with pytest.raises(RemoteProtocolError):
        ring.decrypt(bytes(sealed))


def test_short_and_unknown_version_are_refused() -> None:
    ring = Keyring(K1)
    with pytest.raises(RemoteProtocolError, match="shorter than the 29-byte envelope"):
        ring.decrypt(b"\x01abc")
    with pytest.raises(RemoteProtocolError, match="unsupported encryption version 0"):
        ring.decrypt(b"\x00" + bytes(40))


@given(st.binary(max_size=200))
def test_garbage_never_raises_anything_but_remote_protocol_error(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        Keyring(K1).decrypt(data)


def test_rotation_install_use_remove_keeps_both_sides_talking() -> None:
    a, b = Keyring(K1), Keyring(K1)
    # install the new key everywhere first: both still encrypt with K1
    a.install(K2)
    b.install(K2)
    assert a.primary == K1 and a.keys() == (K1, K2)
    # a switches before b: b can read a's K2 messages, a can read b's K1 messages
    a.use(K2)
    assert b.decrypt(a.encrypt(b"from a")) == b"from a"
    assert a.decrypt(b.encrypt(b"from b")) == b"from b"
    b.use(K2)
    a.remove(K1)
    b.remove(K1)
    assert a.keys() == b.keys() == (K2,)
    assert b.decrypt(a.encrypt(b"after")) == b"after"
    # a node still on the old key alone is now cut off
    with pytest.raises(RemoteProtocolError):
        Keyring(K1).decrypt(a.encrypt(b"x"))


def test_keyring_rules() -> None:
    ring = Keyring(K1, [K2])
    with pytest.raises(InvalidRequest, match="removing the primary key is not allowed"):
        ring.remove(K1)
    with pytest.raises(InvalidRequest, match="not in the keyring; install it first"):
        ring.use(K3)
    with pytest.raises(InvalidRequest, match="got 5 bytes"):
        ring.install(b"short")
    ring.install(K2)  # idempotent
    ring.remove(K3)  # unknown: idempotent
    assert ring.keys() == (K1, K2)
    assert "K1" not in repr(ring) and base64.b64encode(K1).decode() not in repr(ring)


def test_save_and_load_roundtrip(tmp_path) -> None:
    path = tmp_path / "serf" / "local.keyring"
    assert Keyring.load(path) is None
    ring = Keyring(K2, [K1, K3])
    ring.save(path)
    assert json.loads(path.read_text())[0] == base64.b64encode(K2).decode()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    loaded = Keyring.load(path)
    assert loaded is not None and loaded.keys() == (K2, K1, K3)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{nope", "not JSON"),
        (b"[]", "non-empty JSON list"),
        (b'{"a": 1}', "non-empty JSON list"),
        (b'["AAAA"]', "16, 24 or 32 bytes"),
    ],
)
def test_load_rejects_bad_files_naming_the_file(tmp_path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.keyring"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as info:
        Keyring.load(path)
    assert str(path) in str(info.value)


def test_open_keyring_file_wins_over_encrypt(tmp_path) -> None:
    path = tmp_path / "serf" / "local.keyring"
    assert open_keyring(path, None) == (None, None)
    assert not path.exists()
    ring, warning = open_keyring(path, base64.b64encode(K1).decode())
    assert ring is not None and ring.keys() == (K1,) and warning is None
    assert Keyring.load(path).keys() == (K1,)  # type: ignore[union-attr]
    # a rotation was persisted; the config still says K1 ...
    ring.install(K2)
    ring.use(K2)
    ring.remove(K1)
    ring.save(path)
    again, warning = open_keyring(path, base64.b64encode(K1).decode())
    assert again is not None and again.keys() == (K2,)
    assert warning is not None and "ignoring the 'encrypt' key" in warning
    same, warning = open_keyring(path, base64.b64encode(K2).decode())
    assert same is not None and warning is None
    with pytest.raises(InvalidRequest, match="not valid base64"):
        open_keyring(tmp_path / "other", "???")
