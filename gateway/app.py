"""create_app(settings): routes, middlewares and one cleanup_ctx per resource. Reads no environment."""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping

import aiohttp
import structlog
from aiohttp import web

from . import handlers, tokens
from .api import anthropic as anthropic_api
from .api import dashboard, local_admin, stats
from .api import health as health_api
from .api import metrics as metrics_api
from .classify import classify
from .clients.alerts import Alerts, WebhookSender
from .clients.tracker import SpendTracker
from .config import LOCAL, ConfigError, Settings
from .context import RequestContext
from .cors import CorsPolicy
from .keypool import KeyPool
from .keystore import KeyStore
from .local.backend import LocalBackend
from .middleware import OPEN_PATHS, gateway
from .observability import Activity, Metrics
from .providers import openai, zai
from .providers.base import Provider
from .providers.openai import OpenAICompatible
from .routing import Router, Upstream
from .server import defer_continue
from .shared import RedisShared
from .state import (
    ACTIVITY,
    BUDGETS,
    CORS,
    HTTP,
    KEYSTORE,
    LEDGER,
    LIVE,
    LOCAL_BACKEND,
    METRICS,
    RECORDERS,
    REPAIRS,
    REQUEST_LOG,
    ROUTER,
    SETTINGS,
    SHARED,
    STRATEGIES,
)
from .storage import ERRORS
from .strategy.drafts import Drafter
from .strategy.engine import Strategies
from .strategy.plan import Classifier
from .strategy.slots import read_slots
from .tasks import cancelled
from .transport import new_session
from .usage.ledger import Ledger
from .usage.reqlog import RequestLog

log = structlog.get_logger("gateway.app")

ERROR_MAPPERS = {"openai": openai.map_error, "zai": zai.map_error}


def create_app(
    settings: Settings,
    *,
    clock: Callable[[], float] = time.monotonic,
    session_factory: Callable[[Settings], aiohttp.ClientSession] = new_session,
    classifier: Classifier | None = None,
    simple_threshold: float | None = None,
) -> web.Application:
    """``session_factory`` builds the upstream session (tests aim it at local TLS servers);
    ``classifier`` (with its ``simple_threshold``) judges requests for the smart strategies."""
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
    if settings.request_log.enabled:  # LOG_REQUESTS: after the ledger's recorder, which prices the request
        request_log = app[REQUEST_LOG] = RequestLog(settings.request_log, settings.providers, settings.secrets())
        app[RECORDERS].append(request_log.record)
        app.cleanup_ctx.append(_request_log)
    if settings.local is not None:
        app.cleanup_ctx.append(_local_backend)
    app.cleanup_ctx.append(_router(clock))
    app[BUDGETS] = budgets = _budgets(settings)
    app[RECORDERS].append(budgets.record)  # after the ledger's, which prices the request first
    app.cleanup_ctx.append(_restore_spend)  # after the keystore's, which migrates the database
    if settings.redis_url:
        app.cleanup_ctx.append(_shared_state)  # after the router's and the restored spend
    if budgets.alerts.webhook is not None:
        app.cleanup_ctx.append(_alert_webhook)
    app.cleanup_ctx.append(_strategies(classifier, simple_threshold, clock))
    for path in ("/v1/chat/completions", "/chat/completions"):
        # 100 Continue waits for the key and size checks: handlers read the body with read_body
        app.router.add_post(path, handlers.chat_completions, expect_handler=defer_continue)
    app.router.add_post(anthropic_api.MESSAGES, anthropic_api.messages, expect_handler=defer_continue)
    app.router.add_post(anthropic_api.COUNT_TOKENS, anthropic_api.count_tokens, expect_handler=defer_continue)
    for path in ("/v1/models", "/models"):
        app.router.add_get(path, handlers.models)
        app.router.add_get(path + "/{model:.+}", handlers.model)
    app.router.add_get("/health", handlers.health)
    app.router.add_get(health_api.READY_PATH, health_api.ready)
    local_admin.add_routes(app)
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
        store = await KeyStore.open(settings.database)
    except ERRORS as e:
        raise ConfigError(f"{settings.database_name}: cannot open: {_reason(e)}") from None
    app[KEYSTORE] = store
    task = asyncio.create_task(
        store.run_maintenance(settings.key_cache_refresh, settings.usage_flush_interval, log)
    )
    try:
        yield
    finally:
        await cancelled(task)
        await store.close()  # flushes pending usage


async def _ledger(app: web.Application) -> AsyncIterator[None]:
    """The usage ledger's database connections and writer task; at shutdown (after the last
    request ended) it writes every queued row."""
    settings, ledger = app[SETTINGS], app[LEDGER]
    try:
        await ledger.open(settings.database)
    except ERRORS as e:
        raise ConfigError(f"{settings.database_name}: cannot open: {_reason(e)}") from None
    task = asyncio.create_task(ledger.run())
    try:
        yield
    finally:
        ledger.stop()
        await task
        await ledger.close()


async def _request_log(app: web.Application) -> AsyncIterator[None]:
    """The request log's file and writer thread; at shutdown it writes what is queued."""
    request_log = app[REQUEST_LOG]
    try:
        await asyncio.to_thread(request_log.open)
    except OSError as e:
        raise ConfigError(f"REQUEST_LOG_DIR: cannot write request logs to {request_log.directory}: {e}") from None
    try:
        yield
    finally:
        await asyncio.to_thread(request_log.close)




def _budgets(settings: Settings) -> SpendTracker:
    url = settings.alert_webhook_url
    webhook = WebhookSender(url.reveal(), settings.alert_webhook_timeout) if url else None
    return SpendTracker(settings.provider_budgets, settings.alert_thresholds, Alerts(webhook))


async def _restore_spend(app: web.Application) -> AsyncIterator[None]:
    """Today's and this month's spend, from the ledger's rows, before the first request."""
    settings = app[SETTINGS]
    reader = app[LEDGER].reader  # PostgreSQL: the ledger's open pool; SQLite: the file, read-only
    try:
        await app[BUDGETS].restore(reader if settings.database_url and reader is not None else settings.database)
    except ERRORS as e:
        raise ConfigError(f"{settings.database_name}: cannot read spend: {_reason(e)}") from None
    yield


def _reason(e: BaseException) -> str:
    """An error's message for the one-line start-up error; a timeout says nothing by itself."""
    return str(e) or type(e).__name__


async def _shared_state(app: web.Application) -> AsyncIterator[None]:
    """REDIS_URL: key state and spend shared with other replicas. Redis down at start is no
    error: the gateway starts degraded (on local state) and catches up when Redis is back."""
    url = app[SETTINGS].redis_url
    assert url is not None
    shared = app[SHARED] = RedisShared(url.reveal(), [up.pool for up in app[ROUTER].upstreams], app[BUDGETS])
    shared.attach()
    app[METRICS].shared = shared
    task = asyncio.create_task(shared.run())
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(shared.ready.wait(), 3.0)  # the first catch-up, before the first request
    try:
        yield
    finally:
        await cancelled(task)
        await shared.close()


async def _alert_webhook(app: web.Application) -> AsyncIterator[None]:
    sender = app[BUDGETS].alerts.webhook
    assert sender is not None
    session = sender.session()
    task = asyncio.create_task(sender.run(session))
    try:
        yield
    finally:
        await cancelled(task)
        await session.close()
        if sender.queue.qsize():
            log.warning("alerts_undelivered", count=sender.queue.qsize())


async def _local_backend(app: web.Application) -> AsyncIterator[None]:
    """The llama.cpp servers the gateway runs (LOCAL_MODEL_PATH / LOCAL_MODELS_DIR): each one's
    calls go through an OpenAI-compatible provider on a session of their own."""
    settings = app[SETTINGS]
    assert settings.local is not None
    cfg = next(p for p in settings.providers if p.name == LOCAL)
    # llama-server closes a connection after each streamed answer, though its headers say keep-alive:
    # a pooled connection could be one it is closing as a request goes out. On loopback a fresh
    # connection per call costs about 0.1 ms, so its servers get a session that never reuses one.
    session = new_session(settings, force_close=True)
    timeouts = dataclasses.replace(settings.timeouts, read=cfg.read_timeout or settings.timeouts.read)

    def provider_for(base_url: str, model: str) -> Provider:
        return OpenAICompatible(dataclasses.replace(cfg, base_url=base_url, model=model), session, timeouts,
                                ERROR_MAPPERS[cfg.dialect])

    backend = LocalBackend(settings.local, provider_for, drain_timeout=settings.timeouts.total)
    backend.http = session
    app[LOCAL_BACKEND] = backend
    await backend.start()
    try:
        yield
    finally:
        await backend.close()
        await session.close()


def build_router(
    settings: Settings,
    session: aiohttp.ClientSession,
    clock: Callable[[], float] = time.monotonic,
    capped: Callable[[], Mapping[str, str]] | None = None,
    local: LocalBackend | None = None,
) -> Router:
    """The configured providers, each with its key pool, behind one Router, over ``session``;
    ``capped`` names the providers whose monthly budget is reached; ``local``: the managed local
    backend, which serves as the ``local`` provider."""
    upstreams = []
    for p in settings.providers:
        pool = KeyPool(p.name, p.keys, default_cooldown=p.cooldown, clock=clock)
        if p.name == LOCAL and local is not None:
            upstreams.append(Upstream(name=p.name, provider=local.provider, pool=pool, model_for=local.model_for,
                                      unready=local.unready, owns=local.owns))
            # a server that just became ready is known good: what its dead predecessor's requests
            # did to the key's breaker no longer says anything
            local.supervisor.on_ready.append(functools.partial(_heard_from_any, pool))
            continue
        upstreams.append(Upstream(
            name=p.name,
            provider=OpenAICompatible(
                p,
                session,
                dataclasses.replace(settings.timeouts, read=p.read_timeout or settings.timeouts.read),
                ERROR_MAPPERS[p.dialect],
                proxy=settings.proxies.for_url(p.chat_url),
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
        capped=capped,
    )


def _heard_from_any(pool: KeyPool, _child: object) -> None:
    _heard_from(pool)


def _heard_from(pool: KeyPool) -> None:
    for key in pool.keys:
        key.breaker.succeeded()


def _router(clock: Callable[[], float]):
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        capped = app[BUDGETS].capped if settings.provider_budgets else None
        router = build_router(settings, app[HTTP], clock, capped, app.get(LOCAL_BACKEND))
        if router.needs_estimates:
            await asyncio.to_thread(tokens.encoder)  # load the tokenizer now, not on a request
        app[ROUTER] = router
        yield

    return ctx


def _strategies(classifier: Classifier | None, simple_threshold: float | None, clock: Callable[[], float]):
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        """The routing strategies over the router's upstreams; the drafter on the local one."""
        settings = app[SETTINGS]
        router, client = app[ROUTER], app[HTTP]
        local = next((up for up in router.upstreams if up.name == LOCAL), None)
        drafter = None
        if local is not None:
            cfg = next(p for p in settings.providers if p.name == LOCAL)
            secret = cfg.keys[0].secret.reveal()
            drafter = Drafter(local, max_tokens=settings.strategy.max_draft_tokens,
                              timeout=settings.strategy.draft_timeout,
                              slots=lambda: read_slots(client, cfg.base_url, secret), clock=clock)
        app[STRATEGIES] = Strategies(
            settings.strategy,
            router,
            classifier or (lambda payload, tokens: classify(payload, settings.classifier, tokens)),
            simple_threshold=simple_threshold if simple_threshold is not None else settings.classifier.simple_threshold,
            drafter=drafter,
            accepts_prediction=[p.name for p in settings.providers if p.accepts_prediction],
            clock=clock,
        )
        yield

    return ctx
