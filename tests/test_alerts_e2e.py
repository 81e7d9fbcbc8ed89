"""Budget alerts through the real app, to a real local HTTP receiver (an aiohttp server)."""
from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiohttp import web

from gateway.state import BUDGETS
from tests.conftest import CHAT, auth_header, eventually
from tests.test_budgets_e2e import chat, manage, start

WEBHOOK_TOKEN = "hook-token-5ecret"  # part of the URL, as Slack's and Discord's are


class Receiver:
    """A webhook receiver: answers each POST with the next scripted status (then 200), or hangs."""

    def __init__(self, statuses=(), hang=False) -> None:
        self.statuses = list(statuses)
        self.hang = hang
        self.hits: list[dict] = []  # every POST, failed ones included
        self.headers: list[dict] = []
        self.release = asyncio.Event()  # ends a hang (at teardown)

    async def handle(self, request: web.Request) -> web.Response:
        self.hits.append(await request.json())
        self.headers.append(dict(request.headers))
        if self.hang:
            await self.release.wait()
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(f"/hooks/{WEBHOOK_TOKEN}", self.handle)
        return app


@pytest.fixture
async def receiver(aiohttp_server):
    made = []

    async def make(**kwargs):
        r = Receiver(**kwargs)
        server = await aiohttp_server(r.app())
        r.url = str(server.make_url(f"/hooks/{WEBHOOK_TOKEN}"))
        made.append(r)
        return r

    yield make
    for r in made:  # a hanging handler would hold the server's shutdown
        r.release.set()


async def alerting(gateway, fake, key_db, hook, env=None):
    await manage(key_db, "budget", "tester", "--daily-usd", "0.10")
    client = await start(gateway, fake, {"ALERT_WEBHOOK_URL": hook.url, **(env or {})})
    sender = client.server.app[BUDGETS].alerts.webhook
    sender.backoff = (0.05, 0.1, 0.2)  # the real backoff is seconds; the tries are the same
    return client, sender


async def test_one_post_per_threshold_crossed(gateway, fake, key_db, client_key, receiver, log_dir, admin_key):
    hook = await receiver()
    client, sender = await alerting(gateway, fake, key_db, hook)
    statuses = []
    for i in range(14):  # $0.01 each
        resp = await client.post("/v1/chat/completions", json=CHAT,
                                 headers={**auth_header(client_key), "X-Request-Id": f"one-post-{i}"})
        statuses.append(resp.status)
    assert statuses == [200] * 10 + [429] * 4
    await eventually(lambda: sender.sent == 3)
    assert sender.queue.empty() and len(hook.hits) == 3
    assert [(h["budget"], h["threshold"]) for h in hook.hits] == [("daily_usd", 50), ("daily_usd", 80),
                                                                  ("daily_usd", 100)]
    last = hook.hits[-1]
    assert last["event"] == "budget_threshold_reached" and last["client"] == "tester"
    assert (last["limit"], last["spent"], last["percent"], last["period"]) == (0.1, 0.1, 100.0, "day")
    assert last["window"] == time.strftime("%Y-%m-%d", time.gmtime())
    assert set(last) >= {"scope", "budget", "limit", "spent", "percent", "window", "timestamp", "resets_at"}
    text = json.dumps(hook.hits) + json.dumps(hook.headers)
    assert client_key not in text and "sk-glm-" not in text and "Authorization" not in text

    def alert_lines():
        lines = [json.loads(line) for line in (log_dir / "gateway.log").read_text().splitlines()
                 if '"budget_threshold_reached"' in line and '"request_id":"one-post-' in line]
        return lines if len(lines) >= 3 else None

    lines = await eventually(alert_lines)
    assert sorted(line["threshold"] for line in lines) == [50, 80, 100]  # one log event per threshold

    status = await (await client.get("/_status", headers=auth_header(admin_key))).json()
    webhook = status["budgets"]["alerts"]["webhook"]
    assert webhook == {"target": "127.0.0.1", "queued": 0, "sent": 3, "retries": 0, "failed": 0, "dropped": 0}
    assert WEBHOOK_TOKEN not in json.dumps(status)


async def test_a_receiver_failing_twice_gets_the_event_on_the_third_try(gateway, fake, key_db, client_key,
                                                                        receiver):
    hook = await receiver(statuses=[500, 503])
    client, sender = await alerting(gateway, fake, key_db, hook, {"ALERT_THRESHOLDS": "50"})
    for _ in range(5):
        assert (await chat(client, client_key)).status == 200
    await eventually(lambda: sender.sent == 1)
    assert len(hook.hits) == 3 and hook.hits[0] == hook.hits[2]  # the same event, three times
    assert (sender.retries, sender.failed) == (2, 0)


async def test_a_hanging_receiver_does_not_slow_requests(gateway, fake, key_db, client_key, receiver):
    hook = await receiver(hang=True)
    client, sender = await alerting(gateway, fake, key_db, hook, {"ALERT_WEBHOOK_TIMEOUT": "30"})
    took = []
    for _ in range(12):  # crosses all three thresholds while the receiver holds the first POST
        began = time.perf_counter()
        await chat(client, client_key)
        took.append(time.perf_counter() - began)
    await eventually(lambda: hook.hits)
    assert sender.sent == 0 and sender.queue.qsize() == 2  # 50% is hanging, 80% and 100% wait
    assert max(took) < 0.5, took  # each request is as fast as ever


async def test_a_full_queue_drops_and_counts(gateway, fake, key_db, client_key, receiver):
    hook = await receiver(hang=True)
    client, sender = await alerting(gateway, fake, key_db, hook, {"ALERT_WEBHOOK_TIMEOUT": "30"})
    sender.submit({"event": "filler"})
    await eventually(lambda: hook.hits)  # the worker holds it, hanging
    while sender.queue.qsize() < sender.queue.maxsize:
        sender.submit({"event": "filler"})
    for _ in range(10):
        await chat(client, client_key)
    assert sender.dropped == 3 and client.server.app[BUDGETS].alerts.fired == 3
