"""The fallback chain end to end: fake Cerebras, Synthetic and Z.ai servers, and a real llama.cpp."""
from __future__ import annotations

import asyncio
import json

import pytest

from tests import fakes
from tests.conftest import CHAT, UPSTREAM_KEYS

K1, K2, K3 = UPSTREAM_KEYS["k1"], UPSTREAM_KEYS["k2"], UPSTREAM_KEYS["k3"]
SYN_KEY, ZAI_KEY = "syn-key-0001", "zai-key-0001"

CONTEXT_400 = {"message": "Please reduce the length of the messages or completion.",
               "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}
SERVER_503 = {"message": "We're experiencing high traffic right now! Please try again soon.",
              "type": "too_many_requests_error", "param": "queue", "code": "queue_exceeded"}
ZAI_1302 = {"error": {"code": "1302", "message": "High concurrency usage of this API, please reduce concurrency."}}
ZAI_1113 = {"error": {"code": "1113", "message": "Insufficient balance or no resource package. Please recharge."}}


@pytest.fixture
async def chain(gateway, fake, make_fake):
    """Start a gateway with Cerebras (fake), Synthetic (fake), Z.ai (fake) and optionally local."""
    synthetic = await make_fake()
    zai = await make_fake()

    async def start(env: dict[str, str] | None = None, local: str | None = None):
        base = {
            "SYNTHETIC_API_KEY": SYN_KEY,
            "SYNTHETIC_BASE_URL": synthetic.url,
            "ZAI_API_KEY": ZAI_KEY,
            "ZAI_BASE_URL": zai.url,
        }
        if local:
            base["LOCAL_BASE_URL"] = local
        base.update(env or {})
        return await gateway(base)

    start.synthetic, start.zai = synthetic, zai
    return start


def all_cerebras_keys(fake, reply) -> None:
    for key in (K1, K2, K3):
        fake.script(key, reply)


async def post(client, body=CHAT, **kw):
    return await client.post("/v1/chat/completions", json=body, **kw)


async def test_oversized_request_never_reaches_cerebras(chain, fake):
    client = await chain({"TOKEN_THRESHOLD": "1000"})
    big = {**CHAT, "messages": [{"role": "user", "content": "word " * 3000}]}
    resp = await post(client, big)
    assert resp.status == 200
    assert resp.headers["X-Gateway-Provider"] == "synthetic"
    assert fake.received == []
    sent = chain.synthetic.received[0]
    assert sent.key == SYN_KEY
    assert sent.body["model"] == "hf:zai-org/GLM-4.7"  # rewritten to the provider's model
    assert "max_completion_tokens" not in sent.body  # Cerebras's cap is Cerebras's alone
    small = await post(client)  # far below the threshold by byte size: Cerebras
    assert small.headers["X-Gateway-Provider"] == "cerebras"


async def test_tool_definitions_count_toward_the_threshold(chain, fake):
    client = await chain({"TOKEN_THRESHOLD": "1000"})
    tools = [{"type": "function", "function": {"name": f"tool_{i}", "description": "does a thing " * 40,
                                               "parameters": {"type": "object", "properties": {}}}}
             for i in range(10)]
    resp = await post(client, {**CHAT, "tools": tools})
    assert resp.headers["X-Gateway-Provider"] == "synthetic"
    assert fake.received == []


async def test_context_length_400_falls_back_without_trying_other_keys(chain, fake):
    fake.default = fakes.error(400, CONTEXT_400)
    client = await chain()
    resp = await post(client)
    assert resp.status == 200
    assert resp.headers["X-Gateway-Provider"] == "synthetic"
    assert len(fake.received) == 1  # one Cerebras key said too long: the others would too


async def test_503_falls_back(chain, fake):
    fake.default = fakes.error(503, SERVER_503)
    client = await chain()
    resp = await post(client)
    assert resp.status == 200 and resp.headers["X-Gateway-Provider"] == "synthetic"
    assert len(fake.received) == 2  # one more key, then the next provider


async def test_timeout_falls_back_at_once(chain, fake):
    fake.default = fakes.hang()
    client = await chain({"UPSTREAM_READ_TIMEOUT": "0.3"})
    resp = await post(client)
    assert resp.status == 200 and resp.headers["X-Gateway-Provider"] == "synthetic"
    assert len(fake.received) == 1  # no second timeout on another Cerebras key first


async def test_connection_failure_falls_back_at_once(chain, unused_tcp_port):
    client = await chain({"CEREBRAS_BASE_URL": f"http://127.0.0.1:{unused_tcp_port}/v1"})
    resp = await post(client)
    assert resp.status == 200 and resp.headers["X-Gateway-Provider"] == "synthetic"
    status = await (await client.get("/_status")).json()
    assert [k["error_count"] for k in status["keys"] if k["provider"] == "cerebras"] == [1, 0, 0]  # one key tried


async def test_all_keys_cooling_falls_back_when_allowed(chain, fake):
    all_cerebras_keys(fake, fakes.rate_limited(reset_tokens_minute=30))
    client = await chain({"FALLBACK_ON_COOLDOWN": "true", "MAX_KEY_WAIT": "10"})
    resp = await post(client)
    assert resp.status == 200 and resp.headers["X-Gateway-Provider"] == "synthetic"
    resp = await post(client)  # Cerebras still resting: straight to Synthetic, no Cerebras call
    assert resp.headers["X-Gateway-Provider"] == "synthetic"
    assert len(fake.received) == 3


async def test_all_keys_cooling_waits_when_fallback_is_off(chain, fake):
    all_cerebras_keys(fake, fakes.rate_limited(reset_tokens_minute=30))
    client = await chain({"FALLBACK_ON_COOLDOWN": "false", "MAX_KEY_WAIT": "0"})
    resp = await post(client)
    assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 29
    assert chain.synthetic.received == []


async def test_fallback_off_still_waits_for_cerebras_then_serves(chain, fake):
    all_cerebras_keys(fake, fakes.rate_limited(reset_tokens_minute=0.3))
    client = await chain({"FALLBACK_ON_COOLDOWN": "false", "MAX_KEY_WAIT": "5"})
    resp = await post(client)
    assert resp.status == 200 and resp.headers["X-Gateway-Provider"] == "cerebras"
    assert chain.synthetic.received == []


async def test_chain_order_synthetic_then_zai(chain, fake):
    fake.default = fakes.error(503, SERVER_503)
    chain.synthetic.default = fakes.error(500, {"error": {"message": "boom", "type": "server_error"}})
    client = await chain()
    resp = await post(client)
    assert resp.status == 200 and resp.headers["X-Gateway-Provider"] == "zai"
    assert chain.zai.received[0].key == ZAI_KEY
    assert chain.zai.received[0].body["model"] == "glm-4.7"


async def test_zai_concurrency_429_passes_to_local(chain, fake, llama_server):
    fake.default = fakes.error(503, SERVER_503)
    chain.synthetic.default = fakes.error(503, {"error": {"message": "overloaded"}})
    chain.zai.default = fakes.error(429, ZAI_1302)
    client = await chain(local=llama_server)
    resp = await post(client, {**CHAT, "max_tokens": 8, "temperature": 0})
    assert resp.status == 200
    assert resp.headers["X-Gateway-Provider"] == "local"
    body = await resp.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "glm-local"
    assert body["usage"]["completion_tokens"] >= 1
    status = await (await client.get("/_status")).json()
    zai_key = next(p for p in status["providers"] if p["name"] == "zai")["keys"][0]
    assert 0 < zai_key["rate_limited_for"] <= 2 and "1302" in zai_key["cooldown_reason"]


async def test_zai_balance_exhausted_rests_long(chain, fake):
    fake.default = fakes.error(503, SERVER_503)
    chain.synthetic.default = fakes.error(503, {"error": {"message": "overloaded"}})
    chain.zai.default = fakes.error(429, ZAI_1113)
    client = await chain({"MAX_KEY_WAIT": "0"})
    resp = await post(client)
    assert resp.status == 503
    status = await (await client.get("/_status")).json()
    zai_key = next(p for p in status["providers"] if p["name"] == "zai")["keys"][0]
    assert zai_key["rate_limited_for"] > 3000


async def test_everything_failing_gives_429_listing_each_provider(chain, fake, unused_tcp_port):
    all_cerebras_keys(fake, fakes.rate_limited(reset_tokens_minute=20))
    chain.synthetic.default = fakes.error(500, {"error": {"message": "boom"}})
    chain.zai.default = fakes.error(429, ZAI_1302)
    client = await chain({"MAX_KEY_WAIT": "0"}, local=f"http://127.0.0.1:{unused_tcp_port}/v1")
    resp = await post(client)
    assert resp.status == 429
    assert "Retry-After" in resp.headers and "retry-after-ms" in resp.headers
    message = (await resp.json())["error"]["message"]
    for part in ("cerebras/k1: rate_limited", "synthetic/key1: server", "zai/key1: rate_limited", "local/local: connection"):
        assert part in message


async def test_client_400_is_not_retried_anywhere(chain, fake):
    payload = {"message": "tools[0].function.name is required", "type": "invalid_request_error",
               "param": "tools", "code": "wrong_api_format"}
    fake.default = fakes.error(400, payload)
    client = await chain()
    resp = await post(client)
    # Cerebras's flat error reaches the client in OpenAI's envelope, every field kept
    assert resp.status == 400 and await resp.json() == {"error": payload}
    assert resp.headers["X-Gateway-Provider"] == "cerebras"
    assert resp.headers["x-should-retry"] == "false"
    assert len(fake.received) == 1
    assert chain.synthetic.received == [] and chain.zai.received == []


async def test_stream_fails_over_before_the_first_byte(chain, fake):
    fake.default = fakes.error(503, SERVER_503)
    chain.synthetic.default = fakes.stream(["from", " synthetic"])
    client = await chain()
    resp = await post(client, {**CHAT, "stream": True})
    assert resp.status == 200 and resp.headers["X-Gateway-Provider"] == "synthetic"
    text = await resp.read()
    assert b'"content":"from"' in text and text.endswith(b"data: [DONE]\n\n")
    assert b"error" not in text


async def test_stream_that_dies_before_its_first_event_fails_over(chain, fake):
    fake.default = fakes.stream(["never sent"], die_after=0)
    chain.synthetic.default = fakes.stream(["ok"])
    client = await chain()
    resp = await post(client, {**CHAT, "stream": True})
    assert resp.headers["X-Gateway-Provider"] == "synthetic"
    text = await resp.read()
    assert b'"content":"ok"' in text and b"never sent" not in text


async def test_midstream_failure_ends_with_error_event_and_done(chain, fake):
    fake.default = fakes.stream(["one", "two", "three", "four"], die_after=2)
    client = await chain()
    resp = await post(client, {**CHAT, "stream": True})
    assert resp.status == 200 and resp.headers["X-Gateway-Provider"] == "cerebras"
    text = await asyncio.wait_for(resp.read(), timeout=10)  # never a hung connection
    events = [e for e in text.split(b"\n\n") if e]
    assert b'"content":"one"' in events[0] and b'"content":"two"' in events[1]
    error = json.loads(events[-2].removeprefix(b"data: "))
    assert error["error"]["code"] == "upstream_stream_error"
    assert events[-1] == b"data: [DONE]"
    assert chain.synthetic.received == []  # bytes were sent: no silent switch mid-answer
    status = await (await client.get("/_status")).json()
    assert status["keys"][0]["error_count"] == 1  # the broken stream counted against its key


async def test_local_llama_serves_streamed_and_not(gateway, llama_server):
    client = await gateway({"CEREBRAS_API_KEYS": "", "LOCAL_BASE_URL": llama_server})
    resp = await post(client, {**CHAT, "max_tokens": 6, "temperature": 0})
    assert resp.status == 200 and resp.headers["X-Gateway-Provider"] == "local"
    body = await resp.json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 6
    resp = await post(client, {**CHAT, "max_tokens": 6, "temperature": 0, "stream": True,
                               "stream_options": {"include_usage": True}})
    assert resp.status == 200
    text = await resp.read()
    events = [e for e in text.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    chunks = [json.loads(e.removeprefix(b"data: ")) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    streamed = "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c["choices"])
    assert streamed == body["choices"][0]["message"]["content"]  # temperature 0: the same text
    assert chunks[-1]["usage"]["completion_tokens"] == 6


async def test_local_context_overflow_is_a_400_context_error(gateway, llama_server):
    client = await gateway({"CEREBRAS_API_KEYS": "", "LOCAL_BASE_URL": llama_server})
    huge = {**CHAT, "messages": [{"role": "user", "content": "hello world " * 800}]}
    resp = await post(client, huge)
    assert resp.status == 400
    body = await resp.json()
    assert body["error"]["code"] == "context_length_exceeded"
    assert "local/local: context_length" in body["error"]["message"]


async def test_fallback_off_only_holds_requests_for_cerebras(chain, fake):
    """FALLBACK_ON_COOLDOWN is about the Cerebras keys: a resting fallback still passes the request on."""
    fake.default = fakes.error(503, SERVER_503)
    chain.synthetic.default = fakes.error(429, {"error": {"message": "slow down", "type": "rate_limit"}},
                                          {"retry-after": "30"})
    client = await chain({"FALLBACK_ON_COOLDOWN": "false", "MAX_KEY_WAIT": "5"})
    resp = await post(client)
    assert resp.status == 200 and resp.headers["X-Gateway-Provider"] == "zai"


async def test_read_timeouts_are_per_provider(chain, fake):
    """The general read timeout (0.4 s) is shorter than Synthetic's reply (0.6 s): Synthetic serves
    only because its own SYNTHETIC_READ_TIMEOUT is honoured (else Z.ai would)."""

    async def slow_ok(request, body):
        import asyncio as aio

        await aio.sleep(0.6)
        return await fakes.ok("slow but fine")(request, body)

    fake.default = fakes.hang()
    chain.synthetic.default = slow_ok
    client = await chain({"UPSTREAM_READ_TIMEOUT": "0.4", "SYNTHETIC_READ_TIMEOUT": "5"})
    resp = await post(client)
    assert resp.status == 200 and resp.headers["X-Gateway-Provider"] == "synthetic"
    assert (await resp.json())["choices"][0]["message"]["content"] == "slow but fine"
    assert chain.zai.received == []


async def breaker_of(client, provider: str, key: str) -> dict:
    status = await (await client.get("/_status")).json()
    keys = next(p for p in status["providers"] if p["name"] == provider)["keys"]
    return next(k for k in keys if k["name"] == key)["breaker"]


BOOM = {"error": {"message": "boom", "type": "server_error"}}


async def test_every_breaker_open_probes_the_first_to_half_open_rather_than_refuse(chain):
    """The issue's case: single-key providers resting on errors. The request tries one, at once."""
    chain.synthetic.default = fakes.error(500, BOOM)
    chain.zai.default = fakes.error(500, BOOM)
    client = await chain({"CEREBRAS_API_KEYS": "", "MAX_KEY_WAIT": "0"})
    for _ in range(3):
        resp = await post(client)
        assert resp.status == 503
    error = (await resp.json())["error"]
    assert error["code"] == "upstream_unavailable" and error["type"] == "api_error"
    assert error["message"].startswith("upstreams failing")
    assert "synthetic/key1: server" in error["message"] and "zai/key1: server" in error["message"]
    assert resp.headers["Retry-After"] == "5"  # when the first breaker half-opens
    for provider in ("synthetic", "zai"):
        assert (await breaker_of(client, provider, "key1"))["state"] == "open"
    chain.synthetic.default = fakes.ok("back")
    chain.zai.default = fakes.ok("back")
    resp = await post(client)
    assert resp.status == 200 and resp.headers["X-Gateway-Provider"] == "synthetic"  # its rest ends first
    assert (len(chain.synthetic.received), len(chain.zai.received)) == (4, 3)
    assert (await breaker_of(client, "synthetic", "key1"))["state"] == "closed"
    assert (await breaker_of(client, "zai", "key1"))["state"] == "open"


async def test_failing_early_probe_moves_to_the_next_breaker(chain):
    chain.synthetic.default = fakes.error(500, BOOM)
    chain.zai.default = fakes.error(500, BOOM)
    client = await chain({"CEREBRAS_API_KEYS": "", "MAX_KEY_WAIT": "0"})
    for _ in range(3):
        await post(client)
    chain.zai.default = fakes.ok("zai is back")
    resp = await post(client)
    assert resp.status == 200 and resp.headers["X-Gateway-Provider"] == "zai"
    assert (len(chain.synthetic.received), len(chain.zai.received)) == (4, 4)  # one probe each
    assert (await breaker_of(client, "synthetic", "key1"))["open_for"] > 5  # its probe failed: longer
    # the next request finds synthetic open (its probe spent), zai closed: zai, no probe
    resp = await post(client)
    assert resp.headers["X-Gateway-Provider"] == "zai" and len(chain.synthetic.received) == 4


@pytest.mark.parametrize("max_key_wait, provider", [("5", "cerebras"), ("0", "synthetic")])
async def test_rate_limited_key_back_sooner_is_waited_for_else_a_failing_one_is_probed(
    chain, fake, max_key_wait, provider
):
    """Cerebras rests on 429s for 0.3 s, Synthetic and Z.ai on their breakers for 5 s: within
    MAX_KEY_WAIT the request waits for the healthy key; with no wait allowed it probes Synthetic."""
    fake.default = fakes.error(503, SERVER_503)
    chain.synthetic.default = fakes.error(500, BOOM)
    chain.zai.default = fakes.error(500, BOOM)
    client = await chain({"MAX_KEY_WAIT": max_key_wait})
    for _ in range(3):  # two Cerebras keys, Synthetic and Z.ai fail each
        assert (await post(client)).status == 503
    assert (await breaker_of(client, "synthetic", "key1"))["state"] == "open"
    assert {(await breaker_of(client, "cerebras", k))["state"] for k in ("k1", "k2", "k3")} == {"closed"}
    all_cerebras_keys(fake, fakes.rate_limited(reset_tokens_minute=0.3))
    fake.default = fakes.ok()
    chain.synthetic.default = fakes.ok()
    resp = await post(client)
    assert resp.status == 200 and resp.headers["X-Gateway-Provider"] == provider
    assert len(chain.synthetic.received) == (3 if provider == "cerebras" else 4)
    assert len(chain.zai.received) == 3


async def test_fallback_off_still_falls_back_from_a_failing_primary(chain, fake):
    """FALLBACK_ON_COOLDOWN=false holds requests for a rate-limited Cerebras, not a failing one."""
    fake.default = fakes.error(500, BOOM)
    client = await chain({"CEREBRAS_API_KEYS": json.dumps({"k1": K1}), "FALLBACK_ON_COOLDOWN": "false",
                          "MAX_KEY_WAIT": "0"})
    for _ in range(5):
        resp = await post(client)
        assert resp.status == 200 and resp.headers["X-Gateway-Provider"] == "synthetic"
    assert len(fake.received) == 3  # three faults opened its breaker; then it rests
    assert (await breaker_of(client, "cerebras", "k1"))["state"] == "open"


async def test_a_burst_on_a_key_never_heard_from_falls_back_not_onto_it(chain, fake):
    """A single Cerebras key answering 401 slowly: of five requests at once it gets one; the rest
    go down the chain (and wait for Synthetic's first answer rather than fail)."""

    async def slow_401(request, body):
        await asyncio.sleep(0.2)
        return await fakes.error(401, {"message": "Wrong API Key", "type": "x", "code": "wrong_api_key"})(request, body)

    fake.default = slow_401
    client = await chain({"CEREBRAS_API_KEYS": json.dumps({"k1": K1})})
    responses = await asyncio.gather(*(post(client) for _ in range(5)))
    assert [r.status for r in responses] == [200] * 5
    assert len(fake.received) == 1
    assert {r.headers["X-Gateway-Provider"] for r in responses} <= {"synthetic", "zai"}
