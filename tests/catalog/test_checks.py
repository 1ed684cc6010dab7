"""CheckRunner with real sockets on 127.0.0.1:0: TCP, HTTP, TTL and alias checks."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from node.catalog.checks import CheckRunner, alias_status, http_status_health, probe_tcp
from node.catalog.local import LocalState, NodeIdentity
from node.catalog.parse import parse_check, parse_service
from node.catalog.store import CatalogStore
from node.catalog.values import Health
from node.catalog.watch import IndexNotifier
from tests.helpers.poll import wait_for


class Node:
    def __init__(self) -> None:
        self.notifier = IndexNotifier()
        self.store = CatalogStore(on_change=self.notifier.notify)
        self.local = LocalState(
            identity=NodeIdentity(name="n1", datacenter="dc1", address="127.0.0.1"),
            store=self.store,
        )
        self.runner = CheckRunner(self.local, self.store, self.notifier, rng=random.Random(1))

    def status(self, check_id: str) -> tuple[Health, str]:
        state = self.local.check_state(check_id)
        return state.status, state.output


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    n = Node()
    task = asyncio.create_task(n.runner.run())
    yield n
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest.fixture
async def http_server() -> AsyncIterator[str]:
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        if code == 999:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await release.wait()
        return web.Response(status=code, text=f"body-{code}-" + "y" * 5000)

    app = web.Application()
    app.router.add_route("*", "/{code}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    release.set()
    await runner.cleanup()


def test_http_status_health_rule() -> None:
    assert [http_status_health(c) for c in (200, 204, 299, 429, 300, 404, 500)] == [
        Health.PASSING, Health.PASSING, Health.PASSING, Health.WARNING,
        Health.CRITICAL, Health.CRITICAL, Health.CRITICAL,
    ]  # fmt: skip


async def test_probe_tcp_open_and_closed_port() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    status, output = await probe_tcp(f"127.0.0.1:{port}", 1.0)
    assert status is Health.PASSING and output == f"TCP connect 127.0.0.1:{port}: Success"
    server.close()
    await server.wait_closed()
    status, output = await probe_tcp(f"127.0.0.1:{port}", 1.0)
    assert status is Health.CRITICAL and output.startswith(f"dial tcp 127.0.0.1:{port}:")


async def test_CheckRunner_tcp_check_follows_the_listener(node: Node) -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    node.local.register_check(
        parse_check({"name": "tcp", "tcp": f"127.0.0.1:{port}", "interval": "50ms"})
    )
    await wait_for(lambda: node.status("tcp")[0] is Health.PASSING, "tcp passing")
    server.close()
    await server.wait_closed()
    await wait_for(lambda: node.status("tcp")[0] is Health.CRITICAL, "tcp critical")


async def test_CheckRunner_http_statuses_and_output(node: Node, http_server: str) -> None:
    for code in (200, 429, 503):
        node.local.register_check(
            parse_check({"name": f"h{code}", "http": f"{http_server}/{code}", "interval": "50ms"})
        )
    await wait_for(lambda: node.status("h200")[0] is Health.PASSING, "h200 passing")
    await wait_for(lambda: node.status("h429")[0] is Health.WARNING, "h429 warning")
    await wait_for(lambda: node.status("h503")[0] is Health.CRITICAL, "h503 critical")
    output = node.status("h200")[1]
    assert output.startswith(f"HTTP GET {http_server}/200: 200 OK Output: body-200-")
    assert len(output.encode()) <= 4096


async def test_CheckRunner_http_timeout_does_not_block_other_checks(
    node: Node, http_server: str
) -> None:
    node.local.register_check(
        parse_check(
            {"name": "slow", "http": f"{http_server}/999", "interval": "1s", "timeout": "100ms"}
        )
    )
    node.local.register_check(
        parse_check({"name": "fast", "http": f"{http_server}/200", "interval": "50ms"})
    )
    await wait_for(lambda: node.status("fast")[0] is Health.PASSING, "fast passing")
    await wait_for(lambda: "timeout" in node.status("slow")[1], "slow timed out")
    assert node.status("slow")[0] is Health.CRITICAL


async def test_CheckRunner_ttl_expires_to_critical(node: Node) -> None:
    node.local.register_check(parse_check({"name": "ttl", "ttl": "200ms"}))
    node.local.update_ttl("ttl", Health.PASSING, "alive")
    assert node.status("ttl") == (Health.PASSING, "alive")
    await wait_for(lambda: node.status("ttl") == (Health.CRITICAL, "TTL expired"), "TTL expired", 3)


async def test_CheckRunner_alias_mirrors_parent_and_sidecar_defaults(node: Node) -> None:
    node.local.register_service(
        parse_service(
            {
                "name": "web",
                "port": 8080,
                "check": {"ttl": "30s"},
                "connect": {"sidecar_service": {}},
            }
        )
    )
    alias_id = "service:web-sidecar-proxy:2"
    await wait_for(lambda: node.status(alias_id)[0] is Health.CRITICAL, "alias critical")
    node.local.update_ttl("service:web", Health.PASSING)
    await wait_for(
        lambda: node.status(alias_id) == (Health.PASSING, "All checks passing."), "alias passing"
    )
    node.local.update_ttl("service:web", Health.WARNING, "meh")
    await wait_for(lambda: node.status(alias_id)[0] is Health.WARNING, "alias warning")
    assert "meh" in node.status(alias_id)[1]


async def test_CheckRunner_reconciles_removed_checks(node: Node) -> None:
    node.local.register_check(parse_check({"name": "t", "tcp": "127.0.0.1:9", "interval": "50ms"}))
    await wait_for(lambda: "t" in node.runner.running, "t running")
    node.local.deregister_check("t")
    await wait_for(lambda: "t" not in node.runner.running, "t stopped")


def test_alias_status_for_missing_service() -> None:
    status, output = alias_status(CatalogStore(), "n1", "ghost")
    assert status is Health.CRITICAL and output == 'Service "ghost" not found on node "n1"'
