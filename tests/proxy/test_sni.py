"""ClientHello parsing: real hellos (Python ssl, openssl s_client), fragmentation, garbage, fuzzing."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.proxy.sni import MAX_HELLO_BYTES, HelloStatus, parse_client_hello

NAME = "api.default.dc2.internal.11111111-2222-3333-4444-555555555555.consul"


def python_hello(server_name: str | None, *, tls12: bool = False) -> bytes:
    """The first flight a Python ssl client sends, captured from a MemoryBIO."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def openssl_hello(args: list[str]) -> bytes:
    """Run ``openssl s_client`` against a listener that records what it receives."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl binary not installed")
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(10)
    got = bytearray()

    def record() -> None:
        conn, _ = srv.accept()
        conn.settimeout(5)
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            got.extend(chunk)
            if parse_client_hello(bytes(got)).status is not HelloStatus.NEED_MORE:
                break
        conn.close()

    t = threading.Thread(target=record)
    t.start()
    port = srv.getsockname()[1]
    cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args]
    subprocess.run(cmd, input=b"", capture_output=True, timeout=20, check=False)
    t.join(10)
    srv.close()
    return bytes(got)


def split_records(hello: bytes, size: int) -> bytes:
    """Re-frame one handshake record as several records of at most ``size`` bytes."""
    assert hello[0] == 22
    payload = hello[5 : 5 + int.from_bytes(hello[3:5], "big")]
    out = bytearray()
    for i in range(0, len(payload), size):
        part = payload[i : i + size]
        out += bytes([22, 3, 1]) + len(part).to_bytes(2, "big") + part
    return bytes(out)


@pytest.mark.parametrize("tls12", [False, True])
def test_parse_client_hello_python_ssl(tls12: bool) -> None:
    result = parse_client_hello(python_hello(NAME, tls12=tls12))
    assert result.status is HelloStatus.SNI
    assert result.server_name == NAME


def test_parse_client_hello_python_ssl_without_sni() -> None:
    result = parse_client_hello(python_hello(None))
    assert result.status is HelloStatus.NO_SNI
    assert result.server_name is None


@pytest.mark.parametrize("version", ["-tls1_3", "-tls1_2"])
def test_parse_client_hello_openssl_s_client(version: str) -> None:
    hello = openssl_hello([version, "-servername", NAME])
    result = parse_client_hello(hello)
    assert result.status is HelloStatus.SNI, result.reason
    assert result.server_name == NAME
    assert result.hello_bytes == len(hello)


def test_parse_client_hello_openssl_noservername() -> None:
    result = parse_client_hello(openssl_hello(["-noservername"]))
    assert result.status is HelloStatus.NO_SNI


def test_parse_client_hello_every_prefix_needs_more() -> None:
    hello = python_hello(NAME)
    for cut in range(len(hello)):
        assert parse_client_hello(hello[:cut]).status is HelloStatus.NEED_MORE, cut
    assert parse_client_hello(hello).server_name == NAME


@pytest.mark.parametrize("size", [1, 7, 64, 300])
def test_parse_client_hello_across_records(size: int) -> None:
    hello = split_records(python_hello(NAME), size)
    for cut in range(0, len(hello), 13):
        assert parse_client_hello(hello[:cut]).status is HelloStatus.NEED_MORE
    result = parse_client_hello(hello)
    assert (result.status, result.server_name) == (HelloStatus.SNI, NAME)
    assert result.hello_bytes == len(hello)


def test_parse_client_hello_ignores_bytes_after_hello() -> None:
    hello = python_hello(NAME)
    result = parse_client_hello(hello + b"\x17\x03\x03\x00\x05hello")
    assert result.server_name == NAME
    assert result.hello_bytes == len(hello)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "record type 71 is not handshake"),
        (b"\x80\x2e\x01\x03\x01", "SSLv2-style hello"),
        (b"\x16\x03\x01\x00\x00", "empty handshake record"),
        (b"\x16\x09\x01\x00\x10", "unknown record version 9.1"),
        (b"\x16\x03\x01\x50\x00", "exceeds 16384"),
        (b"\x16\x03\x01\x00\x04\x02\x00\x00\x00", "not ClientHello"),
        (b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x03", "malformed ClientHello: truncated"),
    ],
)
def test_parse_client_hello_garbage(data: bytes, reason: str) -> None:
    result = parse_client_hello(data)
    assert result.status is HelloStatus.ERROR
    assert reason in result.reason


def test_parse_client_hello_rejects_bad_host_characters() -> None:
    hello = python_hello("a" * len("bad_name!"))
    evil = hello.replace(b"a" * len("bad_name!"), b"bad\x00name!")
    result = parse_client_hello(evil)
    assert result.status is HelloStatus.ERROR
    assert "host_name has characters" in result.reason


def test_parse_client_hello_bounded() -> None:
    # A handshake message that announces itself larger than the bound is refused at once.
    huge = b"\x16\x03\x01\x40\x00\x01\x01\x00\x00"
    result = parse_client_hello(huge)
    assert result.status is HelloStatus.ERROR
    assert "larger than" in result.reason
    # Many small records that never finish the message stop at the bound, too.
    small_records = (b"\x16\x03\x01\x00\x04\x01\x00\xff\xff") + b"\x16\x03\x01\x00\x01\x00" * 4000
    result = parse_client_hello(small_records, max_bytes=MAX_HELLO_BYTES)
    assert result.status is HelloStatus.ERROR


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_parse_client_hello_fuzz_random_bytes(data: bytes) -> None:
    result = parse_client_hello(data)
    assert result.status in HelloStatus
    if result.status is HelloStatus.ERROR:
        assert result.reason


_HELLO = python_hello(NAME)


@settings(max_examples=300, deadline=None)
@given(st.integers(5, len(_HELLO) - 1), st.integers(0, 255))
def test_parse_client_hello_fuzz_mutated(index: int, value: int) -> None:
    mutated = _HELLO[:index] + bytes([value]) + _HELLO[index + 1 :]
    result = parse_client_hello(mutated)
    assert result.status in HelloStatus
    if result.status is HelloStatus.SNI:
        assert result.server_name is not None and 0 < len(result.server_name) <= 255


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 200), min_size=1, max_size=30))
def test_parse_client_hello_fuzz_split_points(sizes: list[int]) -> None:
    # Feeding the hello in arbitrary TCP-read sizes: NEED_MORE until complete, then SNI.
    buf = b""
    pos = 0
    for size in sizes:
        buf = _HELLO[: pos + size]
        pos += size
        result = parse_client_hello(buf)
        if len(buf) < len(_HELLO):
            assert result.status is HelloStatus.NEED_MORE
        else:
            assert result.server_name == NAME
            break


# Hellos as real clients send them, one handshake record each: several names (and
# none), from TLS 1.3 and TLS 1.2-only contexts.
_REAL_HELLOS = [
    python_hello(name, tls12=tls12)
    for name in (NAME, "a.b", "Web.Example.COM.", None)
    for tls12 in (False, True)
]


def frame(payload: bytes, sizes: list[int], head: bytes = b"\x16\x03\x01") -> bytes:
    """Records with header ``head`` carrying ``payload`` in pieces of ``sizes`` (cycled)."""
    out = bytearray()
    pos = i = 0
    while pos < len(payload):  # bounded: every piece is at least one byte
        part = payload[pos : pos + sizes[i % len(sizes)]]
        out += head + len(part).to_bytes(2, "big") + part
        pos += len(part)
        i += 1
    return bytes(out)


# Record type and version bytes: mostly valid, some each of the record checks rejects.
_RECORD_HEADS = [b"\x16\x03\x01"] * 6 + [
    b"\x16\x03\x03",
    b"\x16\x03\x04",
    b"\x16\x03\x05",
    b"\x16\x02\x01",
    b"\x17\x03\x01",
    b"\x80\x03\x01",
]


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(_REAL_HELLOS),
    st.sampled_from(_RECORD_HEADS),
    st.lists(st.integers(1, 600), min_size=1, max_size=8),
    st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=4),
    st.binary(max_size=8),
)
def test_parse_client_hello_single_record_and_reframed_agree(
    hello: bytes,
    head: bytes,
    sizes: list[int],
    mutations: list[tuple[int, int]],
    after: bytes,
) -> None:
    # The single-record form takes the in-place fast path; re-framed into several
    # records the same handshake bytes go through reassembly. Both must agree.
    # ``after`` is handshake data following the ClientHello in its last record.
    payload = bytearray(hello[5 : 5 + int.from_bytes(hello[3:5], "big")] + after)
    for index, value in mutations:
        payload[index % len(payload)] = value
    single = parse_client_hello(frame(bytes(payload), [len(payload)], head))
    framed = parse_client_hello(frame(bytes(payload), sizes, head))
    assert (single.status, single.server_name) == (framed.status, framed.server_name)
    body_walk = "malformed ClientHello:"
    if single.reason.startswith(body_walk) or framed.reason.startswith(body_walk):
        assert single.reason == framed.reason
    if not mutations and head == b"\x16\x03\x01":
        assert single.status in (HelloStatus.SNI, HelloStatus.NO_SNI)
