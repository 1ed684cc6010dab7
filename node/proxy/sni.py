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
"""

from __future__ import annotations

import enum
import string
from dataclasses import dataclass

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
_HANDSHAKE_HEADER = 4
_CONTENT_HANDSHAKE = 22
_HANDSHAKE_CLIENT_HELLO = 1
_EXT_SERVER_NAME = 0
_NAME_TYPE_HOST = 0
_NAME_CHARS = (string.ascii_letters + string.digits + "-._").encode()


class HelloStatus(enum.Enum):
    """What a parse of the buffered bytes concluded."""

    NEED_MORE = "need_more"
    SNI = "sni"
    NO_SNI = "no_sni"
    ERROR = "error"


@dataclass(frozen=True, slots=True, kw_only=True)
class HelloResult:
    """Outcome of ``parse_client_hello``; ``server_name`` is set only for ``SNI``."""

    status: HelloStatus
    server_name: str | None = None
    reason: str = ""
    # Bytes of TLS records the hello occupied (known once it is complete).
    hello_bytes: int = 0


_NEED_MORE = HelloResult(status=HelloStatus.NEED_MORE)


class _Malformed(Exception):
    """Internal: the hello body is not valid; the message says what."""


def _error(reason: str) -> HelloResult:
    return HelloResult(status=HelloStatus.ERROR, reason=reason)


def parse_client_hello(data: bytes, *, max_bytes: int = MAX_HELLO_BYTES) -> HelloResult:
    """Parse the ClientHello at the start of ``data`` (the bytes received so far)."""
    body_or_result = _reassemble(memoryview(data), max_bytes)
    if isinstance(body_or_result, HelloResult):
        return body_or_result
    body, used = body_or_result
    try:
        name = _server_name(body)
    except _Malformed as exc:
        return _error(f"malformed ClientHello: {exc}")
    if name is None:
        return HelloResult(status=HelloStatus.NO_SNI, reason="no server_name", hello_bytes=used)
    return HelloResult(status=HelloStatus.SNI, server_name=name, hello_bytes=used)


def _reassemble(data: memoryview, max_bytes: int) -> HelloResult | tuple[bytes, int]:
    """Join handshake records until the whole ClientHello message is present."""
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
    message = b"".join(fragments)
    return message[_HANDSHAKE_HEADER:need], pos


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


def _vector(body: bytes, pos: int, end: int, size: int, what: str) -> tuple[int, int]:
    """(start, stop) of the length-prefixed vector at ``pos``; ``_Malformed`` on overrun."""
    if pos + size > end:
        raise _Malformed(f"truncated {what} length")
    start = pos + size
    stop = start + int.from_bytes(body[pos:start], "big")
    if stop > end:
        raise _Malformed(f"truncated {what}")
    return start, stop


# Plain offset arithmetic rather than a reader object: this runs once per gateway
# connection, and allocation-free parsing keeps it a few microseconds.
def _server_name(body: bytes) -> str | None:
    """Walk the ClientHello body (RFC 8446 §4.1.2) to the server_name extension."""
    end = len(body)
    if end < 35:
        raise _Malformed("truncated legacy_version/random")
    if body[0] != 3:
        raise _Malformed(f"client version {body[0]:#04x}{body[1]:02x} is not TLS")
    start, pos = _vector(body, 34, end, 1, "session_id")
    if pos - start > 32:
        raise _Malformed("session_id longer than 32 bytes")
    start, pos = _vector(body, pos, end, 2, "cipher_suites")
    if pos == start or (pos - start) % 2:
        raise _Malformed("cipher_suites length must be even and non-zero")
    start, pos = _vector(body, pos, end, 1, "compression_methods")
    if pos == start:
        raise _Malformed("no compression methods")
    if pos == end:
        return None  # a hello without extensions is legal (TLS 1.2 and older)
    start, stop = _vector(body, pos, end, 2, "extensions")
    if stop != end:
        raise _Malformed("trailing bytes after extensions")
    return _find_server_name(body, start, stop)


def _find_server_name(body: bytes, pos: int, end: int) -> str | None:
    seen: set[int] = set()
    name: str | None = None
    while pos < end:
        if pos + 4 > end:
            raise _Malformed("truncated extension header")
        ext_type = (body[pos] << 8) | body[pos + 1]
        start = pos + 4
        pos = start + ((body[pos + 2] << 8) | body[pos + 3])
        if pos > end:
            raise _Malformed("truncated extension")
        if ext_type in seen:
            raise _Malformed(f"duplicate extension {ext_type}")
        seen.add(ext_type)
        if ext_type == _EXT_SERVER_NAME:
            name = _parse_server_name_ext(body, start, pos)
    return name


def _parse_server_name_ext(body: bytes, pos: int, end: int) -> str | None:
    start, stop = _vector(body, pos, end, 2, "server_name_list")
    if stop != end:
        raise _Malformed("trailing bytes in server_name extension")
    host: str | None = None
    pos = start
    while pos < stop:
        name_type = body[pos]
        value_start, pos = _vector(body, pos + 1, stop, 2, "host_name")
        if name_type == _NAME_TYPE_HOST:
            if host is not None:
                raise _Malformed("more than one host_name")
            host = _validate_host(body[value_start:pos])
    return host


def _validate_host(value: bytes) -> str:
    if not value:
        raise _Malformed("empty host_name")
    if len(value) > MAX_SERVER_NAME:
        raise _Malformed(f"host_name longer than {MAX_SERVER_NAME} bytes")
    if value.translate(None, _NAME_CHARS):  # anything left is outside the allowed set
        raise _Malformed("host_name has characters outside [A-Za-z0-9._-]")
    name = value.decode("ascii").lower().rstrip(".")
    if not name:
        raise _Malformed("host_name is only dots")
    return name
