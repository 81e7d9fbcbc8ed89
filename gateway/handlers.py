"""Thin handlers: parse, route, relay."""
from __future__ import annotations

import time

import aiohttp
import orjson
import structlog
from aiohttp import web

from .chat import ChatRequest, parse_chat_request
from .errors import PayloadTooLarge
from .middleware import LOG_FIELDS, PROVIDER_HEADER, note, stamp_response
from .providers.base import Completion, Stream, UpstreamError
from .repair import repair_messages
from .routing import Served
from .server import read_body
from .sse import DONE, error_event
from .state import REPAIRS, ROUTER, SETTINGS

log = structlog.get_logger("gateway.handlers")

_STARTED = time.time()


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _note_served(request: web.Request, served: Served) -> None:
    fields = request[LOG_FIELDS]
    fields["provider"] = served.upstream.name
    fields["upstream_key"] = served.key.name
    fields["attempts"] = len(served.attempts) + 1


async def chat_completions(request: web.Request) -> web.StreamResponse:
    app = request.app
    settings = app[SETTINGS]
    limit = settings.max_request_bytes
    declared = request.content_length
    if declared is not None and declared > limit:  # refused before reading it
        raise PayloadTooLarge(f"the request body is larger than {limit} bytes")
    req = parse_chat_request(await read_body(request))  # sends 100 Continue if asked
    fields = request[LOG_FIELDS]
    fields["stream"] = req.stream
    fields["model"] = req.model
    if settings.repair_tool_calls:
        repair_transcript(request, req)
    router = app[ROUTER]
    if not req.stream:
        served = await router.complete(req)
        _note_served(request, served)
        done: Completion = served.result  # type: ignore[assignment]
        return web.Response(
            status=done.status,
            body=done.body,
            headers={"Content-Type": done.content_type, PROVIDER_HEADER: served.upstream.name},
        )
    served = await router.open_stream(req)
    _note_served(request, served)
    stream, first = served.result  # type: ignore[misc]
    return await relay_stream(request, served, stream, first)


def repair_transcript(request: web.Request, req: ChatRequest) -> None:
    fixed, counts = repair_messages(req.payload["messages"])
    if fixed is None:
        return
    req.replace_messages(fixed)
    total = sum(counts.values())
    request.app[REPAIRS].update(counts)
    note(request, repairs=total)
    log.info("transcript_repaired", repairs=dict(counts), messages=len(fixed))


async def relay_stream(request: web.Request, served: Served, stream: Stream, first: bytes) -> web.StreamResponse:
    """Write each upstream event to the client as it arrives; always end with ``data: [DONE]``."""
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
    stamp_response(request[LOG_FIELDS], response)
    chunks = 1
    saw_done = first.endswith(DONE)
    try:
        await response.prepare(request)
        await response.write(first)
        async for chunk in stream.events:
            await response.write(chunk)
            chunks += 1
            if chunk.endswith(DONE):
                saw_done = True
        if not saw_done:
            await response.write(DONE)
        await response.write_eof()
    except UpstreamError as e:
        served.upstream.pool.penalize(served.key, e)  # a broken stream counts against its key
        log.error("stream_failed_midway", provider=provider, detail=e.message, chunks_sent=chunks)
        try:
            await response.write(error_event(f"upstream stream failed: {e.message}", code="upstream_stream_error"))
            await response.write(DONE)
            await response.write_eof()
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            pass
    except (ConnectionResetError, aiohttp.ClientConnectionResetError):
        log.info("client_disconnected", provider=provider, chunks_sent=chunks)
    finally:
        await stream.aclose()
    note(request, chunks=chunks)
    return response


async def models(request: web.Request) -> web.Response:
    names = request.app[SETTINGS].public_models
    return _json(
        {
            "object": "list",
            "data": [{"id": m, "object": "model", "created": int(_STARTED), "owned_by": "glm-gateway"} for m in names],
        }
    )


async def health(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def status(request: web.Request) -> web.Response:
    router = request.app[ROUTER]
    providers = []
    for up in router.upstreams:
        keys = up.pool.status()
        providers.append({"name": up.name, "current_key": up.pool.peek(), "keys": keys})
    first = providers[0] if providers else {"keys": [], "current_key": None}
    return _json(
        {
            "status": "ok",
            "uptime_s": round(time.time() - _STARTED, 1),
            "auth_enabled": request.app[SETTINGS].enable_incoming_auth,
            "keys": first["keys"],
            "current_key": first["current_key"],
            "providers": providers,
            "repairs": dict(request.app[REPAIRS]),
        }
    )
