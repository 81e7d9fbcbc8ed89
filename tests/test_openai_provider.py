"""Pure parts of the OpenAI-compatible provider: request building and error classification."""
import orjson
import pytest

from gateway.chat import parse_chat_request
from gateway.config import ProviderConfig
from gateway.providers.base import Failure
from gateway.providers.openai import build_request, error_fields, map_error

CFG = ProviderConfig("cerebras", "http://x/v1", (), "zai-glm-4.7", frozenset({"zai-glm-4.7"}), max_completion_tokens=16384)
NOCAP = ProviderConfig("local", "http://x/v1", (), "glm-local", frozenset())
MSG = [{"role": "user", "content": "hi"}]


def req(**fields):
    return parse_chat_request(orjson.dumps({"messages": MSG, **fields}))


@pytest.mark.parametrize(
    "cfg, fields, changed",
    [
        (CFG, {"model": "zai-glm-4.7", "max_tokens": 100}, {}),
        (CFG, {"model": "gpt-4o", "max_tokens": 100}, {"model": "zai-glm-4.7"}),
        (CFG, {"model": "zai-glm-4.7"}, {"max_completion_tokens": 16384}),
        (CFG, {"model": "zai-glm-4.7", "max_tokens": 50000}, {"max_tokens": 16384}),
        (CFG, {"model": "zai-glm-4.7", "max_completion_tokens": 99999}, {"max_completion_tokens": 16384}),
        (NOCAP, {"model": "glm-local"}, {}),
        (NOCAP, {}, {"model": "glm-local"}),
    ],
)
def test_build_request(cfg, fields, changed):
    r = req(**fields)
    body = build_request(cfg, r)
    if not changed:
        assert body is r.raw  # unchanged requests are forwarded byte for byte
    else:
        assert orjson.loads(body) == {**r.payload, **changed}


@pytest.mark.parametrize(
    "body, expected",
    [
        (b'{"message": "m", "type": "t", "param": "p", "code": "c"}', ("m", "t", "c")),
        (b'{"error": {"message": "m", "type": "t", "code": 1214}}', ("m", "t", "1214")),
        (b'{"error": "plain"}', ("plain", None, None)),
        (b"<html>Bad Gateway</html>", ("<html>Bad Gateway</html>", None, None)),
        (b"", ("", None, None)),
    ],
)
def test_error_fields(body, expected):
    assert error_fields(body) == expected


def cerebras_body(message, type_="invalid_request_error", code=None):
    return orjson.dumps({"message": message, "type": type_, "param": None, "code": code})


@pytest.mark.parametrize(
    "status, headers, body, kind",
    [
        (429, {"x-ratelimit-reset-tokens-minute": "5"}, cerebras_body("Tokens per minute limit exceeded", "too_many_requests_error", "token_quota_exceeded"), Failure.RATE_LIMITED),
        (400, {}, cerebras_body("Please reduce the length of the messages", code="context_length_exceeded"), Failure.CONTEXT_LENGTH),
        (400, {}, b'{"error":{"code":400,"message":"request (9000 tokens) exceeds the available context size (2048 tokens)","type":"exceed_context_size_error"}}', Failure.CONTEXT_LENGTH),
        (400, {}, cerebras_body("messages: field required", code="wrong_api_format"), Failure.CLIENT),
        (401, {}, cerebras_body("Wrong API Key", code="wrong_api_key"), Failure.AUTH),
        (403, {}, cerebras_body("forbidden"), Failure.AUTH),
        (402, {}, cerebras_body("payment required"), Failure.PAYMENT),
        (407, {"proxy-authenticate": "Basic"}, b"", Failure.CONNECTION),
        (404, {}, cerebras_body("model not found"), Failure.CLIENT),
        (408, {}, b"", Failure.TIMEOUT),
        (422, {}, cerebras_body("bad"), Failure.CLIENT),
        (500, {}, cerebras_body("internal", "server_error"), Failure.SERVER),
        (502, {}, b"bad gateway", Failure.SERVER),
        (503, {}, cerebras_body("We're experiencing high traffic", "service_unavailable"), Failure.OVERLOADED),
    ],
)
def test_map_error(status, headers, body, kind):
    e = map_error(status, headers, body, default_cooldown=60.0, now_epoch=0.0)
    assert e.kind is kind
    assert e.status == status and e.body == body


def test_map_error_429_takes_cooldown_from_headers():
    e = map_error(429, {"x-ratelimit-reset-tokens-minute": "7.5"}, cerebras_body("Tokens per minute limit exceeded"),
                  default_cooldown=60.0, now_epoch=0.0)
    assert e.cooldown == 7.5 and "minute" in e.cooldown_reason
