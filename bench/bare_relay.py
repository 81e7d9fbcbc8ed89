#!/usr/bin/env python3
"""The floor: a bare aiohttp relay (no auth, logging, parsing or routing), same loop and
client session settings as the gateway. Run beside the gateway so the bench can tell the
framework's cost from the gateway's own."""
from __future__ import annotations

import argparse

import aiohttp
from aiohttp import web


def make_app(upstream: str) -> web.Application:
    async def session_ctx(app: web.Application):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000)) as s:
            app["s"] = s
            yield

    async def relay(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        async with request.app["s"].post(upstream, data=body, headers={"Content-Type": "application/json"}) as up:
            if b'"stream":true' not in body:
                return web.Response(body=await up.read(), status=up.status, content_type="application/json")
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            async for chunk in up.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp

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
