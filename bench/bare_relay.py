#!/usr/bin/env python3
"""The floor: a bare relay built from the gateway's own parts (aiohttp's server, the gateway's
upstream session from gateway/transport.py with its default settings, uvloop) and nothing else:
no auth, logging, parsing or routing. Run beside the gateway so the bench can tell the cost of
the parts from the cost of the gateway's own work."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import aiohttp
from aiohttp import web
from yarl import URL

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gateway.config import Settings  # noqa: E402
from gateway.transport import answer_chunks, call_timeouts, new_session, read_answer  # noqa: E402

HEADERS = {"Content-Type": "application/json"}
SESSION = web.AppKey("session", aiohttp.ClientSession)
SETTINGS = Settings(providers=())  # the gateway's defaults: limits, timeouts


def make_app(upstream: str) -> web.Application:
    url = URL(upstream)
    timeouts = {stream: call_timeouts(SETTINGS.timeouts, stream) for stream in (False, True)}

    async def session_ctx(app: web.Application):
        app[SESSION] = new_session(SETTINGS)
        yield
        await app[SESSION].close()

    async def relay(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        stream = b'"stream":true' in body
        up = await request.app[SESSION].post(url, data=body, headers=HEADERS, timeout=timeouts[stream],
                                             allow_redirects=False)
        try:
            if not stream:
                return web.Response(body=await read_answer(up), status=up.status, content_type="application/json")
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            async for chunk in answer_chunks(up):
                await resp.write(chunk)
            await resp.write_eof()
            return resp
        finally:
            up.release()

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.cleanup_ctx.append(session_ctx)
    app.router.add_post("/v1/chat/completions", relay)
    return app


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", required=True)
    a = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(make_app(a.upstream), host="127.0.0.1", port=a.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
