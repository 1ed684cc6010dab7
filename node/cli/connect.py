"""The ``connect``, ``intention`` and ``config`` subcommands of ``meshnode``.

Rule: these are rows of ``node.cli.COMMANDS`` kept in their own module; each function
talks to a node's HTTP API through the ``Context`` ``node.cli`` hands it and returns an
exit status (it never reads argv or exits). Output follows Consul's CLI: JSON for
``get-config``/``read``, one line per success, ``intention check`` exits 0 when allowed
and 2 when denied. Files are parsed locally first (``config write`` through
``node.config.load_config_entry_document``), so a bad file names itself before any
request is made.
"""

from __future__ import annotations

import argparse
import json
import urllib.parse
from typing import Any

from node.cli.table import format_table
from node.errors import InvalidRequest

__all__ = [
    "configure_ca_set_config", "run_ca_get_config", "run_ca_set_config",
    "configure_intention_create", "run_intention_create", "configure_intention_pair",
    "run_intention_delete", "run_intention_check", "run_intention_list",
    "configure_config_file", "run_config_write", "configure_config_kind_name",
    "run_config_read", "run_config_delete", "configure_config_kind", "run_config_list",
    "configure_proxy_config", "run_proxy_config", "EXIT_DENIED",
]  # fmt: skip

EXIT_OK = 0
#: ``intention check`` for a denied pair, as Consul's CLI.
EXIT_DENIED = 2


def _flag(parser: argparse.ArgumentParser, name: str, **kw: Any) -> None:
    parser.add_argument(f"-{name}", f"--{name}", **kw)


def _quote(part: str) -> str:
    return urllib.parse.quote(part, safe="")


def _print_json(ctx: Any, value: Any) -> None:
    ctx.say(json.dumps(value, indent=4, sort_keys=False))


def _read_json_file(path: str) -> Any:
    from node.config import agent as config_mod

    text = config_mod.read_source(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"{path}: not valid JSON: {exc}") from None


# -- connect ca


def run_ca_get_config(ctx: Any) -> int:
    """``connect ca get-config``: the CA configuration as JSON."""
    _print_json(ctx, ctx.client().get("/v1/connect/ca/configuration"))
    return EXIT_OK


def configure_ca_set_config(p: argparse.ArgumentParser) -> None:
    """``-config-file F`` (JSON, as Consul's)."""
    _flag(p, "config-file", dest="config_file", required=True, help="JSON CA configuration")


def run_ca_set_config(ctx: Any) -> int:
    """``connect ca set-config -config-file F``."""
    body = _read_json_file(ctx.args.config_file)
    ctx.client().put("/v1/connect/ca/configuration", body)
    ctx.say("Configuration updated!")
    return EXIT_OK


# -- intentions


def configure_intention_create(p: argparse.ArgumentParser) -> None:
    """``[-allow|-deny] [-description D] SRC DST``."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("-allow", "--allow", dest="action", action="store_const", const="allow")
    group.add_argument("-deny", "--deny", dest="action", action="store_const", const="deny")
    _flag(p, "description", default="", help="a description of the intention")
    p.add_argument("source", metavar="SRC")
    p.add_argument("destination", metavar="DST")


def run_intention_create(ctx: Any) -> int:
    """Create an intention (allow unless ``-deny``)."""
    args = ctx.args
    action = args.action or "allow"
    body = {"SourceName": args.source, "DestinationName": args.destination,
            "Action": action, "Description": args.description}  # fmt: skip
    ctx.client().request("POST", "/v1/connect/intentions", body)
    ctx.say(f"Created: {args.source} => {args.destination} ({action})")
    return EXIT_OK


def configure_intention_pair(p: argparse.ArgumentParser) -> None:
    """``SRC DST`` (or, for delete, ``ID``)."""
    p.add_argument("source", metavar="SRC|ID")
    p.add_argument("destination", metavar="DST", nargs="?")


def _find(ctx: Any, source: str, destination: str | None) -> dict[str, Any]:
    intentions = ctx.client().get("/v1/connect/intentions") or []
    for ixn in intentions:
        if destination is None and ixn.get("ID") == source:
            return dict(ixn)
        if (ixn.get("SourceName"), ixn.get("DestinationName")) == (source, destination):
            return dict(ixn)
    what = source if destination is None else f"{source} => {destination}"
    raise InvalidRequest(f"Intention with source and destination not found: {what}")


def run_intention_delete(ctx: Any) -> int:
    """``intention delete SRC DST`` or ``intention delete ID``."""
    ixn = _find(ctx, ctx.args.source, ctx.args.destination)
    ctx.client().request("DELETE", f"/v1/connect/intentions/{_quote(ixn['ID'])}")
    ctx.say("Intention deleted.")
    return EXIT_OK


def run_intention_check(ctx: Any) -> int:
    """``intention check SRC DST``: prints Allowed/Denied; exit 0 or 2."""
    if ctx.args.destination is None:
        raise InvalidRequest("intention check needs SRC and DST")
    got = ctx.client().get(
        "/v1/connect/intentions/check", source=ctx.args.source, destination=ctx.args.destination
    )
    allowed = bool(got and got.get("Allowed"))
    ctx.say("Allowed" if allowed else "Denied")
    return EXIT_OK if allowed else EXIT_DENIED


def run_intention_list(ctx: Any) -> int:
    """``intention list``: a table in precedence order."""

    rows = [
        [i.get("ID", ""), i.get("SourceName", ""), i.get("Action", ""),
         i.get("DestinationName", ""), i.get("Precedence", "")]
        for i in ctx.client().get("/v1/connect/intentions") or []
    ]  # fmt: skip
    ctx.say(format_table(["ID", "Source", "Action", "Destination", "Precedence"], rows))
    return EXIT_OK


# -- config entries


def configure_config_file(p: argparse.ArgumentParser) -> None:
    """``FILE`` (HCL or JSON) and ``-cas -modify-index N``."""
    _flag(p, "cas", action="store_true", help="write only if unchanged since -modify-index")
    _flag(p, "modify-index", dest="modify_index", type=int, default=0)
    p.add_argument("file", metavar="FILE")


def run_config_write(ctx: Any) -> int:
    """``config write FILE``: parse locally, then ``PUT /v1/config``."""
    from node.api.codec import encode_config_entry
    from node.config import agent as config_mod

    path = ctx.args.file
    entry = config_mod.load_config_entry_document(config_mod.read_source(path), path)
    body = encode_config_entry(entry, (0, 0))
    del body["CreateIndex"], body["ModifyIndex"]
    params = {"cas": str(ctx.args.modify_index)} if ctx.args.cas else {}
    if ctx.client().put("/v1/config", body, **params) is not True:
        raise InvalidRequest(f"Config entry not updated: {entry.kind}/{entry.name} (CAS failed)")
    ctx.say(f"Config entry written: {entry.kind}/{entry.name}")
    return EXIT_OK


def configure_config_kind_name(p: argparse.ArgumentParser) -> None:
    """``-kind K -name N``."""
    _flag(p, "kind", required=True, help="the entry kind (service-resolver, service-defaults, ...)")
    _flag(p, "name", required=True, help="the entry's name")


def configure_config_kind(p: argparse.ArgumentParser) -> None:
    """``-kind K``."""
    _flag(p, "kind", required=True, help="the entry kind (service-resolver, service-defaults, ...)")


def run_config_read(ctx: Any) -> int:
    """``config read -kind K -name N``: the entry as JSON."""
    path = f"/v1/config/{_quote(ctx.args.kind)}/{_quote(ctx.args.name)}"
    _print_json(ctx, ctx.client().get(path))
    return EXIT_OK


def run_config_list(ctx: Any) -> int:
    """``config list -kind K``: one name per line."""
    for entry in ctx.client().get(f"/v1/config/{_quote(ctx.args.kind)}") or []:
        ctx.say(entry.get("Name", ""))
    return EXIT_OK


def run_config_delete(ctx: Any) -> int:
    """``config delete -kind K -name N``."""
    path = f"/v1/config/{_quote(ctx.args.kind)}/{_quote(ctx.args.name)}"
    ctx.client().request("DELETE", path)
    ctx.say(f"Config entry deleted: {ctx.args.kind}/{ctx.args.name}")
    return EXIT_OK


# -- connect proxy-config


def configure_proxy_config(p: argparse.ArgumentParser) -> None:
    """``ID`` of a local connect-proxy service."""
    p.add_argument("proxy_id", metavar="ID")


def run_proxy_config(ctx: Any) -> int:
    """``connect proxy-config ID``: each upstream's mesh-gateway mode and who decided it."""

    got = ctx.client().get(f"/v1/agent/connect/proxy-config/{_quote(ctx.args.proxy_id)}")
    ctx.say(f"Proxy {got['ProxyServiceID']} for {got['DestinationServiceName']} "
            f"(central config {'on' if got['EnableCentralServiceConfig'] else 'off'})")  # fmt: skip
    rows = [
        [u["DestinationName"], u["Datacenter"] or "(local)", u["LocalBindPort"],
         u["MeshGatewayMode"], u["DecidedBy"], "yes" if u["UsesGateway"] else "no"]
        for u in got["Upstreams"]
    ]  # fmt: skip
    header = ["Upstream", "Datacenter", "Port", "Mode", "Decided by", "Via gateway"]
    ctx.say(format_table(header, rows))
    return EXIT_OK
