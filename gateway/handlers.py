"""Thin handlers: parse, route, relay."""
from __future__ import annotations

import time
from typing import Any

import aiohttp
import orjson
import structlog
from aiohttp import web

from .chat import ChatRequest, parse_chat_request
from .context import RequestContext
from .errors import GatewayError, NotFound, PayloadTooLarge
from .middleware import CONTEXT, PROVIDER_HEADER, STRATEGY_HEADER, stamp_response
from .providers.base import Completion, Stream, UpstreamError
from .repair import repair_messages
from .routing import Served
from .server import read_body
from .sse import DONE, error_event
from .state import BUDGETS, LEDGER, LOCAL_BACKEND, REPAIRS, REQUEST_LOG, ROUTER, SETTINGS, SHARED, STRATEGIES
from .strategy.answer import serve_draft
from .usage import reqlog
from .usage.answer import answer_usage
from .usage.stream import StreamTap, wants_usage

log = structlog.get_logger("gateway.handlers")

_STARTED = time.time()


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def chat_completions(request: web.Request) -> web.StreamResponse:
    app = request.app
    settings = app[SETTINGS]
    ctx: RequestContext = request[CONTEXT]
    if settings.request_log.enabled:
        reqlog.start(ctx, request.headers)
    limit = settings.max_request_bytes
    declared = request.content_length
    if declared is not None and declared > limit:  # refused before reading it
        raise PayloadTooLarge(f"the request body is larger than {limit} bytes")
    ctx.request_body = raw = await read_body(request)  # sends 100 Continue if asked
    ctx.chat = req = parse_chat_request(raw)
    ctx.stream = req.stream
    model = req.model
    ctx.model_asked = model if isinstance(model, str) else None
    budgets = app[BUDGETS]
    if budgets.near_budget(ctx):  # REDIS_URL: close to a budget, the spend as Redis has it now
        await budgets.refresh(ctx)
    budgets.admit(ctx, req)  # the key's budgets and rate limits, before anything is sent
    if settings.repair_tool_calls:
        repair_transcript(request, ctx, req)
    router = app[ROUTER]
    strategies = app[STRATEGIES]
    route = strategies.route(req, request.headers.get(STRATEGY_HEADER), ctx)
    if route.drafts:
        draft = await strategies.speculate(req, route, ctx)
        if draft is not None:
            return await serve_draft(request, ctx, req, draft)
    order = strategies.targets(route)
    try:
        if not req.stream:
            served = await router.complete(req, ctx, order)
            done: Completion = served.result  # type: ignore[assignment]
            ctx.usage = answer_usage(done.body, req.payload, prompt_tokens=req.prompt_tokens,
                                     prompt_bytes=len(req.raw))
            ctx.response_body = done.body
            return web.Response(
                status=done.status,
                body=done.body,
                headers={"Content-Type": done.content_type, PROVIDER_HEADER: served.upstream.name},
            )
        served = await router.open_stream(req, ctx, order)
    except GatewayError as e:
        raise strategies.failed(route, e) from None
    opened: tuple[Stream, bytes] = served.result  # type: ignore[assignment]
    stream, first = opened
    tap = reqlog.tap_type(ctx, settings.request_log)(req.payload, strip=not wants_usage(req.payload),
                                                     prompt_tokens=req.prompt_tokens, prompt_bytes=len(req.raw))
    return await relay_stream(request, ctx, served, stream, first, tap)


def repair_transcript(request: web.Request, ctx: RequestContext, req: ChatRequest) -> None:
    fixed, counts = repair_messages(req.payload["messages"])
    if fixed is None:
        return
    req.replace_messages(fixed)
    request.app[REPAIRS].update(counts)
    ctx.repairs = dict(counts)
    log.info("transcript_repaired", repairs=ctx.repairs, messages=len(fixed))


async def relay_stream(
    request: web.Request, ctx: RequestContext, served: Served, stream: Stream, first: bytes, tap: StreamTap
) -> web.StreamResponse:
    """Write each upstream event to the client as it arrives; always end with ``data: [DONE]``.
    ``tap`` reads the usage as it passes (and takes it out when the client did not ask for it)."""
    provider = served.upstream.name
    response = web.StreamResponse(
        status=200,
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            PROVIDER_HEADER: provider,
        },
    )
    stamp_response(ctx, response)
    chunks = 1
    saw_done = first.endswith(DONE)
    try:
        await response.prepare(request)
        out = tap.feed(first)
        if out:
            await response.write(out)
        async for chunk in stream.events:
            out = tap.feed(chunk)
            if out:
                await response.write(out)
            chunks += 1
            if chunk.endswith(DONE):
                saw_done = True
        if not saw_done:
            await response.write(DONE)
        await response.write_eof()
    except UpstreamError as e:
        served.upstream.pool.penalize(served.key, e)  # a broken stream counts against its key
        ctx.stream_error = e.message
        log.error("stream_failed_midway", provider=provider, detail=e.message, chunks_sent=chunks)
        try:
            await response.write(error_event(f"upstream stream failed: {e.message}", code="upstream_stream_error"))
            await response.write(DONE)
            await response.write_eof()
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            pass
    except (ConnectionResetError, aiohttp.ClientConnectionResetError):
        ctx.client_disconnected = True
        log.info("client_disconnected", provider=provider, chunks_sent=chunks)
    finally:
        ctx.chunks = chunks  # also when the client's disconnect cancelled the handler
        ctx.usage = tap.finish()
        await stream.aclose()
    return response


def _model(name: str) -> dict[str, object]:
    return {"id": name, "object": "model", "created": int(_STARTED), "owned_by": "glm-gateway"}


async def model_names(app: web.Application) -> list[str]:
    """The cloud models, then the GGUF files of the local folder (when the gateway runs them)."""
    names = list(app[SETTINGS].public_models)
    local = app.get(LOCAL_BACKEND)
    if local is not None:
        names += [n for n in await local.names() if n not in names]
    return names


async def models(request: web.Request) -> web.Response:
    names = await model_names(request.app)
    return _json({"object": "list", "data": [_model(m) for m in names]})


async def model(request: web.Request) -> web.Response:
    """One model (the SDKs' ``models.retrieve``). Ids may hold slashes (``hf:zai-org/GLM-4.7``)."""
    name = request.match_info["model"]
    if name not in await model_names(request.app):
        raise NotFound(f"the model {name!r} does not exist on this gateway; GET /v1/models lists them",
                       param="model", code="model_not_found")
    return _json(_model(name))


async def health(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def status(request: web.Request) -> web.Response:
    router = request.app[ROUTER]
    providers: list[dict[str, Any]] = [
        {"name": up.name, "current_key": up.pool.peek(), "keys": up.pool.status()} for up in router.upstreams
    ]
    first = providers[0] if providers else {"keys": [], "current_key": None}
    return _json(
        {
            "status": "ok",
            "uptime_s": round(time.time() - _STARTED, 1),
            "auth_enabled": request.app[SETTINGS].enable_incoming_auth,
            # every provider's keys, each naming its provider; ``current_key``: the primary's next
            "keys": [{"provider": p["name"], **k} for p in providers for k in p["keys"]],
            "current_key": first["current_key"],
            "providers": providers,
            "repairs": dict(request.app[REPAIRS].items()),
            **request.app[LEDGER].status(),  # usage_rows_dropped, usage_queue_depth
            "budgets": request.app[BUDGETS].status(),  # provider caps, spend per key, alert queue
            **(request.app[REQUEST_LOG].status() if REQUEST_LOG in request.app else {}),
            **({"shared_state": request.app[SHARED].status()} if SHARED in request.app else {}),
        }
    )
