"""create_app(settings): routes, middlewares and one cleanup_ctx per resource. Reads no environment."""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
import time
from collections import Counter
from typing import AsyncIterator, Callable, Mapping

import structlog
from aiohttp import web

from . import handlers, tokens
from .clients.alerts import Alerts, WebhookSender
from .clients.tracker import SpendTracker
from .config import ConfigError, Settings
from .httpclient import HTTPClient, default_tls_context
from .keypool import KeyPool
from .keystore import KeyStore
from .middleware import gateway
from .providers import openai, zai
from .providers.openai import OpenAICompatible
from .routing import Router, Upstream
from .state import BUDGETS, HTTP, KEYSTORE, RECORDERS, REPAIRS, ROUTER, SETTINGS

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
    app.cleanup_ctx.append(_http_client(http_client or _default_client))
    if settings.enable_incoming_auth:
        app.cleanup_ctx.append(_keystore)
    app.cleanup_ctx.append(_router(clock))
    app[BUDGETS] = budgets = _budgets(settings)
    app[RECORDERS].append(budgets.record)  # after the ledger's, which prices the request first
    app.cleanup_ctx.append(_restore_spend)  # after the keystore's, which migrates the database
    if budgets.alerts.webhook is not None:
        app.cleanup_ctx.append(_alert_webhook)
    for path in ("/v1/chat/completions", "/chat/completions"):
        app.router.add_post(path, handlers.chat_completions)
    for path in ("/v1/models", "/models"):
        app.router.add_get(path, handlers.models)
        app.router.add_get(path + "/{model:.+}", handlers.model)
    app.router.add_get("/health", handlers.health)
    app.router.add_get("/_status", handlers.status)
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


def _budgets(settings: Settings) -> SpendTracker:
    url = settings.alert_webhook_url
    webhook = WebhookSender(url.reveal(), settings.alert_webhook_timeout) if url else None
    return SpendTracker(settings.provider_budgets, settings.alert_thresholds, Alerts(webhook))


async def _restore_spend(app: web.Application) -> AsyncIterator[None]:
    """Today's and this month's spend, from the ledger's rows, before the first request."""
    path = app[SETTINGS].incoming_key_db
    try:
        await app[BUDGETS].restore(path)
    except (OSError, sqlite3.Error) as e:
        raise ConfigError(f"INCOMING_KEY_DB: cannot read spend from {path}: {e}") from None
    yield


async def _alert_webhook(app: web.Application) -> AsyncIterator[None]:
    sender = app[BUDGETS].alerts.webhook
    assert sender is not None
    session = sender.session()
    task = asyncio.create_task(sender.run(session))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await session.close()
        if sender.queue.qsize():
            log.warning("alerts_undelivered", count=sender.queue.qsize())


def build_router(
    settings: Settings,
    client: HTTPClient,
    clock: Callable[[], float] = time.monotonic,
    capped: Callable[[], Mapping[str, str]] | None = None,
) -> Router:
    """The configured providers, each with its key pool, behind one Router, over ``client``;
    ``capped`` names the providers whose monthly budget is reached."""
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
        capped=capped,
    )


def _router(clock: Callable[[], float]):
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        capped = app[BUDGETS].capped if settings.provider_budgets else None
        router = build_router(settings, app[HTTP], clock, capped)
        if router.needs_estimates:
            await asyncio.to_thread(tokens.encoder)  # load the tokenizer now, not on a request
        app[ROUTER] = router
        yield

    return ctx
