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
    ({"messages": [{"role": r, "content": "x"} for r in ("system", "developer", "user", "assistant", "tool")]}, False),
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
