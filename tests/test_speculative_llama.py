"""The speculative path on the REAL llama.cpp server of the tests (tests/conftest.py's
``llama_server``: a tiny random model, two slots). Its drafts are gibberish, so their
log-probabilities are low: they must escalate to the cloud, and the reason quotes a confidence
computed from the log-probabilities the real server returned."""
from __future__ import annotations

import math
import re

import pytest

from gateway.state import RECORDERS
from tests.conftest import CHAT
from tests.test_strategy_drafts import replay

ESCALATED = re.compile(r"^escalated: draft confidence (0\.\d\d) < 0\.75")


async def start(gateway, llama_server, env):
    client = await gateway({"LOCAL_BASE_URL": llama_server, **env})
    client.seen = []
    client.app[RECORDERS].append(client.seen.append)
    return client


@pytest.mark.parametrize("stream", [False, True])
async def test_real_drafts_are_unconfident_and_escalate(gateway, fake, llama_server, stream):
    client = await start(gateway, llama_server, {"ROUTING_STRATEGY": "speculative"})
    # the client's own cap (8 tokens): a draft cut there is what it asked for, so it is judged
    # by its log-probabilities, not ruled out by finish_reason=length. Greedy (temperature 0), so
    # the random model's draft is the same every run: sampled, it is now and then empty (its first
    # token the end), which escalates as "draft empty" before any log-probability is looked at
    resp = await client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 8, "stream": stream,
                                                           "temperature": 0})
    assert resp.status == 200 and resp.headers["X-Gateway-Provider"] == "cerebras"
    reason = resp.headers["X-Gateway-Route-Reason"]
    found = ESCALATED.match(reason)
    assert found, reason  # not "draft has no logprobs": they were read from the real server
    if stream:
        assert (await resp.read()).count(b"data: [DONE]") == 1
    else:
        assert (await resp.json())["choices"][0]["message"]["content"] == "hello"
    ctx = client.seen[-1]
    assert ctx.draft_outcome == "escalated" and ctx.draft_count == 1
    # a random model over ~600 tokens: each token's probability is a few percent
    assert 0 < ctx.draft_confidence < 0.5 and float(found.group(1)) == pytest.approx(ctx.draft_confidence, abs=0.006)
    assert 1 <= ctx.draft_tokens <= 8 and ctx.draft_ms > 0
    assert len(fake.received) == 1


async def test_real_drafts_cut_by_the_gateways_cap_escalate_on_length(gateway, fake, llama_server):
    client = await start(gateway, llama_server, {"ROUTING_STRATEGY": "speculative", "MAX_DRAFT_TOKENS": "4"})
    resp = await client.post("/v1/chat/completions", json={**CHAT, "temperature": 0})
    assert resp.headers["X-Gateway-Route-Reason"] == "escalated: draft finish_reason=length"
    assert resp.headers["X-Gateway-Provider"] == "cerebras"


async def test_parallel_drafts_on_the_real_servers_two_slots(gateway, fake, llama_server):
    client = await start(gateway, llama_server, {"ROUTING_STRATEGY": "parallel_speculative"})
    body = {**CHAT, "max_tokens": 6}
    await client.post("/v1/chat/completions", json=body)  # the local key's first answer
    resp = await client.post("/v1/chat/completions", json=body)
    assert resp.headers["X-Gateway-Provider"] == "cerebras"
    assert re.match(r"^escalated: draft confidence 0\.\d\d < 0\.75 \(2 drafts, agreement 0\.\d\d\)$",
                    resp.headers["X-Gateway-Route-Reason"]), resp.headers["X-Gateway-Route-Reason"]
    assert client.seen[-1].draft_count == 2  # /props said total_slots 2 (of MAX_CONCURRENT_DRAFTS 3)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_real_draft_served_reaches_the_client_whole(gateway, fake, llama_server, stream):
    client = await start(gateway, llama_server, {"ROUTING_STRATEGY": "speculative", "MIN_CONFIDENCE": "0"})
    resp = await client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 6, "stream": stream, "seed": 5,
                                                           "stream_options": {"include_usage": True}})
    assert resp.status == 200 and resp.headers["X-Gateway-Provider"] == "local"
    assert resp.headers["X-Gateway-Route-Reason"].startswith("draft accepted: confidence 0.")
    if stream:
        content, _, finish, usage = replay([await resp.read()], id_prefix="chatcmpl-")
        assert usage["completion_tokens"] == client.seen[-1].draft_tokens
    else:
        body = await resp.json()
        content, finish = body["choices"][0]["message"]["content"], body["choices"][0]["finish_reason"]
        assert body["model"] == "glm-local" and "logprobs" not in body["choices"][0]
    assert content.strip() and finish in ("stop", "length")
    assert fake.received == []
    assert math.isfinite(client.seen[-1].draft_confidence)
