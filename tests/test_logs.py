import pytest

from gateway.logs import Redactor


@pytest.mark.parametrize(
    "value, leaked",
    [
        ("calling with csk-abcdef123456", "csk-abcdef123456"),
        ("Authorization: Bearer abc.def-ghi", "abc.def-ghi"),
        ("client key sk-glm-AbCdEf_12345-xyz", "sk-glm-AbCdEf_12345-xyz"),
        ("configured secret my-zai-key-0001 used", "my-zai-key-0001"),
    ],
)
def test_redactor_scrubs(value, leaked):
    out = Redactor(["my-zai-key-0001"])(None, "info", {"event": "x", "detail": value})
    assert leaked not in out["detail"]
    assert "****" in out["detail"]


def test_redactor_leaves_ordinary_values():
    event = {"event": "request", "path": "/v1/chat/completions", "status": 200, "client": "alice"}
    assert Redactor(["secret-1234"])(None, "info", dict(event)) == event
