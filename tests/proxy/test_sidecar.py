"""Sidecar listeners on loopback: mTLS accepted/refused, identity checks, rotation."""

from __future__ import annotations

import asyncio
import ssl

import pytest
from cryptography import x509

from node.connect.names import service_sni
from node.connect.tls import make_client_context
from node.errors import ProxyError
from node.proxy.metrics import ListenerStats
from node.proxy.plan import Endpoint, PublicPlan, TLSMaterial, UpstreamPlan
from node.proxy.sidecar import PublicListener, TLSState, UpstreamListener
from tests.helpers.ca import TD, MeshTestCA
from tests.helpers.poll import wait_for
from tests.proxy.proxy_helpers import Backend, read_until_closed


def material(ca: MeshTestCA, service: str, **kw: object) -> TLSMaterial:
    cert, key = ca.leaf(service, **kw)  # type: ignore[arg-type]
    return TLSMaterial(cert_pem=cert, key_pem=key, roots_pem=(ca.root_pem,), trust_domain=TD)


def public_plan(app_port: int, port: int = 0) -> PublicPlan:
    return PublicPlan(
        name="api-proxy:public",
        bind_address="127.0.0.1",
        bind_port=port,
        service="api",
        local_address="127.0.0.1",
        local_port=app_port,
        connect_timeout=2.0,
    )


def upstream_plan(endpoints: tuple[Endpoint, ...], target: str = "api") -> UpstreamPlan:
    return UpstreamPlan(
        name="web-proxy:upstream:api",
        bind_address="127.0.0.1",
        bind_port=0,
        target_service=target,
        target_namespace="default",
        target_dc="dc1",
        sni=service_sni(target, "default", "dc1", TD),
        mode="none",
        endpoints=endpoints,
        connect_timeout=2.0,
    )


async def start_public(ca: MeshTestCA, app: Backend, allow: set[str]) -> PublicListener:
    pub = PublicListener(
        public_plan(app.port),
        tls=TLSState(material(ca, "api")),
        stats=ListenerStats("api-proxy:public", "public"),
        authorize=lambda source: source in allow,
    )
    await pub.start()
    return pub


async def tls_client(
    pub: PublicListener, mat: TLSMaterial
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    ctx = make_client_context(mat.cert_pem, mat.key_pem, mat.roots_pem)
    return await asyncio.open_connection(
        *pub.address, ssl=ctx, server_hostname=service_sni("api", "default", "dc1", TD)
    )


async def test_PublicListener_accepts_good_leaf(ca: MeshTestCA) -> None:
    app = await Backend().start()
    pub = await start_public(ca, app, {"web"})
    reader, writer = await tls_client(pub, material(ca, "web"))
    writer.write(b"hello api")
    assert await reader.readexactly(9) == b"hello api"
    assert bytes(app.received) == b"hello api"
    writer.close()
    await wait_for(lambda: pub.stats.closed == 1, "the connection closed")
    assert pub.stats.bytes_in == 9 and pub.stats.bytes_out == 9
    pub.close()
    await app.aclose()


async def _refused(pub: PublicListener, mat: TLSMaterial) -> None:
    try:
        reader, writer = await tls_client(pub, mat)
    except (ssl.SSLError, ConnectionError):
        return  # refused in the handshake
    try:
        writer.write(b"secret")
        await writer.drain()
        assert await read_until_closed(reader) == b""
    except (ssl.SSLError, ConnectionError):
        pass
    writer.close()


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("other_ca", "tls_handshake_failed"),
        ("expired", "tls_handshake_failed"),
        ("foreign_td", "peer_identity"),
        ("not_a_service", "peer_identity"),
        ("denied", "intention_denied"),
    ],
)
async def test_PublicListener_refuses(
    ca: MeshTestCA, other_ca: MeshTestCA, case: str, reason: str
) -> None:
    app = await Backend().start()
    pub = await start_public(ca, app, {"web"})
    mats = {
        "other_ca": lambda: material(other_ca, "web"),
        "expired": lambda: material(ca, "web", expired=True),
        "foreign_td": lambda: material(
            ca, "web", uri="spiffe://other.consul/ns/default/dc/dc1/svc/web"
        ),
        "not_a_service": lambda: material(ca, "web", uri=f"spiffe://{TD}"),
        "denied": lambda: material(ca, "evil"),
    }
    mat = mats[case]()
    # The client trusts our CA either way, so only the server's decision is tested.
    mat = TLSMaterial(
        cert_pem=mat.cert_pem, key_pem=mat.key_pem, roots_pem=(ca.root_pem,), trust_domain=TD
    )
    await _refused(pub, mat)
    await wait_for(lambda: pub.stats.closed == 1, what="connection closed")
    assert dict(pub.stats.rejected) == {reason: 1}
    assert app.connections == 0 and bytes(app.received) == b""
    pub.close()
    await app.aclose()


async def test_UpstreamListener_to_PublicListener(ca: MeshTestCA) -> None:
    app = await Backend().start()
    pub = await start_public(ca, app, {"web"})
    up = UpstreamListener(
        upstream_plan((Endpoint(address="127.0.0.1", port=pub.address[1]),)),
        tls=TLSState(material(ca, "web")),
        stats=ListenerStats("web-proxy:upstream:api", "upstream"),
    )
    await up.start()
    reader, writer = await asyncio.open_connection(*up.address)
    writer.write(b"x" * 200_000)
    got = await reader.readexactly(200_000)
    assert got == b"x" * 200_000
    writer.close()
    await wait_for(lambda: up.stats.closed == 1 and pub.stats.closed == 1, "both sides closed")
    assert up.stats.bytes_in == 200_000 and pub.stats.bytes_in == 200_000
    up.close()
    pub.close()
    await app.aclose()


async def test_UpstreamListener_refuses_wrong_server_identity(ca: MeshTestCA) -> None:
    app = await Backend().start()
    pub = await start_public(ca, app, {"web"})  # presents an "api" leaf
    up = UpstreamListener(
        upstream_plan((Endpoint(address="127.0.0.1", port=pub.address[1]),), target="db"),
        tls=TLSState(material(ca, "web")),
        stats=ListenerStats("web-proxy:upstream:db", "upstream"),
    )
    await up.start()
    reader, writer = await asyncio.open_connection(*up.address)
    writer.write(b"for db only")
    assert await read_until_closed(reader) == b""
    assert dict(up.stats.rejected) == {"peer_identity": 1}
    assert bytes(app.received) == b""
    writer.close()
    up.close()
    pub.close()
    await app.aclose()


async def test_UpstreamListener_no_endpoint_closes_at_once(ca: MeshTestCA) -> None:
    up = UpstreamListener(
        upstream_plan(()),
        tls=TLSState(material(ca, "web")),
        stats=ListenerStats("web-proxy:upstream:api", "upstream"),
    )
    await up.start()
    reader, writer = await asyncio.open_connection(*up.address)
    assert await read_until_closed(reader, timeout=1) == b""
    assert dict(up.stats.rejected) == {"no_healthy_endpoint": 1}
    writer.close()
    up.close()


async def test_UpstreamListener_port_in_use_is_a_clear_error(ca: MeshTestCA) -> None:
    blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = blocker.sockets[0].getsockname()[1]
    plan = upstream_plan(())
    from dataclasses import replace

    up = UpstreamListener(
        replace(plan, bind_port=port),
        tls=TLSState(material(ca, "web")),
        stats=ListenerStats("x", "upstream"),
    )
    with pytest.raises(
        ProxyError, match=f"cannot listen on 127.0.0.1:{port}: address already in use"
    ):
        await up.start()
    blocker.close()


async def test_TLSState_rotation_applies_to_new_connections(ca: MeshTestCA) -> None:
    app = await Backend().start()
    pub = await start_public(ca, app, {"web"})
    web = material(ca, "web")
    r1, w1 = await tls_client(pub, web)
    first = w1.get_extra_info("ssl_object").getpeercert(binary_form=True)
    new = material(ca, "api")
    pub.tls.update(new)
    r2, w2 = await tls_client(pub, web)
    second = w2.get_extra_info("ssl_object").getpeercert(binary_form=True)
    assert first != second
    assert x509.load_der_x509_certificate(second) == x509.load_pem_x509_certificate(
        new.cert_pem.encode()
    )
    # The connection made before the rotation still works.
    w1.write(b"old")
    assert await r1.readexactly(3) == b"old"
    w2.write(b"new")
    assert await r2.readexactly(3) == b"new"
    w1.close()
    w2.close()
    pub.close()
    await app.aclose()


async def test_UpstreamListener_resumes_sessions_per_endpoint(ca: MeshTestCA) -> None:
    app = await Backend().start()
    pub = await start_public(ca, app, {"web"})
    up = UpstreamListener(
        upstream_plan((Endpoint(address="127.0.0.1", port=pub.address[1]),)),
        tls=TLSState(material(ca, "web")),
        stats=ListenerStats("web-proxy:upstream:api", "upstream"),
    )
    await up.start()
    made: list[ssl.SSLObject] = []
    for ctx in (up.tls.client,):
        wrap = ctx.wrap_bio

        def spy(*a: object, _wrap: object = wrap, **kw: object) -> ssl.SSLObject:
            obj = _wrap(*a, **kw)  # type: ignore[operator]
            made.append(obj)
            return obj  # type: ignore[no-any-return]

        ctx.wrap_bio = spy  # type: ignore[method-assign]

    async def one(n: int) -> None:
        reader, writer = await asyncio.open_connection(*up.address)
        writer.write(b"hello")
        assert await reader.readexactly(5) == b"hello"
        writer.close()
        await wait_for(
            lambda: up.stats.closed == n and pub.stats.closed == n, f"{n} connections closed"
        )

    await one(1)
    assert len(up.tls.client.sessions) == 1  # the ticket arrived with the first reply
    await one(2)
    assert [o.session_reused for o in made] == [False, True]
    # The server's identity was still checked (from the resumed session) and the
    # public side still authorized the client from its certificate.
    assert dict(up.stats.rejected) == {} and dict(pub.stats.rejected) == {}
    # Rotation on the public side renews its ticket keys: no resumption across it.
    pub.tls.update(material(ca, "api"))
    await one(3)
    assert [o.session_reused for o in made] == [False, True, False]
    # The full handshake's session replaced the refused one.
    await one(4)
    assert made[-1].session_reused
    up.close()
    pub.close()
    await app.aclose()


def test_ResumingClientContext_takes_a_session_after_full_handshakes_and_every_SESSION_REUSE(
    ca: MeshTestCA,
) -> None:
    from node.connect.tls import SESSION_REUSE, make_client_context

    m = material(ca, "web")
    ctx = make_client_context(m.cert_pem, m.key_pem, m.roots_pem)
    key = ("10.0.0.1", 443, "sni")
    assert ctx.wants_session(key, resumed=False)  # first connection: full handshake
    taken = [ctx.wants_session(key, resumed=True) for _ in range(3 * SESSION_REUSE)]
    # One retake per SESSION_REUSE resumptions, not one per connection.
    assert taken.count(True) == 3 and taken[SESSION_REUSE - 1]
    assert ctx.wants_session(key, resumed=False)  # a refused ticket: take the new session
    assert not ctx.wants_session(key, resumed=True)
    assert ctx.wants_session(("10.0.0.2", 443, "sni"), resumed=True)  # unknown endpoint
