"""Read the server name out of a TLS ClientHello, from bytes only.

Rule: this module never touches a socket. The caller buffers whatever arrived and
calls ``parse_client_hello(buffer)`` again after every read; the answer is one of
``NEED_MORE`` (read more, up to ``MAX_HELLO_BYTES``), ``SNI`` (with the name),
``NO_SNI`` (a well-formed hello without a host_name) or ``ERROR`` (with a reason).
The parser is bounded: it never asks for more than ``MAX_HELLO_BYTES`` bytes of
records, so a peer cannot make the gateway buffer without limit.

It handles a hello split across TCP reads and across TLS records (the handshake
message is reassembled from consecutive handshake records, RFC 8446 §5.1), TLS 1.0
to 1.3 record versions, and rejects SSLv2-style hellos and anything that is not a
handshake record before the hello is complete.

A mesh gateway calls this once per accepted connection, so it is kept cheap: when
the first record holds the whole ClientHello (what real clients send) the body is
walked in place in the caller's bytes, with no copies and no record reassembly;
every other framing goes through the general path. Both paths hand the body to the
same walker, so they reach the same verdict for the same hello.
"""

from __future__ import annotations

import enum
import string
import struct
from typing import NamedTuple

__all__ = [
    "MAX_HELLO_BYTES",
    "HelloStatus",
    "HelloResult",
    "parse_client_hello",
]

# A real ClientHello is 200-2000 bytes (post-quantum key shares push it to ~1.8 KiB);
# 16 KiB of records covers every client we know while keeping a slow sender cheap.
MAX_HELLO_BYTES = 16 * 1024
# RFC 8446 §5.1: a record's plaintext length must not exceed 2^14.
MAX_RECORD_PAYLOAD = 1 << 14
# RFC 6066 §3: a DNS host name is at most 255 bytes.
MAX_SERVER_NAME = 255

_RECORD_HEADER = 5
_MAX_RECORD = _RECORD_HEADER + MAX_RECORD_PAYLOAD
_HANDSHAKE_HEADER = 4
_BODY = _RECORD_HEADER + _HANDSHAKE_HEADER  # where a single-record hello's body starts
_CONTENT_HANDSHAKE = 22
_HANDSHAKE_CLIENT_HELLO = 1
_EXT_SERVER_NAME = 0
_NAME_TYPE_HOST = 0
# One C call reads an extension's (type, length) header; four index reads with shifts
# cost more, and the extension walk is the loop that dominates a parse.
_EXT_HEADER = struct.Struct(">HH").unpack_from
_NAME_HEADER = struct.Struct(">BH").unpack_from  # name_type, length of one server name
_NAME_CHARS = (string.ascii_letters + string.digits + "-._").encode()
# Byte table: allowed host_name characters map to their lower case, all others to
# 0x80, which no ASCII string contains.
_LOWER_OR_FLAG = bytes((ord(chr(b).lower()) if b in _NAME_CHARS else 0x80) for b in range(256))


class HelloStatus(enum.Enum):
    """What a parse of the buffered bytes concluded."""

    NEED_MORE = "need_more"
    SNI = "sni"
    NO_SNI = "no_sni"
    ERROR = "error"


# A NamedTuple rather than the house frozen dataclass: it is just as immutable, and
# building one costs less than half as much, which counts on a per-connection path.
class HelloResult(NamedTuple):
    """Outcome of ``parse_client_hello``; ``server_name`` is set only for ``SNI``."""

    status: HelloStatus
    server_name: str | None = None
    reason: str = ""
    # Bytes of TLS records the hello occupied (known once it is complete).
    hello_bytes: int = 0


_NEED_MORE = HelloResult(status=HelloStatus.NEED_MORE)
# Aliases for the success path: looking up an enum member on its class, and the
# NamedTuple's keyword-handling constructor, each cost more than the tuple itself.
_SNI = HelloStatus.SNI
_NO_SNI = HelloStatus.NO_SNI
_new_result = tuple.__new__


class _Malformed(Exception):
    """Internal: the hello body is not valid; the message says what."""


def _error(reason: str) -> HelloResult:
    return HelloResult(status=HelloStatus.ERROR, reason=reason)


def parse_client_hello(data: bytes, *, max_bytes: int = MAX_HELLO_BYTES) -> HelloResult:
    """Parse the ClientHello at the start of ``data`` (the bytes received so far)."""
    # Fast path: the first record passes every check _reassemble would make, so while
    # it is still arriving the answer is NEED_MORE, and once it holds the whole
    # ClientHello (what real clients send) the body is walked in place in ``data``.
    if len(data) >= _BODY and data[0] == _CONTENT_HANDSHAKE and data[1] == 3 and data[2] <= 4:
        used = _RECORD_HEADER + ((data[3] << 8) | data[4])  # the first record's bytes
        if _BODY <= used <= max_bytes and used <= _MAX_RECORD:
            if used > len(data):
                return _NEED_MORE
            end = _BODY + ((data[6] << 16) | (data[7] << 8) | data[8])  # end of the hello
            if data[5] == _HANDSHAKE_CLIENT_HELLO and end <= used:
                return _conclude(data, _BODY, end, used)
    body_or_result = _reassemble(memoryview(data), max_bytes)
    if isinstance(body_or_result, HelloResult):
        return body_or_result
    message, need, used = body_or_result
    return _conclude(message, _HANDSHAKE_HEADER, need, used)


def _conclude(buf: bytes, start: int, end: int, used: int) -> HelloResult:
    """Result for the ClientHello body at ``buf[start:end]`` that took ``used`` record bytes."""
    try:
        name = _find_server_name(buf, _extensions_start(buf, start, end), end)
    except _Malformed as exc:
        return _error(f"malformed ClientHello: {exc}")
    if name is None:
        return _new_result(HelloResult, (_NO_SNI, None, "no server_name", used))
    return _new_result(HelloResult, (_SNI, name, "", used))


def _reassemble(data: memoryview, max_bytes: int) -> HelloResult | tuple[bytes, int, int]:
    """Join handshake records until the whole ClientHello message is present.

    Returns (message incl. its 4-byte header, end of the message in it, record bytes used).
    """
    fragments: list[bytes] = []
    have = 0
    need: int | None = None  # total handshake message length incl. its 4-byte header
    pos = 0
    while need is None or have < need:
        if len(data) - pos < _RECORD_HEADER:
            return _need_more_or_too_big(len(data), max_bytes)
        problem = _check_record_header(data[pos : pos + _RECORD_HEADER], first=pos == 0)
        if problem:
            return _error(problem)
        length = int.from_bytes(data[pos + 3 : pos + 5], "big")
        if pos + _RECORD_HEADER + length > max_bytes:
            return _error(f"ClientHello larger than {max_bytes} bytes")
        if len(data) - pos - _RECORD_HEADER < length:
            return _NEED_MORE
        fragments.append(bytes(data[pos + _RECORD_HEADER : pos + _RECORD_HEADER + length]))
        have += length
        pos += _RECORD_HEADER + length
        if need is None and have >= _HANDSHAKE_HEADER:
            head = b"".join(fragments)
            if head[0] != _HANDSHAKE_CLIENT_HELLO:
                return _error(f"first handshake message is type {head[0]}, not ClientHello")
            need = _HANDSHAKE_HEADER + int.from_bytes(head[1:4], "big")
            if need > max_bytes:
                return _error(f"ClientHello larger than {max_bytes} bytes")
    return b"".join(fragments), need, pos


def _need_more_or_too_big(have: int, max_bytes: int) -> HelloResult:
    if have >= max_bytes:
        return _error(f"ClientHello larger than {max_bytes} bytes")
    return _NEED_MORE


def _check_record_header(header: memoryview, *, first: bool) -> str:
    """Return why this record header cannot carry a ClientHello, or ''."""
    if header[0] != _CONTENT_HANDSHAKE:
        if first and header[0] & 0x80:
            return "SSLv2-style hello is not supported"
        return f"record type {header[0]} is not handshake (22)"
    if header[1] != 3 or header[2] > 4:
        return f"unknown record version {header[1]}.{header[2]}"
    length = int.from_bytes(header[3:5], "big")
    if length == 0:
        return "empty handshake record"
    if length > MAX_RECORD_PAYLOAD:
        return f"record length {length} exceeds {MAX_RECORD_PAYLOAD}"
    return ""


# Plain offset arithmetic on ``buf`` rather than a reader object or slices: this runs
# once per gateway connection, and the fast path hands us the received bytes unsliced.
def _extensions_start(buf: bytes, pos: int, end: int) -> int:
    """Check the ClientHello body ``buf[pos:end]`` (RFC 8446 §4.1.2) up to its extensions.

    Returns where the extension list starts, or ``end`` if the hello has none (legal
    in TLS 1.2 and older).
    """
    if end - pos < 35:
        raise _Malformed("truncated legacy_version/random")
    if buf[pos] != 3:
        raise _Malformed(f"client version {buf[pos]:#04x}{buf[pos + 1]:02x} is not TLS")
    size = buf[pos + 34]  # session_id length: inside the 35 bytes checked above
    pos += 35 + size
    if pos > end:
        raise _Malformed("truncated session_id")
    if size > 32:
        raise _Malformed("session_id longer than 32 bytes")
    pos = _skip_suites_and_compression(buf, pos, end)
    if pos == end:
        return end
    return _filling_vector(buf, pos, end, "extensions", "trailing bytes after extensions")


def _filling_vector(buf: bytes, pos: int, end: int, what: str, trailing: str) -> int:
    """Check that the 2-byte length-prefixed vector at ``pos`` ends exactly at ``end``;
    returns where its contents start."""
    if pos + 2 > end:
        raise _Malformed(f"truncated {what} length")
    stop = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
    if stop > end:
        raise _Malformed(f"truncated {what}")
    if stop != end:
        raise _Malformed(trailing)
    return pos + 2


def _skip_suites_and_compression(buf: bytes, pos: int, end: int) -> int:
    """Offset past cipher_suites and compression_methods, checking both."""
    if pos + 2 > end:
        raise _Malformed("truncated cipher_suites length")
    size = (buf[pos] << 8) | buf[pos + 1]
    pos += 2 + size
    if pos > end:
        raise _Malformed("truncated cipher_suites")
    if size == 0 or size % 2:
        raise _Malformed("cipher_suites length must be even and non-zero")
    if pos >= end:
        raise _Malformed("truncated compression_methods length")
    size = buf[pos]
    pos += 1 + size
    if pos > end:
        raise _Malformed("truncated compression_methods")
    if size == 0:
        raise _Malformed("no compression methods")
    return pos


def _find_server_name(buf: bytes, pos: int, end: int) -> str | None:
    """Walk the extensions in ``buf[pos:end]``, parsing server_name where it occurs."""
    seen: dict[int, None] = {}  # a dict store is cheaper per extension than set.add
    name: str | None = None
    last = end - 4  # the last offset with room for an extension header
    while pos <= last:
        ext_type, size = _EXT_HEADER(buf, pos)
        start = pos + 4
        pos = start + size
        # No overrun test on the common path: an extension that overruns the block
        # always ends the loop and is reported below; it is tested here only where
        # the overrun must be reported instead of a duplicate or a bad server_name.
        if ext_type in seen:
            raise _Malformed(
                "truncated extension" if pos > end else f"duplicate extension {ext_type}"
            )
        seen[ext_type] = None
        if ext_type == _EXT_SERVER_NAME and pos <= end:
            name = _parse_server_name_ext(buf, start, pos)
    if pos != end:
        raise _Malformed("truncated extension" if pos > end else "truncated extension header")
    return name


def _parse_server_name_ext(buf: bytes, pos: int, end: int) -> str | None:
    """The host_name in the server_name extension body ``buf[pos:end]`` (RFC 6066 §3)."""
    pos = _filling_vector(
        buf, pos, end, "server_name_list", "trailing bytes in server_name extension"
    )
    host: str | None = None
    while pos < end:
        if pos + 3 > end:
            raise _Malformed("truncated host_name length")
        name_type, size = _NAME_HEADER(buf, pos)
        start = pos + 3
        pos = start + size
        if pos > end:
            raise _Malformed("truncated host_name")
        if name_type == _NAME_TYPE_HOST:
            if host is not None:
                raise _Malformed("more than one host_name")
            host = _validate_host(buf[start:pos])
    return host


def _validate_host(value: bytes) -> str:
    """The host name in canonical form (lower case, no trailing dot), or ``_Malformed``."""
    if not value:
        raise _Malformed("empty host_name")
    if len(value) > MAX_SERVER_NAME:
        raise _Malformed(f"host_name longer than {MAX_SERVER_NAME} bytes")
    # One pass both lower-cases and flags bytes outside the allowed set (as 0x80).
    lowered = value.translate(_LOWER_OR_FLAG)
    if not lowered.isascii():
        raise _Malformed("host_name has characters outside [A-Za-z0-9._-]")
    name = lowered.decode("ascii").rstrip(".")
    if not name:
        raise _Malformed("host_name is only dots")
    return name
