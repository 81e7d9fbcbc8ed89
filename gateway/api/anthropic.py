"""``POST /v1/messages`` and ``POST /v1/messages/count_tokens``: Anthropic's Messages API.

Each request is translated to a chat completion (``gateway.anthropic.translate``), repaired like
any transcript, and served by the same router (chain, key rotation, fallback) as
``/v1/chat/completions``; the answer is translated back, a stream event by event
(``gateway.anthropic.stream``). Errors on these routes are Anthropic-shaped (the middleware's
renderer, by path). ``anthropic-version`` and ``anthropic-beta`` headers are accepted and not
needed: the translation speaks one version of the API.
"""
from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
import orjson
import structlog
from aiohttp import web

from ..anthropic.count import count_request_tokens
from ..anthropic.stream import PING, StreamTranslator
from ..anthropic.translate import from_openai, load_body, to_openai
from ..chat import ChatRequest
from ..context import RequestContext, Usage
from ..errors import BadGateway, PayloadTooLarge
from ..handlers import repair_transcript
from ..middleware import PROVIDER_HEADER, context_of, stamp_response
from ..providers.base import Completion, Stream, UpstreamError
from ..routing import Served
from ..server import read_body
from ..sse import event_data
from ..state import BUDGETS, ROUTER, SETTINGS

log = structlog.get_logger("gateway.anthropic")

MESSAGES = "/v1/messages"
COUNT_TOKENS = "/v1/messages/count_tokens"
PING_INTERVAL = 10.0  # seconds of upstream silence before a ``ping`` event keeps the client's read alive


def _json(data: object) -> web.Response:
    return web.Response(body=orjson.dumps(data), content_type="application/json")


async def _body(request: web.Request) -> tuple[bytes, dict[str, Any]]:
    limit = request.app[SETTINGS].max_request_bytes
    declared = request.content_length
    if declared is not None and declared > limit:  # refused before reading it
        raise PayloadTooLarge(f"the request body is larger than {limit} bytes")
    raw = await read_body(request)  # the server's body deadline; 100 Continue after the checks
    return raw, load_body(raw)


def context_usage(usage: object, *, input_tokens: int = 0, output_estimate: int | None = None) -> Usage:
    """The request's usage for the ledger and metrics, in OpenAI's terms (prompt includes cached);
    with ``output_estimate`` (the upstream sent none), an estimate."""
    if output_estimate is not None or not isinstance(usage, dict):
        return Usage(prompt_tokens=input_tokens, completion_tokens=output_estimate or 0, estimated=True)

    def count(source: object, key: str) -> int:
        value = source.get(key) if isinstance(source, dict) else None
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

    return Usage(
        prompt_tokens=count(usage, "prompt_tokens"),
        completion_tokens=count(usage, "completion_tokens"),
        cached_tokens=count(usage.get("prompt_tokens_details"), "cached_tokens"),
        reasoning_tokens=count(usage.get("completion_tokens_details"), "reasoning_tokens"),
    )


async def messages(request: web.Request) -> web.StreamResponse:
    raw, body = await _body(request)
    payload = to_openai(body)
    # ``raw``: the client's bytes, whose size stands for the prompt's in routing; ``modified``: the
    # body sent is the translation (serialized once, by the provider, with its own changes)
    req = ChatRequest(payload=payload, raw=raw, stream=bool(payload.get("stream")), modified=True)
    ctx = context_of(request)
    ctx.stream = req.stream
    ctx.model_asked = payload["model"]
    app = request.app
    if app[BUDGETS].near_budget(ctx):  # REDIS_URL: close to a budget, the spend as Redis has it now
        await app[BUDGETS].refresh(ctx)
    app[BUDGETS].admit(ctx, req)  # the key's budgets and rate limits, before anything is sent
    if app[SETTINGS].repair_tool_calls:
        repair_transcript(request, ctx, req)
    router = app[ROUTER]
    stop: list[str] = payload.get("stop", [])
    if not req.stream:
        served = await router.complete(req, ctx)
        done: Completion = served.result  # type: ignore[assignment]
        try:
            completion = orjson.loads(done.body)
        except orjson.JSONDecodeError:
            raise BadGateway(f"{served.upstream.name} answered with a body that is not JSON") from None
        message = from_openai(completion, model=payload["model"], stop_sequences=stop)
        ctx.usage = context_usage(completion.get("usage"))
        return web.Response(body=orjson.dumps(message), content_type="application/json",
                            headers={PROVIDER_HEADER: served.upstream.name})
    served = await router.open_stream(req, ctx)
    opened: tuple[Stream, bytes] = served.result  # type: ignore[assignment]
    stream, first = opened
    translator = StreamTranslator(payload["model"], stop, input_tokens=req.prompt_tokens or 0)
    return await relay(request, ctx, served, stream, first, translator)


async def count_tokens(request: web.Request) -> web.Response:
    raw, body = await _body(request)
    payload = to_openai(body, for_count=True)
    return _json({"input_tokens": await count_request_tokens(payload, len(raw))})


class Pinger:
    """A ``ping`` when the upstream has been silent for ``every`` seconds. One timer per stream,
    re-armed when it fires (an event costs one clock read, not a timer), and a write task only
    when a ping is due. Writes do not interleave: aiohttp hands each whole chunk to the transport
    before it awaits the drain."""

    def __init__(self, response: web.StreamResponse, every: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._response = response
        self._every = every
        self.last = self._loop.time()
        self._writing: asyncio.Task[None] | None = None
        self._timer = self._loop.call_later(every, self._tick)
        self.sent = 0

    def heard(self) -> None:
        self.last = self._loop.time()

    def _tick(self) -> None:
        now = self._loop.time()
        idle = now - self.last
        if idle >= self._every * 0.999:  # (timers may fire a hair early)
            if self._writing is None or self._writing.done():
                self._writing = self._loop.create_task(self._ping())
            self.last, idle = now, 0.0
        self._timer = self._loop.call_later(self._every - idle, self._tick)

    async def _ping(self) -> None:
        with contextlib.suppress(ConnectionResetError, aiohttp.ClientConnectionResetError):
            await self._response.write(PING)
            self.sent += 1

    def cancel(self) -> None:
        self._timer.cancel()

    async def stop(self) -> None:
        self._timer.cancel()
        if self._writing is not None and not self._writing.done():
            await self._writing  # a ping half-sent finishes before the stream's last events


async def _write(response: web.StreamResponse, events: list[bytes]) -> None:
    if events:
        await response.write(b"".join(events) if len(events) > 1 else events[0])


async def relay(
    request: web.Request, ctx: RequestContext, served: Served, stream: Stream, first: bytes,
    translator: StreamTranslator,
) -> web.StreamResponse:
    """Translate each upstream event as it arrives; always end with ``message_stop``, or with an
    ``error`` event when the upstream breaks mid-stream."""
    provider = served.upstream.name
    response = web.StreamResponse(
        status=200,
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no",
                 PROVIDER_HEADER: provider},
    )
    stamp_response(ctx, response)
    chunks = 0
    pinger: Pinger | None = None
    try:
        await response.prepare(request)
        pinger = Pinger(response, PING_INTERVAL)
        chunk = first
        upstream = stream.events.__aiter__()
        while True:
            chunks += 1
            for raw in chunk.split(b"\n\n"):
                data = event_data(raw) if raw else None
                if data is not None:
                    await _write(response, translator.feed(data))
            if translator.ended:
                break
            try:
                chunk = await upstream.__anext__()
            except StopAsyncIteration:
                break
            pinger.heard()
        await pinger.stop()
        if translator.failed is not None:  # the upstream sent an error event
            ctx.stream_error = translator.failed
            log.error("stream_failed_midway", provider=provider, detail=translator.failed, chunks_sent=chunks)
        await _write(response, translator.finish())
        await response.write_eof()
    except UpstreamError as e:
        served.upstream.pool.penalize(served.key, e)  # a broken stream counts against its key
        ctx.stream_error = e.message
        log.error("stream_failed_midway", provider=provider, detail=e.message, chunks_sent=chunks)
        with contextlib.suppress(ConnectionResetError, aiohttp.ClientConnectionResetError):
            if pinger is not None:
                await pinger.stop()
            await _write(response, translator.fail(f"upstream stream failed: {e.message}"))
            await response.write_eof()
    except (ConnectionResetError, aiohttp.ClientConnectionResetError):
        ctx.client_disconnected = True
        log.info("client_disconnected", provider=provider, chunks_sent=chunks)
    finally:
        if pinger is not None:
            pinger.cancel()  # (done already, unless the client left or the handler was cancelled)
        ctx.chunks = chunks
        final = translator.final_usage()
        ctx.usage = context_usage(
            translator.usage, input_tokens=translator.input_tokens,
            output_estimate=final["output_tokens"] if translator.usage_estimated else None)
        await stream.aclose()
    return response
