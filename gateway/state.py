"""Typed application state: the ``web.AppKey`` declarations, nothing else."""
from __future__ import annotations

from collections import Counter

from aiohttp import web

from .config import Settings
from .context import Recorder, RequestContext
from .cors import CorsPolicy
from .httpclient import HTTPClient
from .keystore import KeyStore
from .local.backend import LocalBackend
from .observability import Metrics
from .routing import Router

SETTINGS = web.AppKey("settings", Settings)
HTTP = web.AppKey("http", HTTPClient)
KEYSTORE = web.AppKey("keystore", KeyStore)
ROUTER = web.AppKey("router", Router)
REPAIRS = web.AppKey("repairs", Counter)  # transcript repairs by kind, since start
# each finished request's context is handed to these (the usage ledger, metrics), in order
RECORDERS: web.AppKey[list[Recorder]] = web.AppKey("recorders")
METRICS = web.AppKey("metrics", Metrics)
LIVE: web.AppKey[set[RequestContext]] = web.AppKey("live")  # requests in flight (the middleware's)
CORS: web.AppKey[CorsPolicy | None] = web.AppKey("cors")  # None: CORS_ORIGINS unset, no CORS headers
LOCAL_BACKEND = web.AppKey("local_backend", LocalBackend)  # set when the gateway runs llama.cpp itself
