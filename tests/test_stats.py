"""GET /stats over a real ledger file, and its parameter parsing (pure)."""
from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.usage.stats import (
    StatsQueryError,
    budget_use,
    day_start,
    iso,
    month_start,
    parse_group_by,
    parse_time,
)
from tests.conftest import CHAT, auth_header
from tests.usage_db import insert, rows

NOW = dt.datetime(2026, 3, 15, 12, 30, tzinfo=dt.UTC).timestamp()
DAY = 86400


@pytest.mark.parametrize(
    "text, expected",
    [
        ("7d", NOW - 7 * DAY),
        ("24h", NOW - 24 * 3600),
        ("30m", NOW - 1800),
        ("90s", NOW - 90),
        ("2w", NOW - 14 * DAY),
        ("1.5h", NOW - 5400),
        (" 7D ", NOW - 7 * DAY),
        ("now", NOW),
        ("today", dt.datetime(2026, 3, 15, tzinfo=dt.UTC).timestamp()),
        ("1700000000", 1_700_000_000.0),
        ("1700000000.5", 1_700_000_000.5),
        ("2026-03-01", dt.datetime(2026, 3, 1, tzinfo=dt.UTC).timestamp()),
        ("2026-03-01T10:00:00Z", dt.datetime(2026, 3, 1, 10, tzinfo=dt.UTC).timestamp()),
        ("2026-03-01T10:00:00", dt.datetime(2026, 3, 1, 10, tzinfo=dt.UTC).timestamp()),  # naive: UTC
        ("2026-03-01T12:00:00+02:00", dt.datetime(2026, 3, 1, 10, tzinfo=dt.UTC).timestamp()),
    ],
)
def test_parse_time(text, expected):
    assert parse_time(text, NOW, "since") == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "yesterday", "7x", "-7d", "7 days", "2026-13-01", "1e9", "d7", "12345678901234"])
def test_bad_times_name_the_parameter(text):
    with pytest.raises(StatsQueryError) as e:
        parse_time(text, NOW, "until")
    assert e.value.param == "until" and str(e.value).startswith("until must be a time")


@pytest.mark.parametrize("text", ["99999999999d", "999999999999", "0001-01-01T00:00:00+01:00",
                                  "9999-12-31T23:59:59-05:00", "1969-12-31"])
def test_times_that_cannot_be_shown_are_refused(text):
    with pytest.raises(StatsQueryError, match="since must be between 1970-01-01T00:00:00Z and 9999"):
        parse_time(text, NOW, "since")


@given(st.text(max_size=30) | st.from_regex(r"\A\d{1,14}[smhdw]?\Z") | st.datetimes().map(str))
def test_any_text_is_a_time_that_can_be_shown_or_a_named_error(text):
    try:
        ts = parse_time(text, NOW, "since")
    except StatsQueryError as e:
        assert e.param == "since"
    else:
        assert isinstance(ts, float) and iso(ts)


@pytest.mark.parametrize(
    "text, expected",
    [
        (None, ()),
        ("", ()),
        ("provider", ("provider",)),
        ("client,provider,model,day", ("client", "provider", "model", "day")),
        (" Day , model ", ("day", "model")),
        ("model,model", ("model",)),
        ("HOUR,provider", ("hour", "provider")),
    ],
)
def test_parse_group_by(text, expected):
    assert parse_group_by(text) == expected


@pytest.mark.parametrize("text", ["providers", "provider,", "client;day", "key"])
def test_bad_group_by_names_the_parameter_and_the_choices(text):
    with pytest.raises(StatsQueryError) as e:
        parse_group_by(text)
    assert e.value.param == "group_by" and "client, provider, model, day" in str(e.value)


def test_day_and_month_start_are_utc():
    assert day_start(NOW) == dt.datetime(2026, 3, 15, tzinfo=dt.UTC).timestamp()
    assert month_start(NOW) == dt.datetime(2026, 3, 1, tzinfo=dt.UTC).timestamp()


@dataclass
class BudgetedKey:  # the budget fields the budgets work adds to client keys
    daily_usd: float | None = None
    monthly_usd: float | None = None
    daily_tokens: int | None = None
    monthly_tokens: int | None = None


@pytest.mark.parametrize(
    "key, spend, expected",
    [
        (object(), {"today_cost_usd": 1.0}, None),  # a key without budget fields: omitted
        (BudgetedKey(), {"today_cost_usd": 1.0}, None),
        (BudgetedKey(daily_usd=5.0), {"today_cost_usd": 1.25, "month_cost_usd": 9.0},
         {"daily_usd": {"limit": 5.0, "used": 1.25, "fraction": 0.25}}),
        (BudgetedKey(monthly_tokens=1000, daily_tokens=0), {"month_tokens": 1500, "today_tokens": 10},
         {"daily_tokens": {"limit": 0, "used": 10, "fraction": 1.0},
          "monthly_tokens": {"limit": 1000, "used": 1500, "fraction": 1.5}}),
        (BudgetedKey(daily_usd=2.0), None, {"daily_usd": {"limit": 2.0, "used": 0, "fraction": 0.0}}),
    ],
)
def test_budget_use(key, spend, expected):
    assert budget_use(key, spend) == expected


# ---- the endpoint --------------------------------------------------------------------------------


def seed(key_db) -> list[float]:
    """Rows at known times (now, 3 days ago, 40 days ago) in a started gateway's ledger; their times."""
    now = time.time()
    seeded = [
        {"ts": now - 60, "request_id": "a", "client_key_id": 1, "client_name": "alice", "provider": "cerebras",
         "model_served": "zai-glm-4.7", "prompt_tokens": 1000, "completion_tokens": 100, "cached_tokens": 10,
         "reasoning_tokens": 50, "cost_usd": 0.002525, "primary_cost_usd": 0.002525},
        {"ts": now - 120, "request_id": "b", "client_key_id": 2, "client_name": "bob", "provider": "local",
         "model_served": "glm-local", "prompt_tokens": 2000, "completion_tokens": 200, "cost_usd": 0.0,
         "primary_cost_usd": 0.005},
        {"ts": now - 3 * DAY, "request_id": "c", "client_key_id": 1, "client_name": "alice", "provider": "zai",
         "model_served": "glm-4.8", "prompt_tokens": 500, "completion_tokens": 50, "cost_usd": None,
         "primary_cost_usd": 0.001, "stream": 1, "priced": 0, "tokens_estimated": 1},
        {"ts": now - 3 * DAY, "request_id": "d", "client_key_id": 2, "client_name": "bob", "provider": None,
         "status": 429, "cost_usd": 0.0, "primary_cost_usd": 0.0},
        {"ts": now - 40 * DAY, "request_id": "e", "client_key_id": 1, "client_name": "alice", "provider": "cerebras",
         "model_served": "zai-glm-4.7", "prompt_tokens": 7, "completion_tokens": 7, "cost_usd": 1.0,
         "primary_cost_usd": 1.0},
    ]
    for row in seeded:
        insert(key_db, **row)
    return [row["ts"] for row in seeded]


async def get_stats(client, query="", headers=None, status=200):
    resp = await client.get("/stats" + query, headers=headers)
    assert resp.status == status, await resp.text()
    return await resp.json()


async def test_totals_over_the_default_window(gateway, key_db):
    client = await gateway()
    seed(key_db)
    body = await get_stats(client)
    assert body["object"] == "gateway.stats" and body["scope"] == "all" and body["group_by"] == []
    assert body["totals"] == {
        "requests": 4, "failed_requests": 1,
        "prompt_tokens": 3500, "completion_tokens": 350, "cached_tokens": 10, "reasoning_tokens": 50,
        "total_tokens": 3850,
        "cost_usd": pytest.approx(0.002525), "primary_cost_usd": pytest.approx(0.008525),
        "saved_usd": pytest.approx(0.005),  # only rows priced both ways
        "unpriced_requests": 1, "estimated_requests": 1,
    }
    assert body["providers"] == [
        {"provider": "cerebras", "requests": 1, "share": pytest.approx(1 / 3, abs=1e-4)},
        {"provider": "local", "requests": 1, "share": pytest.approx(1 / 3, abs=1e-4)},
        {"provider": "zai", "requests": 1, "share": pytest.approx(1 / 3, abs=1e-4)},
    ]
    assert body["groups"] == [] and body["pending_rows"] == 0
    assert "budgets" not in body  # client keys carry no budgets here


async def test_since_until_and_group_by(gateway, key_db):
    client = await gateway()
    times = seed(key_db)
    today = await get_stats(client, "?since=today")
    assert today["totals"]["requests"] == sum(ts >= day_start(time.time()) for ts in times)
    week = await get_stats(client, "?since=7d&until=now&group_by=client,provider")
    assert [(g["client_id"], g["client"], g["provider"], g["requests"]) for g in week["groups"]] == [
        (1, "alice", "cerebras", 1), (1, "alice", "zai", 1), (2, "bob", None, 1), (2, "bob", "local", 1)]
    old = await get_stats(client, f"?since=60d&until={time.time() - 30 * DAY:.0f}&group_by=model")
    assert [(g["model"], g["requests"], g["cost_usd"]) for g in old["groups"]] == [("zai-glm-4.7", 1, 1.0)]
    by_day = await get_stats(client, "?since=7d&group_by=day")
    assert sum(g["requests"] for g in by_day["groups"]) == 4 and len(by_day["groups"]) in (2, 3)
    assert all(len(g["day"]) == 10 for g in by_day["groups"])


async def test_group_by_hour_keys_each_utc_hour_as_an_iso_time(gateway, key_db):
    client = await gateway()
    hour = dt.datetime(2026, 3, 15, 10, tzinfo=dt.UTC).timestamp()
    for ts, tokens in ((hour + 5, 10), (hour + 3599, 20), (hour + 3600, 40), (hour - 1, 80)):
        insert(key_db, ts=ts, request_id=f"h{ts}", provider="cerebras", prompt_tokens=tokens, completion_tokens=0,
               cost_usd=tokens / 1000)
    body = await get_stats(client, f"?since={hour - 7200:.0f}&until={hour + 7200:.0f}&group_by=hour")
    assert body["group_by"] == ["hour"]
    assert [(g["hour"], g["requests"], g["total_tokens"]) for g in body["groups"]] == [
        ("2026-03-15T09:00:00Z", 1, 80), ("2026-03-15T10:00:00Z", 2, 30), ("2026-03-15T11:00:00Z", 1, 40)]


@pytest.mark.parametrize(
    "query, param",
    [
        ("?since=yesterday", "since"),
        ("?since=99999999999d", "since"),  # before 1970: a time no answer could show
        ("?until=7x", "until"),
        ("?group_by=user", "group_by"),
        ("?since=1d&until=2d", "since"),  # since after until
        ("?group=provider", "group"),  # an unknown parameter
    ],
)
async def test_bad_parameters_are_400s_naming_them(gateway, key_db, query, param):
    client = await gateway()
    resp = await client.get("/stats" + query)
    assert resp.status == 400
    assert resp.headers["x-should-retry"] == "false"
    error = (await resp.json())["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["code"] == "invalid_parameter"
    assert param in error["message"]


async def test_rows_still_queued_are_included(gateway, key_db, fake):
    client = await gateway({"USAGE_FLUSH_INTERVAL": "3600"})  # the writer would not write them for an hour
    for _ in range(3):
        assert (await client.post("/v1/chat/completions", json=CHAT)).status == 200
    assert rows(key_db) == []
    body = await get_stats(client)
    assert body["totals"]["requests"] == 3 and body["pending_rows"] == 0
    assert body["totals"]["prompt_tokens"] == 15


async def test_a_plain_client_sees_only_its_own_usage(aiohttp_client, fake, key_db, log_dir, client_key):
    from gateway.app import create_app
    from gateway.config import Settings

    settings = Settings.from_env({"CEREBRAS_API_KEYS": "csk-one-1111111111", "CEREBRAS_BASE_URL": fake.url,
                                  "INCOMING_KEY_DB": str(key_db), "LOG_DIR": str(log_dir)})
    client = await aiohttp_client(create_app(settings))
    seed(key_db)
    mine = auth_header(client_key)  # the "tester" key: id 1, whose rows are alice's
    body = await get_stats(client, "?group_by=client", headers=mine)
    assert body["scope"] == "own"
    assert [(g["client_id"], g["requests"]) for g in body["groups"]] == [(1, 2)]
    assert body["totals"]["requests"] == 2 and [p["provider"] for p in body["providers"]] == ["cerebras", "zai"]
    assert (await client.get("/stats")).status == 401


async def test_an_admin_key_sees_everyones_usage(gateway, key_db, client_key, admin_key):
    client = await gateway({"ENABLE_INCOMING_AUTH": "true"})
    seed(key_db)
    body = await get_stats(client, headers=auth_header(admin_key))
    assert body["scope"] == "all" and body["totals"]["requests"] == 4
    body = await get_stats(client, headers=auth_header(client_key))  # a plain client: its own only
    assert body["scope"] == "own" and body["totals"]["requests"] == 2
