"""Table tests of the pure Anthropic <-> OpenAI translation, both directions, exact outputs."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.anthropic import count
from gateway.anthropic.translate import (
    BAD_ARGUMENTS,
    SIGNATURE,
    from_openai,
    load_body,
    stop_reason_for,
    to_openai,
    tool_input,
    usage_for,
)
from gateway.errors import BadGateway, InvalidRequest

M = "claude-sonnet-4-5"


def req(messages, **extra):
    return {"model": M, "max_tokens": 100, "messages": messages, **extra}


def user(content):
    return {"role": "user", "content": content}


def assistant(content):
    return {"role": "assistant", "content": content}


HI = [user("hi")]
TOOL_USE = {"type": "tool_use", "id": "toolu_1", "name": "read", "input": {"path": "a.py"}}
CALL = {"id": "toolu_1", "type": "function", "function": {"name": "read", "arguments": '{"path":"a.py"}'}}

# ---- request: Anthropic -> OpenAI ---------------------------------------------------------------

REQUESTS = [
    ("plain string", req(HI), {"model": M, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}),
    ("system string", req(HI, system="be brief"),
     {"model": M, "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
      "max_tokens": 100}),
    ("system blocks joined, cache_control ignored",
     req(HI, system=[{"type": "text", "text": "one"},
                     {"type": "text", "text": "two", "cache_control": {"type": "ephemeral"}}]),
     {"model": M, "messages": [{"role": "system", "content": "one\n\ntwo"}, {"role": "user", "content": "hi"}],
      "max_tokens": 100}),
    ("empty system dropped", req(HI, system=""),
     {"model": M, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}),
    ("text blocks joined", req([user([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}])]),
     {"model": M, "messages": [{"role": "user", "content": "a\n\nb"}], "max_tokens": 100}),
    ("consecutive user turns merged", req([user("a"), user([{"type": "text", "text": "b"}])]),
     {"model": M, "messages": [{"role": "user", "content": "a\n\nb"}], "max_tokens": 100}),
    ("image base64 and url",
     req([user([{"type": "text", "text": "see"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA"}},
                {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}])]),
     {"model": M, "messages": [{"role": "user", "content": [
         {"type": "text", "text": "see"},
         {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
         {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}], "max_tokens": 100}),
    ("text document", req([user([{"type": "document", "title": "notes",
                                  "source": {"type": "text", "media_type": "text/plain", "data": "x"}}])]),
     {"model": M, "messages": [{"role": "user", "content": "notes\n\nx"}], "max_tokens": 100}),
    ("tool use then results before the user's text",
     req([user("read a.py"),
          assistant([{"type": "text", "text": "reading"}, TOOL_USE,
                     {"type": "tool_use", "id": "toolu_2", "name": "ls", "input": {}}]),
          user([{"type": "text", "text": "and then?"},
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "print(1)"},
                {"type": "tool_result", "tool_use_id": "toolu_2",
                 "content": [{"type": "text", "text": "a.py"}, {"type": "text", "text": "b.py"}]}])]),
     {"model": M, "max_tokens": 100, "messages": [
         {"role": "user", "content": "read a.py"},
         {"role": "assistant", "content": "reading", "tool_calls": [
             CALL, {"id": "toolu_2", "type": "function", "function": {"name": "ls", "arguments": "{}"}}]},
         {"role": "tool", "tool_call_id": "toolu_1", "content": "print(1)"},
         {"role": "tool", "tool_call_id": "toolu_2", "content": "a.py\nb.py"},
         {"role": "user", "content": "and then?"}]}),
    ("tool use only: content null; error result flagged; empty result",
     req([user("go"), assistant([TOOL_USE]),
          user([{"type": "tool_result", "tool_use_id": "toolu_1", "content": "no such file", "is_error": True}]),
          assistant([{"type": "tool_use", "id": "toolu_3", "name": "ls", "input": {}}]),
          user([{"type": "tool_result", "tool_use_id": "toolu_3"}])]),
     {"model": M, "max_tokens": 100, "messages": [
         {"role": "user", "content": "go"},
         {"role": "assistant", "content": None, "tool_calls": [CALL]},
         {"role": "tool", "tool_call_id": "toolu_1", "content": "[tool error] no such file"},
         {"role": "assistant", "content": None, "tool_calls": [
             {"id": "toolu_3", "type": "function", "function": {"name": "ls", "arguments": "{}"}}]},
         {"role": "tool", "tool_call_id": "toolu_3", "content": ""}]}),
    ("image in a tool result follows in a user message",
     req([user("shot"), assistant([TOOL_USE]),
          user([{"type": "tool_result", "tool_use_id": "toolu_1", "content": [
              {"type": "text", "text": "done"},
              {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "QQ"}}]}])]),
     {"model": M, "max_tokens": 100, "messages": [
         {"role": "user", "content": "shot"},
         {"role": "assistant", "content": None, "tool_calls": [CALL]},
         {"role": "tool", "tool_call_id": "toolu_1", "content": "done"},
         {"role": "user", "content": [
             {"type": "text", "text": "[image from the result of tool call toolu_1]"},
             {"type": "image_url", "image_url": {"url": "data:image/png;base64,QQ"}}]}]}),
    ("thinking -> reasoning_content; redacted dropped; consecutive assistant turns merged",
     req([user("q"), assistant([{"type": "thinking", "thinking": "hmm", "signature": "s"},
                                {"type": "redacted_thinking", "data": "xx"}]),
          assistant([{"type": "text", "text": "answer"}])]),
     {"model": M, "max_tokens": 100, "messages": [
         {"role": "user", "content": "q"},
         {"role": "assistant", "content": "answer", "reasoning_content": "hmm"}]}),
    ("an assistant turn with nothing readable is left out",
     req([user("q"), assistant([{"type": "text", "text": ""}]), user("again")]),
     {"model": M, "max_tokens": 100,
      "messages": [{"role": "user", "content": "q"}, {"role": "user", "content": "again"}]}),
    ("sampling, stop, user, stream",
     req(HI, temperature=0.2, top_p=0.9, top_k=5, stop_sequences=["END", "STOP"], stream=True,
         metadata={"user_id": "u-1"}),
     {"model": M, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100, "stream": True,
      "stream_options": {"include_usage": True}, "stop": ["END", "STOP"], "temperature": 0.2, "top_p": 0.9,
      "user": "u-1"}),
    ("stream false, empty stop list and null metadata user",
     req(HI, stream=False, stop_sequences=[], metadata={"user_id": None}),
     {"model": M, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}),
    ("tools and tool_choice any, serial",
     req(HI, tools=[{"name": "read", "description": "read a file", "input_schema": {"type": "object"},
                     "cache_control": {"type": "ephemeral"}},
                    {"type": "custom", "name": "ls", "input_schema": {"type": "object", "properties": {}}}],
         tool_choice={"type": "any", "disable_parallel_tool_use": True}),
     {"model": M, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100,
      "tools": [{"type": "function", "function": {"name": "read", "description": "read a file",
                                                  "parameters": {"type": "object"}}},
                {"type": "function", "function": {"name": "ls", "parameters": {"type": "object", "properties": {}}}}],
      "tool_choice": "required", "parallel_tool_calls": False}),
    ("tool_choice tool",
     req(HI, tools=[{"name": "read", "input_schema": {}}], tool_choice={"type": "tool", "name": "read"}),
     {"model": M, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100,
      "tools": [{"type": "function", "function": {"name": "read", "parameters": {}}}],
      "tool_choice": {"type": "function", "function": {"name": "read"}}}),
    ("tool_choice auto / none", req(HI, tools=[{"name": "r", "input_schema": {}}], tool_choice={"type": "none"}),
     {"model": M, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100,
      "tools": [{"type": "function", "function": {"name": "r", "parameters": {}}}], "tool_choice": "none"}),
    ("tool_choice without tools is not sent", req(HI, tool_choice={"type": "auto"}),
     {"model": M, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}),
    ("thinking enabled: GLM's default, nothing sent", req(HI, thinking={"type": "enabled", "budget_tokens": 2048}),
     {"model": M, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}),
    ("thinking disabled", req(HI, thinking={"type": "disabled"}),
     {"model": M, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100,
      "thinking": {"type": "disabled"}}),
    ("unknown top-level fields ignored", req(HI, service_tier="auto", container=None),
     {"model": M, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}),
]


@pytest.mark.parametrize("name,body,expected", REQUESTS, ids=[r[0] for r in REQUESTS])
def test_request_translation(name, body, expected):
    assert to_openai(body) == expected


def test_count_tokens_body_needs_no_max_tokens():
    assert to_openai({"model": M, "messages": HI, "stream": True}, for_count=True) == {
        "model": M, "messages": [{"role": "user", "content": "hi"}]}


BAD = [
    ({"messages": HI, "max_tokens": 1}, "model"),
    (req(HI, model=5), "model"),
    ({"model": M, "messages": HI}, "max_tokens"),
    (req(HI, max_tokens=0), "max_tokens"),
    (req(HI, max_tokens=True), "max_tokens"),
    (req(HI, max_tokens="9"), "max_tokens"),
    ({"model": M, "max_tokens": 9}, "messages"),
    (req([]), "messages"),
    (req("hi"), "messages"),
    (req([user([])]), "messages"),
    (req(["hi"]), "messages.0"),
    (req([{"role": "system", "content": "x"}]), "messages.0.role"),
    (req([{"role": "user"}]), "messages.0.content"),
    (req([user(5)]), "messages.0.content"),
    (req([user(["x"])]), "messages.0.content.0"),
    (req([user([{"text": "x"}])]), "messages.0.content.0.type"),
    (req([user([{"type": "text"}])]), "messages.0.content.0.text"),
    (req([user([{"type": "text", "text": 3}])]), "messages.0.content.0.text"),
    (req([user([{"type": "tool_use", "id": "a", "name": "b", "input": {}}])]), "messages.0.content.0.type"),
    (req([user("a"), assistant([{"type": "tool_result", "tool_use_id": "a"}])]), "messages.1.content.0.type"),
    (req([user("a"), assistant([{"type": "tool_use", "name": "b", "input": {}}])]), "messages.1.content.0.id"),
    (req([user("a"), assistant([{"type": "tool_use", "id": "a", "name": "b", "input": []}])]),
     "messages.1.content.0.input"),
    (req([user([{"type": "tool_result"}])]), "messages.0.content.0.tool_use_id"),
    (req([user([{"type": "tool_result", "tool_use_id": "a", "content": 3}])]), "messages.0.content.0.content"),
    (req([user([{"type": "tool_result", "tool_use_id": "a", "content": [{"type": "tool_use"}]}])]),
     "messages.0.content.0.content.0.type"),
    (req([user([{"type": "tool_result", "tool_use_id": "a", "is_error": "yes"}])]), "messages.0.content.0.is_error"),
    (req([user([{"type": "image", "source": {"type": "file", "file_id": "f"}}])]), "messages.0.content.0.source.type"),
    (req([user([{"type": "image"}])]), "messages.0.content.0.source"),
    (req([user([{"type": "image", "source": {"type": "base64", "data": "x"}}])]),
     "messages.0.content.0.source.media_type"),
    (req([user([{"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "x"}}])]),
     "messages.0.content.0.source.type"),
    (req([user([{"type": "server_tool_use"}])]), "messages.0.content.0.type"),
    (req(HI, system=5), "system"),
    (req(HI, system=[{"type": "image"}]), "system.0"),
    (req(HI, stop_sequences="END"), "stop_sequences"),
    (req(HI, stop_sequences=[1]), "stop_sequences"),
    (req(HI, temperature=1.5), "temperature"),
    (req(HI, temperature="hot"), "temperature"),
    (req(HI, top_p=-1), "top_p"),
    (req(HI, top_k=-1), "top_k"),
    (req(HI, stream="yes"), "stream"),
    (req(HI, metadata=[]), "metadata"),
    (req(HI, metadata={"user_id": 5}), "metadata.user_id"),
    (req(HI, tools={}), "tools"),
    (req(HI, tools=[5]), "tools.0"),
    (req(HI, tools=[{"input_schema": {}}]), "tools.0.name"),
    (req(HI, tools=[{"name": "r"}]), "tools.0.input_schema"),
    (req(HI, tools=[{"name": "r", "input_schema": {}, "description": 5}]), "tools.0.description"),
    (req(HI, tools=[{"type": "web_search_20250305", "name": "web_search"}]), "tools.0.type"),
    (req(HI, tool_choice="auto"), "tool_choice"),
    (req(HI, tool_choice={"type": "some"}), "tool_choice.type"),
    (req(HI, tool_choice={"type": "tool"}), "tool_choice.name"),
    (req(HI, tool_choice={"type": "auto", "disable_parallel_tool_use": 1}), "tool_choice.disable_parallel_tool_use"),
    (req(HI, thinking=True), "thinking"),
    (req(HI, thinking={"type": "on"}), "thinking.type"),
    (req(HI, thinking={"type": "enabled", "budget_tokens": "lots"}), "thinking.budget_tokens"),
]


@pytest.mark.parametrize("body,field", BAD, ids=[b[1] + f"-{i}" for i, b in enumerate(BAD)])
def test_bad_requests_name_the_field(body, field):
    with pytest.raises(InvalidRequest) as e:
        to_openai(body)
    assert e.value.status == 400
    assert e.value.param == field
    assert e.value.message.startswith(f"{field}: ")


@pytest.mark.parametrize("raw", [b"", b"  ", b"{", b"[1]", b'"x"', b"null"])
def test_bodies_that_are_not_objects(raw):
    with pytest.raises(InvalidRequest):
        load_body(raw)


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["type", "text", "role", "content", "id", "name", "input", "tool_use_id", "source",
                         "data", "media_type", "url", "is_error", "thinking", "input_schema", "user_id"]),
        inner, max_size=5),
    max_leaves=25,
)
_block_types = st.sampled_from(["text", "image", "tool_use", "tool_result", "thinking", "redacted_thinking",
                                "document", "other"])
_block = st.fixed_dictionaries({"type": _block_types}, optional={
    "text": _json, "id": _json, "name": _json, "input": _json, "tool_use_id": _json, "content": _json,
    "source": _json, "is_error": _json, "thinking": _json})
_message = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", 3])},
                                 optional={"content": st.text(max_size=5) | st.lists(_block, max_size=4) | _json})
_body = st.fixed_dictionaries({}, optional={
    "model": st.just(M) | _json, "max_tokens": st.integers(-1, 5) | _json,
    "messages": st.lists(_message, max_size=4) | _json, "system": _json, "tools": _json, "tool_choice": _json,
    "stop_sequences": _json, "temperature": _json, "top_p": _json, "top_k": _json, "stream": _json,
    "metadata": _json, "thinking": _json})


@settings(max_examples=400, deadline=None)
@given(_body)
def test_hostile_bodies_give_a_translation_or_a_400(body):
    try:
        out = to_openai(body)
    except InvalidRequest as e:
        assert e.status == 400 and e.param and e.message.startswith(e.param)
        return
    assert out["messages"] and out["model"] == body["model"]
    assert count.count_tokens(out, count=len) > 0  # whatever was accepted can be counted


# ---- response: OpenAI -> Anthropic --------------------------------------------------------------


def completion(message, finish="stop", usage=None, **choice):
    return {"id": "chatcmpl-7", "object": "chat.completion", "model": "zai-glm-4.7",
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish, **choice}],
            "usage": usage or {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}}


USAGE = {"input_tokens": 12, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 3}


def message(content, stop_reason="end_turn", stop_sequence=None, usage=USAGE):
    return {"id": "msg_chatcmpl-7", "type": "message", "role": "assistant", "model": "zai-glm-4.7",
            "content": content, "stop_reason": stop_reason, "stop_sequence": stop_sequence, "usage": usage}


RESPONSES = [
    ("text", completion({"content": "hello"}), (), message([{"type": "text", "text": "hello"}])),
    ("reasoning_content (Z.ai, llama.cpp) -> thinking with a signature",
     completion({"content": "4", "reasoning_content": "2+2"}), (),
     message([{"type": "thinking", "thinking": "2+2", "signature": SIGNATURE}, {"type": "text", "text": "4"}])),
    ("reasoning (Cerebras) -> thinking", completion({"content": "4", "reasoning": "adding"}), (),
     message([{"type": "thinking", "thinking": "adding", "signature": SIGNATURE}, {"type": "text", "text": "4"}])),
    ("tool calls", completion({"content": None, "tool_calls": [
        CALL, {"id": "call_2", "type": "function", "function": {"name": "ls", "arguments": ""}}]}, "tool_calls"), (),
     message([{"type": "tool_use", "id": "toolu_1", "name": "read", "input": {"path": "a.py"}},
              {"type": "tool_use", "id": "call_2", "name": "ls", "input": {}}], "tool_use")),
    ("tool calls with finish stop still tool_use", completion({"content": "ok", "tool_calls": [CALL]}), (),
     message([{"type": "text", "text": "ok"}, {"type": "tool_use", "id": "toolu_1", "name": "read",
                                                "input": {"path": "a.py"}}], "tool_use")),
    ("length", completion({"content": "abc"}, "length"), (), message([{"type": "text", "text": "abc"}], "max_tokens")),
    ("vLLM names the stop sequence", completion({"content": "abc"}, stop_reason="END"), ("END",),
     message([{"type": "text", "text": "abc"}], "stop_sequence", "END")),
    ("llama.cpp names the stop word", completion({"content": "abc"}, stopping_word="STOP"), ("END", "STOP"),
     message([{"type": "text", "text": "abc"}], "stop_sequence", "STOP")),
    ("a named stop that was not asked for is end_turn", completion({"content": "abc"}, stop_reason="X"), ("END",),
     message([{"type": "text", "text": "abc"}])),
    ("content parts, cached tokens apart",
     completion({"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                usage={"prompt_tokens": 100, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 60}}),
     (), message([{"type": "text", "text": "ab"}],
                 usage={"input_tokens": 40, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 60,
                        "output_tokens": 7})),
    ("empty answer", completion({"content": ""}), (), message([])),
]


@pytest.mark.parametrize("name,answer,stops,expected", RESPONSES, ids=[r[0] for r in RESPONSES])
def test_response_translation(name, answer, stops, expected):
    assert from_openai(answer, model=M, stop_sequences=stops) == expected


def test_response_without_id_or_model_gets_ours():
    out = from_openai({"choices": [{"message": {"content": "x"}, "finish_reason": "stop"}]}, model=M)
    assert out["model"] == M and out["id"].startswith("msg_") and len(out["id"]) > 10
    assert out["usage"] == {"input_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                            "output_tokens": 0}


@pytest.mark.parametrize("answer", [None, [], {}, {"choices": []}, {"choices": [5]}, {"choices": [{"message": "x"}]}])
def test_answers_that_are_not_completions(answer):
    with pytest.raises(BadGateway):
        from_openai(answer, model=M)


@pytest.mark.parametrize("finish,matched,stops,calls,expected", [
    ("stop", None, (), False, ("end_turn", None)),
    (None, None, (), False, ("end_turn", None)),
    ("length", None, (), True, ("max_tokens", None)),
    ("tool_calls", None, (), False, ("tool_use", None)),
    ("function_call", None, (), False, ("tool_use", None)),
    ("stop", None, (), True, ("tool_use", None)),
    ("content_filter", None, (), False, ("refusal", None)),
    ("stop", "END", ("END",), False, ("stop_sequence", "END")),
    ("stop", 151336, ("END",), False, ("end_turn", None)),
])
def test_stop_reasons(finish, matched, stops, calls, expected):
    assert stop_reason_for(finish, matched, stops, calls) == expected


@pytest.mark.parametrize("arguments,expected", [
    ('{"a": 1}', {"a": 1}),
    ({"a": 1}, {"a": 1}),
    ("", {}),
    ("  ", {}),
    ('{"a": ', {BAD_ARGUMENTS: '{"a": '}),
    ("[1]", {BAD_ARGUMENTS: "[1]"}),
    (None, {BAD_ARGUMENTS: "null"}),
])
def test_tool_input(arguments, expected):
    assert tool_input(arguments) == expected


@pytest.mark.parametrize("usage,expected", [
    (None, (0, 0, 0)),
    ({"prompt_tokens": 10, "completion_tokens": 2}, (10, 0, 2)),
    ({"prompt_tokens": 10, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 4}}, (6, 4, 2)),
    ({"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 40}}, (0, 10, 0)),
    ({"prompt_tokens": -1, "completion_tokens": "2", "prompt_tokens_details": None}, (0, 0, 0)),
])
def test_usage(usage, expected):
    out = usage_for(usage)
    assert (out["input_tokens"], out["cache_read_input_tokens"], out["output_tokens"]) == expected
    assert out["cache_creation_input_tokens"] == 0


# ---- count_tokens -------------------------------------------------------------------------------


def test_count_covers_every_block_tools_and_results_with_the_margin():
    words = lambda text: len(text.split())  # noqa: E731  (a counter whose arithmetic is easy to check)
    base = to_openai(req([user("one two three")]))
    bigger = to_openai(req([user("one two three"), assistant([TOOL_USE]),
                            user([{"type": "tool_result", "tool_use_id": "toolu_1",
                                   "content": "four five six seven"}])],
                           system="eight nine", tools=[{"name": "read", "input_schema": {"type": "object"}}]))
    n_base, n_bigger = count.count_tokens(base, words), count.count_tokens(bigger, words)
    assert n_base == 9  # (4 per message + "user" and 3 words) * 1.1 = 8.8, rounded up
    # the tool result, the call, the system prompt and the tool definition all count
    assert n_bigger > n_base + 4 + 2 + 4
    without_tools = {k: v for k, v in bigger.items() if k != "tools"}
    assert count.count_tokens(without_tools, words) < n_bigger
