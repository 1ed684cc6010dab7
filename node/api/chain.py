"""``GET|POST /v1/discovery-chain/:service``: the compiled discovery chain, Consul's shape.

Rule: the chain is compiled by ``node.connect.chain`` from this node's copy of the config
entries (they are replicated to every datacenter, so the answer of another datacenter's
servers is the same compile with that datacenter as ``use_in_datacenter``); the POST body
carries Consul's overrides. Blocking follows the config entries' index.
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from node.api import codec
from node.api.chaincodec import encode_chain
from node.api.connect import serve_global_read
from node.api.read import ReadSpec
from node.api.state import AGENT, AgentAPI
from node.catalog.parse import parse_mesh_gateway_mode
from node.config.reader import Fields, Names, read_duration
from node.connect.chain import ChainRequest, compile_chain
from node.connect.entries import CONFIG_ENTRY_KINDS
from node.errors import InvalidRequest

__all__ = ["routes", "parse_chain_overrides"]

routes = web.RouteTableDef()

_OVERRIDE_KEYS: Final = Names.pascal_or_snake(
    {
        "OverrideProtocol": "override_protocol",
        "OverrideConnectTimeout": "override_connect_timeout",
        "OverrideMeshGateway": "override_mesh_gateway",
    }
)
_MODE_KEYS: Final = Names.pascal_or_snake({"Mode": "mode"})


def parse_chain_overrides(raw: object) -> dict[str, Any]:
    """A POST body → ``ChainRequest`` override keyword arguments."""
    f = Fields(raw, "", _OVERRIDE_KEYS)
    out: dict[str, Any] = {}
    protocol = f.raw("OverrideProtocol")
    if protocol is not None:
        if not isinstance(protocol, str | int | float) or isinstance(protocol, bool):
            raise f.error("OverrideProtocol", "a string")
        out["override_protocol"] = str(protocol).lower()  # Consul decodes it weakly
    if f.has("OverrideConnectTimeout"):
        out["override_connect_timeout"] = read_duration(
            f.raw("OverrideConnectTimeout"), field="OverrideConnectTimeout"
        )
    if f.has("OverrideMeshGateway"):
        mode = Fields(f.raw("OverrideMeshGateway"), "OverrideMeshGateway", _MODE_KEYS).raw("Mode")
        try:
            out["override_mesh_gateway"] = parse_mesh_gateway_mode(mode if mode else "")
        except (InvalidRequest, TypeError, ValueError):
            raise InvalidRequest(
                "Invalid OverrideMeshGateway.Mode parameter", field="OverrideMeshGateway.Mode"
            ) from None
    return out


def _chain(agent: AgentAPI, request: ChainRequest) -> tuple[Any, int]:
    chain = compile_chain(request, agent.connect.config_entries())
    return chain, agent.connect.index_of(*CONFIG_ENTRY_KINDS)


CHAIN = ReadSpec(name="discovery-chain", query=_chain, encode=lambda a, c: encode_chain(c))


async def _serve(request: web.Request, overrides: dict[str, Any]) -> web.StreamResponse:
    agent = request.app[AGENT]
    service = request.match_info.get("service", "")
    if not service:
        raise InvalidRequest("Missing chain name", field="service")
    if not agent.config.connect.enabled:
        return web.Response(
            status=500, text="Connect must be enabled in order to use this endpoint\n"
        )
    td = agent.connect.trust_domain
    if not td:
        return web.Response(status=500, text="no cluster ca config setup\n")
    local = agent.config.datacenter
    use_in = request.query.get("dc") or local
    chain_request = ChainRequest(
        service=service,
        datacenter=request.query.get("compile-dc") or use_in,
        use_in_datacenter=use_in,
        trust_domain=td,
        **overrides,
    )
    return await serve_global_read(request, CHAIN, {"request": chain_request})


@routes.get("/v1/discovery-chain/{service}")
async def chain_get(request: web.Request) -> web.StreamResponse:
    """The chain of ``:service`` with no overrides."""
    return await _serve(request, {})


@routes.post("/v1/discovery-chain/{service}")
async def chain_post(request: web.Request) -> web.StreamResponse:
    """The chain with the body's ``Override*`` options."""
    body = await request.read()
    raw = codec.decode_object(body, what="discovery chain options") if body.strip() else {}
    return await _serve(request, parse_chain_overrides(raw))
