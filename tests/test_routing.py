import pytest

from gateway.providers.base import Failure, UpstreamError
from gateway.routing import Attempt, final_error


def attempts(*kinds):
    return [Attempt("cerebras", f"k{i}", UpstreamError(kind, f"{kind.value} happened")) for i, kind in enumerate(kinds, 1)]


@pytest.mark.parametrize(
    "kinds, wait, status, code",
    [
        ((Failure.RATE_LIMITED, Failure.RATE_LIMITED), 12.0, 429, "rate_limit_exceeded"),
        ((), 5.0, 429, "rate_limit_exceeded"),  # nothing tried: every key was already resting
        ((Failure.SERVER, Failure.RATE_LIMITED), 3.0, 429, "rate_limit_exceeded"),
        ((Failure.CONTEXT_LENGTH,), None, 400, "context_length_exceeded"),
        ((Failure.TIMEOUT, Failure.TIMEOUT), None, 504, "upstream_timeout"),
        ((Failure.OVERLOADED,), None, 503, "service_unavailable"),
        ((Failure.SERVER, Failure.CONNECTION), None, 502, "upstream_error"),
        ((Failure.AUTH, Failure.AUTH), None, 502, "upstream_error"),
        ((), None, 503, "service_unavailable"),
    ],
)
def test_final_error_status_follows_failures(kinds, wait, status, code):
    err = final_error(attempts(*kinds), wait)
    assert (err.status, err.code) == (status, code)
    for i in range(1, len(kinds) + 1):
        assert f"cerebras/k{i}" in err.message
    if status in (429, 503):
        assert "Retry-After" in err.headers() or not kinds and wait is None


def test_429_retry_after_headers():
    err = final_error(attempts(Failure.RATE_LIMITED), 2.2)
    assert err.headers() == {"Retry-After": "3", "retry-after-ms": "2200"}
