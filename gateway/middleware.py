"""The one middleware (request id, auth, errors as OpenAI JSON, the log line) and its parts."""
from __future__ import annotations

import asyncio
import itertools
import os
import re
import time

import structlog
from aiohttp import web

from . import cors
from .anthropic import errors as anthropic_errors
from .context import Recorder, RequestContext
from .errors import (
    Forbidden,
    GatewayError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    UpstreamPassthrough,
    error_response,
    upstream_error_body,
)
from .keystore import UNCACHED, ClientKey
from .logs import REQUEST_ID, access, redact
from .state import CORS, KEYSTORE, LIVE, RECORDERS, SETTINGS

log = structlog.get_logger("gateway.http")

# the dashboard's page and its files hold no data (gateway/api/dashboard/): open, as /health
DASHBOARD_FILES = ("/dashboard", "/dashboard/dashboard.js", "/dashboard/dashboard.css", "/dashboard/favicon.svg")
OPEN_PATHS = frozenset({"/health", "/health/ready", *DASHBOARD_FILES})
METRICS_PATH = "/metrics"  # open too when METRICS_PUBLIC=true
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
PROVIDER_HEADER = "X-Gateway-Provider"
ADMIN_PATHS = frozenset({"/_status"})  # an admin key only (when auth is on)
STRATEGY_HEADER = "X-Gateway-Strategy"  # (also a request header: the strategy a client picks)
REASON_HEADER = "X-Gateway-Route-Reason"


CONTEXT = "gateway_context"  # request key: the request's RequestContext


def context_of(request: web.Request) -> RequestContext:
    ctx: RequestContext = request[CONTEXT]
    return ctx


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
    """Every request: its id and context, client auth, OpenAI-shaped errors, and in one
    ``finally`` the log line and the app's recorders (usage ledger, metrics), which read the
    context. One middleware rather than three: each layer costs a coroutine frame per request.
    """
    rid = request_id_for(request)
    path = request.path
    ctx = RequestContext(rid, request.method, path)
    request[CONTEXT] = ctx
    REQUEST_ID.set(rid)  # every line logged inside the request carries it (a task's own context)
    app = request.app
    live = app[LIVE]
    live.add(ctx)
    resource = request.match_info.route.resource
    if resource is not None:
        ctx.route = resource.canonical  # the template: a bounded metrics label
    try:
        try:
            policy, preflight = app[CORS], None
            if policy is not None:  # CORS_ORIGINS: an allowed origin's headers; a preflight needs no key
                ctx.cors_headers, preflight = cors.apply(policy, request)
            if preflight is not None:
                response: web.StreamResponse = preflight
            else:
                if app[SETTINGS].enable_incoming_auth:
                    await authenticate(request, ctx)
                response = await handler(request)
        except Exception as e:
            response = error_for(request, e)
            if ctx.log_body:  # the request log records the error the client got
                ctx.error_body = response.body  # type: ignore[attr-defined]
        if not response.prepared:  # a stream stamped itself before its first byte
            stamp_response(ctx, response)
        ctx.status = response.status
        return response
    except asyncio.CancelledError:
        ctx.status = 499  # the client went away
        ctx.client_disconnected = True
        raise
    finally:
        ctx.finished_ns = time.perf_counter_ns()
        live.discard(ctx)
        # aiohttp writes the answer after this middleware returns: the log line and the recorders
        # run on the loop's next turn, once the answer is on its way, not before it
        asyncio.get_running_loop().call_soon(_finish, app[RECORDERS], ctx, "debug" if path in OPEN_PATHS else "info")


def _finish(recorders: list[Recorder], ctx: RequestContext, level: str) -> None:
    """The request's log line, then every recorder (ledger, budgets, metrics...), in order."""
    access("request", level, ctx.log_fields())
    for record in recorders:
        try:
            record(ctx)
        except Exception:  # a recorder's bug must not fail the request it records
            log.exception("recorder_failed", recorder=getattr(record, "__qualname__", repr(record)))


REPAIRS_HEADER = "X-Gateway-Repairs"
OVERHEAD_HEADER = "X-Gateway-Overhead-Ms"


def stamp_response(ctx: RequestContext, response: web.StreamResponse) -> None:
    """Every response, streamed or not, carries its request id, and the number of transcript
    repairs when the gateway changed the client's messages; a proxied one (an upstream was
    called), the gateway's own time so far less the upstream's (``X-Gateway-Overhead-Ms``: for a
    stream, until its headers); an allowed browser origin, the CORS headers. Call before the
    response is prepared."""
    headers = response.headers
    headers["X-Request-Id"] = ctx.request_id
    if ctx.repairs:
        headers[REPAIRS_HEADER] = str(sum(ctx.repairs.values()))
    if ctx.provider is not None and PROVIDER_HEADER not in headers:
        headers[PROVIDER_HEADER] = ctx.provider
    if ctx.route_strategy is not None:  # what the routing strategy did (gateway/strategy)
        headers[STRATEGY_HEADER] = ctx.route_strategy
        headers[REASON_HEADER] = ctx.route_reason or ""
    if ctx.attempts:
        ctx.overhead_sent_ms = overhead = ctx.overhead_ms
        headers[OVERHEAD_HEADER] = str(overhead)
    if ctx.cors_headers is not None:
        headers.update(ctx.cors_headers)


def error_for(request: web.Request, exc: Exception) -> web.StreamResponse:
    """Every failure becomes an error with the right status; never a traceback. What is not a
    failure (a redirect, a client that hung up) is raised again. The shape follows the route:
    OpenAI's ``{"error": {...}}``, or Anthropic's on ``/v1/messages`` (the one switch)."""
    ctx = context_of(request)
    render = anthropic_errors.error_response if anthropic_errors.is_anthropic_path(request.path) else error_response
    try:
        raise exc
    except GatewayError as e:
        ctx.error_type, ctx.error_code = e.type, e.code
        return render(e)
    except UpstreamPassthrough as e:
        ctx.provider = e.provider
        fields = upstream_error_body(e.status, e.body)["error"]
        fields["message"] = redact(fields["message"])  # an upstream may echo a key
        ctx.error_type, ctx.error_code = fields["type"], fields["code"]
        return render(GatewayError(fields["message"], status=e.status, type=fields["type"], code=fields["code"],
                                   param=fields["param"]), {PROVIDER_HEADER: e.provider})
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SETTINGS].max_request_bytes
        return render(PayloadTooLarge(f"the request body is larger than the limit of {limit} bytes"))
    except web.HTTPNotFound:
        return render(NotFound(f"no route for {request.method} {request.path}"))
    except web.HTTPMethodNotAllowed as e:
        return render(
            MethodNotAllowed(f"{request.method} is not allowed on {request.path}"),
            {"Allow": ", ".join(sorted(e.allowed_methods))},
        )
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return render(GatewayError(e.reason or "error", status=e.status, type="invalid_request_error"))
    except ConnectionResetError:
        raise
    except Exception:
        log.exception("unhandled_error")
        return render(GatewayError("internal gateway error; see the gateway log for this request id"))


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


async def authenticate(request: web.Request, ctx: RequestContext) -> None:
    """Bearer keys checked against the keystore (cached). Open paths pass, and unknown routes
    answer 404 before asking for a key."""
    if request.path in OPEN_PATHS or request.match_info.http_exception is not None:
        return
    if request.path == METRICS_PATH and request.app[SETTINGS].metrics_public:
        return
    token = bearer_token(request)
    if token is None:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <your gateway key>' (or 'x-api-key')")
    store = request.app[KEYSTORE]
    key = store.known(token)  # cached: no coroutine to await
    if key is UNCACHED:
        key = await store.authenticate(token)
    if not isinstance(key, ClientKey):
        raise Unauthorized("invalid or revoked API key")
    store.record_use(key.id)
    ctx.client_id = key.id
    ctx.client_name = key.name
    ctx.client_role = key.role
    ctx.client_limits = key.limits
    if request.path in ADMIN_PATHS and not key.is_admin:
        raise Forbidden(f"{request.path} needs an admin key; this key's role is {key.role!r} "
                        "(make one with `manage_keys.py add NAME --admin` or `manage_keys.py role NAME admin`)")
