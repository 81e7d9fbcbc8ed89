"""Typed application state: the ``web.AppKey`` declarations, nothing else."""
from __future__ import annotations

from collections import Counter

from aiohttp import web

from .clients.tracker import SpendTracker
from .config import Settings
from .context import Recorder
from .httpclient import HTTPClient
from .keystore import KeyStore
from .routing import Router

SETTINGS = web.AppKey("settings", Settings)
HTTP = web.AppKey("http", HTTPClient)
KEYSTORE = web.AppKey("keystore", KeyStore)
ROUTER = web.AppKey("router", Router)
BUDGETS = web.AppKey("budgets", SpendTracker)  # spend per client key and provider; admission
REPAIRS = web.AppKey("repairs", Counter)  # transcript repairs by kind, since start
# each finished request's context is handed to these (the usage ledger, metrics), in order
RECORDERS: web.AppKey[list[Recorder]] = web.AppKey("recorders")
