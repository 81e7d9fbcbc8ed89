"""Key rotation end to end: a fake Cerebras answering per key with its real headers and bodies."""
from __future__ import annotations

import asyncio

from tests import fakes
from tests.conftest import CHAT, UPSTREAM_KEYS, eventually

K1, K2, K3 = UPSTREAM_KEYS["k1"], UPSTREAM_KEYS["k2"], UPSTREAM_KEYS["k3"]


async def status_keys(client) -> dict[str, dict]:
    body = await (await client.get("/_status")).json()
    return {k["name"]: k for k in body["keys"]}


async def test_429_rests_the_key_and_retries_at_once_on_another(gateway, fake):
    fake.script(K1, fakes.rate_limited(reset_tokens_minute=42.5))
    client = await gateway()
    resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status == 200
    assert fake.keys_used() == [K1, K2]
    for _ in range(6):
        assert (await client.post("/v1/chat/completions", json=CHAT)).status == 200
    assert K1 not in fake.keys_used()[2:]  # the resting key got nothing more
    keys = await status_keys(client)
    assert keys["k1"]["available"] is False
    assert 40 < keys["k1"]["rate_limited_for"] <= 42.5
    assert "minute" in keys["k1"]["cooldown_reason"]
    assert keys["k1"]["remaining_tokens_minute"] == 0
    assert keys["k2"]["available"] and keys["k3"]["available"]


async def test_retry_after_header_wins_over_reset(gateway, fake):
    fake.script(K1, fakes.rate_limited(reset_tokens_minute=42.5, extra={"retry-after": "5"}))
    client = await gateway()
    await client.post("/v1/chat/completions", json=CHAT)
    keys = await status_keys(client)
    assert 4 < keys["k1"]["rate_limited_for"] <= 5


async def test_daily_quota_rests_until_the_days_reset(gateway, fake):
    fake.script(K1, fakes.rate_limited(per_day=True))
    client = await gateway()
    assert (await client.post("/v1/chat/completions", json=CHAT)).status == 200
    keys = await status_keys(client)
    assert 43000 < keys["k1"]["rate_limited_for"] <= 43200.5
    assert keys["k1"]["cooldown_reason"] == "daily quota exhausted"


async def test_load_follows_remaining_tokens(gateway, fake):
    def reporting(remaining: int):
        return fakes.ok(headers={"x-ratelimit-limit-tokens-minute": "60000",
                                 "x-ratelimit-remaining-tokens-minute": str(remaining),
                                 "x-ratelimit-reset-tokens-minute": "50"})

    fake.script(K1, *[reporting(1_000)] * 10)
    fake.script(K2, *[reporting(50_000)] * 3, reporting(500))
    fake.script(K3, *[reporting(20_000)] * 10)
    client = await gateway()
    for _ in range(7):
        assert (await client.post("/v1/chat/completions", json=CHAT)).status == 200
    # first one each (nothing known), then the key with most left until it reports little
    assert fake.keys_used() == [K1, K2, K3, K2, K2, K2, K3]


async def test_401_disables_the_key(gateway, fake):
    fake.script(K1, fakes.error(401, {"message": "Wrong API Key", "type": "invalid_request_error",
                                      "param": "api_key", "code": "wrong_api_key"}))
    client = await gateway()
    for _ in range(4):
        assert (await client.post("/v1/chat/completions", json=CHAT)).status == 200
    assert fake.keys_used() == [K1, K2, K3, K2, K3]
    keys = await status_keys(client)
    assert keys["k1"]["available"] is False
    assert "401" in keys["k1"]["disabled_reason"] and "Wrong API Key" in keys["k1"]["disabled_reason"]
    assert K1 not in keys["k1"]["disabled_reason"]


async def test_402_rests_the_key_for_long(gateway, fake):
    fake.script(K1, fakes.error(402, {"message": "payment required", "type": "billing", "code": None}))
    client = await gateway()
    assert (await client.post("/v1/chat/completions", json=CHAT)).status == 200
    keys = await status_keys(client)
    assert keys["k1"]["rate_limited_for"] > 3000


async def test_500_counts_an_error_and_moves_on(gateway, fake):
    fake.script(K1, fakes.error(500, {"message": "internal", "type": "server_error", "code": None}))
    client = await gateway()
    resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status == 200
    assert fake.keys_used() == [K1, K2]
    keys = await status_keys(client)
    assert keys["k1"]["error_count"] == 1 and keys["k1"]["available"] is True


async def test_timeout_moves_to_another_key(gateway, fake):
    fake.script(K1, fakes.hang())
    client = await gateway({"UPSTREAM_READ_TIMEOUT": "0.3"})
    resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status == 200
    assert fake.keys_used() == [K1, K2]
    assert (await status_keys(client))["k1"]["error_count"] == 1


async def test_stream_retries_on_another_key_before_the_first_byte(gateway, fake):
    fake.script(K1, fakes.rate_limited())
    fake.script(K2, fakes.error(503, {"message": "busy", "type": "service_unavailable", "code": None}))
    fake.default = fakes.stream(["ok"])
    client = await gateway()
    resp = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert resp.status == 200
    text = await resp.read()
    assert b'"content":"ok"' in text and text.endswith(b"data: [DONE]\n\n")
    assert fake.keys_used() == [K1, K2, K3]


async def test_every_key_resting_gives_429_with_retry_after(gateway, fake):
    for key in (K1, K2, K3):
        fake.script(key, fakes.rate_limited(reset_tokens_minute=30))
    client = await gateway({"MAX_KEY_WAIT": "0"})
    resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status == 429
    assert 29 <= int(resp.headers["Retry-After"]) <= 30
    assert 29000 <= int(resp.headers["retry-after-ms"]) <= 30000
    body = await resp.json()
    assert body["error"]["type"] == "rate_limit_error" and body["error"]["code"] == "rate_limit_exceeded"
    assert "k1" in body["error"]["message"] and "k3" in body["error"]["message"]
    assert len(fake.received) == 3
    # a later request finds every key resting and answers at once, without calling upstream
    resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 29
    assert len(fake.received) == 3


async def test_request_waits_for_the_first_key_back(gateway, fake):
    for key in (K1, K2, K3):
        fake.script(key, fakes.rate_limited(reset_tokens_minute=0.3))
    client = await gateway({"MAX_KEY_WAIT": "5"})
    resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status == 200
    assert len(fake.received) == 4  # three 429s, then the first key back served it


async def test_wait_longer_than_max_key_wait_is_not_attempted(gateway, fake):
    for key in (K1, K2, K3):
        fake.script(key, fakes.rate_limited(reset_tokens_minute=20))
    client = await gateway({"MAX_KEY_WAIT": "1"})
    resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status == 429
    assert len(fake.received) == 3


async def test_completion_tokens_are_capped(gateway, fake):
    client = await gateway({"CEREBRAS_MAX_COMPLETION_TOKENS": "4096"})
    await client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 50000})
    await client.post("/v1/chat/completions", json={**CHAT, "max_completion_tokens": 100})
    await client.post("/v1/chat/completions", json=CHAT)
    sent = [r.body for r in fake.received]
    assert sent[0]["max_tokens"] == 4096
    assert sent[1]["max_completion_tokens"] == 100 and "max_tokens" not in sent[1]
    assert sent[2]["max_completion_tokens"] == 4096


async def test_unreachable_upstream_gives_503_after_two_keys(gateway, fake, unused_tcp_port):
    client = await gateway({"CEREBRAS_BASE_URL": f"http://127.0.0.1:{unused_tcp_port}/v1"})
    resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status == 503 and resp.headers["Retry-After"] == "1"  # k3 has not failed: try again soon
    error = (await resp.json())["error"]
    assert error["code"] == "upstream_unavailable" and error["message"].startswith("upstreams failing")
    message = error["message"]
    assert "cerebras/k1: connection" in message and "cerebras/k2: connection" in message
    assert "k3" not in message  # the keys share the host: two failed connections are enough


async def test_server_errors_try_two_keys_at_most(gateway, fake):
    for key in (K1, K2, K3):
        fake.script(key, fakes.error(500, {"message": "internal", "type": "server_error", "code": None}))
    client = await gateway()
    resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status == 503 and "Retry-After" in resp.headers
    assert (await resp.json())["error"]["code"] == "upstream_unavailable"
    assert fake.keys_used() == [K1, K2]


async def test_all_keys_disabled_gives_503(gateway, fake):
    for key in (K1, K2, K3):
        fake.script(key, fakes.error(401, {"message": "Wrong API Key", "type": "x", "code": "wrong_api_key"}))
    client = await gateway()
    first = await client.post("/v1/chat/completions", json=CHAT)
    assert first.status == 502
    second = await client.post("/v1/chat/completions", json=CHAT)
    assert second.status == 503
    assert len(fake.received) == 3


async def test_50_concurrent_requests_while_keys_flip_to_429(gateway, fake):
    """No request is lost; once the gateway knows a key rests, no request reaches it."""

    async def slow_ok(request, body):
        await asyncio.sleep(0.01)
        return await fakes.ok()(request, body)

    # 429s that carry only Retry-After: nothing but the cooldown keeps requests off the key
    tpm = {"message": "Tokens per minute limit exceeded - too many tokens processed.",
           "type": "too_many_requests_error", "param": "quota", "code": "token_quota_exceeded"}
    flipped = fakes.error(429, tpm, {"retry-after": "30"})
    fake.default = slow_ok
    fake.script(K1, *[flipped] * 100)  # k1 flips at once
    client = await gateway({"MAX_KEY_WAIT": "0"})

    async def burst() -> list[int]:
        responses = await asyncio.gather(*(client.post("/v1/chat/completions", json=CHAT) for _ in range(50)))
        return [r.status for r in responses]

    assert await burst() == [200] * 50  # wave 1: none lost
    k1_hits = fake.keys_used().count(K1)
    assert 1 <= k1_hits <= 50
    keys = await status_keys(client)
    assert 29 < keys["k1"]["rate_limited_for"] <= 30  # many concurrent 429s cooled it once

    fake.script(K2, *[flipped] * 100)  # now k2 flips too
    before = len(fake.received)
    assert await burst() == [200] * 50  # wave 2: still none lost, k3 carries the load
    wave2 = fake.keys_used()[before:]
    assert K1 not in wave2  # k1 was known to rest: it got nothing

    before = len(fake.received)
    assert await burst() == [200] * 50  # wave 3: both resting keys get nothing
    assert set(fake.keys_used()[before:]) == {K3}
    served = [r.key for r in fake.received].count(K3)
    assert served >= 100


class Clock:
    """The gateway's clock, moved by the test (key rests and breakers read it)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def delayed(reply, seconds: float = 0.2):
    async def slow(request, body):
        await asyncio.sleep(seconds)
        return await reply(request, body)

    return slow


def held(reply, gate: asyncio.Event):
    async def wait_then(request, body):
        await gate.wait()
        return await reply(request, body)

    return wait_then


WRONG_KEY = {"message": "Wrong API Key", "type": "invalid_request_error", "param": "api_key", "code": "wrong_api_key"}
INTERNAL = {"message": "internal", "type": "server_error", "code": None}


async def test_401_key_gets_one_request_when_five_arrive_at_once(gateway, fake):
    """A key never heard from takes one request until its first answer: the burst goes elsewhere."""
    fake.script(K1, delayed(fakes.error(401, WRONG_KEY)))
    fake.default = delayed(fakes.ok())
    client = await gateway()
    responses = await asyncio.gather(*(client.post("/v1/chat/completions", json=CHAT) for _ in range(5)))
    assert [r.status for r in responses] == [200] * 5  # none failed for the rule
    used = fake.keys_used()
    assert used.count(K1) == 1
    assert used.count(K2) + used.count(K3) == 5
    keys = await status_keys(client)
    assert keys["k1"]["disabled_reason"] and keys["k2"]["heard_from"] and keys["k3"]["heard_from"]


async def test_breaker_opens_rests_and_one_probe_closes_it(gateway, fake):
    clock = Clock()
    fake.script(K1, *[fakes.error(500, INTERNAL)] * 3)
    client = await gateway(clock=clock)
    for _ in range(10):
        assert (await client.post("/v1/chat/completions", json=CHAT)).status == 200
        if (await status_keys(client))["k1"]["breaker"]["state"] == "open":
            break
    assert fake.keys_used().count(K1) == 3
    k1 = (await status_keys(client))["k1"]
    assert k1["breaker"] == {"state": "open", "open_for": 5.0, "consecutive_errors": 3, "probe_in_flight": False,
                             "reason": "3 errors in a row (server)"}
    assert (k1["available"], k1["rate_limited_for"], k1["cooldown_reason"]) == (False, 0.0, None)  # no rate limit
    before = len(fake.received)
    for _ in range(6):
        assert (await client.post("/v1/chat/completions", json=CHAT)).status == 200
    assert K1 not in fake.keys_used()[before:]  # resting

    clock.t += 5.0  # the rest is over: half-open
    gate = asyncio.Event()
    fake.script(K1, held(fakes.ok("probe"), gate))
    before = len(fake.received)
    burst = [asyncio.ensure_future(client.post("/v1/chat/completions", json=CHAT)) for _ in range(5)]
    await eventually(lambda: sum(t.done() for t in burst) == 4)  # four served elsewhere, the probe held
    assert fake.keys_used()[before:].count(K1) == 1  # exactly one probe
    k1 = (await status_keys(client))["k1"]["breaker"]
    assert (k1["state"], k1["probe_in_flight"]) == ("half_open", True)
    gate.set()
    responses = await asyncio.gather(*burst)
    assert [r.status for r in responses] == [200] * 5
    assert sum([(await r.json())["choices"][0]["message"]["content"] == "probe" for r in responses]) == 1
    k1 = (await status_keys(client))["k1"]["breaker"]
    assert (k1["state"], k1["consecutive_errors"], k1["probe_in_flight"]) == ("closed", 0, False)
    before = len(fake.received)
    for _ in range(3):
        await client.post("/v1/chat/completions", json=CHAT)
    assert K1 in fake.keys_used()[before:]  # back in rotation


async def test_failed_probe_reopens_the_breaker_for_longer(gateway, fake):
    clock = Clock()
    fake.script(K1, *[fakes.error(500, INTERNAL)] * 4)
    client = await gateway(clock=clock)
    for _ in range(10):
        await client.post("/v1/chat/completions", json=CHAT)
        if (await status_keys(client))["k1"]["breaker"]["state"] == "open":
            break
    clock.t += 5.0
    for _ in range(3):  # the probe lands on k1 (most headroom, least recently used)
        assert (await client.post("/v1/chat/completions", json=CHAT)).status == 200
    assert fake.keys_used().count(K1) == 4
    k1 = (await status_keys(client))["k1"]["breaker"]
    assert (k1["state"], k1["open_for"], k1["consecutive_errors"]) == ("open", 10.0, 4)
