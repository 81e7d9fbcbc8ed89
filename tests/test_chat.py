"""parse_chat_request: what passes, and the 400 each malformed request gets."""
import orjson
import pytest

from gateway.chat import parse_chat_request
from gateway.errors import InvalidRequest

USER = {"role": "user", "content": "hi"}


@pytest.mark.parametrize("body, stream", [
    ({"model": "zai-glm-4.7", "messages": [USER]}, False),
    ({"messages": [USER], "stream": True}, True),
    ({"messages": [USER], "stream": None}, False),
    ({"messages": [{"role": r, "content": "x"} for r in ("system", "developer", "user", "assistant")]
      + [{"role": "tool", "content": "x", "tool_call_id": "c"}]}, False),  # OpenAI requires tool_call_id
    ({"messages": [USER], "max_tokens": 10, "max_completion_tokens": 5}, False),
])
def test_accepts(body, stream):
    raw = orjson.dumps(body)
    req = parse_chat_request(raw)
    assert (req.payload, req.stream, req.body()) == (body, stream, raw)  # unchanged bytes go on as they came


@pytest.mark.parametrize("raw, code, param", [
    (b"", "invalid_json", None),
    (b"  \n", "invalid_json", None),
    (b"{not json", "invalid_json", None),
    (b"[1, 2]", "invalid_request", None),
    (b'{"model": "m"}', "invalid_messages", "messages"),
    (b'{"messages": []}', "invalid_messages", "messages"),
    (b'{"messages": "hi"}', "invalid_messages", "messages"),
    (b'{"messages": [{"role": "user", "content": "a"}, "text"]}', "invalid_messages", "messages[1]"),
    (b'{"messages": [{"role": "robot", "content": "a"}]}', "invalid_messages", "messages[0].role"),
    (b'{"messages": [{"content": "a"}]}', "invalid_messages", "messages[0].role"),
    (b'{"messages": [{"role": ["user"], "content": "a"}]}', "invalid_messages", "messages[0].role"),
    (b'{"messages": [{"role": {"x": 1}, "content": "a"}]}', "invalid_messages", "messages[0].role"),
    (b'{"messages": [{"role": "user"}], "model": 5}', "invalid_model", "model"),
    (b'{"messages": [{"role": "user"}], "stream": "yes"}', "invalid_stream", "stream"),
    (b'{"messages": [{"role": "user"}], "max_tokens": 0}', "invalid_max_tokens", "max_tokens"),
    (b'{"messages": [{"role": "user"}], "max_completion_tokens": true}', "invalid_max_tokens", "max_completion_tokens"),
    (b'{"messages": [{"role": "user"}], "max_tokens": 1.5}', "invalid_max_tokens", "max_tokens"),
])
def test_rejects(raw, code, param):
    with pytest.raises(InvalidRequest) as e:
        parse_chat_request(raw)
    assert (e.value.status, e.value.code, e.value.param) == (400, code, param)


# ---- every field, each wrong type or shape: a 400 naming it ---------------------------------------

def body(**fields):
    return {"model": "m", "messages": [USER], **fields}


def chat(*messages, **fields):
    return {"model": "m", "messages": list(messages), **fields}


CALL = {"id": "c1", "type": "function", "function": {"name": "ls", "arguments": "{}"}}
ASSISTANT = {"role": "assistant", "content": None, "tool_calls": [CALL]}
TOOL = {"role": "tool", "tool_call_id": "c1", "content": "out"}
FN_TOOL = {"type": "function", "function": {"name": "ls", "description": "list", "parameters": {"type": "object"}}}

ACCEPTED = [
    # top-level fields, as the OpenAI reference documents them
    body(temperature=0, top_p=1, presence_penalty=-2, frequency_penalty=2, n=1, seed=-3, logprobs=True,
         top_logprobs=20, user="u", parallel_tool_calls=False, reasoning_effort="high", store=True),
    body(temperature=2, top_p=0.5, presence_penalty=1.5, top_logprobs=0, verbosity="low", service_tier="auto",
         safety_identifier="s", prompt_cache_key="k", prompt_cache_retention="24h"),
    body(stop="END"), body(stop=["a", "b"]), body(stop=[]),
    body(logit_bias={"50256": -100, "7": 12.5}), body(metadata={"a": "b"}), body(modalities=["text"]),
    body(stream=True, stream_options={"include_usage": True, "include_obfuscation": False}),
    body(tools=[FN_TOOL, {"type": "function", "function": {"name": "f", "strict": True, "parameters": {}}}]),
    body(tools=[]),
    body(tools=[FN_TOOL], tool_choice="none"), body(tool_choice="auto"), body(tool_choice="required"),
    body(tool_choice={"type": "function", "function": {"name": "ls"}}),
    body(functions=[{"name": "f", "parameters": {"type": "object"}}], function_call={"name": "f"}),
    body(function_call="auto"),
    body(response_format={"type": "text"}), body(response_format={"type": "json_object"}),
    body(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"},
                                                                  "strict": True}}),
    body(prediction={"type": "content", "content": "draft"}),
    body(prediction={"type": "content", "content": [{"type": "text", "text": "draft"}]}),
    body(audio={"voice": "alloy", "format": "mp3"}, web_search_options={}),
    # null means unset, for every optional field
    body(**{k: None for k in (
        "model", "stream", "stream_options", "temperature", "top_p", "presence_penalty", "frequency_penalty", "n",
        "stop", "max_tokens", "max_completion_tokens", "seed", "logprobs", "top_logprobs", "logit_bias", "user",
        "tools", "tool_choice", "parallel_tool_calls", "response_format", "reasoning_effort", "metadata",
        "functions", "function_call", "modalities", "audio", "prediction", "web_search_options", "store")}),
    # unknown fields (provider extensions) pass untouched
    body(top_k=40, min_p=0.05, chat_template_kwargs={"enable_thinking": False}, thinking={"type": "enabled"}),
    # messages of every documented shape
    chat({"role": "user", "content": [{"type": "text", "text": "look"},
                                      {"type": "image_url", "image_url": {"url": "data:x", "detail": "low"}},
                                      {"type": "image_url", "image_url": "https://x/y.png"},
                                      {"type": "input_audio", "input_audio": {"data": "AAA", "format": "wav"}},
                                      {"type": "file", "file": {"file_id": "f1"}},
                                      {"type": "video_url", "video_url": {"url": "v"}}],  # unknown type passes
          "name": "ann"}),
    chat({"role": "system", "content": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}]}),
    chat(USER, ASSISTANT, TOOL),
    chat(USER, {"role": "assistant", "tool_calls": [CALL]}, TOOL),  # content may be absent beside calls
    chat(USER, {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "function": CALL["function"]}]},
         TOOL),  # a call's type may be left out
    chat(USER, {"role": "assistant", "content": None, "tool_calls": [{**CALL, "type": None}]}, TOOL),
    chat(USER, {"role": "assistant", "content": "hi", "tool_calls": []}),  # repair removes the empty list
    chat(USER, {"role": "assistant", "content": "x", "reasoning_content": "because", "refusal": None, "name": "a"}),
    chat(USER, {"role": "assistant", "content": None, "reasoning_content": None, "tool_calls": None}),
    chat(USER, {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]}),
    chat(USER, {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{}"}},
         {"role": "function", "name": "f", "content": "result"}),
    chat(USER, {"role": "assistant", "content": "Sure", "prefix": True}),  # an extension key on a message
    chat({"role": "developer", "content": "d"}, {"role": "tool", "tool_call_id": "c", "content": [
        {"type": "text", "text": "out"}]}),
]


@pytest.mark.parametrize("payload", ACCEPTED)
def test_accepts_every_documented_shape(payload):
    raw = orjson.dumps(payload)
    req = parse_chat_request(raw)
    assert (req.payload, req.modified, req.body()) == (payload, False, raw)


def test_object_arguments_become_their_json_text():
    """Some clients send a call's arguments as an object; every upstream takes OpenAI's string."""
    call = {**CALL, "function": {"name": "ls", "arguments": {"path": "a.py", "n": [1, 2]}}}
    req = parse_chat_request(orjson.dumps(chat(USER, {"role": "assistant", "content": None, "tool_calls": [call]},
                                               TOOL)))
    assert req.modified
    sent = orjson.loads(req.body())
    assert sent["messages"][1]["tool_calls"][0]["function"]["arguments"] == '{"path":"a.py","n":[1,2]}'


BAD_FIELDS = [
    # (field, bad value, the param named)
    *[("model", v, "model") for v in (5, True, [], {})],
    *[("stream", v, "stream") for v in ("yes", 1, 0, [])],
    *[(f, v, f) for f in ("temperature", "top_p", "presence_penalty", "frequency_penalty")
      for v in ("0.5", True, [], {})],
    ("temperature", -0.1, "temperature"), ("temperature", 2.01, "temperature"),
    ("top_p", 1.5, "top_p"), ("top_p", -1, "top_p"),
    ("presence_penalty", 2.5, "presence_penalty"), ("frequency_penalty", -3, "frequency_penalty"),
    *[("n", v, "n") for v in (0, -1, 1.5, True, "2")],
    *[(f, v, f) for f in ("max_tokens", "max_completion_tokens") for v in (0, -5, 1.5, True, "10", [])],
    *[("seed", v, "seed") for v in (1.5, "1", True)],
    *[("logprobs", v, "logprobs") for v in ("true", 1)],
    *[("top_logprobs", v, "top_logprobs") for v in (21, -1, 1.5, True)],
    ("stop", 5, "stop"), ("stop", True, "stop"), ("stop", {}, "stop"),
    ("stop", [1], "stop[0]"), ("stop", ["a", None], "stop[1]"),
    ("logit_bias", [], "logit_bias"), ("logit_bias", "x", "logit_bias"), ("logit_bias", {"abc": 1}, "logit_bias"),
    ("logit_bias", {"1": "x"}, "logit_bias.1"), ("logit_bias", {"1": 101}, "logit_bias.1"),
    ("logit_bias", {"1": True}, "logit_bias.1"),
    *[(f, v, f) for f in ("user", "reasoning_effort", "verbosity", "service_tier", "safety_identifier",
                          "prompt_cache_key", "prompt_cache_retention") for v in (5, [], {}, False)],
    *[(f, v, f) for f in ("parallel_tool_calls", "store") for v in ("false", 0)],
    ("metadata", "x", "metadata"), ("metadata", [], "metadata"), ("metadata", {"k": 5}, "metadata.k"),
    ("metadata", {"k": {"deep": "x"}}, "metadata.k"),
    ("modalities", "text", "modalities"), ("modalities", [1], "modalities[0]"),
    ("stream_options", True, "stream_options"), ("stream_options", [], "stream_options"),
    ("stream_options", {"include_usage": "yes"}, "stream_options.include_usage"),
    ("stream_options", {"include_obfuscation": 1}, "stream_options.include_obfuscation"),
    ("tools", "x", "tools"), ("tools", {}, "tools"), ("tools", [5], "tools[0]"),
    ("tools", [FN_TOOL, {"function": {"name": "f"}}], "tools[1].type"),
    ("tools", [{"type": "custom", "custom": {"name": "x"}}], "tools[0].type"),
    ("tools", [{"type": "function"}], "tools[0].function"),
    ("tools", [{"type": "function", "function": None}], "tools[0].function"),
    ("tools", [{"type": "function", "function": "ls"}], "tools[0].function"),
    ("tools", [{"type": "function", "function": {"description": "d"}}], "tools[0].function.name"),
    ("tools", [FN_TOOL, {"type": "function", "function": {"name": ""}}], "tools[1].function.name"),
    ("tools", [{"type": "function", "function": {"name": 5}}], "tools[0].function.name"),
    ("tools", [{"type": "function", "function": {"name": "f", "description": 5}}], "tools[0].function.description"),
    ("tools", [{"type": "function", "function": {"name": "f", "parameters": "{}"}}], "tools[0].function.parameters"),
    ("tools", [{"type": "function", "function": {"name": "f", "parameters": []}}], "tools[0].function.parameters"),
    ("tools", [{"type": "function", "function": {"name": "f", "strict": "yes"}}], "tools[0].function.strict"),
    ("tool_choice", "always", "tool_choice"), ("tool_choice", 1, "tool_choice"), ("tool_choice", [], "tool_choice"),
    ("tool_choice", {"function": {"name": "f"}}, "tool_choice.type"),
    ("tool_choice", {"type": "tool", "function": {"name": "f"}}, "tool_choice.type"),
    ("tool_choice", {"type": "function"}, "tool_choice.function"),
    ("tool_choice", {"type": "function", "function": {"name": 3}}, "tool_choice.function.name"),
    ("tool_choice", {"type": "function", "function": "f"}, "tool_choice.function"),
    ("functions", {}, "functions"), ("functions", [{"parameters": {}}], "functions[0].name"),
    ("function_call", "required", "function_call"), ("function_call", {"name": None}, "function_call.name"),
    ("response_format", "json", "response_format"), ("response_format", {}, "response_format.type"),
    ("response_format", {"type": "yaml"}, "response_format.type"),
    ("response_format", {"type": 1}, "response_format.type"),
    ("response_format", {"type": "json_schema"}, "response_format.json_schema"),
    ("response_format", {"type": "json_schema", "json_schema": "s"}, "response_format.json_schema"),
    ("response_format", {"type": "json_schema", "json_schema": {"name": 1}}, "response_format.json_schema.name"),
    ("response_format", {"type": "json_schema", "json_schema": {"schema": []}}, "response_format.json_schema.schema"),
    ("prediction", "draft", "prediction"), ("prediction", {"content": "x"}, "prediction.type"),
    ("prediction", {"type": "content"}, "prediction.content"),
    ("prediction", {"type": "content", "content": [{"type": "text", "text": 1}]}, "prediction.content[0].text"),
    *[(f, v, f) for f in ("audio", "web_search_options") for v in ("x", [], 1)],
]


@pytest.mark.parametrize("field, value, param", BAD_FIELDS)
def test_bad_field_is_a_400_naming_it(field, value, param):
    with pytest.raises(InvalidRequest) as e:
        parse_chat_request(orjson.dumps(body(**{field: value})))
    expected_code = "invalid_max_tokens" if field.startswith("max_") else f"invalid_{field}"
    assert (e.value.status, e.value.param, e.value.code) == (400, param, expected_code)
    assert f"'{param}'" in e.value.message


BAD_MESSAGES = [
    # (messages, the param named)
    ([USER, None], "messages[1]"), ([USER, [USER]], "messages[1]"), ([5], "messages[0]"),
    ([{"role": None, "content": "x"}], "messages[0].role"), ([{"role": "", "content": "x"}], "messages[0].role"),
    ([{"role": "User", "content": "x"}], "messages[0].role"),
    ([{"role": "user"}], "messages[0].content"), ([{"role": "system", "content": None}], "messages[0].content"),
    ([{"role": "user", "content": 5}], "messages[0].content"),
    ([{"role": "user", "content": {"text": "x"}}], "messages[0].content"),
    ([{"role": "user", "content": True}], "messages[0].content"),
    ([USER, {"role": "assistant", "content": 5}], "messages[1].content"),
    ([{"role": "user", "content": ["hi"]}], "messages[0].content[0]"),
    ([{"role": "user", "content": [{"text": "x"}]}], "messages[0].content[0].type"),
    ([{"role": "user", "content": [{"type": 1, "text": "x"}]}], "messages[0].content[0].type"),
    ([{"role": "user", "content": [{"type": "text"}]}], "messages[0].content[0].text"),
    ([{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": None}]}],
     "messages[0].content[1].text"),
    ([{"role": "user", "content": [{"type": "image_url"}]}], "messages[0].content[0].image_url"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": 5}]}], "messages[0].content[0].image_url"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"detail": "low"}}]}],
     "messages[0].content[0].image_url.url"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": ["u"]}}]}],
     "messages[0].content[0].image_url.url"),
    ([{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "A"}}]}],
     "messages[0].content[0].input_audio.format"),
    ([{"role": "user", "content": [{"type": "file", "file": {"file_id": 7}}]}],
     "messages[0].content[0].file.file_id"),
    ([{"role": "user", "content": "x", "name": 5}], "messages[0].name"),
    ([{"role": "user", "content": "x", "name": ["a"]}], "messages[0].name"),
    # tool calls
    ([USER, {"role": "assistant", "content": None, "tool_calls": 5}], "messages[1].tool_calls"),
    ([USER, {"role": "assistant", "content": None, "tool_calls": {"id": "c1"}}], "messages[1].tool_calls"),
    ([USER, {"role": "assistant", "content": None, "tool_calls": "calls"}], "messages[1].tool_calls"),
    ([USER, {"role": "assistant", "content": None, "tool_calls": [CALL, 5]}], "messages[1].tool_calls[1]"),
    ([USER, {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": CALL["function"]}]}],
     "messages[1].tool_calls[0].id"),
    *[([USER, {"role": "assistant", "content": None, "tool_calls": [{**CALL, "id": v}]}], "messages[1].tool_calls[0].id")
      for v in (None, 5, ["c1"], {"id": "c1"})],
    ([USER, {"role": "assistant", "content": None, "tool_calls": [{**CALL, "type": "custom"}]}],
     "messages[1].tool_calls[0].type"),
    ([USER, {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function"}]}],
     "messages[1].tool_calls[0].function"),
    ([USER, {"role": "assistant", "content": None, "tool_calls": [{**CALL, "function": "ls"}]}],
     "messages[1].tool_calls[0].function"),
    ([USER, {"role": "assistant", "content": None, "tool_calls": [{**CALL, "function": {"arguments": "{}"}}]}],
     "messages[1].tool_calls[0].function.name"),
    ([USER, {"role": "assistant", "content": None, "tool_calls": [{**CALL, "function": {"name": 5, "arguments": "{}"}}]}],
     "messages[1].tool_calls[0].function.name"),
    ([USER, {"role": "assistant", "content": None, "tool_calls": [{**CALL, "function": {"name": "ls"}}]}],
     "messages[1].tool_calls[0].function.arguments"),
    *[([USER, {"role": "assistant", "content": None, "tool_calls": [CALL, {**CALL, "id": "c2", "function": {
        "name": "ls", "arguments": v}}]}], "messages[1].tool_calls[1].function.arguments")
      for v in (None, 5, True, ["a"])],
    ([USER, {"role": "assistant", "content": None, "reasoning_content": 5}], "messages[1].reasoning_content"),
    ([USER, {"role": "assistant", "content": None, "refusal": {}}], "messages[1].refusal"),
    ([USER, {"role": "assistant", "content": None, "function_call": "f"}], "messages[1].function_call"),
    ([USER, {"role": "assistant", "content": None, "function_call": {"name": "f"}}],
     "messages[1].function_call.arguments"),
    ([USER, {"role": "assistant", "content": None, "audio": "a1"}], "messages[1].audio"),
    # tool and function results
    ([USER, ASSISTANT, {"role": "tool", "content": "out"}], "messages[2].tool_call_id"),
    *[([USER, ASSISTANT, {"role": "tool", "tool_call_id": v, "content": "out"}], "messages[2].tool_call_id")
      for v in (None, 1, ["c1"], {"id": "c1"})],
    ([USER, ASSISTANT, {"role": "tool", "tool_call_id": "c1"}], "messages[2].content"),
    ([USER, ASSISTANT, {"role": "tool", "tool_call_id": "c1", "content": 5}], "messages[2].content"),
    ([USER, {"role": "function", "content": "r"}], "messages[1].name"),
    ([USER, {"role": "function", "name": 1, "content": "r"}], "messages[1].name"),
]


@pytest.mark.parametrize("messages, param", BAD_MESSAGES)
def test_bad_message_is_a_400_naming_it(messages, param):
    with pytest.raises(InvalidRequest) as e:
        parse_chat_request(orjson.dumps(chat(*messages)))
    assert (e.value.status, e.value.param, e.value.code) == (400, param, "invalid_messages")
    assert f"'{param}'" in e.value.message


def nested(depth: int) -> object:
    """``depth`` levels of objects and arrays, alternating, the outermost an object."""
    value: object = 1
    for level in range(depth):
        value = {"k": value} if (depth - level) % 2 else [value]
    return value


@pytest.mark.parametrize("payload, param", [
    (body(thinking=nested(254)), "thinking"),  # 1 (the body) + 254
    (body(tools=[FN_TOOL, {"type": "function", "function": {"name": "f", "parameters": nested(251)}}]),
     "tools[1].function.parameters"),
    (body(response_format={"type": "json_schema", "json_schema": {"schema": nested(252)}}),
     "response_format.json_schema.schema"),
    (chat({"role": "user", "content": [{"type": "text", "text": "x", "cache_control": nested(250)}]}),
     "messages[0].content[0].cache_control"),
    (chat(USER, {"role": "assistant", "content": "x", "extra": nested(252)}), "messages[1].extra"),
    (chat(USER, {"role": "assistant", "content": None, "tool_calls": [{**CALL, "index": nested(250)}]}, TOOL),
     "messages[1].tool_calls[0].index"),
    (chat(USER, {"role": "assistant", "content": None, "tool_calls": [
        {**CALL, "function": {"name": "f", "arguments": nested(255)}}]}, TOOL),
     "messages[1].tool_calls[0].function.arguments"),
    (chat({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u", "x": nested(249)}}]}),
     "messages[0].content[0].image_url.x"),
    (chat({"role": "user", "content": [{"type": "video", "video": nested(250)}]}), "messages[0].content[0].video"),
])
def test_too_deep_is_a_400_naming_where(payload, param):
    """orjson writes 254 levels at most; the gateway re-serialises the body to rewrite the model."""
    import json

    with pytest.raises(InvalidRequest) as e:
        parse_chat_request(json.dumps(payload).encode())
    assert (e.value.status, e.value.param, e.value.code) == (400, param, "nested_too_deep")


@pytest.mark.parametrize("payload", [
    body(thinking=nested(253)),
    body(tools=[{"type": "function", "function": {"name": "f", "parameters": nested(250)}}]),
    chat({"role": "user", "content": [{"type": "text", "text": "x", "cache_control": nested(249)}]}),
    chat(USER, {"role": "assistant", "content": "x", "extra": nested(251)}),
])
def test_as_deep_as_can_be_forwarded_passes(payload):
    req = parse_chat_request(orjson.dumps(payload))
    assert orjson.loads(orjson.dumps({**req.payload, "model": "rewritten"}))["model"] == "rewritten"


DEEP_1000 = b"[" * 1000 + b"]" * 1000  # orjson reads up to 1,024 levels; Python's repr overflows at ~1,000


@pytest.mark.parametrize("template, param", [
    (b'{"messages": [{"role": %s, "content": "x"}]}', "messages[0].role"),
    (b'{"messages": [{"role": "user", "content": "x"}], "tools": [{"type": %s}]}', "tools[0].type"),
    (b'{"messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": %s}}', "tool_choice.type"),
    (b'{"messages": [{"role": "user", "content": "x"}], "response_format": {"type": %s}}', "response_format.type"),
    (b'{"messages": [{"role": "user", "content": "x"}], "temperature": %s}', "temperature"),
    (b'{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [{"id": "a", "type": %s}]}]}',
     "messages[1].tool_calls[0].type"),
])
def test_values_as_deep_as_orjson_reads_are_named_not_printed(template, param):
    """The error names what the value is; the repr of a 1,000-deep array was a RecursionError (500)."""
    with pytest.raises(InvalidRequest) as e:
        parse_chat_request(template % DEEP_1000)
    assert e.value.param == param and "an array" in e.value.message


def test_long_values_and_keys_are_shortened_in_errors():
    with pytest.raises(InvalidRequest) as e:
        parse_chat_request(orjson.dumps(body(tool_choice="x" * 10_000)))
    assert len(e.value.message) < 300
    with pytest.raises(InvalidRequest) as e:
        parse_chat_request(orjson.dumps(body(metadata={"k" * 10_000: 1})))
    assert e.value.param == "metadata." + "k" * 61 + "..."
