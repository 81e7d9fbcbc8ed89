"""Usage read from answers and streams (pure): each provider's shape, the stream tap that hides the
usage chunk from clients that did not ask, the request asking every upstream for usage, estimates."""
from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.chat import parse_chat_request
from gateway.config import ProviderConfig
from gateway.context import Usage
from gateway.providers.openai import build_request
from gateway.sse import DONE
from gateway.usage.answer import answer_usage, usage_from
from gateway.usage.estimate import PendingUsage
from gateway.usage.stream import SAMPLE_BYTES, StreamTap, upstream_stream_options, wants_usage


def u(usage: Usage | None) -> tuple | None:
    if usage is None:
        return None
    return (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, usage.reasoning_tokens,
            usage.estimated)


@pytest.mark.parametrize(
    "obj, expected",
    [
        # OpenAI / Synthetic
        ({"usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}}, (10, 3, 0, 0, False)),
        # Cerebras (with its time_info) and Z.ai: cached tokens in prompt_tokens_details
        ({"usage": {"prompt_tokens": 22, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 16}},
          "time_info": {"queue_time": 0.1}}, (22, 3, 16, 0, False)),
        # reasoning in completion_tokens_details
        ({"usage": {"prompt_tokens": 5, "completion_tokens": 50,
                    "completion_tokens_details": {"reasoning_tokens": 40}}}, (5, 50, 0, 40, False)),
        # straight in usage (some servers)
        ({"usage": {"prompt_tokens": 5, "completion_tokens": 9, "cached_tokens": 2, "reasoning_tokens": 4}},
         (5, 9, 2, 4, False)),
        # llama.cpp: usage wins over timings
        ({"usage": {"prompt_tokens": 21, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 20}},
          "timings": {"cache_n": 20, "prompt_n": 1, "predicted_n": 5}}, (21, 5, 20, 0, False)),
        # llama.cpp stream not asked for usage: timings only
        ({"timings": {"cache_n": 20, "prompt_n": 1, "predicted_n": 5}}, (21, 5, 20, 0, False)),
        # nothing to read
        ({"usage": None}, None),
        ({"usage": {}}, None),
        ({"choices": []}, None),
        ("usage", None),
        (None, None),
        # hostile numbers count as 0
        ({"usage": {"prompt_tokens": -5, "completion_tokens": "7", "prompt_tokens_details": None}},
         (0, 0, 0, 0, False)),
        ({"usage": {"prompt_tokens": True, "completion_tokens": 2.0}}, (0, 2, 0, 0, False)),
    ],
)
def test_usage_from(obj, expected):
    assert u(usage_from(obj)) == expected


def test_answer_usage_reads_the_body_or_estimates_its_text():
    body = orjson.dumps({"choices": [{"message": {"content": "hi"}}],
                         "usage": {"prompt_tokens": 7, "completion_tokens": 2}})
    assert u(answer_usage(body, {})) == (7, 2, 0, 0, False)
    no_usage = orjson.dumps({"choices": [{"message": {"content": "x" * 400, "reasoning_content": "y" * 40}}]})
    payload = {"messages": [{"role": "user", "content": "hello there"}]}
    estimate = answer_usage(no_usage, payload, prompt_bytes=400)
    assert isinstance(estimate, PendingUsage) and estimate.estimated
    assert (estimate.prompt_tokens, estimate.completion_tokens, estimate.reasoning_tokens) == (100, 110, 10)
    refined = estimate.refined()
    assert refined.estimated and 0 < refined.prompt_tokens < 20
    assert 0 < refined.reasoning_tokens < refined.completion_tokens <= 440
    assert isinstance(answer_usage(b"not json", {}), PendingUsage)


# ---- the stream tap ---------------------------------------------------------------------------------


def event(obj: dict) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def content(text: str, **extra) -> bytes:
    return event({"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text}}],
                  **extra})


USAGE = {"prompt_tokens": 12, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 4}}
USAGE_ONLY = event({"id": "c", "object": "chat.completion.chunk", "choices": [], "usage": USAGE})
FINISH = event({"id": "c", "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": USAGE,
                "time_info": {"total_time": 0.01}})
FINISH_BARE = event({"id": "c", "object": "chat.completion.chunk",
                     "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                     "time_info": {"total_time": 0.01}})


def parsed(*chunks: bytes) -> list:
    """Each event of the chunks, its JSON parsed (``[DONE]`` as it is), in order."""
    events = [e for c in chunks for e in c.split(b"\n\n") if e]
    return [e if e == b"data: [DONE]" else orjson.loads(e[6:]) for e in events]


def tap(strip: bool = True, **kw) -> StreamTap:
    return StreamTap({"messages": [{"role": "user", "content": "hi"}]}, strip=strip, **kw)


@pytest.mark.parametrize(
    "chunks, strip, sent",
    [
        # OpenAI / llama.cpp: a chunk of its own, dropped when the client did not ask ...
        ([content("a"), USAGE_ONLY, DONE], True, [content("a"), b"", DONE]),
        # ... passed through when it did
        ([content("a"), USAGE_ONLY, DONE], False, [content("a"), USAGE_ONLY, DONE]),
        # Cerebras / Z.ai: on the finish chunk, which loses only its usage field
        ([content("a"), FINISH, DONE], True, [content("a"), FINISH_BARE, DONE]),
        ([content("a"), FINISH, DONE], False, [content("a"), FINISH, DONE]),
        # several events in one network read
        ([content("a") + USAGE_ONLY + DONE], True, [content("a") + DONE]),
        ([content("a") + FINISH + DONE], True, [content("a") + FINISH_BARE + DONE]),
    ],
)
def test_the_usage_chunk_is_read_and_hidden_unless_asked(chunks, strip, sent):
    t = tap(strip)
    out = [t.feed(c) for c in chunks]
    assert [parsed(c) for c in out] == [parsed(c) for c in sent]
    assert u(t.finish()) == (12, 3, 4, 0, False)


def test_chunks_without_usage_pass_as_the_same_bytes():
    t = tap()
    c = content("no usage here")
    assert t.feed(c) is c
    trick = content("usage")  # the word as content: parsed, found to be no usage, passed unchanged
    assert t.feed(trick) is trick
    assert t.usage is None


def test_null_usage_on_every_chunk_is_removed_without_parsing_or_kept_when_asked():
    c = content("a", usage=None)
    assert b'"usage":null' in c
    stripped = tap(True).feed(c)
    assert orjson.loads(stripped[6:]) == orjson.loads(content("a")[6:])
    assert tap(False).feed(c) is c


def test_llama_cpp_timings_are_read_when_no_usage_came():
    t = tap()
    final = event({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}],
                   "timings": {"cache_n": 20, "prompt_n": 1, "predicted_n": 5}})
    for c in (content("a"), final, DONE):
        t.feed(c)
    assert u(t.finish()) == (21, 5, 20, 0, False)


def test_a_stream_without_usage_gets_an_estimate_of_everything_generated():
    t = tap(prompt_tokens=42)
    t.feed(event({"choices": [{"index": 0, "delta": {"reasoning_content": "r" * 40}}]}))
    t.feed(content("c" * 40))
    t.feed(event({"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "function": {"name": "read_file", "arguments": '{"path": "a.py"}'}}]}}]}))
    estimate = t.finish()
    assert isinstance(estimate, PendingUsage) and estimate.estimated
    assert estimate.prompt_tokens == 42  # routing's estimate, when it made one
    assert estimate.completion_tokens == -(-(40 + 40 + len("read_file") + len('{"path": "a.py"}')) // 4)
    assert estimate.reasoning_tokens == 10
    refined = estimate.refined()
    assert refined.prompt_tokens == 42 and refined.reasoning_tokens > 0
    assert refined.completion_tokens > refined.reasoning_tokens


def test_a_long_stream_keeps_a_sample_and_scales_the_estimate():
    t = tap()
    c = content("word " * 20)
    n = 3 * SAMPLE_BYTES // len(c)
    for _ in range(n):
        t.feed(c)
    assert t.kept_bytes < SAMPLE_BYTES + len(c)  # memory is bounded, whatever the length
    estimate = t.finish()
    whole = n * 100  # characters generated
    assert abs(estimate.completion_tokens - whole / 4) < 0.05 * whole / 4
    refined = estimate.refined()
    assert abs(refined.completion_tokens - n * 20) < 0.05 * n * 20  # "word " is one token


@settings(max_examples=200, deadline=None)
@given(
    texts=st.lists(st.text(max_size=12), max_size=8),
    groups=st.lists(st.integers(min_value=1, max_value=4), max_size=20),
    on_finish=st.booleans(),
)
def test_any_grouping_of_events_gives_the_client_its_stream_and_the_ledger_the_usage(texts, groups, on_finish):
    events = [content(x) for x in texts] + [FINISH if on_finish else USAGE_ONLY, DONE]
    chunks, i = [], 0
    for g in groups + [len(events)]:
        if i >= len(events):
            break
        chunks.append(b"".join(events[i:i + g]))
        i += g
    t = tap(True)
    out = b"".join(t.feed(c) for c in chunks)
    expected = [content(x) for x in texts] + ([FINISH_BARE] if on_finish else []) + [DONE]
    assert parsed(out) == parsed(*expected)
    assert u(t.finish()) == (12, 3, 4, 0, False)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=80) | st.sampled_from([b'"usage"', b'data: {"usage":', b'"usage":null',
                                                          b'data: {"usage": 5, "choices": []}\n\n']), max_size=6))
def test_hostile_bytes_never_break_the_tap(parts):
    t = tap(True)
    for part in parts:
        t.feed(part)
    t.finish()


# ---- every stream asks the upstream for usage --------------------------------------------------------

CFG = ProviderConfig("local", "http://x/v1", (), "glm-local", frozenset({"glm-local"}))
CAPPED = ProviderConfig("cerebras", "http://x/v1", (), "zai-glm-4.7", frozenset({"zai-glm-4.7"}),
                        max_completion_tokens=100)
MSG = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    "cfg, fields, sent_options",
    [
        (CFG, {"model": "glm-local", "stream": True}, {"include_usage": True}),
        (CFG, {"model": "glm-local", "stream": True, "stream_options": {"include_usage": False}},
         {"include_usage": True}),
        (CFG, {"model": "glm-local", "stream": True, "stream_options": {"continuous_usage_stats": True}},
         {"continuous_usage_stats": True, "include_usage": True}),
        (CFG, {"model": "glm-local", "stream": True, "stream_options": None}, {"include_usage": True}),
        (CAPPED, {"model": "gpt-4o", "stream": True}, {"include_usage": True}),  # with other changes
        (CFG, {"model": "glm-local"}, None),  # not a stream: nothing added
    ],
)
def test_build_request_asks_every_stream_for_usage(cfg, fields, sent_options):
    req = parse_chat_request(orjson.dumps({"messages": MSG, **fields}))
    sent = orjson.loads(build_request(cfg, req))
    assert sent.get("stream_options") == sent_options
    assert sent["messages"] == MSG and sent.get("stream") == fields.get("stream")


def test_a_client_that_asked_is_forwarded_byte_for_byte():
    raw = orjson.dumps({"messages": MSG, "model": "glm-local", "stream": True,
                        "stream_options": {"include_usage": True}})
    req = parse_chat_request(raw)
    assert build_request(CFG, req) is req.raw
    assert wants_usage(req.payload) and upstream_stream_options(req.payload) is None


def test_the_added_option_keeps_the_clients_bytes():
    raw = b'{"messages": [{"role": "user", "content": "h\\u00e9"}], "model": "glm-local", "stream": true}  \n'
    body = build_request(CFG, parse_chat_request(raw))
    assert body.startswith(raw.rstrip()[:-1])  # the client's bytes, then the option
    assert orjson.loads(body) == {**orjson.loads(raw), "stream_options": {"include_usage": True}}
