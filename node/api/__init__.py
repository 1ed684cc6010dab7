"""node.api: Consul's HTTP API over aiohttp.

``make_app(agent)`` builds the application (routes per area: agent, catalog, health,
status); ``HTTPServer`` runs it. Consul JSON shapes live only in ``codec``, the error →
status table only in ``errors``, blocking-query semantics only in ``blocking``.
"""

from node.api.app import MAX_BODY_BYTES, AgentAPI, HTTPServer, make_app
from node.api.blocking import (
    DEFAULT_WAIT,
    MAX_WAIT,
    QueryOptions,
    parse_query_options,
    run_blocking,
)
from node.api.errors import STATUS_BY_ERROR, status_for
from node.api.read import ReadSpec, ResponseCache, serve_read

__all__ = [
    "AgentAPI",
    "DEFAULT_WAIT",
    "HTTPServer",
    "MAX_BODY_BYTES",
    "MAX_WAIT",
    "QueryOptions",
    "ReadSpec",
    "ResponseCache",
    "STATUS_BY_ERROR",
    "make_app",
    "parse_query_options",
    "run_blocking",
    "serve_read",
    "status_for",
]
