"""``/v1/event/fire/:name`` and ``/v1/event/list``: user events, in Consul's shape.

Rule: the handlers turn Consul's request (raw body as payload; ``node``/``service``/
``tag`` filters; ``dc``) into a ``UserEvent`` with a fresh UUID and hand it to
``agent.fire_event``; listing reads the node's ring (``agent.events``), oldest first,
optionally one ``name``. ``X-Consul-Index`` is the last event's ID folded to 64 bits;
``?index=`` equal to it blocks until a new event arrives or ``wait`` passes (the
``node``/``service``/``tag`` parameters of list are ignored, as in Consul).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import uuid
from typing import Any

from aiohttp import web

from node.api.blocking import consul_headers, jittered, parse_query_options
from node.api.read import dump_json
from node.api.state import AGENT, RNG
from node.errors import InvalidRequest
from node.userevents import EventDelegate, UserEvent, event_index

__all__ = ["routes", "setup", "encode_event", "EventWaiters", "WAITERS"]

routes = web.RouteTableDef()


def encode_event(event: UserEvent) -> dict[str, Any]:
    """Consul's ``UserEvent`` JSON (``Payload`` base64, or null)."""
    payload = None if event.payload is None else base64.b64encode(event.payload).decode()
    return {
        "ID": event.id,
        "Name": event.name,
        "Payload": payload,
        "NodeFilter": event.node_filter,
        "ServiceFilter": event.service_filter,
        "TagFilter": event.tag_filter,
        "Version": event.version,
        "LTime": event.ltime,
    }


class EventWaiters:
    """Wakes blocked list requests when this node keeps a new event.

    It starts listening to the agent's events at the first blocking list (the agent
    builds its app before its gossip channels); the list itself is always read fresh.
    """

    __slots__ = ("_changed", "_listening")

    def __init__(self) -> None:
        self._changed = asyncio.Event()
        self._listening = False

    def listen(self, events: EventDelegate) -> None:
        """Follow ``events`` (once)."""
        if not self._listening:
            events.add_listener(self.notify)
            self._listening = True

    def notify(self) -> None:
        """A new event was kept: wake every waiter."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        """Until the next new event or ``timeout``."""
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await changed.wait()


WAITERS: web.AppKey[EventWaiters] = web.AppKey("event_waiters", EventWaiters)


def setup(app: web.Application) -> None:
    """Wire ``app`` to its agent's events (call once, in ``make_app``)."""
    app[WAITERS] = EventWaiters()


@routes.put("/v1/event/fire/{name}")
async def fire(request: web.Request) -> web.Response:
    """Fire a user event; answers the event as sent."""
    query = request.query
    body = await request.read()
    rng = request.app[RNG]
    event = UserEvent(
        id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        name=request.match_info["name"],
        payload=body if body else None,
        node_filter=query.get("node", ""),
        service_filter=query.get("service", ""),
        tag_filter=query.get("tag", ""),
    )
    sent = await request.app[AGENT].fire_event(event, query.get("dc") or None)
    return web.Response(body=dump_json(encode_event(sent)), content_type="application/json")


@routes.put("/v1/event/fire/")
async def fire_no_name(request: web.Request) -> web.Response:
    """Consul's answer to a missing name."""
    del request
    raise InvalidRequest("Missing name")


@routes.get("/v1/event/list")
async def list_events(request: web.Request) -> web.Response:
    """Events kept on this node, oldest first; blocks on ``?index=``."""
    opts = parse_query_options(request.query)
    name = request.query.get("name", "")
    agent = request.app[AGENT]
    events = agent.events.events(name)
    index = event_index(events)
    if opts.blocking and opts.index == index:
        request.app[WAITERS].listen(agent.events)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + jittered(opts.wait, request.app[RNG])
        while index == opts.index and loop.time() < deadline:
            await request.app[WAITERS].wait(deadline - loop.time())
            events = agent.events.events(name)
            index = event_index(events)
    return web.Response(
        body=dump_json([encode_event(e) for e in events]), headers=consul_headers(index)
    )
