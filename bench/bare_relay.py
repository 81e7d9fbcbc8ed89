#!/usr/bin/env python3
"""The floor: a bare relay built from the gateway's own parts (aiohttp's server, the gateway's
upstream client, uvloop) and nothing else: no auth, logging, parsing or routing. Run beside the
gateway so the bench can tell the cost of the parts from the cost of the gateway's own work."""
from __future__ import annotations

import sys
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from relay_cli import relay_args  # noqa: E402  (bench/, beside this file)
from gateway.httpclient import Endpoint, HTTPClient  # noqa: E402

HEAD = b"Content-Type: application/json\r\n"
CLIENT = web.AppKey("client", HTTPClient)


def make_app(upstream: str) -> web.Application:
    endpoint = Endpoint.parse(upstream)

    async def client_ctx(app: web.Application):
        app[CLIENT] = HTTPClient()
        yield
        await app[CLIENT].close()

    async def relay(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        up = await request.app[CLIENT].request(endpoint, HEAD, body, connect_timeout=10, read_timeout=120)
        try:
            if b'"stream":true' not in body:
                return web.Response(body=await up.read(), status=up.status, content_type="application/json")
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            async for chunk in up:
                await resp.write(chunk)
            await resp.write_eof()
            return resp
        finally:
            up.close()

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.cleanup_ctx.append(client_ctx)
    app.router.add_post("/v1/chat/completions", relay)
    return app


def main() -> None:
    a = relay_args()
    web.run_app(make_app(a.upstream), host="127.0.0.1", port=a.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
