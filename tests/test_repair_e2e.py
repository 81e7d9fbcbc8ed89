"""Repair end to end: the upstream receives the repaired transcript, streamed or not."""
from __future__ import annotations

import json

import orjson

from gateway.repair import repair_messages
from tests import fakes

CALL = {"id": "call_1", "type": "function", "function": {"name": "read_file", "arguments": '{"path": "a.py"}'}}
CALL2 = {"id": "call_2", "type": "function", "function": {"name": "grep", "arguments": "{}"}}
BROKEN = [
    {"role": "system", "content": "You are a coding agent."},
    {"role": "tool", "tool_call_id": "call_0", "content": "stale result of a trimmed call"},
    {"role": "user", "content": "fix a.py"},
    {"role": "assistant", "content": "", "tool_calls": [CALL, CALL2]},
    {"role": "user", "content": "(interrupted)"},
    {"role": "tool", "tool_call_id": "call_2", "content": "grep output"},
    {"role": "user", "content": "go on"},
]
VALID = [
    {"role": "user", "content": "fix a.py"},
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_1", "content": "print('x')"},
]


EXPECTED_COUNTS = {"orphan_tool_result": 1, "empty_assistant_content": 1,
                   "missing_tool_result": 1, "reordered_tool_result": 1}


async def test_upstream_receives_the_repaired_transcript(gateway, fake):
    client = await gateway()
    resp = await client.post("/v1/chat/completions", json={"model": "zai-glm-4.7", "messages": BROKEN})
    assert resp.status == 200
    assert resp.headers["X-Gateway-Repairs"] == "4"
    expected, _ = repair_messages(BROKEN)
    sent = fake.received[0].body["messages"]
    assert sent == expected
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool", "tool", "user", "user"]
    assert sent[2]["content"] is None
    assert [m["tool_call_id"] for m in sent[3:5]] == ["call_1", "call_2"]
    assert "missing" in sent[3]["content"]
    status = await (await client.get("/_status")).json()
    assert status["repairs"] == EXPECTED_COUNTS


async def test_streamed_request_is_repaired_the_same(gateway, fake):
    fake.default = fakes.stream(["ok"])
    client = await gateway()
    resp = await client.post("/v1/chat/completions", json={"model": "zai-glm-4.7", "messages": BROKEN, "stream": True})
    assert resp.status == 200
    assert resp.headers["X-Gateway-Repairs"] == "4"
    assert (await resp.read()).endswith(b"data: [DONE]\n\n")
    assert fake.received[0].body["messages"] == repair_messages(BROKEN)[0]


async def test_valid_transcript_is_forwarded_byte_for_byte(gateway, fake):
    client = await gateway()
    raw = orjson.dumps({"model": "zai-glm-4.7", "max_tokens": 100, "messages": VALID, "temperature": 0.25})
    resp = await client.post("/v1/chat/completions", data=raw, headers={"Content-Type": "application/json"})
    assert resp.status == 200
    assert "X-Gateway-Repairs" not in resp.headers
    assert fake.received[0].raw == raw


async def test_repair_can_be_turned_off(gateway, fake):
    client = await gateway({"REPAIR_TOOL_CALLS": "false"})
    resp = await client.post("/v1/chat/completions", json={"model": "zai-glm-4.7", "messages": BROKEN})
    assert "X-Gateway-Repairs" not in resp.headers
    assert fake.received[0].body["messages"] == BROKEN


async def test_repairs_are_logged_by_kind(gateway, fake, log_dir):
    client = await gateway()
    await client.post("/v1/chat/completions", json={"model": "zai-glm-4.7", "messages": BROKEN},
                      headers={"X-Request-Id": "repair-log-1"})

    def logged():
        for line in (log_dir / "gateway.log").read_text().splitlines():
            record = json.loads(line)
            if record.get("request_id") == "repair-log-1" and record["event"] == "transcript_repaired":
                return record
        return None

    from tests.conftest import eventually

    record = await eventually(logged)
    assert record["repairs"] == EXPECTED_COUNTS


async def test_repaired_transcript_reaches_real_llama(gateway, llama_server):
    client = await gateway({"CEREBRAS_API_KEYS": "", "LOCAL_BASE_URL": llama_server})
    resp = await client.post("/v1/chat/completions", json={"messages": BROKEN, "max_tokens": 4})
    assert resp.status == 200 and resp.headers["X-Gateway-Repairs"] == "4"
    assert (await resp.json())["usage"]["completion_tokens"] == 4
