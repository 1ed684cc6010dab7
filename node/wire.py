"""msgpack encoding and length-prefixed framing with size limits.

Rule: every byte string that crosses a node boundary is decoded here first, and
anything malformed, truncated or oversized becomes ``RemoteProtocolError`` — never
another exception type. Frames on streams are ``[u32 big-endian length][payload]``.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from typing import Any

import msgpack

from node.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "MAX_FRAME_BYTES",
    "FRAME_HEADER",
    "pack",
    "unpack",
    "UNPACK_ERRORS",
    "frame",
    "parse_frame_header",
    "timestamp",
    "from_timestamp",
]

#: Largest frame any stream protocol accepts (push-pull state, RPC bodies).
MAX_FRAME_BYTES = 16 * 1024 * 1024
#: Bytes of the length prefix.
FRAME_HEADER = 4
_HEADER = struct.Struct(">I")


def pack(obj: Any) -> bytes:
    """Encode ``obj`` with msgpack (binary type for ``bytes``)."""
    try:
        return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as exc:
        raise LocalProtocolError(f"cannot encode: {exc}") from exc


#: What msgpack raises on garbage: ExtraData/FormatError/StackError/UnicodeDecodeError are
#: ValueErrors, unhashable map keys a TypeError, out-of-range ints an OverflowError.
UNPACK_ERRORS = (ValueError, TypeError, OverflowError, msgpack.UnpackException)


def unpack(data: bytes, *, max_bytes: int = MAX_FRAME_BYTES) -> Any:
    """Decode one msgpack object or raise ``RemoteProtocolError``."""
    if len(data) > max_bytes:
        raise RemoteProtocolError(f"message of {len(data)} bytes exceeds {max_bytes}")
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except UNPACK_ERRORS as exc:
        raise RemoteProtocolError(f"malformed msgpack: {type(exc).__name__}") from exc


def frame(payload: bytes) -> bytes:
    """Prefix ``payload`` with its length."""
    if len(payload) > MAX_FRAME_BYTES:
        raise LocalProtocolError(f"frame of {len(payload)} bytes exceeds {MAX_FRAME_BYTES}")
    return _HEADER.pack(len(payload)) + payload


def parse_frame_header(header: bytes, *, max_bytes: int = MAX_FRAME_BYTES) -> int:
    """Return the payload length announced by a 4-byte header, bounded by ``max_bytes``."""
    if len(header) != FRAME_HEADER:
        raise RemoteProtocolError("truncated frame header")
    (length,) = _HEADER.unpack(header)
    if length > max_bytes:
        raise RemoteProtocolError(f"frame of {length} bytes exceeds {max_bytes}")
    return int(length)


def timestamp(value: datetime | None) -> float | None:
    """An aware datetime as POSIX seconds for the wire (``None`` stays ``None``)."""
    return None if value is None else value.timestamp()


def from_timestamp(value: Any) -> datetime | None:
    """Inverse of ``timestamp``: POSIX seconds → aware UTC datetime (``None`` stays)."""
    return None if value is None else datetime.fromtimestamp(float(value), UTC)
