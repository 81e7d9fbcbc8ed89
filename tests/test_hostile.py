"""Hostile input against the real app on a real port: each a 4xx naming its field, never a 5xx,
and nothing invalid reaches the (fake) upstream."""
from __future__ import annotations

import asyncio
import copy
import http.client
import json
import re
import socket

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.chat import parse_chat_request
from gateway.repair import is_valid
from tests import fakes
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


@pytest.mark.parametrize("repair", ["true", "false"])
async def test_object_arguments_reach_the_upstream_as_json_text(gateway, fake, repair):
    call = {**CALL, "function": {"name": "ls", "arguments": {"path": "a.py"}}}
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_1", "content": "x"}]
    client = await gateway({"REPAIR_TOOL_CALLS": repair})
    status, _ = await post(client, {"model": "zai-glm-4.7", "max_tokens": 5, "messages": messages})
    assert status == 200
    assert fake.received[0].body["messages"][1]["tool_calls"][0]["function"]["arguments"] == '{"path":"a.py"}'


async def test_transcript_of_orphan_results_only_is_a_400(gateway, fake):
    """Repair removes tool results answering no call; with nothing left, the upstream got []."""
    client = await gateway()
    status, body = await post(client, {"messages": [{"role": "tool", "tool_call_id": "a", "content": "x"}]})
    assert_error(status, body, 400, "messages")
    assert fake.received == []


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


# ---- generated hostile bodies against the real app ----------------------------------------------

SCALARS = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(
    allow_nan=False, allow_infinity=False) | st.text(max_size=12)
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=6), inner, max_size=3), max_leaves=12)
# around the 254 levels orjson writes, and the 1,024 it reads: a marker, spliced in as text by
# ``encode`` (the json module cannot write 1,000 levels either)
DEEP = st.one_of(st.integers(240, 300), st.integers(990, 1030)).map(lambda n: f"@@deep:{n}@@")
_MARK = re.compile(rb'"@@deep:(\d+)@@"')


def deep_text(match: re.Match) -> bytes:
    n = int(match.group(1))
    return b"".join(b'{"a":' if i % 2 else b"[" for i in range(n)) + b"1" + b"".join(
        b"}" if i % 2 else b"]" for i in reversed(range(n)))


def encode(value: object) -> bytes:
    return _MARK.sub(deep_text, json.dumps(value).encode())
ANY = JSON | DEEP
IDS = st.sampled_from(["a", "b", "c"])


TEXT = st.text(max_size=12)
PARTS = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}),
    st.fixed_dictionaries({"type": st.just("image_url"), "image_url": st.fixed_dictionaries({"url": TEXT})}),
)
CALLS = st.fixed_dictionaries({"id": IDS, "type": st.just("function"), "function": st.fixed_dictionaries(
    {"name": st.sampled_from(["ls", "read"]), "arguments": st.just("{}") | st.dictionaries(TEXT, SCALARS, max_size=2)})})
MESSAGES = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["system", "developer", "user", "assistant"]),
                           "content": TEXT | st.lists(PARTS, min_size=1, max_size=2)}),
    st.fixed_dictionaries({"role": st.just("assistant"), "content": st.none() | TEXT,
                           "tool_calls": st.lists(CALLS, max_size=3)}),
    st.fixed_dictionaries({"role": st.just("tool"), "tool_call_id": IDS, "content": TEXT}),
)
TOOLS = st.fixed_dictionaries({"type": st.just("function"), "function": st.fixed_dictionaries(
    {"name": st.sampled_from(["ls", "read"])}, optional={"parameters": st.just({"type": "object"}),
                                                        "description": TEXT})})
FIELDS = {
    "model": st.sampled_from(["zai-glm-4.7", "gpt-4o"]), "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    "temperature": st.floats(0, 2), "top_p": st.floats(0, 1), "n": st.integers(1, 3),
    "max_tokens": st.integers(1, 2**64 - 1), "max_completion_tokens": st.integers(1, 2**64 - 1),
    "stop": TEXT | st.lists(TEXT, max_size=2), "seed": st.integers(-(2**63), 2**63),
    "logit_bias": st.dictionaries(st.sampled_from(["1", "42"]), st.integers(-100, 100)),
    "tools": st.lists(TOOLS, max_size=2), "tool_choice": st.sampled_from(["auto", "none", "required"]),
    "response_format": st.fixed_dictionaries({"type": st.sampled_from(["text", "json_object"])}),
    "metadata": st.dictionaries(TEXT, TEXT, max_size=2), "top_k": JSON, "chat_template_kwargs": JSON,
}
VALID = st.fixed_dictionaries({"messages": st.lists(MESSAGES, min_size=1, max_size=6)}, optional=FIELDS)


def slots(value: object) -> list[tuple[object, object]]:
    """Every (container, key or index) in ``value``: the places a mutation can hit."""
    found: list[tuple[object, object]] = []
    stack = [value]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, child in items:
            found.append((node, key))
            stack.append(child)
    return found


@st.composite
def hostile(draw: st.DrawFn) -> dict:
    """A valid body with one to three places replaced by anything, removed, or given a stranger."""
    body = copy.deepcopy(draw(VALID))  # st.just() values are shared: mutating them would change the strategy
    for _ in range(draw(st.integers(1, 3))):
        places = slots(body)
        if not places:
            break
        container, key = draw(st.sampled_from(places))
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if action == "replace":
            container[key] = draw(ANY)  # type: ignore[index]
        elif action == "delete":
            container.pop(key)  # type: ignore[attr-defined]
        elif isinstance(container, dict):
            container[draw(st.text(max_size=6))] = draw(ANY)
    return body


RAW = st.one_of(
    VALID.map(encode),
    hostile().map(encode),
    hostile().map(encode),
    st.binary(max_size=64),  # not JSON, not UTF-8
    JSON.map(encode),  # JSON, not a request
)


def check_exchange(port: int, fake: fakes.FakeUpstream, raw: bytes) -> None:
    before = len(fake.received)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/v1/chat/completions", body=raw, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        status, data = resp.status, resp.read()
    finally:
        conn.close()
    assert status < 500, (status, data)
    sent = fake.received[before:]
    if status >= 400:
        error = json.loads(data)["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
        assert sent == [], "an invalid request reached the upstream"
        return
    assert status == 200 and len(sent) == 1
    forwarded = parse_chat_request(sent[0].raw)  # what the upstream got is a valid chat request
    assert is_valid(forwarded.payload["messages"])  # with its transcript repaired


async def sse_or_json(request, body):
    reply = fakes.stream(["x"]) if body.get("stream") is True else fakes.ok()
    return await reply(request, body)


async def test_generated_hostile_bodies(gateway, fake):
    """No 5xx, every error OpenAI-shaped, nothing invalid forwarded: one app, many bodies (sent
    from a thread with a blocking client, so the app's event loop serves them meanwhile)."""
    fake.default = sse_or_json
    client = await gateway()

    @settings(max_examples=500, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(RAW)
    def run(raw: bytes) -> None:
        check_exchange(client.port, fake, raw)

    await asyncio.to_thread(run)
    assert fake.received  # some bodies were valid and served


HEADER_BYTES = st.binary(min_size=1, max_size=24).map(
    lambda b: bytes(c for c in b if c >= 0x20 and c != 0x7F) or b"\xff")  # no controls: HTTP framing holds


async def test_generated_key_bytes_are_401(gateway, fake, client_key):
    client = await gateway({"ENABLE_INCOMING_AUTH": "true"})

    @settings(max_examples=100, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(HEADER_BYTES, st.sampled_from([b"Authorization: Bearer ", b"x-api-key: "]))
    def run(token: bytes, header: bytes) -> None:
        body = orjson.dumps(CHAT)
        with socket.create_connection(("127.0.0.1", client.port), timeout=10) as s:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      + header + b"sk-glm-" + token + b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                      % len(body) + body)
            response = b""
            while chunk := s.recv(65536):
                response += chunk
        head, _, payload = response.partition(b"\r\n\r\n")
        assert head.split()[1] == b"401", response
        assert json.loads(payload)["error"]["code"] == "invalid_api_key"

    await asyncio.to_thread(run)
    assert fake.received == []
