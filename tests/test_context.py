"""The per-request context: filled by each layer, handed once to every recorder on the way out."""
from __future__ import annotations

import asyncio

import pytest

from gateway.context import AttemptRecord, RequestContext, Usage
from gateway.state import RECORDERS
from tests import fakes
from tests.conftest import CHAT, UPSTREAM_KEYS, auth_header, eventually

K1, K2, K3 = UPSTREAM_KEYS["k1"], UPSTREAM_KEYS["k2"], UPSTREAM_KEYS["k3"]


def test_log_fields_of_a_bare_request_hold_only_what_was_set():
    ctx = RequestContext("rid-1", "GET", "/health")
    ctx.status = 200
    fields = ctx.log_fields()
    assert set(fields) == {"request_id", "method", "path", "status", "latency_ms"}
    assert fields["request_id"] == "rid-1" and fields["status"] == 200


def test_served_after_a_failure_names_the_fallback_reason():
    ctx = RequestContext("rid", "POST", "/v1/chat/completions")
    ctx.add_attempt(AttemptRecord("cerebras", "k1", "rate_limited", 429, 1.0))
    ctx.add_attempt(AttemptRecord("synthetic", "key1", "ok", 200, 2.0))
    ctx.served_by("synthetic", "key1", "hf:zai-org/GLM-4.7")
    assert ctx.fallback_reason == "cerebras/k1: rate_limited"
    fields = ctx.log_fields()
    assert fields["attempts"] == 2
    assert fields["attempt_log"] == ["cerebras/k1:rate_limited", "synthetic/key1:ok"]
    assert fields["provider"] == "synthetic" and fields["upstream_key"] == "key1"


def test_served_first_time_has_no_fallback_reason():
    ctx = RequestContext("rid", "POST", "/v1/chat/completions")
    ctx.add_attempt(AttemptRecord("cerebras", "k1", "ok", 200, 1.0))
    ctx.served_by("cerebras", "k1", "zai-glm-4.7")
    assert ctx.fallback_reason is None
    assert "attempt_log" not in ctx.log_fields()


def test_overhead_excludes_upstream_time():
    ctx = RequestContext("rid", "POST", "/x")
    ctx.started_ns = 0
    ctx.finished_ns = 10_000_000  # 10 ms in all
    ctx.upstream_ns = 7_500_000
    assert ctx.latency_ms == 10.0
    assert ctx.overhead_ms == 2.5


def test_usage_in_the_log_line():
    ctx = RequestContext("rid", "POST", "/x")
    ctx.usage = Usage(prompt_tokens=10, completion_tokens=5, estimated=True)
    fields = ctx.log_fields()
    assert fields["prompt_tokens"] == 10 and fields["completion_tokens"] == 5 and fields["tokens_estimated"]


@pytest.fixture
def recorded():
    return []


async def start(gateway, recorded, env=None):
    client = await gateway(env)
    client.server.app[RECORDERS].append(recorded.append)
    return client


async def test_a_served_request_is_recorded_once_with_client_attempt_and_provider(
    gateway, recorded, client_key
):
    client = await start(gateway, recorded, {"ENABLE_INCOMING_AUTH": "true"})
    resp = await client.post("/v1/chat/completions", json=CHAT, headers={**auth_header(client_key),
                                                                          "X-Request-Id": "mine-1"})
    assert resp.status == 200
    await resp.read()
    await eventually(lambda: recorded)
    [ctx] = recorded
    assert ctx.request_id == "mine-1"
    assert ctx.client_name == "tester" and ctx.client_id is not None
    assert ctx.status == 200 and ctx.stream is False and ctx.model_asked == "zai-glm-4.7"
    assert ctx.provider == "cerebras" and ctx.model_served == "zai-glm-4.7"
    assert [a.outcome for a in ctx.attempts] == ["ok"]
    assert ctx.upstream_ns > 0 and ctx.first_token_ns is not None
    assert 0 <= ctx.overhead_ms <= ctx.latency_ms


async def test_failed_attempts_are_recorded_in_order(gateway, fake, recorded):
    for key in (K1, K2, K3):
        fake.script(key, fakes.rate_limited())
    client = await start(gateway, recorded)
    resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status == 429
    await eventually(lambda: recorded)
    [ctx] = recorded
    assert [a.outcome for a in ctx.attempts] == ["rate_limited"] * 3
    assert {a.key for a in ctx.attempts} == {"k1", "k2", "k3"}
    assert all(a.status == 429 for a in ctx.attempts)
    assert ctx.provider is None and ctx.status == 429 and ctx.error_code == "rate_limit_exceeded"


async def test_a_rejected_key_is_recorded_without_a_client(gateway, recorded, client_key):
    client = await start(gateway, recorded, {"ENABLE_INCOMING_AUTH": "true"})
    resp = await client.post("/v1/chat/completions", json=CHAT, headers=auth_header("sk-glm-wrong"))
    assert resp.status == 401
    await eventually(lambda: recorded)
    assert recorded[0].client_id is None and recorded[0].error_code == "invalid_api_key"


async def test_a_stream_the_client_leaves_is_still_recorded(gateway, fake, recorded):
    gate = asyncio.Event()
    fake.default = fakes.stream(["a", "b", "c"], gate=gate)
    client = await start(gateway, recorded)
    resp = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    await asyncio.wait_for(resp.content.readuntil(b"\n\n"), timeout=5)
    resp.close()  # the client goes away mid-stream
    await eventually(lambda: recorded)
    [ctx] = recorded
    assert ctx.stream is True and ctx.provider == "cerebras"
    assert ctx.client_disconnected
    assert ctx.first_token_ns is not None and ctx.ttft_ms is not None
    gate.set()


async def test_a_full_stream_records_its_chunks(gateway, fake, recorded):
    fake.default = fakes.stream(["a", "b", "c"])
    client = await start(gateway, recorded)
    resp = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert resp.status == 200
    await resp.read()
    await eventually(lambda: recorded)
    assert recorded[0].chunks >= 1 and not recorded[0].client_disconnected and recorded[0].status == 200


async def test_a_broken_recorder_does_not_fail_the_request(gateway, recorded):
    client = await gateway()

    def broken(ctx):
        raise RuntimeError("bug")

    client.server.app[RECORDERS].extend([broken, recorded.append])
    resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status == 200
    await eventually(lambda: recorded)  # the next recorder still ran
