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
from .api import anthropic as anthropic_api
from .api import metrics as metrics_api
from .config import ConfigError, Settings
from .context import RequestContext
from .cors import CorsPolicy
from .httpclient import HTTPClient, default_tls_context
from .keypool import KeyPool
from .keystore import KeyStore
from .middleware import gateway
from .observability import Metrics
from .providers import openai, zai
from .providers.openai import OpenAICompatible
from .routing import Router, Upstream
from .state import CORS, HTTP, KEYSTORE, LIVE, METRICS, RECORDERS, REPAIRS, ROUTER, SETTINGS

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
    app.cleanup_ctx.append(_router(clock))
    for path in ("/v1/chat/completions", "/chat/completions"):
        app.router.add_post(path, handlers.chat_completions)
    app.router.add_post(anthropic_api.MESSAGES, anthropic_api.messages)
    app.router.add_post(anthropic_api.COUNT_TOKENS, anthropic_api.count_tokens)
    for path in ("/v1/models", "/models"):
        app.router.add_get(path, handlers.models)
        app.router.add_get(path + "/{model:.+}", handlers.model)
    app.router.add_get("/health", handlers.health)
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


def build_router(settings: Settings, client: HTTPClient, clock: Callable[[], float] = time.monotonic) -> Router:
    """The configured providers, each with its key pool, behind one Router, over ``client``."""
    upstreams = [
        Upstream(
            name=p.name,
            provider=OpenAICompatible(
                p,
                client,
                dataclasses.replace(settings.timeouts, read=p.read_timeout or settings.timeouts.read),
                ERROR_MAPPERS[p.dialect],
            ),
            pool=KeyPool(p.name, p.keys, default_cooldown=p.cooldown, clock=clock),
            max_prompt_tokens=p.max_prompt_tokens,
            model_for=p.model_for,
        )
        for p in settings.providers
    ]
    return Router(
        upstreams,
        max_key_wait=settings.max_key_wait,
        fallback_on_cooldown=settings.fallback_on_cooldown,
        clock=clock,
    )


def _router(clock: Callable[[], float]):
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        router = build_router(app[SETTINGS], app[HTTP], clock)
        if router.needs_estimates:
            await asyncio.to_thread(tokens.encoder)  # load the tokenizer now, not on a request
        app[ROUTER] = router
        yield

    return ctx
