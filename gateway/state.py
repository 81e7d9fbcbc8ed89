"""Typed application state: the ``web.AppKey`` declarations, nothing else."""
from __future__ import annotations

from collections import Counter

import aiohttp
from aiohttp import web

from .config import Settings
from .keystore import KeyStore
from .routing import Router

SETTINGS = web.AppKey("settings", Settings)
HTTP = web.AppKey("http", aiohttp.ClientSession)  # the one session for upstream calls
KEYSTORE = web.AppKey("keystore", KeyStore)
ROUTER = web.AppKey("router", Router)
REPAIRS = web.AppKey("repairs", Counter)  # transcript repairs by kind, since start
