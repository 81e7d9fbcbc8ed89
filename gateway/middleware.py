"""The one middleware (request id, auth, errors as OpenAI JSON, the log line) and its parts."""
from __future__ import annotations

import asyncio
import itertools
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
from .logs import REQUEST_ID, access
from .state import KEYSTORE, SETTINGS

log = structlog.get_logger("gateway.http")

OPEN_PATHS = frozenset({"/health"})
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
PROVIDER_HEADER = "X-Gateway-Provider"


LOG_FIELDS = "log_fields"  # request key: fields for the request's closing log line


def note(request: web.Request, **fields: object) -> None:
    """Add fields to the request's closing log line."""
    request[LOG_FIELDS].update(fields)


_RID_PREFIX = os.urandom(8).hex()  # per process: ids stay unique across replicas and restarts
_rid_counter = itertools.count(1)


def request_id_for(request: web.Request) -> str:
    """The client's X-Request-Id when it is sane, else a new one (no syscall per request)."""
    given = request.headers.get("X-Request-Id")
    if given and _REQUEST_ID_OK.match(given):
        return given
    return f"{_RID_PREFIX}{next(_rid_counter):016x}"


@web.middleware
async def gateway(request: web.Request, handler) -> web.StreamResponse:
    """Every request: its id, client auth, OpenAI-shaped errors and one JSON log line.

    One middleware rather than three: each layer costs a coroutine frame on every request.
    """
    rid = request_id_for(request)
    fields: dict = {"request_id": rid}  # the request's log line, filled in as it is served
    request[LOG_FIELDS] = fields
    REQUEST_ID.set(rid)  # every line logged inside the request carries it (a task's own context)
    start = time.perf_counter_ns()
    status = 500
    try:
        try:
            if request.app[SETTINGS].enable_incoming_auth:
                await authenticate(request)
            response = await handler(request)
        except Exception as e:
            response = error_for(request, e)
        if not response.prepared:  # a stream stamped itself before its first byte
            stamp_response(fields, response)
        status = response.status
        return response
    except asyncio.CancelledError:
        status = 499  # the client went away
        raise
    finally:
        latency_ms = (time.perf_counter_ns() - start) // 1000 / 1000  # ms, to the microsecond
        path = request.path
        fields.update(method=request.method, path=path, status=status, latency_ms=latency_ms)
        access("request", "debug" if path in OPEN_PATHS else "info", fields)


REPAIRS_HEADER = "X-Gateway-Repairs"


def stamp_response(fields: dict, response: web.StreamResponse) -> None:
    """Every response, streamed or not, carries its request id, and the number of transcript
    repairs when the gateway changed the client's messages. Call before the response is prepared.
    ``fields`` is the request's log line (``request[LOG_FIELDS]``)."""
    response.headers["X-Request-Id"] = fields["request_id"]
    repairs = fields.get("repairs")
    if repairs:
        response.headers[REPAIRS_HEADER] = str(repairs)


def error_for(request: web.Request, exc: Exception) -> web.StreamResponse:
    """Every failure becomes an OpenAI-shaped error with the right status; never a traceback.
    What is not a failure (a redirect, a client that hung up) is raised again."""
    try:
        raise exc
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
    except ConnectionResetError:
        raise
    except Exception:
        log.exception("unhandled_error")
        return error_response(GatewayError("internal gateway error; see the gateway log for this request id"))


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        token = token.strip()
    else:
        token = request.headers.get("x-api-key") or ""
    # aiohttp decodes header bytes as UTF-8 with surrogateescape; a key is visible ASCII
    # (sk-glm- + urlsafe base64), so anything else can never match: refused without hashing
    if token and not (token.isascii() and token.isprintable()):
        raise Unauthorized("invalid or revoked API key")
    return token or None


async def authenticate(request: web.Request) -> None:
    """Bearer keys checked against the keystore (cached). Open paths pass, and unknown routes
    answer 404 before asking for a key."""
    if request.path in OPEN_PATHS or request.match_info.http_exception is not None:
        return
    token = bearer_token(request)
    if token is None:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <your gateway key>'")
    store = request.app[KEYSTORE]
    key = await store.authenticate(token)
    if key is None:
        raise Unauthorized("invalid or revoked API key")
    store.record_use(key.id)
    request[LOG_FIELDS]["client"] = key.name
