"""``GET /health/ready``: whether at least one backend can serve (``/health`` stays liveness).

No key needed (a load balancer or orchestrator asks it). A cloud backend counts as ready while
it has a key that is not disabled (a rate-limited key comes back by itself, and a gateway taken
out of rotation could not even answer the 429); the managed local backend while its model is
loaded and answering. 200 when one is, else 503 with Retry-After. Names and states only: no key,
no URL.
"""
from __future__ import annotations

import orjson
from aiohttp import web

from ..config import LOCAL
from ..errors import retry_headers
from ..routing import Upstream
from ..state import LOCAL_BACKEND, ROUTER

READY_PATH = "/health/ready"
RETRY_AFTER = 2.0


def _state(app: web.Application, up: Upstream) -> str:
    local = app.get(LOCAL_BACKEND)
    if up.name == LOCAL and local is not None:
        return local.state()
    return "ready" if any(k.disabled_reason is None for k in up.pool.keys) else "disabled"


async def ready(request: web.Request) -> web.Response:
    app = request.app
    backends = {up.name: _state(app, up) for up in app[ROUTER].upstreams}
    ok = "ready" in backends.values()
    return web.Response(
        status=200 if ok else 503,
        body=orjson.dumps({"status": "ready" if ok else "unavailable", "backends": backends}),
        content_type="application/json",
        headers=None if ok else retry_headers(RETRY_AFTER),
    )
