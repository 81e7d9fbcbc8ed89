"""``GET /dashboard``: a live page served by the gateway itself, and ``GET /dashboard/data``.

The page (index.html, dashboard.js, dashboard.css, favicon.svg beside this file; no build step,
no CDN, no chart library: its charts are SVG drawn by dashboard.js) holds no data, so it and its
files are open (``middleware.OPEN_PATHS``). It asks for an admin key when the gateway wants one,
keeps it in the tab's ``sessionStorage`` and sends it as a Bearer header to ``/_status``,
``/stats`` and ``/dashboard/data``. Every answer the page gets is put in the DOM as text.

The page's files are read once, at import, and served with a strict Content-Security-Policy:
scripts, styles and fetches from this origin only, no inline script or style, no frames, no
form submission (the key can never end up in a URL).

``/dashboard/data`` is the recent activity the ledger and ``/_status`` lack (gateway/observability/
activity.py): requests, errors and fallbacks per 10 s, the last errors with their request ids,
and the requests in flight. Who may read it: as ``/metrics``, an admin key when client auth is on
(``ctx.client_role == "admin"``), anyone when it is off.
"""
from __future__ import annotations

from pathlib import Path

import orjson
from aiohttp import web

from ...middleware import DASHBOARD_FILES, context_of
from ...state import ACTIVITY, LIVE, SETTINGS
from ..metrics import AdminRequired

HERE = Path(__file__).resolve().parent
PAGE = "/dashboard"
DATA = "/dashboard/data"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# URL path -> file beside this module (the middleware lets these through without a key); read
# once (a few KB), so serving one is a dict lookup
FILES = {path: "index.html" if path == PAGE else path.rsplit("/", 1)[1] for path in DASHBOARD_FILES}
_BODIES = {path: (HERE / name).read_bytes() for path, name in FILES.items()}


async def asset(request: web.Request) -> web.Response:
    path = request.path
    return web.Response(body=_BODIES[path], headers={"Content-Type": _TYPES[Path(FILES[path]).suffix],
                                                     **SECURITY_HEADERS})


async def data(request: web.Request) -> web.Response:
    app = request.app
    settings = app[SETTINGS]
    if settings.enable_incoming_auth and context_of(request).client_role != "admin":
        raise AdminRequired(f"{DATA} needs an admin key")
    body = {
        "object": "gateway.dashboard",
        "auth_enabled": settings.enable_incoming_auth,
        "in_flight": len(app[LIVE]) - 1,  # this request is one of them
        **app[ACTIVITY].snapshot(),
    }
    return web.Response(body=orjson.dumps(body), content_type="application/json",
                        headers={"Cache-Control": "no-store"})


def add_routes(router: web.UrlDispatcher) -> None:
    for path in FILES:
        router.add_get(path, asset)
    router.add_get(DATA, data)
