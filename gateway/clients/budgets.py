"""Pure budget arithmetic: UTC windows, limits, refusals, sliding minutes and alert thresholds.

Budgets run over the UTC day and the UTC month; rate limits over a sliding minute. Every function
takes the time it needs (epoch seconds) as an argument, so its tests are tables.
"""
from __future__ import annotations

import calendar
import datetime as dt
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

DAY = "day"
MONTH = "month"
MINUTE = 60.0

# budget kinds: (field on Limits, window, unit)
BUDGET_KINDS: tuple[tuple[str, str, str], ...] = (
    ("daily_usd", DAY, "usd"),
    ("monthly_usd", MONTH, "usd"),
    ("daily_tokens", DAY, "tokens"),
    ("monthly_tokens", MONTH, "tokens"),
)


@dataclass(frozen=True)
class Limits:
    """One client key's budgets and rate limits; None: no limit of that kind."""

    daily_usd: float | None = None
    monthly_usd: float | None = None
    daily_tokens: int | None = None
    monthly_tokens: int | None = None
    rpm: int | None = None
    tpm: int | None = None

    @cached_property
    def budgets(self) -> tuple[tuple[str, str, str, float], ...]:
        """The budgets set, each as (kind, window, unit, limit), in ``BUDGET_KINDS`` order
        (computed once: every request of the key reads it twice)."""
        return tuple((kind, window, unit, limit) for kind, window, unit in BUDGET_KINDS
                     if (limit := getattr(self, kind)) is not None)

    @cached_property
    def has_budget(self) -> bool:
        return bool(self.budgets)

    @classmethod
    def of(cls, **fields: float | None) -> Limits | None:
        """The limits, or None when none is set (then nothing is checked for the key)."""
        limits = cls(**fields)  # type: ignore[arg-type]
        return None if limits == NO_LIMITS else limits


NO_LIMITS = Limits()


# ---- windows ----------------------------------------------------------------------------------

def day_start(ts: float) -> float:
    """The epoch second the UTC day holding ``ts`` began."""
    return ts - ts % 86400


def month_start(ts: float) -> float:
    d = dt.datetime.fromtimestamp(ts, dt.UTC)
    return calendar.timegm((d.year, d.month, 1, 0, 0, 0))


def window_start(window: str, ts: float) -> float:
    return day_start(ts) if window == DAY else month_start(ts)


def window_end(window: str, ts: float) -> float:
    """When the window holding ``ts`` resets (the next UTC midnight, or the next month's first)."""
    if window == DAY:
        return day_start(ts) + 86400
    d = dt.datetime.fromtimestamp(ts, dt.UTC)
    year, month = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
    return calendar.timegm((year, month, 1, 0, 0, 0))


def window_label(window: str, ts: float) -> str:
    """``2025-01-31`` for a day, ``2025-01`` for a month (UTC)."""
    d = dt.datetime.fromtimestamp(ts, dt.UTC)
    return d.strftime("%Y-%m-%d" if window == DAY else "%Y-%m")


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---- budgets ----------------------------------------------------------------------------------

class Totals:
    """USD and tokens spent in one window (mutable; the tracker keeps one per key and window).
    It knows its bounds, so the request path tells whether a time falls in it by two comparisons
    rather than calendar arithmetic."""

    __slots__ = ("end", "start", "tokens", "usd")

    def __init__(self, window: str, start: float, usd: float = 0.0, tokens: int = 0) -> None:
        self.start = start
        self.end = window_end(window, start)
        self.usd = usd
        self.tokens = tokens

    def holds(self, ts: float) -> bool:
        return self.start <= ts < self.end

    def amount(self, unit: str) -> float:
        return self.usd if unit == "usd" else self.tokens

    def add(self, usd: float, tokens: int) -> None:
        # rounded to a billionth of a dollar: ten $0.01 requests make $0.10, not $0.0999...
        self.usd = round(self.usd + usd, 9)
        self.tokens += tokens


def add_spend(totals: Totals | None, window: str, ts: float, usd: float, tokens: int) -> Totals:
    """``totals`` with a request that started at ``ts`` added: a request from a later window
    starts a new one; one from an earlier window (it began before midnight) is not counted in
    this one, as the ledger's row, dated by its start, is not either."""
    if totals is None or ts >= totals.end:
        totals = Totals(window, window_start(window, ts))
    if ts >= totals.start:
        totals.add(usd, tokens)
    return totals


@dataclass(frozen=True)
class Refusal:
    """A budget that is spent: which, its limit, what was spent and when it resets."""

    kind: str  # a BUDGET_KINDS field name
    window: str
    unit: str
    limit: float
    spent: float
    resets_at: float

    def message(self) -> str:
        when = "today" if self.window == DAY else "this month"
        reset = "00:00 UTC" if self.window == DAY else f"00:00 UTC on {window_label(DAY, self.resets_at)}"
        span = "daily" if self.window == DAY else "monthly"
        if self.unit == "usd":
            return (f"{span} budget of ${self.limit:,.2f} reached: ${self.spent:,.2f} spent {when}; "
                    f"resets at {reset}")
        return (f"{span} token budget of {int(self.limit):,} reached: {int(self.spent):,} tokens used {when}; "
                f"resets at {reset}")


def current(totals: Totals | None, window: str, now: float) -> Totals:
    """``totals`` if it is the window holding ``now``, else an empty one (the window reset)."""
    if totals is not None and totals.holds(now):
        return totals
    return Totals(window, window_start(window, now))


def refusal(limits: Limits, day: Totals | None, month: Totals | None, now: float) -> Refusal | None:
    """The first budget ``limits`` sets that is spent (spent >= limit) at ``now``, or None."""
    for kind, window, unit, limit in limits.budgets:
        used = spent(day if window == DAY else month, unit, now)
        if used >= limit:
            return Refusal(kind, window, unit, limit, used, window_end(window, now))
    return None


def spent(totals: Totals | None, unit: str, now: float) -> float:
    """What ``totals`` counts in ``unit`` (``"usd"`` or ``"tokens"``) if its window holds ``now``,
    else 0 (the window reset): ``current(...).amount(unit)`` without building an empty window,
    for the checks every request of a budgeted key makes."""
    if totals is None or not totals.start <= now < totals.end:
        return 0.0
    return totals.usd if unit == "usd" else float(totals.tokens)


def remaining(limit: float | None, spent: float) -> float | None:
    """What is left of a budget (never below 0); None for no limit."""
    return None if limit is None else max(0.0, limit - spent)


def crossed(limit: float, before: float, after: float, thresholds: Iterable[float]) -> list[float]:
    """The thresholds (percent of ``limit``) that spending from ``before`` to ``after`` passed.

    Spend only grows inside a window, so each threshold is crossed once per window: the alert
    for it fires once, whatever the number of requests, and a restart (whose restored spend is
    already past it) does not fire it again. A limit of 0 is crossed by any spend."""
    if after <= before:
        return []
    if limit <= 0:
        return [t for t in thresholds if before <= 0]
    return [t for t in thresholds if before * 100 < t * limit <= after * 100]


# ---- the sliding minute -----------------------------------------------------------------------

class Reservation:
    """What one ``SlidingWindow.add`` put in its bucket, so it can be corrected later."""

    __slots__ = ("bucket", "amount")

    def __init__(self, bucket: list[float], amount: float) -> None:
        self.bucket = bucket
        self.amount = amount


class SlidingWindow:
    """Amounts (requests, tokens) added at times, summed over the last ``span`` seconds.

    Adds within one ``resolution`` (a second) share a bucket ``[latest time, amount]``: a client
    at thousands of requests a second keeps at most span/resolution buckets, not one object per
    request for the garbage collector to walk. A bucket leaves the window when its latest add
    does, so an add may count up to one resolution longer than its own minute (never shorter).
    ``add`` returns a ``Reservation`` so an estimate can be corrected later (tpm is charged an
    estimate up front, then the real usage)."""

    __slots__ = ("entries", "span", "total", "resolution", "_slot")

    def __init__(self, span: float = MINUTE, resolution: float = 1.0) -> None:
        self.span = span
        self.resolution = resolution
        self.entries: deque[list[float]] = deque()  # buckets, oldest first
        self.total = 0.0
        self._slot: float | None = None  # the newest bucket's slot (time // resolution)

    def prune(self, now: float) -> None:
        entries = self.entries
        edge = now - self.span
        while entries and entries[0][0] <= edge:
            self.total -= entries.popleft()[1]
        if not entries:
            self.total = 0.0  # no float drift survives an empty window
            self._slot = None

    def add(self, now: float, amount: float) -> Reservation:
        slot = now // self.resolution
        entries = self.entries
        if entries and slot == self._slot:
            bucket = entries[-1]
            if now > bucket[0]:
                bucket[0] = now
            bucket[1] += amount
        else:
            bucket = [now, amount]
            entries.append(bucket)
            self._slot = slot
        self.total += amount
        return Reservation(bucket, amount)

    def correct(self, entry: Reservation, amount: float) -> None:
        """Replace an add's amount (no-op once its bucket has left the window)."""
        bucket = entry.bucket
        if self.entries and bucket[0] >= self.entries[0][0]:
            self.total += amount - entry.amount
            bucket[1] += amount - entry.amount
        entry.amount = amount

    def wait_for(self, now: float, limit: float, cost: float) -> float | None:
        """Seconds until ``cost`` more fits under ``limit``; None: it fits now. Call ``prune``
        first. When the window is empty anything fits (a single request larger than the whole
        minute's allowance goes alone, or it could never be served)."""
        if self.total + cost <= limit or not self.entries:
            return None
        over = self.total + cost - limit
        for when, amount in self.entries:  # oldest first: wait until enough has left
            over -= amount
            if over <= 0:
                return max(0.0, when + self.span - now)
        return max(0.0, self.entries[-1][0] + self.span - now)
