"""Errors in Anthropic's shape, for the ``/v1/messages`` routes (pure but for the Response).

Anthropic's SDKs read ``{"type": "error", "error": {"type", "message"}}`` and act on the status:
they retry 408, 409, 429 and every 5xx (``retry-after-ms``/``retry-after`` say how long to wait),
and 529 is "overloaded". The gateway's errors carry OpenAI terms (status, type, code); this module
maps them, so one renderer serves every failure on these routes (``middleware.error_for`` picks
it by the path).
"""
from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from ..errors import GatewayError

PATH_PREFIX = "/v1/messages"  # these routes, and any unknown path under them, answer in this shape
OVERLOADED = 529

_TYPE_FOR_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    504: "timeout_error",
    OVERLOADED: "overloaded_error",
}


def is_anthropic_path(path: str) -> bool:
    return path.startswith(PATH_PREFIX) and (len(path) == len(PATH_PREFIX) or path[len(PATH_PREFIX)] == "/")


def status_for(err: GatewayError) -> int:
    """The status Anthropic's clients get: a 503 the gateway can name a retry time for (upstreams
    failing, breakers open) is Anthropic's 529 overload, which SDKs and Claude Code retry."""
    if err.status == 503 and err.retry_after is not None:
        return OVERLOADED
    return err.status


def type_for(status: int) -> str:
    """Anthropic's error type for a status (unknown 4xx: invalid request; 5xx: api_error)."""
    known = _TYPE_FOR_STATUS.get(status)
    if known is not None:
        return known
    return "invalid_request_error" if status < 500 else "api_error"


def error_body(type: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": type, "message": message}}


def error_response(err: GatewayError, extra_headers: dict[str, str] | None = None) -> web.Response:
    """The Anthropic-shaped twin of ``errors.error_response``: same headers (``retry-after``,
    ``retry-after-ms``, ``x-should-retry: false`` where retrying cannot help)."""
    headers = err.headers()
    if extra_headers:
        headers.update(extra_headers)
    status = status_for(err)
    return web.Response(
        status=status,
        body=orjson.dumps(error_body(type_for(status), err.message)),
        content_type="application/json",
        headers=headers,
    )


def error_event(type: str, message: str) -> bytes:
    """An SSE ``error`` event, as Anthropic sends when a stream fails after it began."""
    return b"event: error\ndata: " + orjson.dumps(error_body(type, message)) + b"\n\n"
