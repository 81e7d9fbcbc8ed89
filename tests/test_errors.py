import orjson
import pytest

from gateway.errors import should_retry, upstream_error_body


def env(message, type="invalid_request_error", param=None, code=None):
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


@pytest.mark.parametrize(
    "status, body, expected",
    [
        # OpenAI's own envelope: kept
        (400, {"error": {"message": "bad", "type": "invalid_request_error", "param": "n", "code": "x"}},
         env("bad", param="n", code="x")),
        # Cerebras's flat shape: wrapped
        (400, {"message": "bad", "type": "invalid_request_error", "param": "tools", "code": "wrong_api_format"},
         env("bad", param="tools", code="wrong_api_format")),
        # missing fields filled, type from the status
        (404, {"message": "no such model"}, env("no such model", type="not_found_error")),
        (422, {"error": "unprocessable"}, env("unprocessable")),
        (400, {"detail": "field required"}, env("field required")),
        (400, {"error": {"msg": "from msg"}}, env("from msg")),
        # a numeric business code (Z.ai) becomes a string, as the SDKs expect
        (400, {"error": {"message": "too long", "code": 1261}}, env("too long", code="1261")),
        # not JSON: the text is the message
        (400, b"Bad Request", env("Bad Request")),
        (403, b"", env("upstream answered 403", type="permission_error")),
        # JSON that is not an object
        (400, [1, 2], env("upstream answered 400")),
        (401, {"error": {"message": "no"}}, env("no", type="authentication_error")),
    ],
)
def test_upstream_error_body(status, body, expected):
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    assert upstream_error_body(status, raw) == expected


@pytest.mark.parametrize(
    "status, retry",
    [(400, False), (401, False), (404, False), (413, False), (422, False), (408, True), (409, True),
     (429, True), (500, True), (502, True), (503, True), (200, True)],
)
def test_should_retry(status, retry):
    assert should_retry(status) is retry
