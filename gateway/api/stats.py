"""``GET /stats``: what the ledger holds over a window, in totals and by group.

Parameters: ``since`` (default: 30 days ago), ``until`` (default: now), each a relative time
(``7d``, ``24h``, ``30m``), ``today``, epoch seconds or an ISO date / date-time; ``group_by``:
``client``, ``provider``, ``model`` (served), ``day``, ``hour`` (UTC), comma-separated. A bad
one is a 400 naming it.

Rows still queued are written first, so the answer includes every request that ended before it
(when the database cannot be written just then, ``pending_rows`` says how many are missing).

An admin key, or any caller when client auth is off, sees every client; a plain client key sees
only its own requests (``scope``: ``all`` or ``own``).
"""
from __future__ import annotations

import time
from typing import Any

import orjson
import structlog
from aiohttp import web

from ..errors import InvalidRequest
from ..middleware import context_of
from ..state import KEYSTORE, LEDGER
from ..storage import ERRORS, Database
from ..usage import stats as queries

log = structlog.get_logger("gateway.stats")

DEFAULT_WINDOW = 30 * 86400.0
PARAMS = ("since", "until", "group_by")


def window(query: Any, now: float) -> tuple[float, float, tuple[str, ...]]:
    """(since, until, group_by) from the query string; InvalidRequest naming a bad parameter."""
    unknown = sorted(set(query) - set(PARAMS))
    try:
        if unknown:
            raise queries.StatsQueryError(unknown[0], f"unknown parameter {unknown[0]!r}; /stats takes "
                                                      f"{', '.join(PARAMS)}")
        since = queries.parse_time(query["since"], now, "since") if "since" in query else now - DEFAULT_WINDOW
        until = queries.parse_time(query["until"], now, "until") if "until" in query else now
        group_by = queries.parse_group_by(query.get("group_by"))
    except queries.StatsQueryError as e:
        raise InvalidRequest(str(e), param=e.param, code="invalid_parameter") from None
    if since >= until:
        raise InvalidRequest(f"since ({queries.iso(since)}) must be before until ({queries.iso(until)})",
                             param="since", code="invalid_parameter")
    return since, until, group_by


async def stats(request: web.Request) -> web.Response:
    ctx = context_of(request)
    now = time.time()
    since, until, group_by = window(request.query, now)
    own = ctx.client_role == "client"  # admins, and everyone when auth is off, see all clients
    client_id = ctx.client_id if own else None
    ledger = request.app[LEDGER]
    try:
        await ledger.flush()
    except ERRORS as e:
        log.warning("usage_flush_failed", error=repr(e))
    db = ledger.reader
    assert db is not None, "the ledger's cleanup_ctx opens it"
    [total] = await queries.totals(db, since, until, client_id=client_id)
    body: dict[str, Any] = {
        "object": "gateway.stats",
        "since": queries.iso(since),
        "until": queries.iso(until),
        "scope": "own" if own else "all",
        "group_by": list(group_by),
        "totals": total,
        "providers": await queries.served_share(db, since, until, client_id=client_id),
        "groups": await queries.totals(db, since, until, client_id=client_id, group_by=group_by) if group_by else [],
        "pending_rows": ledger.queue_depth,
    }
    budgets = await _budget_use(request, db, now, client_id)
    if budgets:
        body["budgets"] = budgets
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def _budget_use(request: web.Request, db: Database, now: float,
                      client_id: int | None) -> list[dict[str, Any]]:
    """Budget use per client key, for keys that carry budgets (none without client auth)."""
    store = request.app.get(KEYSTORE)
    if store is None:
        return []
    keys = [k for k in await store.list()
            if (client_id is None or k.id == client_id) and queries.budget_use(k, None) is not None]
    if not keys:
        return []
    spend = await queries.spend_by_client(db, now)
    return [{"client_id": k.id, "client": k.name, **(queries.budget_use(k, spend.get(k.id)) or {})} for k in keys]
