"""create_app(settings): routes, middlewares and one cleanup_ctx per resource. Reads no environment."""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
import time
from collections import Counter
from typing import AsyncIterator, Callable

import aiohttp
import structlog
from aiohttp import web

from . import handlers, tokens
from .api import dashboard, stats
from .api import metrics as metrics_api
from .config import ConfigError, Settings
from .context import RequestContext
from .cors import CorsPolicy
from .keypool import KeyPool
from .keystore import KeyStore
from .middleware import OPEN_PATHS, gateway
from .observability import Activity, Metrics
from .providers import openai, zai
from .providers.openai import OpenAICompatible
from .routing import Router, Upstream
from .server import defer_continue
from .state import ACTIVITY, CORS, HTTP, KEYSTORE, LEDGER, LIVE, METRICS, RECORDERS, REPAIRS, ROUTER, SETTINGS
from .transport import new_session
from .usage.ledger import Ledger

log = structlog.get_logger("gateway.app")

ERROR_MAPPERS = {"openai": openai.map_error, "zai": zai.map_error}


def create_app(
    settings: Settings,
    *,
    clock: Callable[[], float] = time.monotonic,
    session_factory: Callable[[Settings], aiohttp.ClientSession] = new_session,
) -> web.Application:
    """``session_factory`` builds the upstream session (tests aim it at local TLS servers)."""
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
    # the dashboard's recent activity; watching the gateway is not counted as its traffic
    activity = app[ACTIVITY] = Activity(quiet={*OPEN_PATHS, "/_status", "/stats", metrics_api.PATH, dashboard.DATA})
    app[RECORDERS].append(activity.record)
    app.cleanup_ctx.append(_upstream_session(session_factory))
    if settings.enable_incoming_auth:
        app.cleanup_ctx.append(_keystore)
    ledger = app[LEDGER] = Ledger(
        settings.prices,
        settings.providers[0] if settings.providers else None,
        auth=settings.enable_incoming_auth,
        queue_max=settings.usage_queue_max,
        flush_interval=settings.usage_flush_interval,
        retention_days=settings.usage_retention_days,
    )
    app[RECORDERS].insert(0, ledger.record)  # first: it prices the request for the recorders after it
    metrics.ledger = ledger  # rows dropped and queue depth, read at scrape time
    app.cleanup_ctx.append(_ledger)
    app.cleanup_ctx.append(_router(clock))
    for path in ("/v1/chat/completions", "/chat/completions"):
        # 100 Continue waits for the key and size checks: handlers read the body with read_body
        app.router.add_post(path, handlers.chat_completions, expect_handler=defer_continue)
    for path in ("/v1/models", "/models"):
        app.router.add_get(path, handlers.models)
        app.router.add_get(path + "/{model:.+}", handlers.model)
    app.router.add_get("/health", handlers.health)
    app.router.add_get("/_status", handlers.status)
    app.router.add_get(metrics_api.PATH, metrics_api.metrics)
    app.router.add_get("/stats", stats.stats)
    dashboard.add_routes(app.router)
    return app


def _upstream_session(make: Callable[[Settings], aiohttp.ClientSession]):
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        """One pooled session for every upstream call of the app's life (gateway/transport.py)."""
        session = make(app[SETTINGS])
        app[HTTP] = session
        try:
            yield
        finally:
            await session.close()

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


async def _ledger(app: web.Application) -> AsyncIterator[None]:
    """The usage ledger's database connections and writer task; at shutdown (after the last
    request ended) it writes every queued row."""
    settings, ledger = app[SETTINGS], app[LEDGER]
    try:
        await ledger.open(settings.incoming_key_db)
    except (OSError, sqlite3.Error) as e:
        raise ConfigError(f"INCOMING_KEY_DB: cannot open {settings.incoming_key_db}: {e}") from None
    task = asyncio.create_task(ledger.run())
    try:
        yield
    finally:
        ledger.stop()
        await task
        await ledger.close()


def build_router(
    settings: Settings, session: aiohttp.ClientSession, clock: Callable[[], float] = time.monotonic
) -> Router:
    """The configured providers, each with its key pool, behind one Router, over ``session``."""
    upstreams = [
        Upstream(
            name=p.name,
            provider=OpenAICompatible(
                p,
                session,
                dataclasses.replace(settings.timeouts, read=p.read_timeout or settings.timeouts.read),
                ERROR_MAPPERS[p.dialect],
                proxy=settings.proxies.for_url(p.chat_url),
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
