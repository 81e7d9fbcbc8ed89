"""The dashboard in a real headless Chromium (the OS package, driven by Playwright for Python)
against the real gateway on a real port, with fake upstreams over real HTTP.

Playwright's async API runs on the test's own event loop, which also serves the gateway: the
browser's fetches are answered while the test awaits. Chromium is the distribution's
(``apt-get install chromium``; never ``playwright install``). Without it, or without the
``playwright`` package, these tests say so and skip. Each run leaves screenshots under
tests/artifacts/ (ignored by git) and prints their paths.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.state import KEYSTORE
from tests import fakes
from tests.conftest import CHAT, UPSTREAM_KEYS

async_api = pytest.importorskip(
    "playwright.async_api", reason="the playwright package is not installed (pip install -r requirements-dev.txt)")


def _chromium() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser"),
                      "/usr/bin/chromium"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


CHROMIUM = _chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium found (apt-get install -y chromium; .ci/run installs it)")

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CHAT_PATH = "/v1/chat/completions"
REFRESH_S = 1  # the page's refresh interval the tests choose (its select offers 1 s)
KEY_STORE = "glm-gateway.admin-key"


@pytest.fixture
async def browser(tmp_path):
    """A fresh Chromium profile per test (Playwright passes it as --user-data-dir)."""
    async with async_api.async_playwright() as p:
        context = await p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 1400, "height": 1000})
        try:
            yield context
        finally:
            await context.close()


class Page:
    """A page with what its console said and what it asked the gateway for."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.console: list[str] = []
        self.requests: list[tuple[str, str | None]] = []  # (url, Authorization)
        page.on("console", lambda m: self.console.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.console.append(f"uncaught: {e}"))
        page.on("request", lambda r: self.requests.append((r.url, r.headers.get("authorization"))))

    async def rows(self, selector: str, script: str) -> list:
        return await self.page.eval_on_selector_all(selector, script)  # type: ignore[no-any-return]

    async def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / name
        await self.page.screenshot(path=str(path), full_page=True)
        print(f"dashboard screenshot: {path}")
        return path


async def open_dashboard(browser, client) -> Page:
    page = Page(await browser.new_page())
    await page.page.goto(str(client.make_url("/dashboard")))
    return page


def key_state(k: dict) -> str:
    """What the page calls a /_status key row's state (its row's data-state)."""
    if k["disabled_reason"]:
        return "disabled"
    if k["rate_limited_for"] > 0:
        return "resting"
    return {"open": "breaker-open", "half_open": "probing"}.get(k["breaker"]["state"],
                                                                  "available" if k["available"] else "busy")


ROWS = ("rows => rows.map(r => [r.dataset.key, r.dataset.state, r.querySelector('.key').textContent, "
        "Number(r.cells[8].textContent), Number(r.cells[9].textContent)])")
HAS_POINTS = """() => {
  const positive = (sel) => [...document.querySelectorAll(sel)]
    .filter(e => Number(e.getAttribute('data-v')) > 0).length;
  return positive('#chart-activity circle.pt.requests') > 0 && positive('#chart-activity circle.pt.errors') > 0
    && positive('#chart-tokens-24h rect') > 0 && positive('#chart-cost-24h rect') > 0
    && positive('#chart-tokens-30d rect') > 0 && positive('#chart-cost-30d rect') > 0;
}"""


async def test_the_dashboard_shows_keys_traffic_spend_errors_and_a_key_put_to_rest(gateway, fake, browser):
    client = await gateway()
    for _ in range(3):
        assert (await client.post(CHAT_PATH, json=CHAT)).status == 200
    fake.default = fakes.error(500)
    failed = await client.post(CHAT_PATH, json=CHAT, headers={"X-Request-Id": "browser-failed-1"})
    assert failed.status >= 500
    fake.default = fakes.ok()

    page = await open_dashboard(browser, client)
    await page.page.select_option("#refresh", str(REFRESH_S))
    await page.page.wait_for_selector("#keys tbody tr[data-key]")

    # the key table is /_status's keys, with their states and counts
    status = await (await client.get("/_status")).json()
    expected = [[f"{k['provider']}/{k['name']}", key_state(k), k["name"], k["requests"], k["error_count"]]
                for k in status["keys"]]
    assert len(expected) == 3
    assert await page.rows("#keys tbody tr", ROWS) == expected

    # the charts have points: recent traffic (with its error) and the ledger's hours and days
    await page.page.wait_for_function(HAS_POINTS, timeout=10_000)
    assert "cerebras" in await page.page.text_content("#share-24h")
    assert "100.0%" in await page.page.text_content("#share-30d")
    assert await page.rows("#clients tbody tr", "rows => rows.map(r => r.cells[1].textContent)") == ["4"]
    errors = await page.rows("#errors tbody tr", "rows => rows.map(r => [r.cells[1].textContent, r.cells[2]"
                                                 ".textContent, r.cells[3].textContent])")
    assert errors == [["browser-failed-1", str(failed.status), CHAT_PATH]]

    # a key put to rest by a 429 shows as resting within the refresh interval (plus the fetches)
    resting = (await (await client.get("/_status")).json())["current_key"]
    fake.script(UPSTREAM_KEYS[resting], fakes.rate_limited(reset_tokens_minute=60))
    began = time.monotonic()
    assert (await client.post(CHAT_PATH, json=CHAT)).status == 200  # another key served it
    row = f'#keys tr[data-key="cerebras/{resting}"]'
    await page.page.wait_for_selector(row + '[data-state="resting"]', timeout=(2 * REFRESH_S + 3) * 1000)
    shown_after = time.monotonic() - began
    print(f"the 429'd key showed as resting after {shown_after:.2f}s (refresh every {REFRESH_S}s)")
    rest_cell = await page.page.text_content(row + " td:nth-child(4)")
    assert "tokens per minute" in rest_cell and await page.page.query_selector(row + " .bar.rest") is not None
    assert (await page.rows("#keys tbody tr", "rows => rows.map(r => r.dataset.state)")).count("resting") == 1

    await page.screenshot("dashboard.png")
    html = await page.page.content()
    for secret in UPSTREAM_KEYS.values():
        assert secret not in html
    assert page.console == []


async def test_the_page_asks_for_an_admin_key_and_again_after_a_wrong_one(gateway, browser, monkeypatch):
    client = await gateway({"ENABLE_INCOMING_AUTH": "true"})
    store = client.server.app[KEYSTORE]
    hostile = '<img src=x onerror="window.pwned=1">alice'  # a client key's name, as HTML
    _, key = await store.add(hostile)
    await store.set_limits(hostile, {"daily_usd": 0.00001, "monthly_tokens": 1000})
    assert (await client.post(CHAT_PATH, json=CHAT, headers={"Authorization": f"Bearer {key}"})).status == 200

    page = await open_dashboard(browser, client)
    p = page.page
    await p.wait_for_selector("#login:not([hidden])")
    assert "needs an admin key" in await p.text_content("#login-message")
    assert await p.is_hidden("#board")

    async def submit(text: str, expect: str) -> None:
        await p.fill("#key", text)
        await p.click("#login-form button[type=submit]")
        await p.wait_for_function("(want) => document.getElementById('login-message').textContent.includes(want)"
                                  " && !document.getElementById('login').hidden", arg=expect, timeout=10_000)

    await submit("sk-glm-this-is-not-a-key-of-this-gateway", "refused that key")
    assert await p.evaluate(f"sessionStorage.getItem({KEY_STORE!r})") is None  # a refused key is not kept
    await submit(key, "not an admin key")  # a plain client key
    await page.screenshot("dashboard-login.png")

    await store.set_role(hostile, "admin")  # now an admin (manage_keys.py role NAME admin)
    await p.fill("#key", key)
    await p.click("#login-form button[type=submit]")
    await p.wait_for_selector("#keys tbody tr[data-key]")
    assert await p.is_hidden("#login") and await p.evaluate(f"sessionStorage.getItem({KEY_STORE!r})") == key

    # names are text, never markup
    await p.wait_for_selector("#clients tbody tr[data-client]")
    assert await page.rows("#clients tbody tr", "rows => rows.map(r => r.cells[0].textContent)") == [hostile]
    assert await p.query_selector("img") is None and await p.evaluate("window.pwned") is None
    # its budgets as bars: 6 tokens of 1,000 this month, and a day's $0.00001 overspent
    budgets = await page.rows("#clients tbody tr .budget", "spans => spans.map(s => [s.textContent, "
                                                           "s.querySelector('.bar').className, "
                                                           "parseFloat(s.querySelector('.bar > span').style.width)])")
    assert budgets[0][0].startswith("day $") and budgets[0][1:] == ["bar over", 100]
    assert budgets[1] == ["month 6 / 1000 (1%)", "bar", 0.6]
    await page.screenshot("dashboard-admin.png")

    # the key travels in a header only, and the tab keeps it: a reload does not ask again
    await p.reload()
    await p.wait_for_selector("#keys tbody tr[data-key]")
    assert await p.is_hidden("#login")
    assert all(key not in url for url, _ in page.requests)
    data_calls = [auth for url, auth in page.requests if "/dashboard/data" in url or "/_status" in url]
    assert data_calls and data_calls[-1] == f"Bearer {key}"
    # the only console errors: Chromium's own lines for the refused answers
    assert all("status of 401" in line or "status of 403" in line for line in page.console), page.console
    assert len(page.console) >= 2
