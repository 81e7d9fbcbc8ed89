"""The ledger end to end: a real gateway on a real port, fake upstreams that bill over real HTTP
(usage sent, omitted, or a stream cut midway), rows read back from the real SQLite file."""
from __future__ import annotations

import asyncio

import orjson
import pytest

from tests import fakes
from tests.conftest import CHAT, UPSTREAM_KEYS, auth_header, eventually
from tests.usage_db import rows

K1, K2, K3 = UPSTREAM_KEYS["k1"], UPSTREAM_KEYS["k2"], UPSTREAM_KEYS["k3"]
STREAM = {**CHAT, "stream": True}


def events(body: bytes) -> list:
    """A stream's events as the client got them: parsed JSON, or the raw ``[DONE]``."""
    out = []
    for e in body.split(b"\n\n"):
        if e.startswith(b"data: "):
            out.append(e if e == b"data: [DONE]" else orjson.loads(e[6:]))
    return out


async def one_row(key_db, n: int = 1) -> dict:
    got = await eventually(lambda: (r := rows(key_db)) and len(r) >= n and r)
    assert len(got) == n
    return got[-1]


def tokens_of(row: dict) -> tuple:
    return row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"], row["reasoning_tokens"]


async def test_a_whole_answer_is_recorded_as_billed(gateway, fake, key_db):
    fake.default = fakes.ok("pong", usage_=fakes.usage(1200, 300, cached=200, reasoning=100))
    client = await gateway()
    resp = await client.post("/v1/chat/completions", json=CHAT, headers={"X-Request-Id": "mine-7"})
    assert resp.status == 200
    assert (await resp.json())["usage"]["prompt_tokens"] == 1200  # the answer itself is unchanged
    row = await one_row(key_db)
    assert tokens_of(row) == (1200, 300, 200, 100) and row["tokens_estimated"] == 0
    assert row["request_id"] == "mine-7" and row["status"] == 200 and row["stream"] == 0
    assert row["provider"] == "cerebras" and row["upstream_key"] in UPSTREAM_KEYS
    assert row["model_requested"] == row["model_served"] == "zai-glm-4.7"
    assert row["cost_usd"] == pytest.approx((1000 * 2.25 + 200 * 2.25 + 300 * 2.75) / 1e6)
    assert row["primary_cost_usd"] == pytest.approx(row["cost_usd"]) and row["priced"] == 1
    assert row["latency_ms"] > 0 and row["ttft_ms"] > 0 and row["attempts"] == 1


@pytest.mark.parametrize("usage_on", ["chunk", "finish"])
async def test_a_stream_asks_for_usage_and_the_client_that_did_not_gets_none(gateway, fake, key_db, usage_on):
    fake.default = fakes.stream(["Hel", "lo"], usage_=fakes.usage(40, 2), usage_on=usage_on)
    client = await gateway()
    resp = await client.post("/v1/chat/completions", json=STREAM)
    assert resp.status == 200
    got = events(await resp.read())
    assert fake.received[0].body["stream_options"] == {"include_usage": True}  # asked of the upstream
    assert all("usage" not in e for e in got if isinstance(e, dict))  # hidden from the client
    contents = [e["choices"][0]["delta"].get("content") for e in got if isinstance(e, dict)]
    if usage_on == "chunk":  # the usage-only chunk was dropped, not emptied
        assert contents == ["Hel", "lo"]
    else:  # the finish chunk stays, without its usage
        assert contents == ["Hel", "lo", None] and got[-2]["choices"][0]["finish_reason"] == "stop"
    assert got[-1] == b"data: [DONE]"
    row = await one_row(key_db)
    assert tokens_of(row) == (40, 2, 0, 0) and row["tokens_estimated"] == 0 and row["stream"] == 1
    assert row["cost_usd"] == pytest.approx((40 * 2.25 + 2 * 2.75) / 1e6)


async def test_a_client_that_asked_for_usage_gets_it_unchanged(gateway, fake, key_db):
    fake.default = fakes.stream(["a"], usage_=fakes.usage(9, 1))
    client = await gateway()
    asked = {**STREAM, "stream_options": {"include_usage": True}}
    resp = await client.post("/v1/chat/completions", json=asked)
    got = events(await resp.read())
    assert fake.received[0].body["stream_options"] == {"include_usage": True}
    assert got[-2] == {"id": "c", "object": "chat.completion.chunk", "choices": [], "usage": fakes.usage(9, 1)}
    assert tokens_of(await one_row(key_db)) == (9, 1, 0, 0)


async def test_a_stream_without_usage_is_estimated_from_its_text(gateway, fake, key_db):
    fake.default = fakes.stream(["word " * 50, "word " * 50], reasoning=["think " * 20])  # no usage sent
    client = await gateway()
    resp = await client.post("/v1/chat/completions", json=STREAM)
    assert resp.status == 200
    await resp.read()
    row = await one_row(key_db)
    assert row["tokens_estimated"] == 1
    assert 5 <= row["prompt_tokens"] <= 20  # one short message
    assert 115 <= row["completion_tokens"] <= 130 and 18 <= row["reasoning_tokens"] <= 22  # reasoning is output
    assert row["cost_usd"] == pytest.approx((row["prompt_tokens"] * 2.25 + row["completion_tokens"] * 2.75) / 1e6)


async def test_a_stream_cut_midway_is_estimated_and_marked(gateway, fake, key_db):
    fake.default = fakes.stream(["word " * 30, "more", "never"], die_after=2, usage_=fakes.usage(1, 1))
    client = await gateway()
    resp = await client.post("/v1/chat/completions", json=STREAM)
    body = await resp.read()
    assert b"upstream_stream_error" in body
    row = await one_row(key_db)
    assert row["tokens_estimated"] == 1 and row["error_code"] == "upstream_stream_error"
    assert 30 <= row["completion_tokens"] <= 33  # what was generated before the cut
    assert fake.billed == []  # the fake never reported usage: the estimate is all there is


async def test_a_stream_the_client_leaves_is_estimated(gateway, fake, key_db):
    gate = asyncio.Event()
    fake.default = fakes.stream(["word " * 40, "rest"], gate=gate, usage_=fakes.usage(5, 5))
    client = await gateway()
    resp = await client.post("/v1/chat/completions", json=STREAM)
    await asyncio.wait_for(resp.content.readuntil(b"\n\n"), timeout=5)
    resp.close()
    row = await one_row(key_db)
    gate.set()
    assert row["tokens_estimated"] == 1 and row["error_code"] == "client_disconnected"
    assert row["status"] in (200, 499) and 38 <= row["completion_tokens"] <= 42


async def test_failed_requests_leave_rows_at_no_cost(gateway, fake, key_db):
    fake.script(K1, fakes.error(400, {"message": "bad temperature", "type": "invalid_request_error"}))
    client = await gateway()
    bad = await client.post("/v1/chat/completions", json=CHAT, headers={"X-Request-Id": "bad-1"})
    assert bad.status == 400
    not_json = await client.post("/v1/chat/completions", data=b"{", headers={"X-Request-Id": "bad-2"})
    assert not_json.status == 400
    for key in (K1, K2, K3):
        fake.script(key, fakes.rate_limited())
    limited = await client.post("/v1/chat/completions", json=CHAT, headers={"X-Request-Id": "bad-3"})
    assert limited.status == 429
    await eventually(lambda: len(rows(key_db)) == 3)
    got = {r["request_id"]: (r["status"], r["provider"], r["upstream_key"], r["error_code"], r["cost_usd"],
                             r["prompt_tokens"]) for r in rows(key_db)}
    assert got == {
        "bad-1": (400, "cerebras", "k1", None, 0.0, 0),  # the upstream's own 4xx, from the key that got it
        "bad-2": (400, None, None, "invalid_json", 0.0, 0),
        "bad-3": (429, None, None, "rate_limit_exceeded", 0.0, 0),
    }


async def test_with_auth_only_authenticated_requests_leave_rows_with_their_client(gateway, fake, key_db, client_key):
    client = await gateway({"ENABLE_INCOMING_AUTH": "true"})
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=auth_header("sk-glm-nope"))).status == 401
    assert (await client.post("/v1/chat/completions", json=CHAT)).status == 401
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=auth_header(client_key))).status == 200
    row = await one_row(key_db)
    await asyncio.sleep(0.3)  # three flush intervals: the 401s left nothing behind
    assert len(rows(key_db)) == 1
    assert row["client_name"] == "tester" and row["client_key_id"] == 1


async def test_a_fallback_records_the_fallbacks_price_and_what_the_primary_would_have_cost(gateway, fake, make_fake,
                                                                                           key_db):
    synthetic = await make_fake()
    synthetic.default = fakes.ok("from synthetic", usage_=fakes.usage(10_000, 1_000))
    fake.default = fakes.error(500)
    client = await gateway({"SYNTHETIC_API_KEY": "syn-key-123456", "SYNTHETIC_BASE_URL": synthetic.url})
    resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status == 200 and resp.headers["X-Gateway-Provider"] == "synthetic"
    row = await one_row(key_db)
    assert row["provider"] == "synthetic" and row["model_served"] == "hf:zai-org/GLM-4.7"
    assert row["cost_usd"] == pytest.approx((10_000 * 0.55 + 1_000 * 2.19) / 1e6)
    assert row["primary_cost_usd"] == pytest.approx((10_000 * 2.25 + 1_000 * 2.75) / 1e6)
    assert row["attempts"] == 3 and row["fallback_reason"].startswith("cerebras/")
    stats = await (await client.get("/stats")).json()
    assert stats["totals"]["saved_usd"] == pytest.approx(row["primary_cost_usd"] - row["cost_usd"])


async def test_ledger_totals_equal_what_the_upstream_billed_under_concurrency(gateway, fake, key_db):
    async def billed_by_request(request, body):  # each request billed differently, streamed or not
        i = int(body["messages"][0]["content"][1:])
        if body.get("stream"):
            return await fakes.stream(["a", "b"], usage_=fakes.usage(100 + i, i, cached=i % 5))(request, body)
        return await fakes.ok("x", usage_=fakes.usage(200 + i, 2 * i, reasoning=i % 3))(request, body)

    fake.default = billed_by_request
    client = await gateway()

    async def one(i: int) -> int:
        body = {**CHAT, "stream": i % 2 == 1, "messages": [{"role": "user", "content": f"q{i}"}]}
        async with client.post("/v1/chat/completions", json=body) as resp:
            await resp.read()
            return resp.status

    assert await asyncio.gather(*(one(i) for i in range(60))) == [200] * 60
    await eventually(lambda: len(rows(key_db)) == 60)
    got = rows(key_db)
    assert len(fake.billed) == 60 and not any(r["tokens_estimated"] for r in got)
    for name in ("prompt_tokens", "completion_tokens"):
        assert sum(r[name] for r in got) == sum(b[name] for b in fake.billed)
    assert sum(r["cached_tokens"] for r in got) == \
        sum(b.get("prompt_tokens_details", {}).get("cached_tokens", 0) for b in fake.billed)
    assert sum(r["reasoning_tokens"] for r in got) == \
        sum(b.get("completion_tokens_details", {}).get("reasoning_tokens", 0) for b in fake.billed)
    billed_usd = sum(((b["prompt_tokens"] - b.get("prompt_tokens_details", {}).get("cached_tokens", 0)) * 2.25
                      + b.get("prompt_tokens_details", {}).get("cached_tokens", 0) * 2.25
                      + b["completion_tokens"] * 2.75) / 1e6 for b in fake.billed)
    stats = await (await client.get("/stats")).json()
    assert stats["totals"]["requests"] == 60
    assert stats["totals"]["prompt_tokens"] == sum(b["prompt_tokens"] for b in fake.billed)
    assert stats["totals"]["cost_usd"] == pytest.approx(billed_usd, abs=1e-7)


async def test_status_shows_the_ledgers_queue(gateway):
    client = await gateway()
    status = await (await client.get("/_status")).json()
    assert status["usage_rows_dropped"] == 0 and status["usage_queue_depth"] == 0
