"""Drafts' requests (pure), the slot count's caching, and a served draft as JSON or SSE (pure)."""
from __future__ import annotations

import asyncio

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.sse import DONE, SSESplitter, event_data
from gateway.strategy.drafts import Drafter, draft_payload, variants
from gateway.strategy.slots import props_url, total_slots
from gateway.strategy.synth import answer_body, stream_events
from tests.fake_local import body_of, call

CHAT = {"model": "glm-gateway/speculative", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("extra, cap, cut_by_gateway", [
    ({}, 512, True),
    ({"max_tokens": 100}, 100, False),  # the client's own cap, smaller
    ({"max_completion_tokens": 100, "max_tokens": 900}, 100, False),
    ({"max_tokens": 5000}, 512, True),
    ({"max_tokens": 512}, 512, False),
    ({"max_tokens": 0}, 512, True),  # (not a cap)
])
def test_draft_payload_caps(extra, cap, cut_by_gateway):
    body, cut = draft_payload({**CHAT, **extra}, 512)
    assert (body["max_tokens"], cut) == (cap, cut_by_gateway)
    assert "max_completion_tokens" not in body


def test_draft_payload_is_a_non_streamed_request_with_logprobs():
    payload = {**CHAT, "stream": True, "stream_options": {"include_usage": True}, "n": 1, "tools": [1],
               "prediction": {"type": "content", "content": "x"}, "temperature": 0.3}
    body, _ = draft_payload(payload, 64)
    assert body == {"model": "glm-gateway/speculative", "messages": CHAT["messages"], "tools": [1],
                    "temperature": 0.3, "max_tokens": 64, "logprobs": True, "top_logprobs": 1}
    assert payload["stream"] is True  # the client's request is left as it was


@pytest.mark.parametrize("extra, top", [({}, 1), ({"logprobs": True, "top_logprobs": 5}, 5),
                                        ({"logprobs": False, "top_logprobs": 5}, 1),
                                        ({"logprobs": True, "top_logprobs": 0}, 1)])
def test_draft_asks_at_least_one_top_logprob(extra, top):
    # llama.cpp sends no log-probabilities at all with top_logprobs 0
    assert draft_payload({**CHAT, **extra}, 64)[0]["top_logprobs"] == top


@pytest.mark.parametrize("payload, n, seed, expected", [
    ({}, 1, 9, [{}]),
    ({}, 3, 9, [{"seed": 9, "temperature": 0.2}, {"seed": 10, "temperature": 0.5}, {"seed": 11, "temperature": 0.8}]),
    ({"seed": 40, "temperature": 1.0}, 3, 9,
     [{"seed": 40, "temperature": 1.0}, {"seed": 41, "temperature": 1.3}, {"seed": 42, "temperature": 1.5}]),
    ({"temperature": True}, 2, 0, [{"seed": 0, "temperature": 0.2}, {"seed": 1, "temperature": 0.5}]),
    ({"seed": 2**31 - 1}, 2, 0, [{"seed": 2**31 - 1, "temperature": 0.2}, {"seed": 0, "temperature": 0.5}]),
])
def test_variants_differ_by_seed_and_temperature(payload, n, seed, expected):
    assert variants(payload, n, seed) == expected


@pytest.mark.parametrize("props, slots", [({"total_slots": 4}, 4), ({"total_slots": 0}, None),
                                          ({"total_slots": "4"}, None), ({"total_slots": True}, None), ({}, None),
                                          ([], None)])
def test_total_slots(props, slots):
    assert total_slots(props) == slots


@pytest.mark.parametrize("base, url", [("http://h:8080/v1", "http://h:8080/props"),
                                       ("http://h:8080", "http://h:8080/props")])
def test_props_url(base, url):
    assert props_url(base) == url


async def test_slots_are_read_once_per_minute_and_shared():
    now = [0.0]
    calls = []
    gate = asyncio.Event()

    async def probe():
        calls.append(now[0])
        await gate.wait()
        return 4

    drafter = Drafter(None, max_tokens=8, timeout=1.0, slots=probe, clock=lambda: now[0])  # type: ignore[arg-type]
    waiting = [asyncio.ensure_future(drafter.slots()) for _ in range(5)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*waiting) == [4] * 5
    assert calls == [0.0]  # five callers, one read
    now[0] = 59.0
    assert await drafter.slots() == 4 and calls == [0.0]
    now[0] = 61.0
    assert await drafter.slots() == 4 and calls == [0.0, 61.0]


async def test_a_server_that_cannot_say_runs_one_draft():
    async def probe():
        raise OSError("refused")

    drafter = Drafter(None, max_tokens=8, timeout=1.0, slots=probe)  # type: ignore[arg-type]
    assert await drafter.slots() == 1


def replay(events: list[bytes], id_prefix: str = "chatcmpl-local") -> tuple[str, list[dict], str | None, dict | None]:
    """What a client's SDK assembles from the events: content, tool calls, finish reason, usage."""
    content, calls, finish, usage = "", {}, None, None
    splitter = SSESplitter()
    got = splitter.feed(b"".join(events))
    assert b"".join(got) == b"".join(events) and splitter.tail() == b""  # whole, well-framed events
    assert got[-1] == DONE and sum(e == DONE for e in got) == 1
    for e in got[:-1]:
        chunk = orjson.loads(event_data(e))
        assert chunk["object"] == "chat.completion.chunk" and chunk["id"].startswith(id_prefix)
        if chunk.get("usage"):
            usage = chunk["usage"]
        for c in chunk["choices"]:
            delta = c["delta"]
            content += delta.get("content") or ""
            for tc in delta.get("tool_calls") or []:
                slot = calls.setdefault(tc["index"], {"id": tc.get("id"), "name": "", "arguments": ""})
                slot["name"] += tc["function"].get("name") or ""
                slot["arguments"] += tc["function"].get("arguments") or ""
            finish = c["finish_reason"] or finish
    return content, [calls[i] for i in sorted(calls)], finish, usage


def test_stream_events_of_an_answer():
    body = body_of("the answer is 42", -0.1, "stop", None, "glm-local", True)
    content, calls, finish, usage = replay(stream_events(body, {"stream": True}))
    assert (content, calls, finish, usage) == ("the answer is 42", [], "stop", None)


def test_stream_events_of_tool_calls_with_usage():
    tool_calls = [call("read_file", {"path": "a.py"}, "call_a"), call("list_dir", {}, "call_b")]
    body = body_of(None, -0.1, "tool_calls", tool_calls, "glm-local", True)
    content, calls, finish, usage = replay(stream_events(body, {"stream_options": {"include_usage": True}}))
    assert content == "" and finish == "tool_calls"
    assert calls == [{"id": "call_a", "name": "read_file", "arguments": '{"path":"a.py"}'},
                     {"id": "call_b", "name": "list_dir", "arguments": "{}"}]
    assert usage == body["usage"]


def test_logprobs_reach_the_client_only_when_it_asked():
    body = body_of("a b", -0.1, "stop", None, "glm-local", True)
    assert "logprobs" not in orjson.loads(answer_body(body, {}))["choices"][0]
    asked = orjson.loads(answer_body(body, {"logprobs": True}))
    assert asked["choices"][0]["logprobs"] == body["choices"][0]["logprobs"]
    streamed = [orjson.loads(event_data(e)) for e in stream_events(body, {"logprobs": True})[:-1]]
    assert [c["choices"][0]["logprobs"] for c in streamed if c["choices"][0]["delta"].get("content")] == [
        body["choices"][0]["logprobs"]]
    plain = [orjson.loads(event_data(e)) for e in stream_events(body, {})[:-1]]
    assert all(c["choices"][0]["logprobs"] is None for c in plain)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=20)


@given(st.fixed_dictionaries({"choices": st.lists(st.fixed_dictionaries({}, optional={
    "message": st.fixed_dictionaries({}, optional={"content": JSON, "tool_calls": JSON, "reasoning_content": JSON}),
    "finish_reason": st.sampled_from([None, "stop", "length", "tool_calls"])}), min_size=1, max_size=2)},
    optional={"id": st.text(max_size=5), "usage": JSON}), JSON)
def test_any_answer_streams_as_well_formed_events(body, payload):
    events = stream_events(body, payload if isinstance(payload, dict) else {})
    assert events[-1] == DONE
    for e in events[:-1]:
        assert e.startswith(b"data: {") and e.endswith(b"\n\n") and b"\n\n" not in e[:-2]
        assert orjson.loads(event_data(e))["object"] == "chat.completion.chunk"
