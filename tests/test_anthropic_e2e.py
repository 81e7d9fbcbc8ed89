"""The official ``anthropic`` SDK against the real gateway on a real port, with fake upstreams
speaking OpenAI chat completions (JSON and SSE) over real HTTP."""
from __future__ import annotations

import asyncio

import anthropic
import orjson
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.anthropic import count
from gateway.anthropic.translate import SIGNATURE, to_openai
from tests import fakes
from tests.conftest import UPSTREAM_KEYS, eventually
from tests.test_anthropic_translate import _body

MODEL = "claude-sonnet-4-6"
HELLO = [{"role": "user", "content": "hi"}]
USAGE = {"prompt_tokens": 30, "completion_tokens": 4, "prompt_tokens_details": {"cached_tokens": 10}}
READ_TOOL = {"name": "read_file", "description": "Read a file", "input_schema": {
    "type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}


def answer(message: dict, finish: str = "stop", usage: dict | None = None) -> fakes.Reply:
    """A non-streamed chat completion with this assistant message."""

    async def reply(request: web.Request, body: dict) -> web.StreamResponse:
        return web.json_response({
            "id": "chatcmpl-e2e", "object": "chat.completion", "created": 1, "model": body.get("model", ""),
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
            "usage": usage or USAGE})

    return reply


def chunks(*deltas: dict, finish: str = "stop", usage: dict | None = USAGE, gate: asyncio.Event | None = None,
           die_after: int | None = None) -> fakes.Reply:
    """A streamed answer: one chunk per delta, a finish chunk, a usage chunk, [DONE]. With
    ``gate``, everything after the first chunk waits for it; ``die_after=n`` cuts the connection
    after n chunks."""

    async def reply(request: web.Request, body: dict) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        events = [{"choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
        events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        if usage is not None:
            events.append({"choices": [], "usage": usage})
        for i, event in enumerate(events):
            if i == 1 and gate is not None:
                await gate.wait()
            if die_after is not None and i == die_after:
                request.transport.close()
                return resp
            obj = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "model": body.get("model", ""), **event}
            await resp.write(b"data: " + orjson.dumps(obj) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        return resp

    return reply


def sdk(client, key: str = "sk-glm-test", **kwargs) -> anthropic.AsyncAnthropic:
    kwargs.setdefault("max_retries", 0)
    return anthropic.AsyncAnthropic(base_url=str(client.make_url("")).rstrip("/"), api_key=key, **kwargs)


def error_of(exc: anthropic.APIStatusError) -> dict:
    body = exc.response.json()
    assert set(body) == {"type", "error"} and body["type"] == "error"
    assert set(body["error"]) == {"type", "message"}
    return body["error"]


# ---- create, stream -----------------------------------------------------------------------------


async def test_create_translates_both_ways(gateway, fake):
    fake.default = answer({"content": "hello there", "reasoning_content": "they greet me"})
    client = await gateway()
    raw = await sdk(client).messages.with_raw_response.create(
        model=MODEL, max_tokens=64, system="be brief", messages=HELLO, extra_body={"temperature": 0.5},
        stop_sequences=["END"], metadata={"user_id": "u-7"})
    message = await raw.parse()
    assert raw.headers["x-gateway-provider"] == "cerebras"
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == "they greet me" and message.content[0].signature == SIGNATURE
    assert message.content[1].text == "hello there"
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    usage = message.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.output_tokens) == (20, 10, 4)
    assert message.id == "msg_chatcmpl-e2e" and message.role == "assistant"
    sent = fake.received[0].body
    assert sent["model"] == "zai-glm-4.7"  # an unknown name is rewritten to CEREBRAS_MODEL, as for chat
    assert sent["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert (sent["max_tokens"], sent["temperature"], sent["stop"], sent["user"]) == (64, 0.5, ["END"], "u-7")
    assert "stream" not in sent


async def test_stream_text_in_anthropic_events(gateway, fake):
    fake.default = chunks({"role": "assistant", "content": ""}, {"reasoning_content": "hm"}, {"content": "Hel"},
                          {"content": "lo"})
    client = await gateway()
    async with sdk(client).messages.stream(model=MODEL, max_tokens=64, messages=HELLO) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "thinking" in kinds and "text" in kinds  # the SDK's own derived events, from the deltas
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == "hm" and final.content[0].signature == SIGNATURE
    assert final.content[1].text == "Hello"
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.cache_read_input_tokens, final.usage.output_tokens) == (20, 10, 4)
    sent = fake.received[0].body
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


async def test_stream_tool_use_with_input_json_delta(gateway, fake):
    fake.default = chunks(
        {"content": "Let me look."},
        {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                         "function": {"name": "read_file", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"pa'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": 'th": "a.py"}'}}]},
        finish="tool_calls")
    client = await gateway()
    partials = []
    async with sdk(client).messages.stream(model=MODEL, max_tokens=64, messages=HELLO, tools=[READ_TOOL],
                                           tool_choice={"type": "any"}) as stream:
        async for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                partials.append(event.delta.partial_json)
        final = await stream.get_final_message()
    assert partials == ['{"pa', 'th": "a.py"}']
    assert [b.type for b in final.content] == ["text", "tool_use"]
    tool = final.content[1]
    assert (tool.id, tool.name, tool.input) == ("call_1", "read_file", {"path": "a.py"})
    assert final.stop_reason == "tool_use"
    sent = fake.received[0].body
    assert sent["tools"] == [{"type": "function", "function": {
        "name": "read_file", "description": "Read a file", "parameters": READ_TOOL["input_schema"]}}]
    assert sent["tool_choice"] == "required"


async def test_multi_turn_tool_conversation(gateway, fake):
    """The SDK's own objects go back as the next turn: tool_use -> tool_calls, tool_result ->
    a tool message right after them, before the user's text."""
    client = await gateway()
    api = sdk(client)
    fake.default = answer({"content": "Reading it.", "tool_calls": [
        {"id": "call_9", "type": "function", "function": {"name": "read_file", "arguments": '{"path": "a.py"}'}}]},
        finish="tool_calls")
    first = await api.messages.create(model=MODEL, max_tokens=64, messages=HELLO, tools=[READ_TOOL])
    assert first.stop_reason == "tool_use"
    tool = next(b for b in first.content if b.type == "tool_use")
    assert (tool.id, tool.input) == ("call_9", {"path": "a.py"})
    fake.default = answer({"content": "It prints 1."})
    turn = [*HELLO, {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool.id, "content": "print(1)"},
                                         {"type": "text", "text": "what does it do?"}]}]
    second = await api.messages.create(model=MODEL, max_tokens=64, messages=turn, tools=[READ_TOOL])
    assert second.content[0].text == "It prints 1." and second.stop_reason == "end_turn"
    assert fake.received[1].body["messages"] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Reading it.", "tool_calls": [
            {"id": "call_9", "type": "function", "function": {"name": "read_file", "arguments": '{"path":"a.py"}'}}]},
        {"role": "tool", "tool_call_id": "call_9", "content": "print(1)"},
        {"role": "user", "content": "what does it do?"},
    ]


async def test_transcript_repair_runs_on_the_translation(gateway, fake):
    """A tool_use whose result the client lost (a compaction) is answered by the repair."""
    fake.default = answer({"content": "ok"})
    client = await gateway()
    raw = await sdk(client).messages.with_raw_response.create(model=MODEL, max_tokens=64, messages=[
        *HELLO, {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "ls", "input": {}}]},
        {"role": "user", "content": "go on"}])
    assert raw.headers["x-gateway-repairs"] == "1"
    sent = fake.received[0].body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "user"]
    assert sent[2]["tool_call_id"] == "t1" and "missing" in sent[2]["content"]


async def test_count_tokens_counts_blocks_tools_and_results(gateway, fake):
    client = await gateway()
    api = sdk(client)
    small = await api.messages.count_tokens(model=MODEL, messages=HELLO)
    body = {"model": MODEL, "system": "You are a coding agent.", "tools": [READ_TOOL], "messages": [
        *HELLO, {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "read_file",
                                                   "input": {"path": "a.py"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "x = 1\n" * 50}]}]}
    big = await api.messages.count_tokens(**body)
    assert 0 < small.input_tokens < big.input_tokens
    assert big.input_tokens == count.count_tokens(to_openai(body, for_count=True))
    assert fake.received == []  # counted here, not upstream


# ---- auth and errors ----------------------------------------------------------------------------


async def test_auth_with_x_api_key_or_bearer(gateway, fake, client_key):
    fake.default = answer({"content": "ok"})
    client = await gateway({"ENABLE_INCOMING_AUTH": "true"})
    with pytest.raises(anthropic.AuthenticationError) as e:
        await sdk(client, key="sk-glm-wrong").messages.create(model=MODEL, max_tokens=8, messages=HELLO)
    assert error_of(e.value)["type"] == "authentication_error"
    ok = await sdk(client, key=client_key).messages.create(model=MODEL, max_tokens=8, messages=HELLO)  # Bearer
    assert ok.content[0].text == "ok"
    body = {"model": MODEL, "max_tokens": 8, "messages": HELLO}
    version = {"anthropic-version": "2023-06-01"}
    resp = await client.post("/v1/messages", json=body, headers={"x-api-key": client_key, **version})
    assert resp.status == 200 and (await resp.json())["content"][0]["text"] == "ok"
    resp = await client.post("/v1/messages/count_tokens", json=body, headers={"x-api-key": "nope", **version})
    assert resp.status == 401
    assert (await resp.json())["error"]["type"] == "authentication_error"
    assert all(r.key in UPSTREAM_KEYS.values() for r in fake.received)  # the client's key never goes upstream


async def test_rate_limited_is_a_429_the_sdk_knows(gateway, fake):
    fake.default = fakes.rate_limited(reset_tokens_minute=30)
    client = await gateway()
    with pytest.raises(anthropic.RateLimitError) as e:
        await sdk(client).messages.create(model=MODEL, max_tokens=8, messages=HELLO)
    assert error_of(e.value)["type"] == "rate_limit_error"
    assert int(e.value.response.headers["retry-after"]) >= 29
    assert "retry-after-ms" in e.value.response.headers


async def test_sdk_retries_a_429_and_succeeds(gateway, fake):
    for key in UPSTREAM_KEYS.values():
        fake.script(key, fakes.rate_limited(reset_tokens_minute=0.2))
    fake.default = answer({"content": "second time lucky"})
    client = await gateway()
    message = await sdk(client, max_retries=2).messages.create(model=MODEL, max_tokens=8, messages=HELLO)
    assert message.content[0].text == "second time lucky"
    assert len(fake.received) == len(UPSTREAM_KEYS) + 1  # every key once (429), then the retry


async def test_failing_upstreams_are_a_529_overload(gateway, fake):
    fake.default = fakes.error(500)
    client = await gateway()
    with pytest.raises(anthropic.OverloadedError) as e:
        await sdk(client).messages.create(model=MODEL, max_tokens=8, messages=HELLO)
    assert e.value.status_code == 529 and error_of(e.value)["type"] == "overloaded_error"
    assert "retry-after" in e.value.response.headers


async def test_sdk_retries_a_529_and_succeeds(gateway, fake):
    for key in UPSTREAM_KEYS.values():
        fake.script(key, fakes.error(503))
    fake.default = answer({"content": "back"})
    client = await gateway()
    message = await sdk(client, max_retries=2).messages.create(model=MODEL, max_tokens=8, messages=HELLO)
    assert message.content[0].text == "back"


async def test_bad_bodies_are_anthropic_400s_naming_the_field(gateway, fake):
    client = await gateway()
    cases = [
        ({"model": MODEL, "messages": HELLO}, "max_tokens: "),
        ({"model": MODEL, "max_tokens": 8, "messages": [{"role": "tool", "content": "x"}]}, "messages.0.role: "),
        ({"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": [{"type": "video"}]}]},
         "messages.0.content.0.type: "),
    ]
    for body, prefix in cases:
        resp = await client.post("/v1/messages", json=body)
        assert resp.status == 400, body
        data = await resp.json()
        assert data == {"type": "error",
                        "error": {"type": "invalid_request_error", "message": data["error"]["message"]}}
        assert data["error"]["message"].startswith(prefix)
        assert resp.headers["x-should-retry"] == "false"
    resp = await client.post("/v1/messages", data=b"{not json")
    assert resp.status == 400 and (await resp.json())["error"]["type"] == "invalid_request_error"
    with pytest.raises(anthropic.BadRequestError):
        await sdk(client).messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": 5}])
    assert fake.received == []


async def test_route_errors_take_the_shape_of_their_route(gateway, fake):
    client = await gateway({"MAX_REQUEST_BYTES": "2000"})
    resp = await client.post("/v1/messages/nope", json={})
    assert resp.status == 404 and (await resp.json())["error"]["type"] == "not_found_error"
    resp = await client.get("/v1/messages")
    assert resp.status == 405 and (await resp.json())["type"] == "error"
    resp = await client.post("/v1/messages", json={"model": MODEL, "max_tokens": 8, "messages": HELLO * 200})
    assert resp.status == 413 and (await resp.json())["error"]["type"] == "request_too_large"
    resp = await client.post("/v1/nope", json={})  # elsewhere: OpenAI's shape, unchanged
    assert resp.status == 404 and set((await resp.json())["error"]) == {"message", "type", "param", "code"}
    resp = await client.post("/v1/messagesX", json={})
    assert "param" in (await resp.json())["error"]


async def test_upstream_4xx_keeps_its_status_and_message(gateway, fake):
    fake.default = fakes.error(422, {"message": "temperature and top_p together", "type": "invalid_request_error"})
    client = await gateway()
    with pytest.raises(anthropic.UnprocessableEntityError) as e:
        await sdk(client).messages.create(model=MODEL, max_tokens=8, messages=HELLO)
    assert error_of(e.value) == {"type": "invalid_request_error", "message": "temperature and top_p together"}
    assert e.value.response.headers["x-should-retry"] == "false"
    assert len(fake.received) == 1  # the client's own mistake: nothing else tried


# ---- streams that stall or break ----------------------------------------------------------------


async def test_long_silence_gets_pings(gateway, fake, monkeypatch):
    from gateway.api import anthropic as api

    monkeypatch.setattr(api, "PING_INTERVAL", 0.05)
    gate = asyncio.Event()
    fake.default = chunks({"content": "a"}, {"content": "b"}, gate=gate)
    client = await gateway()
    resp = await client.post("/v1/messages", json={"model": MODEL, "max_tokens": 8, "messages": HELLO, "stream": True})
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    head = await asyncio.wait_for(resp.content.readuntil(b"event: ping\n"), timeout=5)
    assert b"event: message_start" in head and b'"text":"a"' in head
    assert not gate.is_set()  # the ping came while the upstream was silent
    gate.set()
    rest = await asyncio.wait_for(resp.content.read(), timeout=5)
    assert b'"text":"b"' in rest and rest.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')


async def test_upstream_breaking_midstream_is_an_error_event(gateway, fake):
    fake.default = chunks({"content": "par"}, {"content": "tial"}, die_after=2)
    client = await gateway()
    api = sdk(client)
    with pytest.raises(anthropic.APIStatusError) as e:
        async with api.messages.stream(model=MODEL, max_tokens=8, messages=HELLO) as stream:
            async for _ in stream:
                pass
    assert "upstream stream failed" in str(e.value)
    resp = await client.post("/v1/messages", json={"model": MODEL, "max_tokens": 8, "messages": HELLO, "stream": True})
    body = await resp.read()
    assert body.count(b"event: message_start") == 1 and b"event: message_stop" not in body
    assert body.endswith(b"\n\n") and b'event: error\ndata: {"type":"error","error":{"type":"api_error"' in body


async def test_messages_are_recorded_like_chat_requests(gateway, fake):
    fake.default = chunks({"content": "hi"})
    client = await gateway()
    await (await client.post("/v1/messages", json={"model": MODEL, "max_tokens": 8, "messages": HELLO,
                                                   "stream": True})).read()

    async def scraped() -> str | None:
        text = await (await client.get("/metrics")).text()
        return text if 'route="/v1/messages"' in text else None

    text = await eventually(scraped)
    output = [line for line in text.splitlines()
              if line.startswith("gen_ai_client_token_usage_sum") and 'gen_ai_token_type="output"' in line]
    assert output and float(output[0].rsplit(" ", 1)[1]) == 4.0  # the upstream's completion_tokens


# ---- hostile input ------------------------------------------------------------------------------


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bodies=st.lists(_body, min_size=15, max_size=15))
async def test_hostile_bodies_never_get_a_5xx(gateway, fake, bodies):
    """Over real HTTP, both routes: a 200 (what was accepted was served) or an Anthropic 400."""
    fake.default = answer({"content": "ok"})
    client = await gateway()  # one gateway per example, 15 bodies each
    for body in bodies:
        for path in ("/v1/messages", "/v1/messages/count_tokens"):
            resp = await client.post(path, json={**body, "stream": False} if "stream" in body else body)
            assert resp.status in (200, 400), (path, body, await resp.text())
            data = await resp.json()
            if resp.status == 400:
                assert data["type"] == "error" and data["error"]["type"] == "invalid_request_error", data
