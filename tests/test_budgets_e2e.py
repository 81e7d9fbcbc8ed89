"""Roles, budgets, rate limits and provider caps through the real app, a real SQLite file, fake
upstreams over HTTP and manage_keys.py driven by CliRunner while the gateway runs."""
from __future__ import annotations

import asyncio
import time

import pytest
from click.testing import CliRunner

from gateway.clients.budgets import DAY, window_end
from gateway.keystore import KeyStore
from gateway.state import BUDGETS
from manage_keys import cli
from tests import billing
from tests.conftest import CHAT, auth_header, eventually
from tests.test_spend_tracker import usage_db

AUTH = {"ENABLE_INCOMING_AUTH": "true"}


async def manage(db, *args) -> str:
    """manage_keys.py, as an operator runs it beside the gateway (its own process's event loop)."""
    result = await asyncio.to_thread(CliRunner().invoke, cli, ["--db", str(db), *args])
    assert result.exit_code == 0, result.output
    return result.output


async def start(gateway, fake, env=None, delay=0.0):
    fake.default = billing.billed(delay)
    client = await gateway({**AUTH, **(env or {})})
    billing.price_like_the_ledger(client.server.app)
    return client


async def chat(client, key, body=CHAT):
    return await client.post("/v1/chat/completions", json=body, headers=auth_header(key))


# ---- roles ------------------------------------------------------------------------------------

async def test_status_needs_an_admin_key_and_health_stays_open(gateway, fake, client_key, admin_key):
    client = await start(gateway, fake)
    assert (await client.get("/_status")).status == 401
    resp = await client.get("/_status", headers=auth_header(client_key))
    assert resp.status == 403
    error = (await resp.json())["error"]
    assert error["type"] == "permission_error" and "admin" in error["message"]
    assert resp.headers["x-should-retry"] == "false"
    resp = await client.get("/_status", headers=auth_header(admin_key))
    assert resp.status == 200 and "budgets" in await resp.json()
    assert (await client.get("/health")).status == 200
    assert (await chat(client, admin_key)).status == 200  # an admin key also chats


async def test_status_is_open_when_auth_is_off(gateway):
    client = await gateway()
    assert (await client.get("/_status")).status == 200


async def test_a_role_change_reaches_the_running_gateway(gateway, fake, key_db, client_key):
    client = await start(gateway, fake)
    assert (await client.get("/_status", headers=auth_header(client_key))).status == 403
    assert "is now admin" in await manage(key_db, "role", "tester", "admin")

    async def status_code():
        return (await client.get("/_status", headers=auth_header(client_key))).status == 200

    began = time.monotonic()
    await eventually(status_code, timeout=1.0)
    assert time.monotonic() - began < 1.0


async def test_an_old_database_keeps_its_keys_as_plain_clients(gateway, fake, key_db):
    import sqlite3

    from gateway.keystore import hash_key
    from gateway.migrations import MIGRATIONS

    key_db.parent.mkdir(parents=True)
    con = sqlite3.connect(key_db)  # a database made before roles: only 001 applied
    con.executescript(MIGRATIONS[0][1])
    con.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    con.execute("INSERT INTO _migrations VALUES ('001_api_keys', 0)")
    old = "sk-glm-" + "o" * 43
    con.execute("INSERT INTO api_keys (name, key_hash, key_prefix, created_at, request_count) "
                "VALUES ('old', ?, 'sk-glm-ooooo', 0, 7)", (hash_key(old),))
    con.commit()
    con.close()
    client = await start(gateway, fake)
    assert (await chat(client, old)).status == 200  # still works, with no budget ...
    assert (await client.get("/_status", headers=auth_header(old))).status == 403  # ... but is not an admin
    store = await KeyStore.open(key_db)
    try:
        [key] = await store.list()
        assert (key.role, key.limits, key.request_count) == ("client", None, 7)
    finally:
        await store.close()


# ---- budgets ----------------------------------------------------------------------------------

async def test_a_budget_set_while_running_refuses_with_429_until_cleared(gateway, fake, key_db, client_key):
    client = await start(gateway, fake)
    for _ in range(2):
        assert (await chat(client, client_key)).status == 200  # $0.01 each
    await manage(key_db, "budget", "tester", "--daily-usd", "0.02")

    async def refused():
        resp = await chat(client, client_key)
        return resp if resp.status == 429 else None

    resp = await eventually(refused, timeout=1.0)
    forwarded = len(fake.received)
    body = await resp.json()
    assert body["error"]["type"] == "insufficient_quota" and body["error"]["code"] == "budget_exceeded"
    assert body["error"]["message"].startswith("daily budget of $0.02 reached: $0.0")
    assert body["error"]["message"].endswith("spent today; resets at 00:00 UTC")
    assert resp.headers["x-should-retry"] == "false"
    to_midnight = window_end(DAY, time.time()) - time.time()
    assert abs(int(resp.headers["Retry-After"]) - to_midnight) <= 2
    assert (await chat(client, client_key)).status == 429
    assert len(fake.received) == forwarded  # refused before anything was sent upstream

    await manage(key_db, "budget", "tester", "--clear")

    async def served():
        return (await chat(client, client_key)).status == 200

    await eventually(served, timeout=1.0)


async def test_a_token_budget(gateway, fake, key_db, client_key):
    await manage(key_db, "budget", "tester", "--daily-tokens", str(2 * billing.TOKENS))
    client = await start(gateway, fake)
    assert [(await chat(client, client_key)).status for _ in range(3)] == [200, 200, 429]
    message = (await (await chat(client, client_key)).json())["error"]["message"]
    assert message.startswith("daily token budget of 8,000 reached: 8,000 tokens used today")


async def test_spend_is_restored_at_start_from_the_usage_table(gateway, fake, key_db, client_key):
    await manage(key_db, "budget", "tester", "--monthly-usd", "0.05")
    now = time.time()
    usage_db(key_db, [(now - 5, 1, "tester", "cerebras", 10, 10, 0.03),
                      (now - 1, 1, "tester", "cerebras", 10, 10, 0.02)])
    client = await start(gateway, fake)
    resp = await chat(client, client_key)
    assert resp.status == 429
    assert "$0.05 spent this month" in (await resp.json())["error"]["message"]
    assert fake.received == []


# ---- rate limits ------------------------------------------------------------------------------

async def test_rpm(gateway, fake, key_db, client_key):
    await manage(key_db, "limits", "tester", "--rpm", "2")
    client = await start(gateway, fake)
    assert [(await chat(client, client_key)).status for _ in range(2)] == [200, 200]
    resp = await chat(client, client_key)
    assert resp.status == 429
    error = (await resp.json())["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")
    assert "2 requests per minute" in error["message"]
    assert 55 <= int(resp.headers["Retry-After"]) <= 60  # when the first request leaves the minute
    assert "x-should-retry" not in resp.headers
    assert len(fake.received) == 2


async def test_tpm_is_charged_up_front_then_corrected(gateway, fake, key_db, client_key):
    await manage(key_db, "limits", "tester", "--tpm", "6000")
    client = await start(gateway, fake)
    asks = {**CHAT, "max_tokens": 1000}  # estimated ~1,000 up front; really bills 4,000
    assert (await chat(client, client_key, asks)).status == 200
    resp = await chat(client, client_key, {**CHAT, "max_tokens": 3000})  # 4,000 used + 3,000 > 6,000
    assert resp.status == 429
    assert "tokens per minute" in (await resp.json())["error"]["message"]
    assert (await chat(client, client_key, asks)).status == 200  # 4,000 + 1,000 fits


async def test_limits_cli_clear(gateway, fake, key_db, client_key):
    await manage(key_db, "limits", "tester", "--rpm", "1")
    client = await start(gateway, fake)
    assert [(await chat(client, client_key)).status for _ in range(2)] == [200, 429]
    await manage(key_db, "limits", "tester", "--clear")

    async def served():
        return (await chat(client, client_key)).status == 200

    await eventually(served, timeout=1.0)


# ---- concurrency: the overshoot -----------------------------------------------------------------

CONCURRENCY = 20
BUDGET_USD = 0.10


async def test_overshoot_at_concurrency_20_is_at_most_what_was_in_flight(gateway, fake, key_db, client_key):
    """20 clients on one key with a $0.10 daily budget, each request billing $0.01 and taking
    50 ms upstream: requests admitted before the 10th is recorded still complete."""
    await manage(key_db, "budget", "tester", "--daily-usd", str(BUDGET_USD))
    client = await start(gateway, fake, delay=0.05)
    statuses: list[int] = []

    async def worker():
        while True:
            status = (await chat(client, client_key)).status
            statuses.append(status)
            if status != 200:
                return

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(CONCURRENCY))), timeout=30)
    served = statuses.count(200)
    assert set(statuses) == {200, 429} and statuses.count(429) == CONCURRENCY
    assert len(fake.received) == served
    spent = served * billing.CEREBRAS_COST
    overshoot = spent - BUDGET_USD
    # crossed by the 10th answer; at most the 19 other clients' requests were in flight then
    assert BUDGET_USD <= spent <= BUDGET_USD + (CONCURRENCY - 1) * billing.CEREBRAS_COST + 1e-9
    [tester] = client.server.app[BUDGETS].status()["clients"]
    assert tester["today"] == {"usd": round(spent, 6), "tokens": served * billing.TOKENS}  # what the fake billed
    print(f"\nconcurrency {CONCURRENCY}: {served} served on a ${BUDGET_USD:.2f} budget, "
          f"overshoot ${overshoot:.2f} ({round(overshoot / billing.CEREBRAS_COST)} requests)")


# ---- provider caps --------------------------------------------------------------------------------

SYN_KEY = "syn-key-0001"


@pytest.fixture
async def with_synthetic(gateway, fake, make_fake):
    synthetic = await make_fake()
    synthetic.default = billing.billed()

    async def begin(env=None):
        return await start(gateway, fake, {"SYNTHETIC_API_KEY": SYN_KEY, "SYNTHETIC_BASE_URL": synthetic.url,
                                           **(env or {})})

    begin.synthetic = synthetic
    return begin


async def test_a_capped_provider_is_skipped_and_the_chain_serves(with_synthetic, fake, client_key, admin_key):
    client = await with_synthetic({"CEREBRAS_MONTHLY_BUDGET_USD": "0.02"})
    served_by = []
    for _ in range(4):
        resp = await chat(client, client_key)
        assert resp.status == 200
        served_by.append(resp.headers["X-Gateway-Provider"])
    assert served_by == ["cerebras", "cerebras", "synthetic", "synthetic"]
    assert len(fake.received) == 2
    status = await (await client.get("/_status", headers=auth_header(admin_key))).json()
    cerebras = status["budgets"]["providers"]["cerebras"]
    assert cerebras["capped"] is True and cerebras["spent_usd"] == 0.02 and cerebras["monthly_budget_usd"] == 0.02
    assert "synthetic" not in status["budgets"]["providers"]  # no cap set for it


async def test_a_provider_cap_is_restored_at_start(with_synthetic, fake, key_db, client_key):
    store = await KeyStore.open(key_db)
    await store.close()
    usage_db(key_db, [(time.time() - 10, None, None, "cerebras", 0, 0, 1.0)])
    client = await with_synthetic({"CEREBRAS_MONTHLY_BUDGET_USD": "1"})
    resp = await chat(client, client_key)
    assert resp.status == 200 and resp.headers["X-Gateway-Provider"] == "synthetic"
    assert fake.received == []


async def test_every_provider_capped_is_a_429_that_says_so(gateway, fake, key_db, client_key):
    store = await KeyStore.open(key_db)
    await store.close()
    usage_db(key_db, [(time.time() - 10, None, None, "cerebras", 0, 0, 5.0)])
    client = await start(gateway, fake, {"CEREBRAS_MONTHLY_BUDGET_USD": "5"})
    resp = await chat(client, client_key)
    assert resp.status == 429 and resp.headers["x-should-retry"] == "false"
    error = (await resp.json())["error"]
    assert (error["type"], error["code"]) == ("insufficient_quota", "provider_budget_exceeded")
    assert "cerebras: skipped, monthly budget of $5.00 reached" in error["message"]
    assert int(resp.headers["Retry-After"]) > 0
    assert fake.received == []
