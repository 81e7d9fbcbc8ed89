"""Anthropic's error shapes: which status and type each gateway error becomes (pure)."""
from __future__ import annotations

import orjson
import pytest

from gateway.anthropic.errors import error_event, error_response, is_anthropic_path, status_for, type_for
from gateway.errors import (
    BadGateway,
    GatewayError,
    GatewayTimeout,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
)


@pytest.mark.parametrize("err,status,type_", [
    (InvalidRequest("x"), 400, "invalid_request_error"),
    (Unauthorized("x"), 401, "authentication_error"),
    (GatewayError("x", status=403), 403, "permission_error"),
    (NotFound("x"), 404, "not_found_error"),
    (PayloadTooLarge("x"), 413, "request_too_large"),
    (GatewayError("x", status=418), 418, "invalid_request_error"),
    (RateLimited("x", retry_after=2.5), 429, "rate_limit_error"),
    (GatewayError("x"), 500, "api_error"),
    (BadGateway("x"), 502, "api_error"),
    (ServiceUnavailable("upstreams failing", code="upstream_unavailable", retry_after=1.0), 529, "overloaded_error"),
    (ServiceUnavailable("every key disabled"), 503, "api_error"),
    (GatewayTimeout("x"), 504, "timeout_error"),
])
def test_status_and_type(err, status, type_):
    assert status_for(err) == status and type_for(status) == type_
    resp = error_response(err)
    assert resp.status == status
    assert orjson.loads(resp.body) == {"type": "error", "error": {"type": type_, "message": err.message}}


def test_headers_are_kept():
    resp = error_response(RateLimited("slow down", retry_after=2.5), {"X-Gateway-Provider": "cerebras"})
    assert (resp.headers["Retry-After"], resp.headers["retry-after-ms"]) == ("3", "2500")
    assert resp.headers["X-Gateway-Provider"] == "cerebras" and "x-should-retry" not in resp.headers
    assert error_response(InvalidRequest("bad"), None).headers["x-should-retry"] == "false"


@pytest.mark.parametrize("path,expected", [
    ("/v1/messages", True), ("/v1/messages/count_tokens", True), ("/v1/messages/x/y", True),
    ("/v1/messagesX", False), ("/v1/chat/completions", False), ("/messages", False), ("/", False),
])
def test_which_paths(path, expected):
    assert is_anthropic_path(path) is expected


def test_error_event():
    assert error_event("api_error", "broke") == (
        b'event: error\ndata: {"type":"error","error":{"type":"api_error","message":"broke"}}\n\n')
