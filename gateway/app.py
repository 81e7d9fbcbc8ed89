"""create_app(settings): routes, middlewares and one cleanup_ctx per resource. Reads no environment."""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
import time
from collections import Counter
from typing import AsyncIterator, Callable

import structlog
from aiohttp import web

from . import handlers, tokens
from .api import health as health_api
from .api import local_admin
from .api import metrics as metrics_api
from .config import LOCAL, ConfigError, Settings
from .context import RequestContext
from .cors import CorsPolicy
from .httpclient import HTTPClient, default_tls_context
from .keypool import KeyPool
from .keystore import KeyStore
from .local.backend import LocalBackend
from .middleware import gateway
from .observability import Metrics
from .providers import openai, zai
from .providers.base import Provider
from .providers.openai import OpenAICompatible
from .routing import Router, Upstream
from .state import CORS, HTTP, KEYSTORE, LIVE, LOCAL_BACKEND, METRICS, RECORDERS, REPAIRS, ROUTER, SETTINGS

log = structlog.get_logger("gateway.app")

ERROR_MAPPERS = {"openai": openai.map_error, "zai": zai.map_error}


def create_app(
    settings: Settings,
    *,
    clock: Callable[[], float] = time.monotonic,
    http_client: Callable[[], HTTPClient] | None = None,
) -> web.Application:
    """``http_client`` builds the upstream client (tests aim it at local TLS servers)."""
    app = web.Application(
        middlewares=[gateway],
        client_max_size=settings.max_request_bytes,
    )
    app[SETTINGS] = settings
    app[REPAIRS] = Counter()
    app[RECORDERS] = []
    live: set[RequestContext] = set()
    app[LIVE] = live
    app[CORS] = CorsPolicy(settings.cors_origins) if settings.cors_origins else None
    metrics = Metrics(settings.public_models, upstreams=lambda: app[ROUTER].upstreams if ROUTER in app else (),
                      live=live)
    app[METRICS] = metrics
    app[RECORDERS].append(metrics.record)  # after the usage ledger's, which prices the context first
    app.cleanup_ctx.append(_http_client(http_client or _default_client))
    if settings.enable_incoming_auth:
        app.cleanup_ctx.append(_keystore)
    if settings.local is not None:
        app.cleanup_ctx.append(_local_backend)
    app.cleanup_ctx.append(_router(clock))
    for path in ("/v1/chat/completions", "/chat/completions"):
        app.router.add_post(path, handlers.chat_completions)
    for path in ("/v1/models", "/models"):
        app.router.add_get(path, handlers.models)
        app.router.add_get(path + "/{model:.+}", handlers.model)
    app.router.add_get("/health", handlers.health)
    app.router.add_get(health_api.READY_PATH, health_api.ready)
    local_admin.add_routes(app)
    app.router.add_get("/_status", handlers.status)
    app.router.add_get(metrics_api.PATH, metrics_api.metrics)
    return app


def _default_client() -> HTTPClient:
    return HTTPClient(ssl_context=default_tls_context())


def _http_client(make: Callable[[], HTTPClient]):
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        """One pooled client for every upstream call of the app's life. It keeps no cookies:
        a shared jar would carry one upstream answer's Set-Cookie into other clients' requests."""
        client = make()
        app[HTTP] = client
        try:
            yield
        finally:
            await client.close()

    return ctx


async def _keystore(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    try:
        store = await KeyStore.open(settings.incoming_key_db)
    except (OSError, sqlite3.Error) as e:
        raise ConfigError(f"INCOMING_KEY_DB: cannot open {settings.incoming_key_db}: {e}") from None
    app[KEYSTORE] = store
    task = asyncio.create_task(
        store.run_maintenance(settings.key_cache_refresh, settings.usage_flush_interval, log)
    )
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await store.close()  # flushes pending usage


async def _local_backend(app: web.Application) -> AsyncIterator[None]:
    """The llama.cpp servers the gateway runs (LOCAL_MODEL_PATH / LOCAL_MODELS_DIR): each one's
    calls go through an OpenAI-compatible provider on the app's upstream client."""
    settings = app[SETTINGS]
    assert settings.local is not None
    cfg = next(p for p in settings.providers if p.name == LOCAL)
    # llama-server closes a connection after each streamed answer, though its headers say keep-alive:
    # a pooled connection could be one it is closing as a request goes out. On loopback a fresh
    # connection per call costs about 0.1 ms, so its servers get a client that never reuses one.
    client = HTTPClient(keepalive_timeout=0.0)
    timeouts = dataclasses.replace(settings.timeouts, read=cfg.read_timeout or settings.timeouts.read)

    def provider_for(base_url: str, model: str) -> Provider:
        return OpenAICompatible(dataclasses.replace(cfg, base_url=base_url, model=model), client, timeouts,
                                ERROR_MAPPERS[cfg.dialect])

    backend = LocalBackend(settings.local, provider_for, drain_timeout=settings.timeouts.total)
    backend.http = client
    app[LOCAL_BACKEND] = backend
    await backend.start()
    try:
        yield
    finally:
        await backend.close()
        await client.close()


def build_router(
    settings: Settings,
    client: HTTPClient,
    clock: Callable[[], float] = time.monotonic,
    local: LocalBackend | None = None,
) -> Router:
    """The configured providers, each with its key pool, behind one Router, over ``client``;
    ``local``: the managed local backend, which serves as the ``local`` provider."""
    upstreams = []
    for p in settings.providers:
        pool = KeyPool(p.name, p.keys, default_cooldown=p.cooldown, clock=clock)
        if p.name == LOCAL and local is not None:
            upstreams.append(Upstream(name=p.name, provider=local.provider, pool=pool, model_for=local.model_for,
                                      unready=local.unready, owns=local.owns))
            # a server that just became ready is known good: what its dead predecessor's requests
            # did to the key's breaker no longer says anything
            local.supervisor.on_ready.append(lambda _child, pool=pool: _heard_from(pool))
            continue
        upstreams.append(Upstream(
            name=p.name,
            provider=OpenAICompatible(
                p,
                client,
                dataclasses.replace(settings.timeouts, read=p.read_timeout or settings.timeouts.read),
                ERROR_MAPPERS[p.dialect],
            ),
            pool=pool,
            max_prompt_tokens=p.max_prompt_tokens,
            model_for=p.model_for,
        ))
    return Router(
        upstreams,
        max_key_wait=settings.max_key_wait,
        fallback_on_cooldown=settings.fallback_on_cooldown,
        clock=clock,
    )


def _heard_from(pool: KeyPool) -> None:
    for key in pool.keys:
        key.breaker.succeeded()


def _router(clock: Callable[[], float]):
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        router = build_router(app[SETTINGS], app[HTTP], clock, app.get(LOCAL_BACKEND))
        if router.needs_estimates:
            await asyncio.to_thread(tokens.encoder)  # load the tokenizer now, not on a request
        app[ROUTER] = router
        yield

    return ctx
