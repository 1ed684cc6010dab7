"""A tiny demo HTTP service: answers every request with its name and datacenter.

Used by the demo federation (Procfile) and the end-to-end tests as the app behind a
sidecar. Usage: ``python scripts/demo_app.py NAME DC HOST:PORT``.
"""

from __future__ import annotations

import asyncio
import signal
import sys

RESPONSE = (
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {length}\r\n"
    "Connection: keep-alive\r\n\r\n{body}"
)


async def _serve(name: str, dc: str, host: str, port: int) -> None:
    body = f"{name} in {dc}\n"
    reply = RESPONSE.format(length=len(body), body=body).encode()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                # Requests from the demo and the benchmark are small GETs without a body.
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    break
                writer.write(reply)
                await writer.drain()
                if b"connection: close" in head.lower():
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"demo app {name} ({dc}) listening on {host}:{port}", flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str]) -> int:
    """Serve ``NAME in DC`` on ``HOST:PORT`` until interrupted."""
    if len(argv) != 3:
        print("usage: demo_app.py NAME DC HOST:PORT", file=sys.stderr)
        return 2
    name, dc, addr = argv
    host, _, port = addr.rpartition(":")
    asyncio.run(_serve(name, dc, host, int(port)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
