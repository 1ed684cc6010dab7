"""The operator's day-to-day verbs of ``meshnode``: maint (and info, monitor, event).

Rule: each command is a ``configure(parser)`` / ``run(ctx) -> exit status`` pair listed
as one row of ``node.cli.COMMANDS``; they talk to the node only through its HTTP API
(``ctx.client()``) and print what Consul's commands print. This module does not import
``node.cli`` at load time (``node.cli`` imports it); ``ctx`` is ``node.cli.Context``.
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from node.catalog.maintenance import NODE_MAINT_CHECK_ID, SERVICE_MAINT_PREFIX
from node.errors import InvalidRequest

__all__ = [
    "configure_maint",
    "run_maint",
    "run_info",
    "configure_monitor",
    "run_monitor",
    "configure_event",
    "run_event",
]

EXIT_OK = 0


def _flag(parser: argparse.ArgumentParser, name: str, **kw: Any) -> None:
    parser.add_argument(f"-{name}", f"--{name}", **kw)


# ---------------------------------------------------------------------------- maint


def configure_maint(p: argparse.ArgumentParser) -> None:
    """``meshnode maint [-enable|-disable] [-service ID] [-reason TEXT]``."""
    _flag(p, "enable", action="store_true", help="enable maintenance mode")
    _flag(p, "disable", action="store_true", help="disable maintenance mode")
    _flag(p, "service", default="", help="a service ID (the node when omitted)")
    _flag(p, "reason", default="", help="why (shown in the check's notes)")


def run_maint(ctx: Any) -> int:
    """Toggle node or service maintenance, or list what is in maintenance."""
    args = ctx.args
    if args.enable and args.disable:
        raise InvalidRequest("Only one of -enable or -disable may be provided")
    if not args.enable and args.reason:
        raise InvalidRequest("Reason may only be provided with -enable")
    if not args.enable and not args.disable:
        if args.service:
            raise InvalidRequest("Service requires either -enable or -disable")
        return _list_maintenance(ctx)
    client = ctx.client()
    params = {"enable": "true" if args.enable else "false"}
    if args.reason:
        params["reason"] = args.reason
    verb = "entered" if args.enable else "left"
    if args.service:
        sid = urllib.parse.quote(args.service, safe="")
        client.put(f"/v1/agent/service/maintenance/{sid}", **params)
        ctx.say(f"Service {verb} maintenance mode: {args.service}")
    else:
        client.put("/v1/agent/maintenance", **params)
        ctx.say(f"Node {verb} maintenance mode")
    return EXIT_OK


def _list_maintenance(ctx: Any) -> int:
    client = ctx.client()
    checks: dict[str, Any] = client.get("/v1/agent/checks") or {}
    node = client.get("/v1/agent/self")["Config"]["NodeName"]
    for cid, check in sorted(checks.items()):
        if cid == NODE_MAINT_CHECK_ID:
            ctx.say("Node:")
            ctx.say(f"  Name:   {node}")
            ctx.say(f"  Reason: {check.get('Notes', '')}")
            ctx.say("")
        elif cid.startswith(SERVICE_MAINT_PREFIX):
            ctx.say("Service:")
            ctx.say(f"  ID:     {cid[len(SERVICE_MAINT_PREFIX) :]}")
            ctx.say(f"  Reason: {check.get('Notes', '')}")
            ctx.say("")
    return EXIT_OK


# ---------------------------------------------------------------------------- info


def run_info(ctx: Any) -> int:
    """``meshnode info``: the node's ``Stats``, section by section, as Consul prints them."""
    stats: dict[str, dict[str, str]] = ctx.client().get("/v1/agent/self").get("Stats", {})
    for section in sorted(stats):
        ctx.say(f"{section}:")
        for key, value in sorted(stats[section].items()):
            ctx.say(f"\t{key} = {value}")
    return EXIT_OK


# ---------------------------------------------------------------------------- monitor


def configure_monitor(p: argparse.ArgumentParser) -> None:
    """``meshnode monitor [-log-level LEVEL] [-log-json]``."""
    _flag(p, "log-level", dest="log_level", default="info", help="trace|debug|info|warn|err")
    _flag(p, "log-json", dest="log_json", action="store_true", help="JSON lines")


def run_monitor(ctx: Any) -> int:
    """Print the node's log lines as they come, until the node or the user stops."""
    params = {"loglevel": ctx.args.log_level}
    if ctx.args.log_json:
        params["logjson"] = "true"
    url = f"{ctx.client().base}/v1/agent/monitor?{urllib.parse.urlencode(params)}"
    try:
        # No read timeout: a quiet node sends nothing for as long as it is quiet.
        resp = urllib.request.urlopen(url)  # noqa: S310 - the node's own HTTP API
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace").strip()
        raise InvalidRequest(
            f"Error starting monitor: Unexpected response code: {exc.code} ({detail})"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        raise InvalidRequest(f"Error starting monitor: {getattr(exc, 'reason', exc)}") from None
    with resp:
        for raw in resp:
            ctx.out.write(raw.decode("utf-8", "replace"))
            ctx.out.flush()
    return EXIT_OK


# ---------------------------------------------------------------------------- event


def configure_event(p: argparse.ArgumentParser) -> None:
    """``meshnode event -name NAME [-node RE] [-service RE] [-tag RE] [payload]``."""
    _flag(p, "name", default="", help="the event's name")
    _flag(p, "node", default="", help="regexp of the node names that keep it")
    _flag(p, "service", default="", help="regexp of the service IDs that keep it")
    _flag(p, "tag", default="", help="regexp of the tags (needs -service)")
    _flag(p, "datacenter", default="", help="the datacenter to fire it in")
    p.add_argument("payload", nargs="?", default="", help="the payload (a string)")


def run_event(ctx: Any) -> int:
    """Fire a user event; prints its ID as Consul's ``event`` does."""
    args = ctx.args
    if not args.name:
        raise InvalidRequest("Event name must be specified")
    if args.tag and not args.service:
        raise InvalidRequest("Cannot provide tag filter without service filter.")
    params = {k: v for k, v in (("node", args.node), ("service", args.service),
                                ("tag", args.tag), ("dc", args.datacenter)) if v}  # fmt: skip
    name = urllib.parse.quote(args.name, safe="")
    url = f"{ctx.client().base}/v1/event/fire/{name}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    req = urllib.request.Request(url, data=args.payload.encode(), method="PUT")
    try:
        with urllib.request.urlopen(req, timeout=30.0) as resp:  # noqa: S310
            event = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace").strip()
        raise InvalidRequest(f"Error firing event: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise InvalidRequest(f"Error firing event: {getattr(exc, 'reason', exc)}") from None
    ctx.say(f"Event ID: {event['ID']}")
    return EXIT_OK
