"""Middlewares, outermost first: observe (request id, log line) -> errors (-> JSON) -> auth."""
from __future__ import annotations

import asyncio
import os
import re
import time

import structlog
from aiohttp import web

from .errors import (
    GatewayError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    UpstreamPassthrough,
    error_response,
)
from .state import KEYSTORE, SETTINGS

log = structlog.get_logger("gateway.http")

OPEN_PATHS = frozenset({"/health"})
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
PROVIDER_HEADER = "X-Gateway-Provider"


LOG_FIELDS = "log_fields"  # request key: fields for the request's closing log line


def note(request: web.Request, **fields: object) -> None:
    """Add fields to the request's closing log line."""
    request[LOG_FIELDS].update(fields)


def request_id_for(request: web.Request) -> str:
    given = request.headers.get("X-Request-Id", "")
    if given and _REQUEST_ID_OK.match(given):
        return given
    return os.urandom(16).hex()


@web.middleware
async def observe(request: web.Request, handler) -> web.StreamResponse:
    """Request id, structlog context and one JSON line per request."""
    rid = request_id_for(request)
    request["request_id"] = rid
    fields: dict = {}
    request[LOG_FIELDS] = fields
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=rid)  # every line logged inside the request
    start = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except asyncio.CancelledError:
        status = 499  # the client went away
        raise
    finally:
        latency_ms = round((time.perf_counter() - start) * 1000, 3)
        emit = log.debug if request.path in OPEN_PATHS else log.info
        emit("request", method=request.method, path=request.path, status=status, latency_ms=latency_ms, **fields)


REPAIRS_HEADER = "X-Gateway-Repairs"


async def stamp_response(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every response, streamed or not, carries its request id, and the
    number of transcript repairs when the gateway changed the client's messages."""
    rid = request.get("request_id")
    if rid:
        response.headers["X-Request-Id"] = rid
    repairs = request.get("repairs")
    if repairs:
        response.headers[REPAIRS_HEADER] = str(repairs)


@web.middleware
async def errors(request: web.Request, handler) -> web.StreamResponse:
    """Every failure becomes an OpenAI-shaped error with the right status; never a traceback."""
    try:
        return await handler(request)
    except GatewayError as e:
        return error_response(e)
    except UpstreamPassthrough as e:
        note(request, provider=e.provider)
        return web.Response(
            status=e.status, body=e.body, headers={"Content-Type": e.content_type, PROVIDER_HEADER: e.provider}
        )
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SETTINGS].max_request_bytes
        return error_response(PayloadTooLarge(f"the request body is larger than the limit of {limit} bytes"))
    except web.HTTPNotFound:
        return error_response(NotFound(f"no route for {request.method} {request.path}"))
    except web.HTTPMethodNotAllowed as e:
        return error_response(
            MethodNotAllowed(f"{request.method} is not allowed on {request.path}"),
            {"Allow": ", ".join(sorted(e.allowed_methods))},
        )
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return error_response(GatewayError(e.reason or "error", status=e.status, type="invalid_request_error"))
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("unhandled_error")
        return error_response(GatewayError("internal gateway error; see the gateway log for this request id"))


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key") or None


@web.middleware
async def auth(request: web.Request, handler) -> web.StreamResponse:
    """Bearer keys checked against the keystore (cached); unknown routes answer 404 first."""
    if (
        not request.app[SETTINGS].enable_incoming_auth
        or request.path in OPEN_PATHS
        or request.match_info.http_exception is not None
    ):
        return await handler(request)
    token = bearer_token(request)
    if token is None:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <your gateway key>'")
    store = request.app[KEYSTORE]
    key = await store.authenticate(token)
    if key is None:
        raise Unauthorized("invalid or revoked API key")
    store.record_use(key.id)
    request["client"] = key.name
    note(request, client=key.name)
    return await handler(request)
