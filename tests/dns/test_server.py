"""node.dns.server on real sockets (127.0.0.1, port 0), asked by dnspython's resolver.

UDP and TCP, truncation with the full answer over TCP, NXDOMAIN with the SOA, Connect
names, recursors (a tiny recursor started here), junk packets and cross-datacenter
names answered by another datacenter's servers over RPC.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.asyncresolver
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.resolver
import pytest

from node.catalog.store import CatalogStore
from node.config.agent import DNSConfig
from node.dns.server import DNSServer, DNSSources
from node.errors import DatacenterUnavailable
from node.rpc.reads import ReadRequest, ValueCodec
from tests.dns.catalog import MANY, fill
from tests.helpers.cluster import Cluster
from tests.helpers.poll import wait_for

LOCAL = "127.0.0.1"
Start = Callable[..., Awaitable[tuple[DNSServer, int]]]


async def _no_remote(dc: str, read: ReadRequest, wire: ValueCodec[Any]) -> tuple[Any, int]:
    raise DatacenterUnavailable(f"No path to datacenter {dc!r}")


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """Start DNS servers over the test catalog; all are closed at teardown."""
    servers: list[DNSServer] = []

    async def start_one(**config: Any) -> tuple[DNSServer, int]:
        sources = DNSSources(store=fill(CatalogStore()), forward_read=_no_remote,
                             servers=lambda: [("srv1", "10.9.0.1")])  # fmt: skip
        server = DNSServer(DNSConfig(**config), datacenter="dc1", sources=sources,
                           wall=time.time, rng=random.Random(7))  # fmt: skip
        _, port = await server.start(LOCAL, 0)
        servers.append(server)
        return server, port

    yield start_one
    for server in servers:
        await server.aclose()


def resolver(port: int, *, tcp_fallback: bool = True) -> dns.asyncresolver.Resolver:
    res = dns.asyncresolver.Resolver(configure=False)
    res.nameservers = [LOCAL]
    res.port = port
    res.lifetime = 3.0
    res.cache = None
    return res


async def udp(port: int, name: str, qtype: str, **kw: Any) -> dns.message.Message:
    return await dns.asyncquery.udp(
        dns.message.make_query(name, qtype, **kw), LOCAL, timeout=3, port=port
    )


async def tcp(port: int, name: str, qtype: str) -> dns.message.Message:
    return await dns.asyncquery.tcp(
        dns.message.make_query(name, qtype), LOCAL, timeout=3, port=port
    )


# ---------------------------------------------------------------------------- basics


async def test_resolver_gets_srv_a_and_nxdomain_over_udp_and_tcp(start: Start) -> None:
    _, port = await start()
    res = resolver(port)
    srv = await res.resolve("web.service.consul", "SRV")
    assert sorted((r.port, str(r.target)) for r in srv) == [
        (80, "n1.node.dc1.consul."), (81, "n2.node.dc1.consul.")]  # fmt: skip
    a = await res.resolve("api.connect.consul", "SRV", tcp=True)
    assert [(r.port, str(r.target)) for r in a] == [(21000, "n1.node.dc1.consul.")]
    with pytest.raises(dns.resolver.NXDOMAIN):
        await res.resolve("nope.service.consul", "A")
    reply = await udp(port, "nope.service.consul", "A")
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert [r.rdtype for r in reply.authority] == [dns.rdatatype.SOA]
    assert reply.flags & dns.flags.AA and not reply.flags & dns.flags.RA
    assert (await tcp(port, "Web.Service.Consul", "A")).answer[
        0
    ].name.to_text() == "Web.Service.Consul."


async def test_truncated_udp_answer_is_complete_over_tcp(start: Start) -> None:
    server, port = await start(enable_truncate=True)
    reply = await udp(port, "many.service.consul", "SRV")
    assert reply.flags & dns.flags.TC and len(reply.answer[0]) == 3
    full = await tcp(port, "many.service.consul", "SRV")
    assert len(full.answer[0]) == MANY and not full.flags & dns.flags.TC
    # The resolver retries a truncated answer over TCP by itself.
    answer = await resolver(port).resolve("many.service.consul", "SRV")
    assert len(answer) == MANY
    assert server.metrics.queries_tcp >= 2 and server.metrics.replies["NOERROR"] >= 3


async def test_without_enable_truncate_udp_is_cut_silently(start: Start) -> None:
    _, port = await start()
    reply = await udp(port, "many.service.consul", "A")
    assert not reply.flags & dns.flags.TC and len(reply.answer[0]) == 3


async def test_edns_buffer_size_is_honoured(start: Start) -> None:
    _, port = await start(enable_truncate=True)
    reply = await udp(port, "many.service.consul", "SRV", use_edns=0, payload=1232)
    assert reply.payload == 1232 and 3 < len(reply.answer[0]) < MANY
    assert reply.flags & dns.flags.TC


async def test_repeated_queries_are_served_from_the_cache_and_see_changes(start: Start) -> None:
    server, port = await start()
    first = await udp(port, "shout.service.consul", "A")
    again = await udp(port, "SHOUT.service.consul", "A")
    assert first.answer[0][0].address == again.answer[0][0].address == "10.0.0.9"
    assert server.metrics.cache_hits >= 1
    store = server._sources.store
    entry = store.entry("Mixed-Case")
    assert entry is not None
    store.upsert_node(dataclasses.replace(entry.record, address="10.0.0.10", version=2))
    changed = await udp(port, "shout.service.consul", "A")
    assert changed.answer[0][0].address == "10.0.0.10"


async def test_acl_seam_hides_denied_names(start: Start) -> None:
    server, port = await start()
    assert (await udp(port, "web.service.consul", "A")).rcode() == dns.rcode.NOERROR
    sources = dataclasses.replace(server._sources, authorize=lambda kind, name: name != "web")
    server._sources = sources
    assert (await udp(port, "web.service.consul", "A")).rcode() == dns.rcode.NXDOMAIN
    assert (await udp(port, "n1.node.consul", "A")).rcode() == dns.rcode.NOERROR


async def test_unknown_datacenter_is_servfail(start: Start) -> None:
    server, port = await start()
    reply = await udp(port, "web.service.dc9.consul", "A")
    assert reply.rcode() == dns.rcode.SERVFAIL and server.metrics.forwarded == 1


# ---------------------------------------------------------------------------- recursors


class TinyRecursor(asyncio.DatagramProtocol):
    """Answers ``example.com`` A 192.0.2.1, NXDOMAIN for anything else; UDP and TCP."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.asked = 0

    def answer(self, data: bytes) -> bytes:
        self.asked += 1
        query = dns.message.from_wire(data)
        reply = dns.message.make_response(query)
        if query.question[0].name.to_text() == "example.com.":
            reply.answer.append(dns.rrset.from_text("example.com.", 60, "IN", "A", "192.0.2.1"))
        else:
            reply.set_rcode(dns.rcode.NXDOMAIN)
        return reply.to_wire()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(self.answer(data), addr)

    async def serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        size = int.from_bytes(await reader.readexactly(2), "big")
        out = self.answer(await reader.readexactly(size))
        writer.write(len(out).to_bytes(2, "big") + out)
        await writer.drain()
        writer.close()


@pytest.fixture
async def recursor() -> AsyncIterator[tuple[TinyRecursor, int]]:
    loop = asyncio.get_running_loop()
    proto = TinyRecursor()
    transport, _ = await loop.create_datagram_endpoint(lambda: proto, local_addr=(LOCAL, 0))
    port = transport.get_extra_info("sockname")[1]
    tcp_server = await asyncio.start_server(proto.serve_tcp, LOCAL, port)
    yield proto, port
    transport.close()
    tcp_server.close()


@pytest.fixture
async def silent() -> AsyncIterator[int]:
    """A UDP port that takes queries and never answers (a dead recursor)."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=(LOCAL, 0)
    )
    yield transport.get_extra_info("sockname")[1]
    transport.close()


async def test_recursors_answer_other_names_in_order_past_a_dead_one(
    start: Start, recursor: tuple[TinyRecursor, int], silent: int
) -> None:
    proto, port = recursor
    _, dns_port = await start(recursors=((LOCAL, silent), (LOCAL, port)), recursor_timeout=0.3)
    reply = await udp(dns_port, "example.com", "A")
    assert reply.rcode() == dns.rcode.NOERROR and reply.answer[0][0].address == "192.0.2.1"
    over_tcp = await tcp(dns_port, "example.com", "A")
    assert over_tcp.answer[0][0].address == "192.0.2.1"
    assert (await udp(dns_port, "nx.example.org", "A")).rcode() == dns.rcode.NXDOMAIN
    assert proto.asked == 3
    # Names of the domain are never recursed.
    assert (await udp(dns_port, "web.service.consul", "A")).rcode() == dns.rcode.NOERROR
    assert proto.asked == 3


async def test_recursors_that_do_not_answer_give_servfail(start: Start, silent: int) -> None:
    server, port = await start(recursors=((LOCAL, silent),), recursor_timeout=0.2)
    began = time.monotonic()
    reply = await udp(port, "example.com", "A")
    assert reply.rcode() == dns.rcode.SERVFAIL and reply.flags & dns.flags.RA
    assert time.monotonic() - began < 2.0
    assert server.metrics.rejected["recursors failed"] == 1


async def test_without_recursors_other_names_are_servfail(start: Start) -> None:
    _, port = await start()
    assert (await udp(port, "example.com", "A")).rcode() == dns.rcode.SERVFAIL


# ---------------------------------------------------------------------------- bad input


async def test_junk_never_stops_the_listener(start: Start) -> None:
    server, port = await start()
    rng = random.Random(42)
    valid = dns.message.make_query("web.service.consul", "SRV").to_wire()
    loop = asyncio.get_running_loop()
    sock, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, remote_addr=(LOCAL, port)
    )
    junk = [b"\x00", valid[:5], valid[:15], valid + b"trailing"]
    junk += [rng.randbytes(rng.randrange(1, 600)) for _ in range(300)]
    for _ in range(300):  # valid packets with a few bytes flipped
        flipped = bytearray(valid)
        for _ in range(rng.randrange(1, 4)):
            flipped[rng.randrange(len(flipped))] = rng.randrange(256)
        junk.append(bytes(flipped))
    pointer_loop = valid[:12] + b"\xc0\x0c\x00\x01\x00\x01"
    long_name = (
        valid[:12] + b"\x3f" + b"a" * 63 + (b"\x3f" + b"b" * 63) * 4 + b"\x00\x00\x01\x00\x01"
    )
    junk += [pointer_loop, long_name, rng.randbytes(60000)]
    for start_at in range(0, len(junk), 20):  # in batches, so no socket buffer overflows
        batch = junk[start_at : start_at + 20]
        for packet in batch:
            sock.sendto(packet)
        sent = start_at + len(batch)
        await wait_for(lambda n=sent: server.metrics.queries_udp >= n, f"{sent} junk packets read")
    sock.close()
    assert sum(server.metrics.rejected.values()) > 100
    assert server.metrics.rejected["shorter than a DNS header"] >= 2
    reply = await udp(port, "web.service.consul", "SRV")
    assert reply.rcode() == dns.rcode.NOERROR and len(reply.answer[0]) == 2


async def test_tcp_junk_and_stalls_close_the_connection_only(start: Start) -> None:
    server, port = await start()
    reader, writer = await asyncio.open_connection(LOCAL, port)
    writer.write(b"\x00\x05hello")
    await writer.drain()
    formerr_or_eof = await asyncio.wait_for(reader.read(100), 3)
    assert formerr_or_eof == b"" or formerr_or_eof[5] & 0x0F == dns.rcode.FORMERR
    writer.close()
    reader, writer = await asyncio.open_connection(LOCAL, port)
    writer.write(b"\xff\xff" + b"x" * 10)  # announces 65535 bytes, sends 10, then stalls
    await writer.drain()
    assert (await tcp(port, "web.service.consul", "A")).rcode() == dns.rcode.NOERROR
    writer.close()
    assert server.metrics.rejected


# ---------------------------------------------------------------------------- datacenters


async def test_other_datacenters_are_answered_by_their_servers_over_rpc(tmp_path: Path) -> None:
    async with Cluster(tmp_path) as cluster:
        s1 = await cluster.start("s1", server=True)
        s2 = await cluster.start("s2", dc="dc2", server=True, join_wan=[s1])
        await wait_for(lambda: "dc2" in s1.datacenters(), "dc1 knows dc2")
        body = {"Name": "api", "Port": 9090, "Connect": {"SidecarService": {"Port": 21500}}}
        assert (await cluster.put(s2, "/v1/agent/service/register", json=body))[0] == 200
        assert s1.dns is not None
        port = s1.bound["dns"][1]

        async def sidecar_listed() -> bool:
            reply = await udp(port, "api.connect.dc2.consul", "SRV")
            return reply.rcode() == dns.rcode.NOERROR and bool(reply.answer)

        await wait_for(sidecar_listed, "dc2's api sidecar through dc1's DNS", timeout=15)
        reply = await udp(port, "api.connect.dc2.consul", "SRV")
        assert [(r.port, str(r.target)) for r in reply.answer[0]] == [
            (21500, "s2.node.dc2.consul.")
        ]
        assert str(reply.additional[0].name) == "s2.node.dc2.consul."
        a = await tcp(port, "api.service.dc2.consul", "A")
        assert a.answer[0][0].address == "127.0.0.1"
        node = await udp(port, "S2.node.dc2.consul", "A")
        assert node.rcode() == dns.rcode.NOERROR and node.answer[0][0].address == "127.0.0.1"
        assert (await udp(port, "nope.service.dc2.consul", "A")).rcode() == dns.rcode.NXDOMAIN
        assert (await udp(port, "api.service.dc7.consul", "A")).rcode() == dns.rcode.SERVFAIL
        assert (await udp(port, "api.service.dc1.consul", "A")).rcode() == dns.rcode.NXDOMAIN


async def test_dns_port_minus_one_disables_the_listener(tmp_path: Path) -> None:
    async with Cluster(tmp_path) as cluster:
        config = cluster.config("c1")
        agent_config = dataclasses.replace(config, ports=dataclasses.replace(config.ports, dns=-1))
        from node.agent.agent import Agent

        assert Agent(agent_config).dns is None


async def test_metrics_endpoint_shows_dns_counters(
    aiohttp_client: Callable[[Any], Awaitable[Any]],
) -> None:
    from node.agent.agent import Agent
    from node.api.app import make_app
    from node.config.agent import TelemetryConfig, load

    config = load([], dev=True, overrides={"node": "m1", "http-port": 0, "dns-port": 0})
    # Prometheus text is served only with a retention time, as in Consul.
    telemetry = TelemetryConfig(prometheus_retention_time=60.0)
    agent = Agent(dataclasses.replace(config, telemetry=telemetry))
    assert agent.dns is not None
    _, port = await agent.dns.start(LOCAL, 0)
    try:
        await udp(port, "m1.node.consul", "A")
        await udp(port, "nope.node.consul", "A")
        agent.dns.respond(b"\x00\x01", udp=True)
        client = await aiohttp_client(make_app(agent))
        body = await (await client.get("/v1/agent/metrics")).json()
        assert body["DNS"]["QueriesUDP"] == 2
        assert body["DNS"]["Replies"] == {"NOERROR": 1, "NXDOMAIN": 1}
        assert body["DNS"]["Rejected"] == {"shorter than a DNS header": 1}
        text = await (await client.get("/v1/agent/metrics", params={"format": "prometheus"})).text()
        assert 'meshnode_dns_queries_total{transport="udp"} 2' in text
        assert 'meshnode_dns_rejected_total{reason="shorter than a DNS header"} 1' in text
    finally:
        await agent.dns.aclose()
