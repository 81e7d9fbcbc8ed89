"""The stream state machine: OpenAI chunks in, Anthropic's exact event sequence out."""
from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.anthropic.stream import PING, StreamTranslator
from gateway.anthropic.translate import SIGNATURE

M = "claude-sonnet-4-5"


def chunk(delta=None, finish=None, usage=None, choices=True, **extra):
    obj = {"id": "chatcmpl-9", "object": "chat.completion.chunk", "model": "zai-glm-4.7", **extra}
    obj["choices"] = [{"index": 0, "delta": delta or {}, "finish_reason": finish}] if choices else []
    if usage is not None:
        obj["usage"] = usage
    return orjson.dumps(obj)


def run(datas, stops=(), end=True):
    t = StreamTranslator(M, stops, input_tokens=0)
    out = []
    for d in datas:
        out += t.feed(d)
    if end:
        out += t.finish()
    return t, [parse(e) for e in out]


def parse(raw: bytes):
    head, data = raw.split(b"\n", 1)
    assert head.startswith(b"event: ") and data.startswith(b"data: ") and raw.endswith(b"\n\n")
    obj = orjson.loads(data[6:])
    assert obj["type"] == head[7:].decode()  # the SSE event name is the data's type
    return obj


START = {"type": "message_start", "message": {
    "id": "msg_chatcmpl-9", "type": "message", "role": "assistant", "model": "zai-glm-4.7", "content": [],
    "stop_reason": None, "stop_sequence": None,
    "usage": {"input_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 0}}}
STOP = {"type": "message_stop"}
USAGE = {"prompt_tokens": 20, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 8}}
FINAL_USAGE = {"input_tokens": 12, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 8, "output_tokens": 5}


def start(i, block):
    return {"type": "content_block_start", "index": i, "content_block": block}


def delta(i, d):
    return {"type": "content_block_delta", "index": i, "delta": d}


def stop(i):
    return {"type": "content_block_stop", "index": i}


def end(reason, usage=FINAL_USAGE, sequence=None):
    return {"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": sequence}, "usage": usage}


TEXT = {"type": "text", "text": ""}
THINK = {"type": "thinking", "thinking": "", "signature": ""}
SIG = {"type": "signature_delta", "signature": SIGNATURE}

CASES = [
    ("text, then usage in its own chunk, then [DONE]",
     [chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}), chunk({"content": "lo"}),
      chunk(finish="stop"), chunk(choices=False, usage=USAGE), b"[DONE]"],
     (), [START, start(0, TEXT), delta(0, {"type": "text_delta", "text": "Hel"}),
          delta(0, {"type": "text_delta", "text": "lo"}), stop(0), end("end_turn"), STOP]),
    ("reasoning (both spellings), then text",
     [chunk({"reasoning_content": "let me"}), chunk({"reasoning": " think"}), chunk({"content": "42"}),
      chunk(finish="stop", usage=USAGE)],
     (), [START, start(0, THINK), delta(0, {"type": "thinking_delta", "thinking": "let me"}),
          delta(0, {"type": "thinking_delta", "thinking": " think"}), delta(0, SIG), stop(0),
          start(1, TEXT), delta(1, {"type": "text_delta", "text": "42"}), stop(1), end("end_turn"), STOP]),
    ("text then two tool calls, arguments in fragments",
     [chunk({"content": "Reading."}),
      chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                             "function": {"name": "read", "arguments": ""}}]}),
      chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"path":'}}]}),
      chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"a.py"}'}}]}),
      chunk({"tool_calls": [{"index": 1, "id": "call_b", "function": {"name": "ls", "arguments": "{}"}}]}),
      chunk(finish="tool_calls", usage=USAGE)],
     (), [START, start(0, TEXT), delta(0, {"type": "text_delta", "text": "Reading."}), stop(0),
          start(1, {"type": "tool_use", "id": "call_a", "name": "read", "input": {}}),
          delta(1, {"type": "input_json_delta", "partial_json": '{"path":'}),
          delta(1, {"type": "input_json_delta", "partial_json": '"a.py"}'}), stop(1),
          start(2, {"type": "tool_use", "id": "call_b", "name": "ls", "input": {}}),
          delta(2, {"type": "input_json_delta", "partial_json": "{}"}), stop(2), end("tool_use"), STOP]),
    ("calls all numbered 0, told apart by id; whole arguments at once",
     [chunk({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "a", "arguments": '{"x":1}'}}]}),
      chunk({"tool_calls": [{"index": 0, "id": "c2", "function": {"name": "b", "arguments": {"y": 2}}}]}),
      chunk(finish="stop", usage=USAGE)],
     (), [START, start(0, {"type": "tool_use", "id": "c1", "name": "a", "input": {}}),
          delta(0, {"type": "input_json_delta", "partial_json": '{"x":1}'}), stop(0),
          start(1, {"type": "tool_use", "id": "c2", "name": "b", "input": {}}),
          delta(1, {"type": "input_json_delta", "partial_json": '{"y":2}'}), stop(1), end("tool_use"), STOP]),
    ("length", [chunk({"content": "ab"}, finish="length", usage=USAGE)], (),
     [START, start(0, TEXT), delta(0, {"type": "text_delta", "text": "ab"}), stop(0), end("max_tokens"), STOP]),
    ("stop sequence named by the upstream",
     [chunk({"content": "ab"}), orjson.dumps({"id": "chatcmpl-9", "model": "zai-glm-4.7", "choices": [
         {"index": 0, "delta": {}, "finish_reason": "stop", "stop_reason": "END"}], "usage": USAGE})], ("END",),
     [START, start(0, TEXT), delta(0, {"type": "text_delta", "text": "ab"}), stop(0),
      end("stop_sequence", sequence="END"), STOP]),
    ("no usage from the upstream: output estimated from the characters", [chunk({"content": "abcdefg"}),
                                                                          chunk(finish="stop")], (),
     [START, start(0, TEXT), delta(0, {"type": "text_delta", "text": "abcdefg"}), stop(0),
      end("end_turn", {"input_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                       "output_tokens": 3}), STOP]),
    ("junk and other choices are skipped",
     [b"not json", b"[1]", chunk({"content": "x"}),
      orjson.dumps({"choices": [{"index": 1, "delta": {"content": "other"}}]}), chunk(finish="stop", usage=USAGE)],
     (), [START, start(0, TEXT), delta(0, {"type": "text_delta", "text": "x"}), stop(0), end("end_turn"), STOP]),
]


@pytest.mark.parametrize("name,datas,stops,expected", CASES, ids=[c[0] for c in CASES])
def test_event_sequences(name, datas, stops, expected):
    _, events = run(datas, stops)
    assert events == expected


def test_done_ends_the_message_once():
    t = StreamTranslator(M)
    t.feed(chunk({"content": "x"}))
    assert [parse(e)["type"] for e in t.feed(b"[DONE]")] == [
        "content_block_stop", "message_delta", "message_stop"]
    assert t.ended and t.feed(chunk({"content": "late"})) == [] and t.finish() == []


def test_an_error_chunk_ends_the_stream_with_an_error_event():
    t = StreamTranslator(M)
    first = [parse(e) for e in t.feed(chunk({"content": "x"}))]
    assert [e["type"] for e in first] == ["message_start", "content_block_start", "content_block_delta"]
    events = [parse(e) for e in t.feed(orjson.dumps({"error": {"message": "overloaded", "type": "server_error"}}))]
    assert events == [{"type": "error", "error": {"type": "api_error",
                                                  "message": "upstream stream failed: overloaded"}}]
    assert t.failed == "upstream stream failed: overloaded" and t.finish() == []


def test_finish_before_anything_still_starts_the_message():
    t = StreamTranslator(M, input_tokens=7)
    events = [parse(e) for e in t.finish()]
    assert [e["type"] for e in events] == ["message_start", "message_delta", "message_stop"]
    assert events[0]["message"]["model"] == M and events[0]["message"]["usage"]["input_tokens"] == 7


def test_ping_is_an_anthropic_event():
    assert parse(PING) == {"type": "ping"}


_delta = st.fixed_dictionaries({}, optional={
    "content": st.text(max_size=3) | st.none() | st.integers(-5, 5),
    "reasoning_content": st.text(max_size=3) | st.none(),
    "tool_calls": st.lists(st.fixed_dictionaries({}, optional={
        "index": st.integers(0, 2) | st.none() | st.text(max_size=1),
        "id": st.sampled_from(["a", "b", "", None]),
        "function": st.fixed_dictionaries({}, optional={"name": st.text(max_size=2) | st.none(),
                                                        "arguments": st.text(max_size=3) | st.none()})}),
        max_size=2) | st.integers(-5, 5),
})
_chunk = st.builds(lambda d, f: chunk(d, finish=f), _delta, st.sampled_from([None, "stop", "length", "tool_calls"]))


@settings(max_examples=300, deadline=None)
@given(st.lists(_chunk | st.sampled_from([b"[DONE]", b"{}", b"null", b'{"choices": 5}']), max_size=12))
def test_any_chunk_sequence_gives_a_well_formed_event_sequence(datas):
    """Blocks open and close in order, indexes count up from 0, deltas go to open (or earlier
    tool) blocks, and the message starts once and ends once."""
    _, events = run(datas)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds.count("message_start") == 1 and kinds.count("message_stop") == 1
    open_index, next_index, tools = None, 0, set()
    for e in events[1:-2]:
        if e["type"] == "content_block_start":
            assert open_index is None and e["index"] == next_index
            open_index, next_index = e["index"], next_index + 1
            if e["content_block"]["type"] == "tool_use":
                tools.add(e["index"])
        elif e["type"] == "content_block_delta":
            assert e["index"] == open_index or (e["index"] in tools and e["delta"]["type"] == "input_json_delta")
        else:
            assert e["type"] == "content_block_stop" and e["index"] == open_index
            open_index = None
    assert open_index is None
