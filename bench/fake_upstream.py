#!/usr/bin/env python3
"""A fast fake OpenAI-compatible upstream for benchmarks (its own process).

Non-streamed: a fixed chat.completion with Cerebras-style rate-limit headers. Streamed: CHUNKS
SSE events, SPACING seconds apart, each stamped with its send time (``"t": ns since the epoch``)
so the load generator can measure each chunk's delivery delay, then ``data: [DONE]``.
"""
from __future__ import annotations

import argparse
import asyncio
import time

import orjson
from aiohttp import web

HEADERS = {
    "x-ratelimit-limit-tokens-minute": "100000000",
    "x-ratelimit-remaining-tokens-minute": "99999000",
    "x-ratelimit-reset-tokens-minute": "30.0",
    "x-ratelimit-limit-requests-day": "100000000",
    "x-ratelimit-remaining-requests-day": "99999999",
    "x-ratelimit-reset-requests-day": "40000.0",
}
COMPLETION = orjson.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1,
        "model": "zai-glm-4.7",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "x" * 400}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 500, "completion_tokens": 100, "total_tokens": 600},
    }
)


def make_app(chunks: int, spacing: float) -> web.Application:
    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if b'"stream":true' not in body and b'"stream": true' not in body:
            return web.Response(body=COMPLETION, content_type="application/json", headers=HEADERS)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", **HEADERS})
        await resp.prepare(request)
        for i in range(chunks):
            if i and spacing:
                await asyncio.sleep(spacing)
            event = b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"tok ' \
                + str(i).encode() + b'"}}],"t":' + str(time.time_ns()).encode() + b"}\n\n"
            await resp.write(event)
        await resp.write(b"data: [DONE]\n\n")
        return resp

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", chat)
    return app


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--chunks", type=int, default=20)
    ap.add_argument("--spacing", type=float, default=0.002)
    a = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(make_app(a.chunks, a.spacing), host="127.0.0.1", port=a.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
