"""Errors that know their HTTP status, OpenAI type/code and whether a retry elsewhere may help.

Every error a client sees is rendered by :func:`error_body` / :func:`error_response`, so the
shape is always ``{"error": {"message", "type", "param", "code"}}``.
"""
from __future__ import annotations

import math
from typing import Any

import orjson
from aiohttp import web


class GatewayError(Exception):
    status: int = 500
    type: str = "api_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        if code is not None:
            self.code = code
        self.param = param
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        headers = retry_headers(self.retry_after)
        if not should_retry(self.status):
            headers[NO_RETRY_HEADER] = "false"
        return headers


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class Unauthorized(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class Forbidden(GatewayError):
    status = 403
    type = "permission_error"
    code = "insufficient_permissions"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class MethodNotAllowed(GatewayError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RequestTimeout(GatewayError):
    """The client did not send its request (head or body) in time; the connection is closed."""

    status = 408
    type = "invalid_request_error"
    code = "request_timeout"
    retryable = True

    def headers(self) -> dict[str, str]:
        return {**super().headers(), "Connection": "close"}


class MalformedRequest(InvalidRequest):
    """Bytes that are not a valid HTTP/1.1 request; the connection cannot be used further."""

    code = "malformed_request"

    def headers(self) -> dict[str, str]:
        return {**super().headers(), "Connection": "close", "x-should-retry": "false"}


class ExpectationFailed(GatewayError):
    status = 417
    type = "invalid_request_error"
    code = "expectation_failed"

    def headers(self) -> dict[str, str]:
        return {**super().headers(), "x-should-retry": "false"}


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class QuotaExhausted(GatewayError):
    """A budget is spent (a client key's, or every provider's monthly cap): 429 like OpenAI's
    ``insufficient_quota``, which its SDKs must not retry; Retry-After says when it resets."""

    status = 429
    type = "insufficient_quota"
    code = "budget_exceeded"

    def headers(self) -> dict[str, str]:
        headers = super().headers()
        headers[NO_RETRY_HEADER] = "false"
        return headers


class BadGateway(GatewayError):
    status = 502
    type = "api_error"
    code = "upstream_error"


class ServiceUnavailable(GatewayError):
    status = 503
    type = "api_error"
    code = "service_unavailable"


class GatewayTimeout(GatewayError):
    status = 504
    type = "api_error"
    code = "upstream_timeout"


class UpstreamPassthrough(Exception):
    """An upstream error the client caused (a 4xx: a bad parameter, say): the client gets its
    status and its meaning, in OpenAI's envelope (see :func:`upstream_error_body`)."""

    def __init__(self, status: int, body: bytes, content_type: str | None, provider: str) -> None:
        super().__init__(f"upstream returned {status}")
        self.provider = provider
        self.status = status
        self.body = body
        self.content_type = content_type or "application/json"


NO_RETRY_HEADER = "x-should-retry"
_RETRIED = frozenset({408, 409, 429})  # the 4xx statuses OpenAI's SDKs retry


def should_retry(status: int) -> bool:
    """Whether a retry of the same request may succeed: not for a 4xx the request itself caused."""
    return not (400 <= status < 500) or status in _RETRIED


_TYPE_FOR_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}
MAX_UPSTREAM_MESSAGE = 2000  # characters of a non-JSON upstream error body shown to the client


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def upstream_error_body(status: int, body: bytes) -> dict[str, Any]:
    """An upstream's error answer in OpenAI's envelope, whatever shape it came in.

    OpenAI's own ``{"error": {...}}`` keeps its fields; Cerebras's flat ``{"message", "type",
    "param", "code"}`` is wrapped; ``{"error": "text"}``, ``{"detail": ...}`` (FastAPI-style) and
    non-JSON bodies become the message. Without this the Node SDK reports "400 status code (no
    body)" and the AI SDK "Bad Request". (Pure.)"""
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        data = None
    fallback_type = _TYPE_FOR_STATUS.get(status, "invalid_request_error" if status < 500 else "api_error")
    inner: object = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(inner, dict):
        message = inner.get("message") or inner.get("msg") or inner.get("detail") or inner.get("error")
        fields = {
            "message": _text(message) or f"upstream answered {status}",
            "type": _text(inner.get("type")) or fallback_type,
            "param": _text(inner.get("param")),
            "code": _text(inner.get("code")),
        }
    elif isinstance(inner, str) and inner.strip():
        fields = {"message": inner, "type": fallback_type, "param": None, "code": None}
    else:
        text = body.decode("utf-8", "replace").strip()[:MAX_UPSTREAM_MESSAGE] if data is None else ""
        fields = {"message": text or f"upstream answered {status}", "type": fallback_type, "param": None,
                  "code": None}
    return {"error": fields}


def retry_headers(retry_after: float | None) -> dict[str, str]:
    if retry_after is None:
        return {}
    seconds = max(0.0, retry_after)
    return {
        "Retry-After": str(max(1, math.ceil(seconds))),
        "retry-after-ms": str(int(seconds * 1000)),
    }


def error_body(message: str, type: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(err: GatewayError, extra_headers: dict[str, str] | None = None) -> web.Response:
    headers = err.headers()
    if extra_headers:
        headers.update(extra_headers)
    return web.Response(
        status=err.status,
        body=orjson.dumps(error_body(err.message, err.type, err.code, err.param)),
        content_type="application/json",
        headers=headers,
    )
