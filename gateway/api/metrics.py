"""GET /metrics: the app's Prometheus registry, in the format the scraper asks for.

Who may read it: anyone when ``METRICS_PUBLIC=true`` (the middleware then lets the path through
without a key); with client auth on, only an admin key (``ctx.client_role == "admin"``); with
auth off, everyone (as every other route).
"""
from __future__ import annotations

from aiohttp import web
from prometheus_client.exposition import choose_encoder

from ..errors import GatewayError
from ..middleware import METRICS_PATH, context_of
from ..state import METRICS, SETTINGS

PATH = METRICS_PATH


class AdminRequired(GatewayError):
    status = 403
    type = "permission_error"
    code = "admin_key_required"


async def metrics(request: web.Request) -> web.Response:
    app = request.app
    settings = app[SETTINGS]
    if settings.enable_incoming_auth and not settings.metrics_public and context_of(request).client_role != "admin":
        raise AdminRequired("/metrics needs an admin key (or METRICS_PUBLIC=true)")
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    response = web.Response(body=encode(app[METRICS].registry), headers={"Content-Type": content_type})
    response.enable_compression()  # Prometheus asks for gzip; aiohttp honours Accept-Encoding
    return response
