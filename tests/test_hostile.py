"""Hostile input against the real app on a real port: each a 4xx naming its field, never a 5xx,
and nothing invalid reaches the (fake) upstream."""
from __future__ import annotations

import asyncio
import json

import orjson
import pytest

from tests.conftest import CHAT

CALL = {"id": "call_1", "type": "function", "function": {"name": "ls", "arguments": "{}"}}


def nested(depth: int, leaf: object = 1) -> object:
    """``depth`` levels of alternating arrays and objects around ``leaf``."""
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"a": value}
    return value


async def post(client, body) -> tuple[int, dict]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()  # orjson stops at 254 levels
    resp = await client.post("/v1/chat/completions", data=raw, headers={"Content-Type": "application/json"})
    return resp.status, await resp.json()


def assert_error(status: int, body: dict, expected_status: int, param: str | None) -> None:
    assert status == expected_status, body
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["param"] == param, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


# ---- the list: each was a 500 with a traceback ------------------------------------------

@pytest.mark.parametrize("messages, param", [
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": None, "tool_calls": [CALL]},
      {"role": "tool", "tool_call_id": ["call_1"], "content": "x"}], "messages[2].tool_call_id"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": None, "tool_calls": [CALL]},
      {"role": "tool", "tool_call_id": {"id": "call_1"}, "content": "x"}], "messages[2].tool_call_id"),
    ([{"role": "user", "content": "a"},
      {"role": "assistant", "content": None, "tool_calls": [{**CALL, "id": {"x": 1}}]},
      {"role": "tool", "tool_call_id": "call_1", "content": "x"}], "messages[1].tool_calls[0].id"),
])
async def test_unhashable_ids_are_a_400_naming_them(gateway, fake, messages, param):
    client = await gateway()
    assert_error(*await post(client, {"model": "m", "messages": messages}), 400, param)
    assert fake.received == []


@pytest.mark.parametrize("field, value, param", [
    ("metadata", {"k": nested(300)}, "metadata.k"),  # metadata holds strings
    ("chat_template_kwargs", nested(300), "chat_template_kwargs"),
    ("thinking", nested(260, "x"), "thinking"),
])
async def test_deep_json_is_a_400_naming_where(gateway, fake, field, value, param):
    client = await gateway()
    status, body = await post(client, {**CHAT, field: value})
    assert_error(status, body, 400, param)
    assert fake.received == []


async def test_deep_tool_call_arguments_are_a_400(gateway, fake):
    call = {**CALL, "function": {"name": "ls", "arguments": nested(300)}}
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_1", "content": "x"}]
    client = await gateway()
    status, body = await post(client, {"model": "m", "messages": messages})
    assert_error(status, body, 400, "messages[1].tool_calls[0].function.arguments")
    assert fake.received == []


async def test_json_as_deep_as_orjson_writes_is_forwarded_intact(gateway, fake):
    """254 levels in all is what orjson writes; the model is rewritten, so the body is re-serialised."""
    body = {**CHAT, "model": "other-model", "chat_template_kwargs": nested(252)}  # 1 (body) + 253
    client = await gateway()
    status, _ = await post(client, body)
    assert status == 200
    assert fake.received[0].body["chat_template_kwargs"] == body["chat_template_kwargs"]


async def test_odd_tool_calls_in_a_big_body_are_a_400(gateway, fake, make_fake):
    """Over TOKEN_THRESHOLD bytes the prompt is estimated (in a worker thread) to route it."""
    synthetic = await make_fake()
    client = await gateway({"TOKEN_THRESHOLD": "1000", "SYNTHETIC_API_KEY": "syn-key",
                            "SYNTHETIC_BASE_URL": synthetic.url})
    for odd in (5, True, "calls"):
        messages = [{"role": "user", "content": "x" * 2000}, {"role": "assistant", "content": "a", "tool_calls": odd}]
        assert_error(*await post(client, {"model": "m", "messages": messages}), 400, "messages[1].tool_calls")
    assert fake.received == synthetic.received == []


# ---- credentials that are not text --------------------------------------------------------------

async def raw_exchange(port: int, head: bytes, body: bytes) -> tuple[int, dict]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    header, _, payload = response.partition(b"\r\n\r\n")
    return int(header.split()[1]), json.loads(payload)


@pytest.mark.parametrize("header", [
    b"Authorization: Bearer sk-glm-\xff\xfe\x80abc",
    b"Authorization: Bearer \xc3\xa9t\xc3\xa9",  # valid UTF-8, still never a key
    b"x-api-key: sk-glm-\xff",
])
async def test_non_ascii_key_is_a_401(gateway, fake, client_key, header):
    client = await gateway({"ENABLE_INCOMING_AUTH": "true"})
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + header + b"\r\n"
    status, body = await raw_exchange(client.port, head, orjson.dumps(CHAT))
    assert_error(status, body, 401, None)
    assert body["error"]["code"] == "invalid_api_key"
    assert fake.received == []


@pytest.mark.parametrize("plaintext", ["sk-glm-abc", "sk-glm-\udcff\udcfe", "\ud800", "été", ""])
def test_hash_key_is_total(plaintext):
    """Header bytes and argv that are not UTF-8 arrive as lone surrogates (was UnicodeEncodeError)."""
    from gateway.keystore import hash_key

    digest = hash_key(plaintext)
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert digest != hash_key(plaintext + "x")
