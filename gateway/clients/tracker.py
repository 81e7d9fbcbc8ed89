"""Spend in memory, per client key and per provider: admission before forwarding, recording after.

- ``admit(ctx, req)`` (the handler, before routing): refuses a request whose key has spent a
  budget (429 ``insufficient_quota``/``budget_exceeded``) or is over its rate limits (429
  ``rate_limit_exceeded``). Dictionary lookups and comparisons: no I/O, no await.
- ``record(ctx)`` (a recorder, after the ledger's, which has priced the request): adds its USD
  and tokens to the key's day and month and to its provider's month, corrects the tpm
  reservation, and fires the alerts of any threshold crossed.
- ``capped()`` (the router): the providers whose monthly cap is reached, which routing skips.
- ``restore(db)`` (at start): today's and this month's spend from the ledger's usage table.

Budgets are checked against spend already recorded, so requests in flight when a budget is
crossed still complete: the overshoot is at most what those requests cost. tpm is charged up
front with ``request_cost`` (prompt estimate + the completion cap asked) and corrected to the
real usage when the request is recorded.
"""
from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import aiosqlite
import structlog

from ..chat import ChatRequest
from ..context import RequestContext
from ..errors import QuotaExhausted, RateLimited
from ..routing import request_cost
from ..storage import Database
from ..storage.sqlite import SqliteDatabase
from .alerts import ALERT_EVENT, Alerts
from .budgets import (
    BUDGET_KINDS,
    DAY,
    MONTH,
    Limits,
    Reservation,
    SlidingWindow,
    Totals,
    add_spend,
    crossed,
    current,
    day_start,
    iso,
    month_start,
    refusal,
    remaining,
    spent,
    window_end,
    window_label,
)

log = structlog.get_logger("gateway.budgets")

# REDIS_URL: a client whose spend is past this share of a budget is admitted against the totals
# read from Redis (one round trip) rather than the local copy, which may lag by the news's few ms
NEAR_BUDGET = 0.8
REQUESTS, TOKENS = "requests", "tokens"  # the two sliding minutes (rpm, tpm)


class SpendSink(Protocol):
    """Where spend is also told (gateway/shared: Redis, for other replicas). ``scope`` is ``c``
    (a client key, ``who`` its id) or ``p`` (a provider, ``who`` its name)."""

    def charge(self, scope: str, who: str | int, window: str, start: float, end: float, usd: float,
               tokens: int, urgent: bool = False,
               limits: tuple[float | None, float | None] | None = None) -> None: ...

    def window(self, kind: str, key_id: int, amount: float) -> None:
        """A client's sliding minute grew by ``amount`` (``REQUESTS`` at admission, ``TOKENS``
        used, when recorded), for other replicas to count too."""

    def hold(self, key_id: int, hold_id: str | None = None) -> str:
        """A request of a budgeted client was admitted (here, from local totals): count it in
        flight for every replica, without waiting. Returns its hold's id."""

    def hold_id(self) -> str: ...

    def release(self, key_id: int, hold_id: str) -> None:
        """The request held as ``hold_id`` has ended (its charge, if any, was just told)."""

    async def admit(self, key_id: int, day: float, month: float, limits: Limits, hold_id: str) -> bool | None:
        """Near a budget: check the spend every replica agrees on and hold the request, in one
        atomic step, adopting the totals read. True held, False refused, None no answer."""


class ClientSpend:
    """One client key's spend this day and month, and its sliding minute."""

    __slots__ = ("day", "id", "limits", "month", "name", "requests", "tokens")

    def __init__(self, key_id: int, name: str | None) -> None:
        self.id = key_id
        self.name = name
        self.limits: Limits | None = None  # as last seen on a request
        self.day: Totals | None = None
        self.month: Totals | None = None
        self.requests = SlidingWindow()
        self.tokens = SlidingWindow()


class SpendTracker:
    def __init__(
        self,
        provider_caps: Mapping[str, float] | None = None,
        thresholds: Sequence[float] = (50, 80, 100),
        alerts: Alerts | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.provider_caps = dict(provider_caps or {})
        self.thresholds = tuple(sorted(thresholds))
        self.alerts = alerts or Alerts()
        self.now = now
        self._clients: dict[int, ClientSpend] = {}
        self._providers: dict[str, Totals] = {}  # this month's USD per provider
        self._capped: dict[str, str] = {}  # provider -> why routing skips it
        self._capped_until = 0.0  # when the month, and so every cap, resets
        self._reserved: dict[RequestContext, Reservation] = {}  # tpm charged up front, by request
        self._held: dict[RequestContext, tuple[str, bool]] = {}  # REDIS_URL: (hold id, held yet)
        self.shared: SpendSink | None = None  # REDIS_URL: spend is also charged there

    # ---- before forwarding --------------------------------------------------------------------

    def admit(self, ctx: RequestContext, req: ChatRequest) -> None:
        limits, key_id = ctx.client_limits, ctx.client_id
        if key_id is None:
            return
        if limits is None:
            known = self._clients.get(key_id)
            if known is not None:  # its limits were cleared: no alerts on the old ones
                known.limits = None
            return
        now = self.now()
        spend = self._client(key_id, ctx.client_name)
        spend.limits = limits
        if limits.has_budget:
            spent = refusal(limits, spend.day, spend.month, now)
            if spent is not None:
                raise QuotaExhausted(spent.message(), retry_after=spent.resets_at - now)
        rpm, tpm = limits.rpm, limits.tpm
        if rpm is not None:
            window = spend.requests
            window.prune(now)
            wait = window.wait_for(now, rpm, 1)
            if wait is not None:
                raise RateLimited(f"rate limit of {rpm:,} requests per minute reached for this key; "
                                  f"retry in {wait:.1f}s", retry_after=wait)
        if tpm is not None:
            cost = request_cost(req)
            window = spend.tokens
            window.prune(now)
            wait = window.wait_for(now, tpm, cost)
            if wait is not None:
                raise RateLimited(
                    f"rate limit of {tpm:,} tokens per minute reached for this key: {int(window.total):,} "
                    f"used in the last minute and this request may need ~{cost:,}; retry in {wait:.1f}s",
                    retry_after=wait,
                )
            self._reserved[ctx] = window.add(now, cost)
        if rpm is not None:
            spend.requests.add(now, 1)
            if self.shared is not None:
                self.shared.window(REQUESTS, key_id, 1)
        if self.shared is not None and limits.has_budget:
            held = self._held.get(ctx)
            if held is None or not held[1]:  # admitted on local totals: held without a round trip
                self._held[ctx] = (self.shared.hold(key_id, held[0] if held else None), True)

    def near_budget(self, ctx: RequestContext) -> bool:
        """Whether ``ctx``'s client is close enough to a budget (``NEAR_BUDGET``) that admission
        should read the spend all replicas agree on (only with shared state). No I/O."""
        limits, key_id = ctx.client_limits, ctx.client_id
        if self.shared is None or limits is None or key_id is None or not limits.has_budget:
            return False
        spend = self._clients.get(key_id)
        if spend is None:
            return False
        now = self.now()
        return any(spent(spend.day if window == DAY else spend.month, unit, now) >= NEAR_BUDGET * limit
                   for _, window, unit, limit in limits.budgets)

    async def refresh(self, ctx: RequestContext) -> None:
        """Near a budget (``near_budget``), before ``admit``: the shared state checks the spend
        every replica agrees on and holds the request in one atomic step; the totals it read
        become the local ones', so ``admit`` refuses if it refused. No answer in time: ``admit``
        decides on the local totals (and queues the hold)."""
        limits, key_id = ctx.client_limits, ctx.client_id
        if self.shared is not None and key_id is not None and limits is not None:
            now = self.now()
            hold_id = self.shared.hold_id()
            held = await self.shared.admit(key_id, day_start(now), month_start(now), limits, hold_id)
            if held is not False:
                self._held[ctx] = (hold_id, held is True)  # None: maybe held (a late answer): released anyway

    def capped(self) -> Mapping[str, str]:
        """The providers whose monthly cap is reached, each with a note (for routing's plan)."""
        if self._capped and self.now() >= self._capped_until:
            self._capped = {}  # a new month: every cap starts over
        return self._capped

    # ---- after the answer ---------------------------------------------------------------------

    def record(self, ctx: RequestContext) -> None:
        """The recorder: reads ``ctx.usage`` and ``ctx.cost_usd`` (filled by the ledger's pricing
        step, which runs first). A request with no price counts in tokens only."""
        usage = ctx.usage
        tokens = usage.prompt_tokens + usage.completion_tokens if usage is not None else 0
        usd = ctx.cost_usd or 0.0
        key_id = ctx.client_id
        if key_id is not None:
            held = self._held.pop(ctx, None) if self._held else None
            reserved = self._reserved.pop(ctx, None)
            spend = self._clients.get(key_id)
            # the real usage replaces the estimate; an answer with no usage keeps the estimate
            if reserved is not None and spend is not None and (usage is not None or ctx.provider is None):
                spend.tokens.correct(reserved, tokens)
            if reserved is not None and tokens and self.shared is not None:
                self.shared.window(TOKENS, key_id, tokens)  # other replicas count what it really used
            if usd or tokens:
                if spend is None:
                    spend = self._client(key_id, ctx.client_name)
                self._add_client(spend, ctx.started_at, usd, tokens)
            if held is not None and self.shared is not None:
                self.shared.release(key_id, held[0])  # after its charge: both go in one flush
        provider = ctx.provider
        if usd and provider is not None:
            self._add_provider(provider, ctx.started_at, usd)

    def _add_client(self, spend: ClientSpend, ts: float, usd: float, tokens: int) -> None:
        limits = spend.limits
        budgets = limits.budgets if limits is not None else ()
        shared = self.shared
        for window in (DAY, MONTH):
            totals = spend.day if window == DAY else spend.month
            if totals is not None and totals.start <= ts < totals.end:  # the usual case: this window
                was_usd, was_tokens = totals.usd, totals.tokens
                totals.add(usd, tokens)
            else:
                was_usd, was_tokens = 0.0, 0
                totals = add_spend(totals, window, ts, usd, tokens)
                if window == DAY:
                    spend.day = totals
                else:
                    spend.month = totals
                if not totals.start <= ts < totals.end:
                    continue  # a request from before the window (it began before midnight)
            if shared is not None:
                watched = None
                if budgets and limits is not None:  # the crossing of these is counted (the requests in flight then)
                    watched = ((limits.daily_usd, limits.daily_tokens) if window == DAY
                               else (limits.monthly_usd, limits.monthly_tokens))
                shared.charge("c", spend.id, window, totals.start, totals.end, usd, tokens, urgent=bool(budgets),
                              limits=watched)
            for kind, kind_window, unit, limit in budgets:
                if kind_window != window:
                    continue
                now_spent = totals.usd if unit == "usd" else totals.tokens
                for threshold in crossed(limit, was_usd if unit == "usd" else was_tokens, now_spent, self.thresholds):
                    self._alert("client", spend.name, kind, window, unit, limit, now_spent, threshold, ts)

    def _add_provider(self, provider: str, ts: float, usd: float) -> None:
        totals = self._providers.get(provider)
        was = totals.usd if totals is not None and totals.holds(ts) else 0.0
        totals = self._providers[provider] = add_spend(totals, MONTH, ts, usd, 0)
        if self.shared is not None and totals.holds(ts):
            self.shared.charge("p", provider, MONTH, totals.start, totals.end, usd, 0,
                               urgent=provider in self.provider_caps)
        cap = self.provider_caps.get(provider)
        if cap is None or not totals.holds(ts):
            return
        for threshold in crossed(cap, was, totals.usd, self.thresholds):
            self._alert("provider", provider, "monthly_usd", MONTH, "usd", cap, totals.usd, threshold, ts)
        self._check_cap(provider, totals)

    def _check_cap(self, provider: str, totals: Totals) -> None:
        cap = self.provider_caps.get(provider)
        if cap is None or totals.usd < cap or not totals.holds(self.now()):
            return
        if provider not in self._capped:
            log.warning("provider_budget_reached", provider=provider, cap_usd=cap, spent_usd=round(totals.usd, 6))
        self._capped[provider] = (f"{provider}: skipped, monthly budget of ${cap:,.2f} reached "
                                  f"(${totals.usd:,.2f} spent)")
        self._capped_until = totals.end

    def _alert(self, scope: str, name: str | None, kind: str, window: str, unit: str, limit: float,
               spent: float, threshold: float, ts: float) -> None:
        self.alerts.fire({
            "event": ALERT_EVENT,
            "scope": scope,  # "client": a client key's budget; "provider": a provider's monthly cap
            "client": name if scope == "client" else None,
            "provider": name if scope == "provider" else None,
            "budget": kind,
            "unit": unit,
            "limit": limit,
            "spent": round(spent, 6) if unit == "usd" else int(spent),
            "percent": round(spent * 100 / limit, 1) if limit > 0 else 100.0,
            "threshold": threshold,
            "period": window,
            "window": window_label(window, ts),
            "resets_at": iso(window_end(window, ts)),
            "timestamp": iso(self.now()),
        })

    def _client(self, key_id: int, name: str | None) -> ClientSpend:
        spend = self._clients.get(key_id)
        if spend is None:
            spend = self._clients[key_id] = ClientSpend(key_id, name)
        elif name is not None:
            spend.name = name
        return spend

    def adopt(self, scope: str, who: str, window: str, start: float, usd: float, tokens: int) -> None:
        """What every replica together has spent in a window (from Redis): the local totals
        become at least that (spend only grows in a window, so news out of order is harmless)."""
        if window not in (DAY, MONTH) or not (0 <= usd < math.inf and tokens >= 0):
            return
        if scope == "p":
            was = self._providers.get(who)
            totals = self._providers[who] = _raised(was, window, start, usd, 0)
            self._check_cap(who, totals)
            return
        try:
            key_id = int(who)
        except ValueError:
            return
        spend = self._client(key_id, None)
        if window == DAY:
            spend.day = _raised(spend.day, DAY, start, usd, tokens)
        else:
            spend.month = _raised(spend.month, MONTH, start, usd, tokens)

    def windows(self) -> Iterator[tuple[str, str | int, str, float, float, float, int]]:
        """Every current spend window: (scope, who, window, start, end, usd, tokens), scope
        ``c`` for a client key (``who`` its id) or ``p`` for a provider (its name)."""
        now = self.now()
        for spend in self._clients.values():
            for window, totals in ((DAY, spend.day), (MONTH, spend.month)):
                if totals is not None and totals.holds(now):
                    yield "c", spend.id, window, totals.start, totals.end, totals.usd, totals.tokens
        for provider, totals in self._providers.items():
            if totals.holds(now):
                yield "p", provider, MONTH, totals.start, totals.end, totals.usd, totals.tokens

    def foreign(self, kind: str, key_id: int, amount: float) -> None:
        """Another replica's addition to a client's sliding minute (``window``), counted here as
        of now (news a few ms late keeps the window's time order)."""
        spend = self._client(key_id, None)
        window = spend.requests if kind == REQUESTS else spend.tokens
        now = self.now()
        window.prune(now)
        window.add(now, amount)

    # ---- at start -----------------------------------------------------------------------------

    async def restore(self, source: Path | str | Database) -> bool:
        """Today's and this month's spend from the ledger's ``usage`` table (rows are dated by
        their request's start): ``source`` is a SQLite path (opened read-only, never created) or
        an open ``Database`` (PostgreSQL). Returns False when there is no database or no table yet."""
        if isinstance(source, (str, Path)):
            uri = await asyncio.to_thread(_read_only_uri, Path(source))
            if uri is None:
                return False
            async with aiosqlite.connect(uri, uri=True) as conn:
                db = SqliteDatabase(conn)
                if not await db.fetch("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'usage'"):
                    return False
                await self._restore_from(db)
        else:
            await self._restore_from(source)
        log.info("budgets_restored", clients=len(self._clients), providers=len(self._providers),
                 capped=sorted(self._capped))
        return True

    async def _restore_from(self, db: Database) -> None:
        now = self.now()
        day, month = day_start(now), month_start(now)
        clients = (
            "SELECT client_key_id, max(client_name), coalesce(sum(cost_usd), 0), "
            "coalesce(sum(prompt_tokens + completion_tokens), 0) FROM usage "
            "WHERE ts >= ? AND client_key_id IS NOT NULL GROUP BY client_key_id"
        )
        for key_id, name, usd, tokens in await db.fetch(clients, (month,)):
            self._client(key_id, name).month = Totals(MONTH, month, round(usd, 9), int(tokens))
        for key_id, name, usd, tokens in await db.fetch(clients, (day,)):
            self._client(key_id, name).day = Totals(DAY, day, round(usd, 9), int(tokens))
        for provider, usd in await db.fetch(
            "SELECT provider, coalesce(sum(cost_usd), 0) FROM usage "
            "WHERE ts >= ? AND provider IS NOT NULL GROUP BY provider", (month,)
        ):
            self._providers[provider] = totals = Totals(MONTH, month, round(usd, 9))
            self._check_cap(provider, totals)

    # ---- /_status -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now = self.now()
        capped = self.capped()
        providers = {}
        for name, cap in self.provider_caps.items():
            spent = current(self._providers.get(name), MONTH, now).usd
            providers[name] = {"monthly_budget_usd": cap, "spent_usd": round(spent, 6),
                               "remaining_usd": round(remaining(cap, spent) or 0.0, 6),
                               "capped": name in capped, "resets_at": iso(window_end(MONTH, now))}
        clients = []
        for spend in self._clients.values():
            day, month = current(spend.day, DAY, now), current(spend.month, MONTH, now)
            limits = spend.limits or Limits()
            spend.requests.prune(now)
            spend.tokens.prune(now)
            entry: dict[str, Any] = {
                "id": spend.id,
                "name": spend.name,
                "today": {"usd": round(day.usd, 6), "tokens": day.tokens},
                "month": {"usd": round(month.usd, 6), "tokens": month.tokens},
                "requests_last_minute": int(spend.requests.total),
                "tokens_last_minute": int(spend.tokens.total),
            }
            for kind, window, unit in BUDGET_KINDS:
                limit = getattr(limits, kind)
                if limit is not None:
                    used = (day if window == DAY else month).amount(unit)
                    entry[kind] = {"limit": limit, "spent": used, "remaining": remaining(limit, used)}
            for kind in ("rpm", "tpm"):
                if getattr(limits, kind) is not None:
                    entry[kind] = getattr(limits, kind)
            clients.append(entry)
        return {"providers": providers, "clients": clients, "alerts": self.alerts.status()}


def _raised(totals: Totals | None, window: str, start: float, usd: float, tokens: int) -> Totals:
    """``totals`` raised to at least (usd, tokens) for the window starting at ``start``; an older
    window is replaced, a newer one kept as it is."""
    if totals is None or totals.start < start:
        return Totals(window, start, round(usd, 9), int(tokens))
    if totals.start == start:
        totals.usd = max(totals.usd, round(usd, 9))
        totals.tokens = max(totals.tokens, int(tokens))
    return totals


def _read_only_uri(path: Path) -> str | None:
    """A read-only SQLite URI for ``path`` (never creates it), or None when there is no file."""
    return path.resolve().as_uri() + "?mode=ro" if path.exists() else None
