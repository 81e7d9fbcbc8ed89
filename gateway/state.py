"""Typed application state: the ``web.AppKey`` declarations, nothing else."""
from __future__ import annotations

from collections import Counter

import aiohttp
from aiohttp import web

from .clients.tracker import SpendTracker
from .config import Settings
from .context import Recorder, RequestContext
from .cors import CorsPolicy
from .keystore import KeyStore
from .local.backend import LocalBackend
from .observability import Activity, Metrics
from .routing import Router
from .shared import RedisShared
from .strategy.engine import Strategies
from .usage.ledger import Ledger
from .usage.reqlog import RequestLog

SETTINGS = web.AppKey("settings", Settings)
HTTP = web.AppKey("http", aiohttp.ClientSession)  # the one session for upstream calls
KEYSTORE = web.AppKey("keystore", KeyStore)
ROUTER = web.AppKey("router", Router)
BUDGETS = web.AppKey("budgets", SpendTracker)  # spend per client key and provider; admission
STRATEGIES = web.AppKey("strategies", Strategies)  # routing strategies (gateway/strategy)
REPAIRS: web.AppKey[Counter[str]] = web.AppKey("repairs")  # transcript repairs by kind, since start
# each finished request's context is handed to these (the usage ledger, metrics), in order
RECORDERS: web.AppKey[list[Recorder]] = web.AppKey("recorders")
METRICS = web.AppKey("metrics", Metrics)
LIVE: web.AppKey[set[RequestContext]] = web.AppKey("live")  # requests in flight (the middleware's)
CORS: web.AppKey[CorsPolicy | None] = web.AppKey("cors")  # None: CORS_ORIGINS unset, no CORS headers
LEDGER = web.AppKey("ledger", Ledger)  # the usage ledger: its recorder, queue and writer
REQUEST_LOG = web.AppKey("request_log", RequestLog)  # LOG_REQUESTS=true only: the request log
ACTIVITY = web.AppKey("activity", Activity)  # the dashboard's recent requests, errors, fallbacks
LOCAL_BACKEND = web.AppKey("local_backend", LocalBackend)  # set when the gateway runs llama.cpp itself
SHARED = web.AppKey("shared", RedisShared)  # REDIS_URL set only: state shared with other replicas
