"""Totals over the usage ledger, for ``GET /stats`` and ``manage_keys.py stats|usage``.

Parsing the parameters is pure (``parse_time``, ``parse_group_by``: ``StatsQueryError`` names the
parameter); the queries take a ``gateway.storage.Database`` (SQLite on aiosqlite's thread, or
PostgreSQL), never blocking the event loop; the SQL is portable but for the time groups. Field
names are stable (the README lists them):

- ``requests``, ``failed_requests`` (status 400 or more, 499 for a client that left),
- ``prompt_tokens``, ``completion_tokens`` (reasoning included), ``cached_tokens``,
  ``reasoning_tokens``, ``total_tokens`` (prompt + completion),
- ``cost_usd`` (priced rows only), ``primary_cost_usd`` (what the primary provider would have
  charged), ``saved_usd`` (primary less actual, summed over rows where both are priced),
- ``unpriced_requests`` (tokens counted, no price known), ``estimated_requests`` (tokens estimated).
"""
from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from typing import Any

from ..storage import SQLITE, Database

_DAY = {SQLITE: "strftime('%Y-%m-%d', ts, 'unixepoch')",
        "postgres": "to_char(to_timestamp(ts) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"}
_HOUR = {SQLITE: "strftime('%Y-%m-%dT%H:00:00Z', ts, 'unixepoch')",  # UTC, as ISO times
         "postgres": """to_char(to_timestamp(ts) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:00:00"Z"')"""}
GROUPS: dict[str, tuple[str, ...]] = {  # group name -> SQL expressions, named as in the output
    "client": ("client_key_id AS client_id", "max(client_name) AS client"),
    "provider": ("provider",),
    "model": ("model_served AS model",),
    "day": (f"{_DAY[SQLITE]} AS day",),
    "hour": (f"{_HOUR[SQLITE]} AS hour",),
}
_GROUP_KEYS = {"client": "client_key_id", "provider": "provider", "model": "model_served",
               "day": _DAY[SQLITE], "hour": _HOUR[SQLITE]}


def _group_sql(group: str, dialect: str) -> tuple[tuple[str, ...], str]:
    """The output expressions of a group and what to group by, in the database's dialect."""
    if group in ("day", "hour") and dialect != SQLITE:
        expr = (_DAY if group == "day" else _HOUR)[dialect]
        return (f"{expr} AS {group}",), expr
    return GROUPS[group], _GROUP_KEYS[group]


METRICS = """
    count(*) AS requests,
    coalesce(sum(CASE WHEN status >= 400 THEN 1 ELSE 0 END), 0) AS failed_requests,
    coalesce(sum(prompt_tokens), 0) AS prompt_tokens,
    coalesce(sum(completion_tokens), 0) AS completion_tokens,
    coalesce(sum(cached_tokens), 0) AS cached_tokens,
    coalesce(sum(reasoning_tokens), 0) AS reasoning_tokens,
    coalesce(sum(prompt_tokens + completion_tokens), 0) AS total_tokens,
    coalesce(sum(cost_usd), 0.0) AS cost_usd,
    coalesce(sum(primary_cost_usd), 0.0) AS primary_cost_usd,
    coalesce(sum(CASE WHEN cost_usd IS NOT NULL AND primary_cost_usd IS NOT NULL
                      THEN primary_cost_usd - cost_usd ELSE 0 END), 0.0) AS saved_usd,
    coalesce(sum(CASE WHEN priced = 0 THEN 1 ELSE 0 END), 0) AS unpriced_requests,
    coalesce(sum(tokens_estimated), 0) AS estimated_requests
"""
_USD = ("cost_usd", "primary_cost_usd", "saved_usd")
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_EPOCH = re.compile(r"^\d{1,12}(?:\.\d+)?$")
EARLIEST, LATEST = 0.0, 253402300799.0  # 1970-01-01 to 9999-12-31T23:59:59Z: what can be shown


class StatsQueryError(ValueError):
    """A bad parameter; ``param`` names it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


# ---- parameters (pure) ----------------------------------------------------------------------------


def parse_time(text: str, now: float, param: str) -> float:
    """Epoch seconds for ``text``: ``7d``/``24h``/``30m``/``90s``/``2w`` ago, ``now``, ``today``
    (UTC midnight), epoch seconds, an ISO date (UTC midnight) or an ISO date-time (UTC unless it
    gives an offset)."""
    ts = _when(text.strip(), now)
    if ts is None:
        raise StatsQueryError(
            param, f"{param} must be a time: 7d, 24h or 30m ago, 'today', epoch seconds, or an ISO date or "
                   f"date-time such as 2026-01-31 or 2026-01-31T12:00:00Z; got {text!r}")
    if not EARLIEST <= ts <= LATEST:
        raise StatsQueryError(param, f"{param} must be between {iso(EARLIEST)} and {iso(LATEST)}; got {text!r}")
    return ts


def _when(value: str, now: float) -> float | None:
    low = value.lower()
    m = _RELATIVE.match(low)
    if m:
        return now - float(m.group(1)) * _UNITS[m.group(2)]
    if low == "now":
        return now
    if low == "today":
        return day_start(now)
    if _EPOCH.match(value):
        return float(value)
    try:
        when = dt.datetime.fromisoformat(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return when.timestamp()
    except (ValueError, OverflowError):
        return None


def parse_group_by(text: str | None, param: str = "group_by") -> tuple[str, ...]:
    """``client``, ``provider``, ``model``, ``day``, ``hour``, or several comma-separated, in the order given."""
    if text is None or not text.strip():
        return ()
    names: list[str] = []
    for part in text.split(","):
        name = part.strip().lower()
        if name not in GROUPS:
            raise StatsQueryError(param, f"{param} takes {', '.join(GROUPS)} (comma-separated); got {part.strip()!r}")
        if name not in names:
            names.append(name)
    return tuple(names)


def day_start(now: float) -> float:
    """The start of ``now``'s UTC day."""
    return dt.datetime.fromtimestamp(now, dt.UTC).replace(hour=0, minute=0, second=0,
                                                                    microsecond=0).timestamp()


def month_start(now: float) -> float:
    """The start of ``now``'s UTC month."""
    return dt.datetime.fromtimestamp(now, dt.UTC).replace(day=1, hour=0, minute=0, second=0,
                                                                    microsecond=0).timestamp()


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# ---- queries ------------------------------------------------------------------------------------------


def _where(since: float, until: float, client_id: int | None) -> tuple[str, list[Any]]:
    if client_id is None:
        return "ts >= ? AND ts < ?", [since, until]
    return "client_key_id = ? AND ts >= ? AND ts < ?", [client_id, since, until]


def _rounded(row: dict[str, Any]) -> dict[str, Any]:
    for name in _USD:
        if name in row:
            row[name] = round(row[name], 8)
    return row


async def _fetch(db: Database, sql: str, args: Sequence[Any]) -> list[dict[str, Any]]:
    return [_rounded(row) for row in await db.fetch_dicts(sql, args)]


async def totals(db: Database, since: float, until: float, *, client_id: int | None = None,
                 group_by: Iterable[str] = ()) -> list[dict[str, Any]]:
    """The metrics over [since, until), one dict per group (one in all without ``group_by``);
    ``client_id`` keeps one client's rows."""
    where, args = _where(since, until, client_id)
    groups = list(group_by)
    parts = [_group_sql(g, db.dialect) for g in groups]
    columns = [expr for exprs, _ in parts for expr in exprs]
    sql = f"SELECT {', '.join([*columns, METRICS])} FROM usage WHERE {where}"
    if groups:
        keys = ", ".join(key for _, key in parts)
        sql += f" GROUP BY {keys} ORDER BY {keys}"
    return await _fetch(db, sql, args)


async def served_share(db: Database, since: float, until: float, *,
                       client_id: int | None = None) -> list[dict[str, Any]]:
    """Who served the answered requests (status below 400): count and share, largest first."""
    where, args = _where(since, until, client_id)
    rows = await _fetch(db, f"SELECT provider, count(*) AS requests FROM usage WHERE {where} "
                            "AND status < 400 AND provider IS NOT NULL GROUP BY provider "
                            "ORDER BY requests DESC, provider", args)
    served = sum(r["requests"] for r in rows)
    for r in rows:
        r["share"] = round(r["requests"] / served, 4)
    return rows


async def spend_by_client(db: Database, now: float) -> dict[int | None, dict[str, Any]]:
    """Each client's requests, tokens and cost today and this month (UTC)."""
    day, month = day_start(now), month_start(now)
    rows = await _fetch(
        db,
        "SELECT client_key_id AS client_id, "
        "sum(CASE WHEN ts >= ? THEN 1 ELSE 0 END) AS today_requests, "
        "coalesce(sum(CASE WHEN ts >= ? THEN prompt_tokens + completion_tokens END), 0) AS today_tokens, "
        "coalesce(sum(CASE WHEN ts >= ? THEN cost_usd END), 0.0) AS today_cost_usd, "
        "count(*) AS month_requests, "
        "coalesce(sum(prompt_tokens + completion_tokens), 0) AS month_tokens, "
        "coalesce(sum(cost_usd), 0.0) AS month_cost_usd "
        "FROM usage WHERE ts >= ? GROUP BY client_key_id",
        [day, day, day, month],
    )
    for r in rows:
        for name in ("today_cost_usd", "month_cost_usd"):
            r[name] = round(r[name], 8)
    return {r.pop("client_id"): r for r in rows}


# ---- budget use: read only if the client keys carry budgets ---------------------------------------

BUDGET_FIELDS = {  # limit on the key -> what it is measured against
    "daily_usd": "today_cost_usd",
    "monthly_usd": "month_cost_usd",
    "daily_tokens": "today_tokens",
    "monthly_tokens": "month_tokens",
}


def budget_use(key: object, spend: dict[str, Any] | None) -> dict[str, dict[str, float]] | None:
    """Each budget set on ``key`` with what was used of it; None when it has none. The limits are
    read from the key itself or its ``budget`` (whichever the key store gives)."""
    holder = getattr(key, "budget", None) or key
    use: dict[str, dict[str, float]] = {}
    for limit_name, spent_name in BUDGET_FIELDS.items():
        limit = getattr(holder, limit_name, None)
        if isinstance(limit, (int, float)) and not isinstance(limit, bool):
            used = (spend or {}).get(spent_name, 0)
            use[limit_name] = {"limit": limit, "used": used,
                               "fraction": round(used / limit, 4) if limit > 0 else 1.0}
    return use or None
