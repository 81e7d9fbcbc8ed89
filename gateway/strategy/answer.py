"""An accepted draft as the client's answer: JSON, or (a streamed request) synthesised SSE."""
from __future__ import annotations

import aiohttp
import structlog
from aiohttp import web

from ..chat import ChatRequest
from ..context import RequestContext, Usage
from ..middleware import PROVIDER_HEADER, stamp_response
from .engine import Accepted
from .plan import LOCAL
from .synth import answer_body, stream_events

log = structlog.get_logger("gateway.strategy")


def _usage(body: dict) -> Usage | None:
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return Usage(prompt, completion)


async def serve_draft(
    request: web.Request, ctx: RequestContext, req: ChatRequest, draft: Accepted
) -> web.StreamResponse:
    ctx.usage = _usage(draft.body)  # local tokens: priced 0
    if not req.stream:
        return web.Response(status=200, body=answer_body(draft.body, req.payload), content_type="application/json",
                            headers={PROVIDER_HEADER: LOCAL})
    events = stream_events(draft.body, req.payload)
    response = web.StreamResponse(
        status=200,
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no",
                 PROVIDER_HEADER: LOCAL},
    )
    stamp_response(ctx, response)
    try:
        await response.prepare(request)
        await response.write(b"".join(events))
        await response.write_eof()
        ctx.chunks = len(events)
    except (ConnectionResetError, aiohttp.ClientConnectionResetError):
        ctx.client_disconnected = True
        log.info("client_disconnected", provider=LOCAL, chunks_sent=0)
    return response
