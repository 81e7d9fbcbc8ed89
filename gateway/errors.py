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
    retryable: bool = False

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
        return retry_headers(self.retry_after)


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class Unauthorized(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


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
    retryable = True


class BadGateway(GatewayError):
    status = 502
    type = "api_error"
    code = "upstream_error"
    retryable = True


class ServiceUnavailable(GatewayError):
    status = 503
    type = "api_error"
    code = "service_unavailable"
    retryable = True


class GatewayTimeout(GatewayError):
    status = 504
    type = "api_error"
    code = "upstream_timeout"
    retryable = True


class UpstreamPassthrough(Exception):
    """An upstream answer the client must get unchanged (status and body), e.g. a 4xx it caused."""

    def __init__(self, status: int, body: bytes, content_type: str | None, provider: str) -> None:
        super().__init__(f"upstream returned {status}")
        self.provider = provider
        self.status = status
        self.body = body
        self.content_type = content_type or "application/json"


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
