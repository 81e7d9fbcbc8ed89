"""The spend tracker with an injected clock: admission, recording, alerts, caps, restoring at start."""
from __future__ import annotations

import calendar
import sqlite3

import orjson
import pytest

from gateway.chat import parse_chat_request
from gateway.clients.alerts import Alerts
from gateway.clients.budgets import Limits
from gateway.clients.tracker import SpendTracker
from gateway.context import RequestContext, Usage
from gateway.errors import QuotaExhausted, RateLimited

NOON = calendar.timegm((2025, 1, 15, 12, 0, 0))
MIDNIGHT = calendar.timegm((2025, 1, 16, 0, 0, 0))
REQ = parse_chat_request(orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Captured(Alerts):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict] = []

    def fire(self, event: dict) -> None:
        super().fire(event)
        self.events.append(event)


def request(clock, limits=None, key_id=1, name="alice") -> RequestContext:
    ctx = RequestContext("rid", "POST", "/v1/chat/completions")
    ctx.started_at = clock()
    ctx.client_id, ctx.client_name, ctx.client_limits = key_id, name, limits
    return ctx


def served(ctx, usd=0.01, prompt=1000, completion=1000, provider="cerebras") -> RequestContext:
    ctx.provider = provider
    ctx.usage = Usage(prompt, completion)
    ctx.cost_usd = usd
    return ctx


def run(tracker, clock, limits, req=REQ, **billed) -> RequestContext:
    """One request through admission and recording; raises what admission raises."""
    ctx = request(clock, limits)
    tracker.admit(ctx, req)
    tracker.record(served(ctx, **billed))
    return ctx


@pytest.fixture
def clock():
    return Clock(NOON)


def test_a_spent_daily_budget_refuses_until_midnight(clock):
    tracker = SpendTracker(now=clock)
    limits = Limits(daily_usd=0.05)
    for _ in range(5):
        run(tracker, clock, limits)
    with pytest.raises(QuotaExhausted) as e:
        tracker.admit(request(clock, limits), REQ)
    err = e.value
    assert (err.status, err.type, err.code) == (429, "insufficient_quota", "budget_exceeded")
    assert err.message == "daily budget of $0.05 reached: $0.05 spent today; resets at 00:00 UTC"
    assert err.headers()["Retry-After"] == str(12 * 3600) and err.headers()["x-should-retry"] == "false"
    clock.t = MIDNIGHT + 1  # a new UTC day
    tracker.admit(request(clock, limits), REQ)


def test_token_budget_counts_prompt_and_completion(clock):
    tracker = SpendTracker(now=clock)
    limits = Limits(monthly_tokens=5000)
    run(tracker, clock, limits, prompt=2000, completion=2000, usd=None)  # unpriced: tokens only
    run(tracker, clock, limits, prompt=500, completion=500, usd=None)
    with pytest.raises(QuotaExhausted, match="5,000 tokens used this month"):
        tracker.admit(request(clock, limits), REQ)


def test_another_key_is_not_affected(clock):
    tracker = SpendTracker(now=clock)
    run(tracker, clock, Limits(daily_usd=0.01))
    with pytest.raises(QuotaExhausted):
        tracker.admit(request(clock, Limits(daily_usd=0.01)), REQ)
    tracker.admit(request(clock, Limits(daily_usd=0.01), key_id=2, name="bob"), REQ)


def test_rpm_sliding_minute(clock):
    tracker = SpendTracker(now=clock)
    limits = Limits(rpm=3)
    for dt in (0, 10, 20):
        clock.t = NOON + dt
        run(tracker, clock, limits)
    clock.t = NOON + 30
    with pytest.raises(RateLimited) as e:
        tracker.admit(request(clock, limits), REQ)
    assert e.value.code == "rate_limit_exceeded" and e.value.retry_after == 30  # the first leaves at +60
    assert "x-should-retry" not in e.value.headers()  # a retry later will succeed
    clock.t = NOON + 60
    tracker.admit(request(clock, limits), REQ)


def test_refused_requests_do_not_count_against_rpm(clock):
    tracker = SpendTracker(now=clock)
    limits = Limits(rpm=1)
    run(tracker, clock, limits)
    for _ in range(5):
        with pytest.raises(RateLimited):
            tracker.admit(request(clock, limits), REQ)
    clock.t = NOON + 60
    tracker.admit(request(clock, limits), REQ)


def test_tpm_charges_an_estimate_then_the_real_usage(clock):
    tracker = SpendTracker(now=clock)
    limits = Limits(tpm=1000)
    big = parse_chat_request(orjson.dumps({"model": "m", "max_tokens": 600,
                                           "messages": [{"role": "user", "content": "hi"}]}))
    first = request(clock, limits)
    tracker.admit(first, big)  # ~600 tokens reserved up front
    with pytest.raises(RateLimited, match="tokens per minute"):
        tracker.admit(request(clock, limits), big)  # 600 + 600 > 1000
    tracker.record(served(first, prompt=50, completion=50))  # it used 100
    tracker.admit(request(clock, limits), big)  # 100 + 600 fits


def test_a_failed_request_gives_back_its_tpm_estimate(clock):
    tracker = SpendTracker(now=clock)
    limits = Limits(tpm=1000)
    big = parse_chat_request(orjson.dumps({"model": "m", "max_tokens": 900,
                                           "messages": [{"role": "user", "content": "hi"}]}))
    failed = request(clock, limits)
    tracker.admit(failed, big)
    failed.status = 502  # no provider served it: nothing used
    tracker.record(failed)
    tracker.admit(request(clock, limits), big)


def test_alerts_fire_once_per_threshold_per_window(clock):
    alerts = Captured()
    tracker = SpendTracker(thresholds=(50, 80, 100), alerts=alerts, now=clock)
    limits = Limits(daily_usd=0.10)
    for _ in range(10):
        run(tracker, clock, limits)
    assert [(e["budget"], e["threshold"]) for e in alerts.events] == [
        ("daily_usd", 50), ("daily_usd", 80), ("daily_usd", 100)]
    event = alerts.events[-1]
    assert event["client"] == "alice" and event["scope"] == "client" and event["spent"] == 0.1
    assert event["percent"] == 100.0 and event["window"] == "2025-01-15" and event["period"] == "day"
    assert event["resets_at"] == "2025-01-16T00:00:00Z" and event["timestamp"] == "2025-01-15T12:00:00Z"
    clock.t = MIDNIGHT + 60  # tomorrow: the same thresholds fire again, once
    for _ in range(6):
        run(tracker, clock, limits)
    assert [e["window"] for e in alerts.events[3:]] == ["2025-01-16"]


def test_provider_cap_skips_the_provider_until_the_month_resets(clock):
    alerts = Captured()
    tracker = SpendTracker({"cerebras": 0.03}, alerts=alerts, now=clock)
    for _ in range(2):
        run(tracker, clock, None)  # no client limits: the provider's spend still counts
    assert tracker.capped() == {}
    run(tracker, clock, None)
    assert tracker.capped() == {"cerebras": "cerebras: skipped, monthly budget of $0.03 reached ($0.03 spent)"}
    assert [(e["scope"], e["provider"], e["threshold"]) for e in alerts.events] == [
        ("provider", "cerebras", 50),  # 0.02 of 0.03 = 67%: 50 only ...
        ("provider", "cerebras", 80), ("provider", "cerebras", 100)]  # ... then 80 and 100 at once
    run(tracker, clock, None, provider="synthetic")  # other providers are not capped
    assert set(tracker.capped()) == {"cerebras"}
    clock.t = calendar.timegm((2025, 2, 1, 0, 0, 1))
    assert tracker.capped() == {}


USAGE_TABLE = """CREATE TABLE IF NOT EXISTS usage(id INTEGER PRIMARY KEY, ts REAL NOT NULL, request_id TEXT NOT NULL,
 client_key_id INTEGER, client_name TEXT, provider TEXT, upstream_key TEXT, model_requested TEXT,
 model_served TEXT, stream INTEGER NOT NULL, status INTEGER NOT NULL,
 prompt_tokens INTEGER NOT NULL DEFAULT 0, completion_tokens INTEGER NOT NULL DEFAULT 0,
 cached_tokens INTEGER NOT NULL DEFAULT 0, reasoning_tokens INTEGER NOT NULL DEFAULT 0, cost_usd REAL,
 primary_cost_usd REAL, priced INTEGER NOT NULL DEFAULT 0, tokens_estimated INTEGER NOT NULL DEFAULT 0,
 latency_ms REAL, ttft_ms REAL, attempts INTEGER NOT NULL DEFAULT 0, fallback_reason TEXT,
 repairs INTEGER NOT NULL DEFAULT 0, error_code TEXT)"""


def usage_db(path, rows) -> None:
    """A database holding the ledger's usage table (shared-usage.md's schema; kept when migration
    002 made it) and ``rows``: (ts, client_key_id, client_name, provider, prompt, completion, cost_usd)."""
    con = sqlite3.connect(path)
    con.execute(USAGE_TABLE)
    con.executemany(
        "INSERT INTO usage (ts, request_id, client_key_id, client_name, provider, stream, status, "
        "prompt_tokens, completion_tokens, cost_usd) VALUES (?, 'r', ?, ?, ?, 0, 200, ?, ?, ?)",
        rows,
    )
    con.commit()
    con.close()


async def test_restore_reads_today_and_this_month_from_the_usage_table(tmp_path, clock):
    db = tmp_path / "keys.db"
    usage_db(db, [
        (NOON - 3600, 1, "alice", "cerebras", 100, 100, 0.02),  # today
        (NOON - 60, 1, "alice", "cerebras", 100, 100, None),  # today, unpriced
        (NOON - 3 * 86400, 1, "alice", "synthetic", 1000, 0, 0.05),  # earlier this month
        (NOON - 40 * 86400, 1, "alice", "cerebras", 10**6, 0, 9.0),  # last month: not counted
        (NOON - 60, None, None, "cerebras", 0, 0, 0.5),  # auth off: no client, still the provider's
    ])
    alerts = Captured()
    tracker = SpendTracker({"cerebras": 0.5, "synthetic": 10.0}, alerts=alerts, now=clock)
    assert await tracker.restore(db) is True
    status = tracker.status()
    [alice] = status["clients"]
    assert alice["name"] == "alice"
    assert alice["today"] == {"usd": 0.02, "tokens": 400}
    assert alice["month"] == {"usd": 0.07, "tokens": 1400}
    assert status["providers"]["cerebras"]["spent_usd"] == 0.52 and status["providers"]["cerebras"]["capped"]
    assert status["providers"]["synthetic"] == {"monthly_budget_usd": 10.0, "spent_usd": 0.05,
                                                "remaining_usd": 9.95, "capped": False,
                                                "resets_at": "2025-02-01T00:00:00Z"}
    assert "cerebras" in tracker.capped()
    assert alerts.events == []  # thresholds passed before the restart are not announced again
    with pytest.raises(QuotaExhausted, match=r"\$0.07 spent this month"):
        tracker.admit(request(clock, Limits(monthly_usd=0.07)), REQ)


async def test_restore_without_a_database_or_a_usage_table(tmp_path, clock):
    tracker = SpendTracker(now=clock)
    assert await tracker.restore(tmp_path / "missing.db") is False
    assert not (tmp_path / "missing.db").exists()  # not created by reading
    con = sqlite3.connect(tmp_path / "keys.db")
    con.execute("CREATE TABLE api_keys (id INTEGER PRIMARY KEY)")
    con.close()
    assert await tracker.restore(tmp_path / "keys.db") is False
    assert tracker.status()["clients"] == []


def test_cleared_limits_stop_alerts_and_leave_status(clock):
    alerts = Captured()
    tracker = SpendTracker(alerts=alerts, now=clock)
    run(tracker, clock, Limits(daily_usd=0.10))
    run(tracker, clock, None)  # the budget was cleared: this request brings ctx.client_limits None
    for _ in range(9):
        run(tracker, clock, None)
    assert alerts.events == []
    [alice] = tracker.status()["clients"]
    assert "daily_usd" not in alice and alice["today"]["usd"] == 0.11
