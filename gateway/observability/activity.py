"""Recent activity for the dashboard: requests, errors and fallbacks per 10 seconds over the last
15 minutes, and the last errors with their request ids. In memory, bounded, lost on restart (the
usage ledger keeps the history).

``Activity.record`` is one of the app's recorders (``app[RECORDERS]``): per request it bumps
three counters in a fixed ring of buckets (a slot is reused once its time has passed, so memory
never grows) and, for a failed request, appends a small record of names and codes to a bounded
deque. It reads the clock once. ``snapshot`` builds the answer of ``GET /dashboard/data``. All of
it runs on the event loop, so it needs no lock. Time is injected (``clock``: epoch seconds).

Requests to the ``quiet`` paths are not counted: the app passes its own observability routes
(the dashboard's page and polling, /_status, /stats, /metrics, /health), so watching the gateway
does not show up as its traffic.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from ..context import RequestContext
from ..logs import shorten

BUCKET_S = 10
WINDOW_S = 15 * 60
LAST_ERRORS = 50
MAX_TEXT = 80  # characters kept of a client-chosen name (the model asked for)


def failed(ctx: RequestContext) -> bool:
    """An error the client saw: a 4xx/5xx (499: it left), or a stream that broke midway. (Pure.)"""
    return ctx.status >= 400 or ctx.stream_error is not None


def fell_back(ctx: RequestContext) -> bool:
    """Served by other than its first choice: an attempt failed first, or the plan skipped the
    first provider (as ``glm_gateway_fallbacks_total`` counts them). (Pure.)"""
    return ctx.fallback_reason is not None or (bool(ctx.skipped) and ctx.provider is not None)


def error_entry(ctx: RequestContext, at: float) -> dict[str, Any]:
    """What the dashboard shows of a failed request: names, statuses and codes only, never a
    message an upstream wrote (it could echo a key) and never the raw path (pure)."""
    code = "midstream" if ctx.stream_error is not None else ctx.error_code or ctx.error_type
    if code is None:
        code = "client_disconnected" if ctx.status == 499 else _phrase(ctx.status)
    return {
        "at": round(at, 3),
        "request_id": ctx.request_id,
        "status": ctx.status,
        "method": ctx.method,
        "route": ctx.route or "unmatched",
        "code": code,
        "provider": ctx.provider,
        "client": ctx.client_name,
        "model": shorten(ctx.model_asked, MAX_TEXT) if ctx.model_asked else None,
        "attempts": [f"{a.provider}/{a.key}: {a.outcome}" + (f" ({a.status})" if a.status else "")
                     for a in ctx.attempts or ()],
    }


def _phrase(status: int) -> str | None:
    """``not_found`` for 404: what an error the middleware rendered without a code was."""
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return None


class Activity:
    def __init__(
        self,
        *,
        bucket_s: int = BUCKET_S,
        window_s: int = WINDOW_S,
        last_errors: int = LAST_ERRORS,
        quiet: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        if bucket_s <= 0 or window_s < bucket_s:
            raise ValueError("bucket_s must be positive and window_s at least one bucket")
        self.bucket_s = bucket_s
        self.buckets = window_s // bucket_s
        self.quiet = frozenset(quiet)
        self.clock = clock
        n = self.buckets
        # parallel lists (a ring): the bucket number a slot holds, and its three counts
        self._slot = [-1] * n
        self._requests = [0] * n
        self._errors = [0] * n
        self._fallbacks = [0] * n
        self.errors: deque[dict[str, Any]] = deque(maxlen=last_errors)

    def record(self, ctx: RequestContext) -> None:
        """The recorder (once per finished request)."""
        if ctx.path in self.quiet:
            return
        now = self.clock()
        bucket = int(now // self.bucket_s)
        i = bucket % self.buckets
        if self._slot[i] != bucket:  # a slot from a past lap of the ring: start it afresh
            self._slot[i] = bucket
            self._requests[i] = self._errors[i] = self._fallbacks[i] = 0
        self._requests[i] += 1
        if failed(ctx):
            self._errors[i] += 1
            self.errors.append(error_entry(ctx, now))
        if fell_back(ctx):
            self._fallbacks[i] += 1

    def series(self, now: float | None = None) -> list[dict[str, float | int]]:
        """One row per bucket of the window, oldest first, ending with the current (partial)
        one; buckets with no request read zero. ``t``: the bucket's start, epoch seconds."""
        now = self.clock() if now is None else now
        last = int(now // self.bucket_s)
        rows: list[dict[str, float | int]] = []
        for bucket in range(last - self.buckets + 1, last + 1):
            i = bucket % self.buckets
            live = self._slot[i] == bucket
            rows.append({
                "t": bucket * self.bucket_s,
                "requests": self._requests[i] if live else 0,
                "errors": self._errors[i] if live else 0,
                "fallbacks": self._fallbacks[i] if live else 0,
            })
        return rows

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """The recent activity: the series, its totals, the request rate over the last minute
        (the full buckets of it plus the current one's elapsed part) and the last errors, newest
        first."""
        now = self.clock() if now is None else now
        rows = self.series(now)
        minute = max(1, 60 // self.bucket_s)
        recent = rows[-minute:]
        elapsed = (minute - 1) * self.bucket_s + (now - recent[-1]["t"])
        return {
            "now": round(now, 3),
            "bucket_s": self.bucket_s,
            "window_s": self.buckets * self.bucket_s,
            "series": rows,
            "totals": {name: sum(int(r[name]) for r in rows) for name in ("requests", "errors", "fallbacks")},
            "requests_per_s": round(sum(int(r["requests"]) for r in recent) / max(elapsed, 1.0), 3),
            "last_errors": list(reversed(self.errors)),
        }
