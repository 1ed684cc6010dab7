"""Gossip/RPC encryption keys and the AES-GCM envelope.

Rule: one primary key encrypts; every installed key may decrypt (so a rotation
install → use → remove never cuts a member off). The primary cannot be removed.
Envelope (memberlist encryption version 1, no padding):
``[version u8 = 1][nonce 12][ciphertext][tag 16]``; the caller's ``label`` is the GCM
additional data, so a blob sealed for one context does not open in another.
Anything that fails to open is ``RemoteProtocolError`` — never acted on.
Pure apart from ``cryptography`` and the two file helpers ``save``/``load``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Iterable
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from node.errors import ConfigError, InvalidRequest, RemoteProtocolError
from node.persist import atomic_write, read_or_none

__all__ = [
    "ENCRYPTION_VERSION",
    "NONCE_SIZE",
    "TAG_SIZE",
    "ENCRYPTION_OVERHEAD",
    "KEY_SIZES",
    "Keyring",
    "parse_key",
    "encode_key",
    "generate_key",
    "LAN_KEYRING_FILE",
    "WAN_KEYRING_FILE",
    "open_keyring",
]

#: memberlist's encryptionVersion 1: AES-GCM without PKCS7 padding.
ENCRYPTION_VERSION = 1
NONCE_SIZE = 12
TAG_SIZE = 16
#: Bytes an envelope adds to its plaintext (memberlist: 29 for version 1).
ENCRYPTION_OVERHEAD = 1 + NONCE_SIZE + TAG_SIZE
#: AES-128, AES-192, AES-256 (memberlist ValidateKey).
KEY_SIZES = (16, 24, 32)
#: Where the agent keeps its keyrings, relative to ``data_dir`` (Consul's names).
LAN_KEYRING_FILE = "serf/local.keyring"
WAN_KEYRING_FILE = "serf/remote.keyring"


def parse_key(text: str | bytes) -> bytes:
    """Decode a standard-base64 key of 16, 24 or 32 bytes, or raise ``InvalidRequest``."""
    raw = text.encode("ascii", "replace") if isinstance(text, str) else text
    try:
        key = base64.b64decode(raw.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(f"encryption key is not valid base64: {exc}", field="key") from exc
    _check_size(key)
    return key


def encode_key(key: bytes) -> str:
    """Standard base64 of a raw key (the form users see and type)."""
    return base64.b64encode(key).decode("ascii")


def generate_key(size: int = 32) -> str:
    """A fresh random key in base64, as ``consul keygen`` prints (32 bytes by default)."""
    _check_size(b"\0" * size)
    return encode_key(os.urandom(size))


def _check_size(key: bytes) -> None:
    if len(key) not in KEY_SIZES:
        raise InvalidRequest(
            f"encryption key must be 16, 24 or 32 bytes (AES-128/192/256), got {len(key)} bytes",
            field="key",
        )


class Keyring:
    """An ordered set of AES keys; index 0 is the primary (used to encrypt)."""

    __slots__ = ("_keys", "_ciphers")

    def __init__(self, primary: bytes, others: Iterable[bytes] = ()) -> None:
        self._keys: list[bytes] = []
        self._ciphers: dict[bytes, AESGCM] = {}
        self.install(primary)
        for key in others:
            self.install(key)

    @classmethod
    def from_base64(cls, primary: str, others: Iterable[str] = ()) -> Keyring:
        """Build from user-facing base64 keys (each validated)."""
        return cls(parse_key(primary), [parse_key(k) for k in others])

    @property
    def primary(self) -> bytes:
        """The key that encrypts."""
        return self._keys[0]

    def keys(self) -> tuple[bytes, ...]:
        """All installed keys, primary first."""
        return tuple(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._ciphers

    def keys_base64(self) -> tuple[str, ...]:
        """All installed keys in base64, primary first."""
        return tuple(encode_key(k) for k in self._keys)

    def install(self, key: bytes) -> None:
        """Add ``key`` for decryption (idempotent; does not change the primary)."""
        _check_size(key)
        if key not in self._ciphers:
            self._keys.append(key)
            self._ciphers[key] = AESGCM(key)

    def use(self, key: bytes) -> None:
        """Make an installed ``key`` the primary."""
        if key not in self._ciphers:
            raise InvalidRequest(
                "requested key is not in the keyring; install it first", field="key"
            )
        self._keys.remove(key)
        self._keys.insert(0, key)

    def remove(self, key: bytes) -> None:
        """Forget ``key`` (idempotent for unknown keys); the primary cannot be removed."""
        if key == self._keys[0]:
            raise InvalidRequest("removing the primary key is not allowed", field="key")
        if key in self._ciphers:
            self._keys.remove(key)
            del self._ciphers[key]

    def encrypt(self, plaintext: bytes, label: bytes = b"") -> bytes:
        """Seal ``plaintext`` with the primary key; ``label`` is authenticated, not sent."""
        nonce = os.urandom(NONCE_SIZE)
        sealed = self._ciphers[self._keys[0]].encrypt(nonce, plaintext, label)
        return bytes((ENCRYPTION_VERSION,)) + nonce + sealed

    def decrypt(self, data: bytes, label: bytes = b"") -> bytes:
        """Open an envelope with any installed key, or raise ``RemoteProtocolError``."""
        if len(data) < ENCRYPTION_OVERHEAD:
            raise RemoteProtocolError(
                f"encrypted message of {len(data)} bytes is shorter than the {ENCRYPTION_OVERHEAD}-byte envelope"
            )
        if data[0] != ENCRYPTION_VERSION:
            raise RemoteProtocolError(f"unsupported encryption version {data[0]}")
        nonce, sealed = data[1 : 1 + NONCE_SIZE], data[1 + NONCE_SIZE :]
        for key in self._keys:
            try:
                return self._ciphers[key].decrypt(nonce, sealed, label)
            except InvalidTag:
                continue
        raise RemoteProtocolError("no installed keys could decrypt the message")

    def save(self, path: str | os.PathLike[str]) -> None:
        """Persist as a JSON list of base64 keys, primary first (atomic, mode 0600)."""
        atomic_write(path, json.dumps(list(self.keys_base64())).encode("utf-8"))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Keyring | None:
        """Read a keyring written by ``save``; ``None`` if the file does not exist."""
        data = read_or_none(path)
        if data is None:
            return None
        where = str(Path(path))
        try:
            keys = json.loads(data)
        except ValueError as exc:
            raise ConfigError(f"keyring file is not JSON: {exc}", file=where) from exc
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
            raise ConfigError(
                "keyring file must be a non-empty JSON list of base64 keys", file=where
            )
        try:
            return cls.from_base64(keys[0], keys[1:])
        except InvalidRequest as exc:
            raise ConfigError(str(exc), file=where) from exc

    def __repr__(self) -> str:
        # Never print key material.
        return f"Keyring(keys={len(self._keys)})"


def open_keyring(
    path: str | os.PathLike[str], encrypt: str | None
) -> tuple[Keyring | None, str | None]:
    """The keyring an agent starts with, and a warning to log (or ``None``).

    As Consul: a persisted keyring file wins over the ``encrypt`` setting (it holds the
    result of later rotations); without a file, ``encrypt`` seeds a new one, saved at once.
    """
    ring = Keyring.load(path)
    if ring is not None:
        if encrypt is not None and parse_key(encrypt) not in ring:
            return (
                ring,
                f"{path}: keyring file exists; ignoring the 'encrypt' key, which is not in it",
            )
        return ring, None
    if encrypt is None:
        return None, None
    ring = Keyring(parse_key(encrypt))
    ring.save(path)
    return ring, None
