"""``meshnode connect gateway``: register a mesh gateway on the local node and watch it.

Rule: like ``consul connect envoy -mesh-gateway -register``, the command registers the
gateway service through the node's HTTP API and then stays in the foreground, printing
a status line every ``-status-interval`` until SIGINT/SIGTERM (exit 0, the registration
is left in place, as Consul does); ``-detach`` registers and returns. The listeners
themselves run inside the node (its proxy manager), so the gateway keeps serving while
this command is not running and comes back with the node after a restart.

Registration (reference/consul-connect.md §2.2): ``Kind = "mesh-gateway"``, the LAN
address as ``Address``/``Port`` and tagged ``lan``, the WAN address tagged ``wan`` (its
port defaults to the LAN port; both default to port 443), the "Mesh Gateway Listening"
TCP check (10 s, ``-deregister-after-critical``, default 6h). ``-bind-address`` names
extra listeners (``envoy_mesh_gateway_bind_addresses``, no default bind); without it,
when both addresses are IPs of this host, both are bound
(``envoy_mesh_gateway_bind_tagged_addresses``).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from node.errors import NodeError

__all__ = [
    "DEFAULT_GATEWAY_PORT",
    "configure",
    "run",
    "parse_gateway_addr",
    "gateway_registration",
    "status_line",
]

DEFAULT_GATEWAY_PORT = 443  # Consul's DefaultMeshGatewayPort
AGENT_WAIT = 30.0  # seconds the command waits for the local node to answer
AGENT_RETRY = 0.5  # seconds between attempts while waiting
CHECK_NAME = "Mesh Gateway Listening"


class GatewayCommandError(NodeError):
    """A bad flag value or a node that never answered (the CLI prints it as one line)."""


def parse_gateway_addr(text: str, *, flag: str, default_port: int) -> tuple[str, int]:
    """``IP``, ``IP:PORT`` or ``[IPv6]:PORT`` → (ip, port); errors name the flag."""
    host, port = text, default_port
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            port = _port(rest.removeprefix(":"), flag, text)
    elif text.count(":") == 1:
        host, raw = text.split(":")
        port = _port(raw, flag, text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise GatewayCommandError(f"-{flag} {text!r}: {host!r} is not an IP address") from None
    return host, port


def _port(raw: str, flag: str, text: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise GatewayCommandError(f"-{flag} {text!r}: port must be 1-65535")
    return int(raw)


def _bind_address(text: str) -> tuple[str, tuple[str, int]]:
    name, sep, addr = text.partition("=")
    if not sep or not name:
        raise GatewayCommandError(f"-bind-address {text!r}: expected NAME=IP:PORT")
    return name, parse_gateway_addr(addr, flag="bind-address", default_port=DEFAULT_GATEWAY_PORT)


def is_local_ip(ip: str) -> bool:
    """Whether this host can bind ``ip`` (Consul checks the same before binding both)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((ip, 0))
        except OSError:
            return False
    return True


def gateway_registration(
    *,
    service: str,
    lan: tuple[str, int],
    wan: tuple[str, int],
    binds: dict[str, tuple[str, int]],
    deregister_after: str,
    is_local: Callable[[str], bool] = is_local_ip,
) -> dict[str, Any]:
    """The ``/v1/agent/service/register`` body for a mesh gateway."""
    config: dict[str, Any] = {}
    if binds:
        config["envoy_mesh_gateway_no_default_bind"] = True
        config["envoy_mesh_gateway_bind_addresses"] = {
            name: {"Address": ip, "Port": port} for name, (ip, port) in sorted(binds.items())
        }
    elif is_local(lan[0]) and is_local(wan[0]):
        config["envoy_mesh_gateway_no_default_bind"] = True
        config["envoy_mesh_gateway_bind_tagged_addresses"] = True
    check_host = lan[0] if lan[0] not in ("0.0.0.0", "::") else "127.0.0.1"
    check_target = f"[{check_host}]:{lan[1]}" if ":" in check_host else f"{check_host}:{lan[1]}"
    return {
        "Kind": "mesh-gateway",
        "ID": service,
        "Name": service,
        "Address": lan[0],
        "Port": lan[1],
        "TaggedAddresses": {
            "lan": {"Address": lan[0], "Port": lan[1]},
            "wan": {"Address": wan[0], "Port": wan[1]},
        },
        "Proxy": {"Config": config},
        "Check": {
            "Name": CHECK_NAME,
            "TCP": check_target,
            "Interval": "10s",
            "DeregisterCriticalServiceAfter": deregister_after,
        },
    }


def configure(p: argparse.ArgumentParser) -> None:
    """The command's flags (single-dash like Consul's; double-dash works too)."""

    def flag(name: str, **kw: Any) -> None:
        p.add_argument(f"-{name}", f"--{name}", **kw)

    flag("register", action="store_true", help="register the gateway service first")
    flag("service", default="mesh-gateway", help="gateway service name (and ID)")
    flag("address", default="", help="LAN address IP:PORT (default port 443)")
    flag("wan-address", dest="wan_address", default="", help="WAN address IP:PORT")
    flag("bind-address", dest="bind_addresses", action="append", default=[],
         help="extra listener NAME=IP:PORT (repeatable; disables the default bind)")  # fmt: skip
    flag("deregister-after-critical", dest="deregister_after", default="6h",
         help="remove the gateway after its check is critical this long")  # fmt: skip
    flag("detach", action="store_true", help="register and exit instead of staying up")
    flag("status-interval", dest="status_interval", type=float, default=5.0,
         help="seconds between status lines")  # fmt: skip
    flag("wait-agent", dest="wait_agent", type=float, default=AGENT_WAIT,
         help="seconds to wait for the local node to answer")  # fmt: skip


def _registration_from_args(args: argparse.Namespace) -> dict[str, Any]:
    if not args.address:
        raise GatewayCommandError("-register needs -address IP:PORT")
    lan = parse_gateway_addr(args.address, flag="address", default_port=DEFAULT_GATEWAY_PORT)
    wan = (
        parse_gateway_addr(args.wan_address, flag="wan-address", default_port=lan[1])
        if args.wan_address
        else lan
    )
    binds = dict(_bind_address(b) for b in args.bind_addresses)
    return gateway_registration(
        service=args.service, lan=lan, wan=wan, binds=binds, deregister_after=args.deregister_after
    )


def wait_for_agent(client: Any, timeout: float, stop: threading.Event) -> None:
    """Retry ``/v1/agent/self`` until the node answers (bounded by ``timeout``)."""
    deadline = time.monotonic() + timeout
    last = ""
    while not stop.is_set():
        try:
            client.get("/v1/agent/self")
            return
        except Exception as exc:  # the CLIError of an unreachable node: retry until the bound
            last = str(exc)
        if time.monotonic() >= deadline:
            break
        stop.wait(AGENT_RETRY)
    raise GatewayCommandError(f"the local node did not answer within {timeout:g}s: {last}")


def status_line(service: str, metrics: Any, checks: Any) -> str:
    """One line: listening addresses, connections, bytes and the service's health."""
    rows = [r for r in (metrics or {}).get("Listeners", []) if r.get("Proxy") == service]
    addrs = ", ".join(r.get("Address") or "(stopped)" for r in rows)
    where = f"listening on {addrs}" if addrs else "not listening yet"
    active = sum(r.get("ConnectionsActive", 0) for r in rows)
    opened = sum(r.get("ConnectionsOpened", 0) for r in rows)
    rejected = sum(sum(r.get("Rejections", {}).values()) for r in rows)
    bytes_in = sum(r.get("BytesIn", 0) for r in rows)
    bytes_out = sum(r.get("BytesOut", 0) for r in rows)
    mine = [c for c in (checks or {}).values() if c.get("ServiceID") == service]
    worst = "passing"
    for c in mine:
        if c.get("Status") != "passing":
            worst = f"{c.get('Status')} ({c.get('Name')}: {c.get('Output', '')})"
            break
    return (
        f"{service}: {where}; connections {active} active, {opened} total, "
        f"{rejected} rejected; {bytes_in} bytes in, {bytes_out} bytes out; health {worst}"
    )


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread (tests): no handler
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(ctx: Any) -> int:
    """Register (with ``-register``), then print status until a signal (or ``-detach``)."""
    args = ctx.args
    client = ctx.client()
    stop = threading.Event()
    with _stop_on_signals(stop):
        body = _registration_from_args(args) if args.register else None
        wait_for_agent(client, args.wait_agent, stop)
        if stop.is_set():
            return 0
        if body is not None:
            client.put("/v1/agent/service/register", body)
            where = f"{body['Address']}:{body['Port']}"
            ctx.say(f"Registered mesh gateway {args.service!r} at {where}")
        else:
            client.get(f"/v1/agent/service/{args.service}")  # fails clearly if unknown
        if not args.detach:
            _watch(ctx, client, args, stop)
    return 0


def _watch(ctx: Any, client: Any, args: argparse.Namespace, stop: threading.Event) -> None:
    interval = max(0.1, args.status_interval)
    while not stop.is_set():
        try:
            line = status_line(
                args.service, client.get("/v1/agent/metrics"), client.get("/v1/agent/checks")
            )
        except Exception as exc:  # the node may restart under us: say so and keep watching
            line = f"{args.service}: node not answering: {exc}"
        ctx.say(line)
        with contextlib.suppress(OSError, ValueError):  # a closed or broken stdout
            ctx.out.flush()
        stop.wait(interval)
