"""Domain errors → HTTP status codes, in one table.

Rule: this is the only place that knows which status an error becomes. Handlers raise
``node.errors`` exceptions (or let domain code raise them); ``error_middleware`` turns
them into a plain-text response like Consul's (status + one message line). Anything
not in the table is a bug: 500, and the traceback is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Final

from aiohttp import web

from node import errors

__all__ = ["STATUS_BY_ERROR", "status_for", "error_middleware"]

log = logging.getLogger(__name__)

# Most specific first: status_for walks the MRO, so a subclass may override its base.
STATUS_BY_ERROR: Final[Mapping[type[BaseException], int]] = MappingProxyType(
    {
        errors.NotFound: 404,
        errors.Conflict: 409,
        errors.InvalidRequest: 400,
        errors.TrustError: 403,
        errors.UpstreamUnavailable: 503,
        # Consul answers "No path to datacenter" with a 500 and clients rely on the text.
        errors.DatacenterUnavailable: 500,
        errors.NoClusterLeader: 500,
    }
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def status_for(exc: BaseException) -> int | None:
    """The mapped status of ``exc`` (nearest class in its MRO), or ``None`` if unmapped."""
    for cls in type(exc).__mro__:
        status = STATUS_BY_ERROR.get(cls)
        if status is not None:
            return status
    return None


def _text(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message + "\n", content_type="text/plain")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map domain errors through the table; log and 500 everything unmapped."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except errors.NodeError as exc:
        status = status_for(exc)
        if status is None:
            return _unmapped(request, exc)
        return _text(status, str(exc) or type(exc).__name__)
    except Exception as exc:  # task boundary of one request: log, never kill the server
        return _unmapped(request, exc)


def _unmapped(request: web.Request, exc: Exception) -> web.Response:
    log.error(
        "unhandled error in request method=%s path=%s error=%r",
        request.method,
        request.path,
        exc,
        exc_info=exc,
    )
    return _text(500, f"internal error: {type(exc).__name__}: {exc}")
