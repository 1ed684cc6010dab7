"""The ``meshnode`` command line.

Rule: this is the only module that reads ``sys.argv`` or the environment, configures
logging, or exits. Every subcommand is one row of ``COMMANDS``: a path of words
(``("services", "register")``), a one-line help, a function that adds its flags and a
function that runs it and returns the exit status. Adding a command is adding a row.

Flags are single-dash like Consul's (``-http-addr``); the double-dash spelling works too.
Commands other than ``agent``/``validate``/``version`` talk to a running node over its
HTTP API (``-http-addr``, else ``MESHNODE_HTTP_ADDR``, else ``CONSUL_HTTP_ADDR``, else
``127.0.0.1:8500``). Failures print one line to stderr and exit non-zero.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node import __version__
from node.cli import cluster as cli_cluster
from node.cli import connect as cli_connect
from node.cli import gateway as cli_gateway
from node.cli import operator as cli_operator
from node.cli import ops as cli_ops
from node.cli.table import format_table
from node.errors import NodeError
from node.logfmt import KeyValueFormatter

__all__ = ["main", "COMMANDS", "Command", "HTTPClient", "KeyValueFormatter"]

DEFAULT_HTTP_ADDR = "127.0.0.1:8500"
HTTP_TIMEOUT = 30.0  # seconds; a CLI call to a local node that takes longer is broken
EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


class CLIError(Exception):
    """A failure to report as one line on stderr (exit status 1)."""


# ---------------------------------------------------------------------------- logging


def setup_logging(level: str = "INFO", stream: Any = None) -> None:
    """Send logs to stderr with level and key=value context (idempotent)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_meshnode", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler._meshnode = True  # type: ignore[attr-defined]
    handler.setFormatter(KeyValueFormatter())
    # The handler keeps the node's level even while a monitor lowers the root logger's.
    handler.setLevel(_level(level))
    root.addHandler(handler)
    root.setLevel(_level(level))


def _level(name: str) -> int:
    # Consul's levels: trace, debug, info, warn, err.
    aliases = {"TRACE": "DEBUG", "WARN": "WARNING", "ERR": "ERROR"}
    upper = name.upper()
    return logging.getLevelName(aliases.get(upper, upper)) if upper else logging.INFO


# ---------------------------------------------------------------------------- HTTP client


class HTTPClient:
    """A tiny synchronous client of the node's HTTP API (the CLI needs nothing more)."""

    def __init__(self, addr: str, *, timeout: float = HTTP_TIMEOUT) -> None:
        self.base = addr if "://" in addr else f"http://{addr}"
        self.base = self.base.rstrip("/")
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None, **params: str) -> Any:
        """Send one request; return the decoded JSON (or ``None``); raise CLIError on failure."""
        url = self.base + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace").strip()
            raise CLIError(f"{method} {path}: HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CLIError(f"cannot reach meshnode at {self.base}: {reason}") from None
        return json.loads(raw) if raw.strip() else None

    def get(self, path: str, **params: str) -> Any:
        """GET ``path`` and decode its JSON."""
        return self.request("GET", path, **params)

    def put(self, path: str, body: Any = None, **params: str) -> Any:
        """PUT ``path`` with a JSON body."""
        return self.request("PUT", path, body, **params)


def http_addr(args: argparse.Namespace, environ: Mapping[str, str]) -> str:
    """Flag, then MESHNODE_HTTP_ADDR, then CONSUL_HTTP_ADDR, then the default."""
    return (
        getattr(args, "http_addr", None)
        or environ.get("MESHNODE_HTTP_ADDR")
        or environ.get("CONSUL_HTTP_ADDR")
        or DEFAULT_HTTP_ADDR
    )


# ---------------------------------------------------------------------------- output


# ---------------------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True, kw_only=True)
class Context:
    """What a command may use: its parsed args, the environment and output streams."""

    args: argparse.Namespace
    environ: Mapping[str, str]
    out: Any
    err: Any

    def client(self) -> HTTPClient:
        """An HTTP client for the node named by -http-addr / the environment."""
        return HTTPClient(http_addr(self.args, self.environ))

    def say(self, text: str) -> None:
        """Write a line of normal output."""
        print(text, file=self.out)


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    """One row of the command table."""

    path: tuple[str, ...]
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[Context], int]
    http: bool = True  # adds -http-addr


def _flag(parser: argparse.ArgumentParser, name: str, **kw: Any) -> None:
    """Add ``-name`` and ``--name`` (Consul's flag package accepts both)."""
    parser.add_argument(f"-{name}", f"--{name}", **kw)


def _no_flags(parser: argparse.ArgumentParser) -> None:
    del parser


# -- agent


def _configure_agent(p: argparse.ArgumentParser) -> None:
    _flag(p, "dev", action="store_true", help="in-memory development node (server, dc1)")
    _flag(p, "config-file", action="append", default=[], dest="config_paths", help="file")
    _flag(p, "config-dir", action="append", default=[], dest="config_paths", help="dir")
    _flag(p, "node", dest="node_name", help="node name")
    _flag(p, "datacenter", help="datacenter name")
    _flag(p, "data-dir", dest="data_dir", help="where state is kept")
    _flag(p, "bind", dest="bind_addr", help="address for cluster traffic")
    _flag(p, "client", dest="client_addr", help="address for the HTTP API")
    _flag(p, "http-port", dest="http_port", type=int, help="HTTP API port (0 = any free)")
    _flag(p, "serf-lan-port", dest="serf_lan_port", type=int, help="LAN gossip port (0 = any)")
    _flag(p, "serf-wan-port", dest="serf_wan_port", type=int, help="WAN gossip port (0 = any)")
    _flag(p, "server-port", dest="server_port", type=int, help="node RPC port (0 = any free)")
    _flag(p, "dns-port", dest="dns_port", type=int, help="DNS port, UDP and TCP (-1 = off)")
    _flag(p, "recursor", action="append", dest="recursors", help="upstream DNS server")
    _flag(p, "domain", dest="domain", help="DNS domain (default consul)")
    _flag(p, "alt-domain", dest="alt_domain", help="alternate DNS domain")
    _flag(p, "server", action="store_true", default=None, help="run as a server")
    _flag(p, "log-level", dest="log_level", help="trace|debug|info|warn|err")


def agent_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The command-line flags that override config files, by flag name (``None`` = not given)."""
    return {
        "node": args.node_name,
        "datacenter": args.datacenter,
        "data-dir": args.data_dir,
        "bind": args.bind_addr,
        "client": args.client_addr,
        "http-port": args.http_port,
        "serf-lan-port": args.serf_lan_port,
        "serf-wan-port": args.serf_wan_port,
        "server-port": args.server_port,
        "dns-port": args.dns_port,
        "recursor": args.recursors,
        "domain": args.domain,
        "alt-domain": args.alt_domain,
        "server": args.server,
        "log-level": args.log_level,
    }


def _run_agent(ctx: Context) -> int:
    from node.agent.agent import run_agent
    from node.config import agent as config_mod

    args = ctx.args
    setup_logging("INFO", ctx.err)  # config warnings are logged while loading
    cfg = config_mod.load(args.config_paths, dev=args.dev, overrides=agent_overrides(args))
    setup_logging(cfg.log_level, ctx.err)
    run_agent(cfg)
    return EXIT_OK


# -- validate / version


def _configure_validate(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="FILE|DIR")


def _run_validate(ctx: Context) -> int:
    from node.config import agent as config_mod

    result = config_mod.validate(ctx.args.paths)
    for warning in result.warnings:
        print(f"warning: {warning}", file=ctx.err)
    ctx.say("Configuration is valid!")
    return EXIT_OK


def _run_version(ctx: Context) -> int:
    ctx.say(f"meshnode v{__version__}")
    ctx.say("Speaks the Consul 1.6 HTTP API")
    return EXIT_OK


# -- services


def _configure_services_file(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="FILE|ID")


def read_service_file(path: str) -> list[dict[str, Any]]:
    """The service blocks of an HCL/JSON file, validated, as raw mappings to send."""
    from node.config import agent as config_mod
    from node.config.hcl import load_document, normalize_blocks

    text = config_mod.read_source(path)
    config_mod.load_services_document(text, path)  # names file and key on any error
    doc = normalize_blocks(load_document(text, path))
    services: list[dict[str, Any]] = []
    for key in ("service", "services"):
        value = doc.get(key)
        services.extend(value if isinstance(value, list) else [value] if value else [])
    return services


def _run_services_register(ctx: Context) -> int:
    path = ctx.args.target
    client = ctx.client()
    for svc in read_service_file(path):
        client.put("/v1/agent/service/register", svc)
        ctx.say(f"Registered service: {_service_field(svc, 'name')}")
    return EXIT_OK


def _run_services_deregister(ctx: Context) -> int:
    target = ctx.args.target
    if Path(target).is_file():
        ids = [_service_id(s) for s in read_service_file(target)]
    else:
        ids = [target]
    client = ctx.client()
    for sid in ids:
        client.put(f"/v1/agent/service/deregister/{urllib.parse.quote(sid, safe='')}")
        ctx.say(f"Deregistered service: {sid}")
    return EXIT_OK


def _service_field(svc: Mapping[str, Any], name: str) -> Any:
    """A key of a raw service block in any casing (files may use ``ID`` or ``id``)."""
    for key, value in svc.items():
        if str(key).replace("_", "").lower() == name:
            return value
    return None


def _service_id(svc: Mapping[str, Any]) -> str:
    sid = _service_field(svc, "id") or _service_field(svc, "name")
    if not isinstance(sid, str) or not sid:
        raise CLIError("a service in the file has neither id nor name")
    return sid


# -- catalog


def _configure_catalog_services(p: argparse.ArgumentParser) -> None:
    _flag(p, "tags", action="store_true", help="show tags")


def _run_catalog_services(ctx: Context) -> int:
    services: dict[str, list[str]] = ctx.client().get("/v1/catalog/services") or {}
    if ctx.args.tags:
        rows = [[name, ",".join(sorted(tags))] for name, tags in sorted(services.items())]
        ctx.say(format_table(["Service", "Tags"], rows) if rows else "")
    else:
        for name in sorted(services):
            ctx.say(name)
    return EXIT_OK


def _run_catalog_nodes(ctx: Context) -> int:
    nodes = ctx.client().get("/v1/catalog/nodes") or []
    rows = [
        [n.get("Node", ""), (n.get("ID") or "")[:8], n.get("Address", ""), n.get("Datacenter", "")]
        for n in sorted(nodes, key=lambda n: n.get("Node", ""))
    ]
    ctx.say(format_table(["Node", "ID", "Address", "DC"], rows))
    return EXIT_OK


def _run_catalog_datacenters(ctx: Context) -> int:
    for dc in ctx.client().get("/v1/catalog/datacenters") or []:
        ctx.say(dc)
    return EXIT_OK


COMMANDS: tuple[Command, ...] = (
    Command(path=("agent",), help="run a node", configure=_configure_agent, run=_run_agent, http=False),
    Command(path=("validate",), help="check config files", configure=_configure_validate, run=_run_validate, http=False),
    Command(path=("version",), help="print the version", configure=_no_flags, run=_run_version, http=False),
    Command(path=("members",), help="list cluster members", configure=cli_cluster.configure_members, run=cli_cluster.run_members),
    Command(path=("join",), help="join gossip pools through an address", configure=cli_cluster.configure_join, run=cli_cluster.run_join),
    Command(path=("leave",), help="leave gracefully and shut the node down", configure=_no_flags, run=cli_cluster.run_leave),
    Command(path=("force-leave",), help="mark a failed member as left", configure=cli_cluster.configure_force_leave, run=cli_cluster.run_force_leave),
    Command(path=("keygen",), help="generate a gossip encryption key", configure=_no_flags, run=cli_cluster.run_keygen, http=False),
    Command(path=("keyring",), help="manage gossip keys cluster-wide", configure=cli_cluster.configure_keyring, run=cli_cluster.run_keyring),
    Command(path=("info",), help="debugging figures of the node", configure=_no_flags, run=cli_ops.run_info),
    Command(path=("monitor",), help="stream the node's log lines", configure=cli_ops.configure_monitor, run=cli_ops.run_monitor),
    Command(path=("event",), help="fire a user event", configure=cli_ops.configure_event, run=cli_ops.run_event),
    Command(path=("maint",), help="node or service maintenance mode", configure=cli_ops.configure_maint, run=cli_ops.run_maint),
    Command(path=("services", "register"), help="register services from a file", configure=_configure_services_file, run=_run_services_register),
    Command(path=("services", "deregister"), help="deregister by ID or file", configure=_configure_services_file, run=_run_services_deregister),
    Command(path=("catalog", "services"), help="list services", configure=_configure_catalog_services, run=_run_catalog_services),
    Command(path=("catalog", "nodes"), help="list nodes", configure=_no_flags, run=_run_catalog_nodes),
    Command(path=("catalog", "datacenters"), help="list datacenters", configure=_no_flags, run=_run_catalog_datacenters),
    Command(path=("connect", "gateway"), help="register a mesh gateway and show its status", configure=cli_gateway.configure, run=cli_gateway.run),
    Command(path=("connect", "ca", "get-config"), help="show the CA configuration", configure=_no_flags, run=cli_connect.run_ca_get_config),
    Command(path=("connect", "ca", "set-config"), help="change the CA configuration (JSON file)", configure=cli_connect.configure_ca_set_config, run=cli_connect.run_ca_set_config),
    Command(path=("connect", "proxy-config"), help="resolved mesh-gateway mode per upstream", configure=cli_connect.configure_proxy_config, run=cli_connect.run_proxy_config),
    Command(path=("intention", "create"), help="create an intention", configure=cli_connect.configure_intention_create, run=cli_connect.run_intention_create),
    Command(path=("intention", "delete"), help="delete an intention (SRC DST or ID)", configure=cli_connect.configure_intention_pair, run=cli_connect.run_intention_delete),
    Command(path=("intention", "check"), help="would SRC reach DST? (exit 0 yes, 2 no)", configure=cli_connect.configure_intention_pair, run=cli_connect.run_intention_check),
    Command(path=("intention", "list"), help="list intentions", configure=_no_flags, run=cli_connect.run_intention_list),
    Command(path=("config", "write"), help="write a config entry (HCL or JSON file)", configure=cli_connect.configure_config_file, run=cli_connect.run_config_write),
    Command(path=("config", "read"), help="read a config entry", configure=cli_connect.configure_config_kind_name, run=cli_connect.run_config_read),
    Command(path=("config", "list"), help="list config entries of a kind", configure=cli_connect.configure_config_kind, run=cli_connect.run_config_list),
    Command(path=("config", "delete"), help="delete a config entry", configure=cli_connect.configure_config_kind_name, run=cli_connect.run_config_delete),
    Command(path=("operator", "raft", "list-peers"), help="list the servers of the Raft configuration", configure=cli_operator.configure_list_peers, run=cli_operator.run_list_peers),
    Command(path=("operator", "raft", "remove-peer"), help="remove a failed server from the Raft configuration", configure=cli_operator.configure_remove_peer, run=cli_operator.run_remove_peer),
    Command(path=("operator", "raft", "transfer-leader"), help="hand Raft leadership to another server", configure=cli_operator.configure_transfer_leader, run=cli_operator.run_transfer_leader),
)  # fmt: skip


# ---------------------------------------------------------------------------- parser


def build_parser(commands: Sequence[Command] = COMMANDS) -> argparse.ArgumentParser:
    """One argparse tree from the command table (intermediate words become groups)."""
    root = argparse.ArgumentParser(prog="meshnode", description="A service-mesh node.")
    groups: dict[tuple[str, ...], Any] = {(): root.add_subparsers(dest="cmd0", metavar="COMMAND")}
    for cmd in commands:
        parent = groups[()]
        for depth, word in enumerate(cmd.path[:-1], start=1):
            key = cmd.path[:depth]
            if key not in groups:
                group_parser = parent.add_parser(word, help=f"{word} subcommands")
                groups[key] = group_parser.add_subparsers(dest=f"cmd{depth}", metavar="SUBCOMMAND")
                groups[key].required = True
            parent = groups[key]
        leaf = parent.add_parser(cmd.path[-1], help=cmd.help, description=cmd.help)
        if cmd.http:
            _flag(leaf, "http-addr", dest="http_addr", help="node HTTP API address")
        cmd.configure(leaf)
        leaf.set_defaults(command=cmd)
    return root


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Console entry point ``meshnode``; returns the exit status."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed its usage message
        return int(exc.code or 0) and EXIT_USAGE
    command: Command | None = getattr(args, "command", None)
    if command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    ctx = Context(
        args=args,
        environ=os.environ if environ is None else environ,
        out=sys.stdout,
        err=sys.stderr,
    )
    try:
        return command.run(ctx)
    except (CLIError, NodeError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
