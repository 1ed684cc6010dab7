"""Data-plane test helpers: genuine ClientHellos, a recording echo backend, a bounded read."""

from __future__ import annotations

import asyncio
import ssl


def client_hello(server_name: str | None) -> bytes:
    """A genuine ClientHello from Python's ssl (MemoryBIO), SNI = ``server_name``."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


class Backend:
    """A plain TCP server that records every byte and echoes it back."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.connections = 0
        self.eofs = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> Backend:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while data := await reader.read(65536):
                self.received += data
                writer.write(data)
                await writer.drain()
            self.eofs += 1
            writer.write(b"<bye>")
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def aclose(self) -> None:
        if self.server is not None:
            self.server.close()


async def read_until_closed(reader: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    """Everything the peer sends until it closes or resets (bounded by ``timeout``)."""
    out = bytearray()
    async with asyncio.timeout(timeout):
        try:
            while chunk := await reader.read(65536):
                out += chunk
        except ConnectionResetError:
            pass  # closed with unread data in flight: a reset is a close too
    return bytes(out)
