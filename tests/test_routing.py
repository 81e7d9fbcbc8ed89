"""The router's pure decisions: what a request does when nothing can take it, and its final error."""
import pytest

from gateway.keypool import Outlook
from gateway.providers.base import Failure, UpstreamError
from gateway.routing import HELD_POLL, MIN_ROUND_WAIT, Attempt, Step, final_error, next_step

S, T, C, RL = Failure.SERVER, Failure.TIMEOUT, Failure.CONNECTION, Failure.RATE_LIMITED


def attempts(*kinds):
    return [
        Attempt("cerebras", f"k{i}", UpstreamError(kind, f"{kind.value} happened"))
        for i, kind in enumerate(kinds, 1)
    ]


@pytest.mark.parametrize(
    "kinds, outlook, retry_in, status, code, retry_after",
    [
        # every candidate rests on a rate limit: 429 until the first is back
        ((RL, RL), Outlook(rate_limited=12.0), 0.0, 429, "rate_limit_exceeded", "12"),
        ((), Outlook(rate_limited=5.0), None, 429, "rate_limit_exceeded", "5"),  # nothing tried: all resting
        ((RL,), Outlook(), None, 429, "rate_limit_exceeded", "1"),  # a 429 that set no rest
        # rate limited and failing: 429 (backing off helps), retry when the first key may serve
        ((S, RL), Outlook(rate_limited=30.0), 2.0, 429, "rate_limit_exceeded", "2"),
        ((), Outlook(rate_limited=30.0, probing=0.0), 4.0, 429, "rate_limit_exceeded", "4"),
        # failing: 503 upstreams failing, retry when the first breaker half-opens
        ((S, C), Outlook(), 4.5, 503, "upstream_unavailable", "5"),
        ((S, C), Outlook(), None, 503, "upstream_unavailable", "1"),
        ((Failure.OVERLOADED,), Outlook(), 0.0, 503, "upstream_unavailable", "1"),
        ((Failure.MIDSTREAM,), Outlook(), 0.0, 503, "upstream_unavailable", "1"),
        ((S, T), Outlook(), 0.0, 503, "upstream_unavailable", "1"),  # not every one timed out
        ((), Outlook(probing=3.0), 3.0, 503, "upstream_unavailable", "3"),  # a probe is out (MAX_KEY_WAIT=0)
        ((T,), Outlook(probing=0.0), 0.0, 503, "upstream_unavailable", "1"),
        ((Failure.CONTEXT_LENGTH,), Outlook(probing=0.0), 0.0, 503, "upstream_unavailable", "1"),
        # the statuses of the other cases stay
        ((Failure.CONTEXT_LENGTH,), Outlook(), None, 400, "context_length_exceeded", None),
        ((T, T), Outlook(), 0.0, 504, "upstream_timeout", None),
        ((Failure.AUTH, Failure.AUTH), Outlook(), None, 502, "upstream_error", None),
        ((Failure.AUTH, Failure.PAYMENT), Outlook(), 3600.0, 502, "upstream_error", None),
        ((), Outlook(), None, 503, "service_unavailable", None),  # every key disabled
    ],
)
def test_final_error_status_follows_failures(kinds, outlook, retry_in, status, code, retry_after):
    err = final_error(attempts(*kinds), outlook, retry_in)
    assert (err.status, err.code) == (status, code)
    for i in range(1, len(kinds) + 1):
        assert f"cerebras/k{i}: {kinds[i - 1].value}" in err.message
    assert err.headers().get("Retry-After") == retry_after
    if status == 503 and code == "upstream_unavailable":
        assert err.message.startswith("upstreams failing") and err.type == "api_error"
    if status == 429:
        assert "rate limited" in err.message
        assert ("failing" in err.message) is bool(set(kinds) & {S} or outlook.probing is not None)


def test_429_retry_after_headers():
    err = final_error(attempts(Failure.RATE_LIMITED), Outlook(rate_limited=2.2))
    assert err.headers() == {"Retry-After": "3", "retry-after-ms": "2200"}


def test_final_error_names_resting_keys_from_notes():
    err = final_error([], Outlook(probing=0.0), 0.0, ["synthetic/key1: failing, a probe is in flight"])
    assert "synthetic/key1: failing, a probe is in flight" in err.message


@pytest.mark.parametrize(
    "outlook, budget, step, wait",
    [
        # an open breaker and nothing else: probe it now rather than answer with no attempt
        (Outlook(open=40.0), 0.0, Step.PROBE, 0.0),
        (Outlook(open=40.0), 30.0, Step.PROBE, 0.0),
        # a rate-limited key back sooner than the breaker half-opens, within MAX_KEY_WAIT: wait for it
        (Outlook(open=40.0, rate_limited=2.0), 30.0, Step.WAIT, 2.0),
        (Outlook(open=40.0, rate_limited=0.01), 30.0, Step.WAIT, MIN_ROUND_WAIT),
        # ... not when it is back later than the breaker, or beyond MAX_KEY_WAIT
        (Outlook(open=1.0, rate_limited=2.0), 30.0, Step.PROBE, 0.0),
        (Outlook(open=40.0, rate_limited=2.0), 1.0, Step.PROBE, 0.0),
        (Outlook(open=40.0, rate_limited=2.0, probing=0.0), 30.0, Step.WAIT, 2.0),
        # only rate limits: wait within MAX_KEY_WAIT, else fail (a 429)
        (Outlook(rate_limited=2.0), 30.0, Step.WAIT, 2.0),
        (Outlook(rate_limited=0.0), 30.0, Step.WAIT, MIN_ROUND_WAIT),  # never a busy loop
        (Outlook(rate_limited=2.0), 1.0, Step.FAIL, 0.0),
        # a probe out: poll for its answer within MAX_KEY_WAIT
        (Outlook(probing=0.0), 5.0, Step.WAIT, HELD_POLL),
        (Outlook(probing=0.0), 0.0, Step.FAIL, 0.0),
        (Outlook(probing=3.0, rate_limited=10.0), 30.0, Step.WAIT, HELD_POLL),
        # a first request out: poll for its answer whatever MAX_KEY_WAIT (that rule fails nobody)
        (Outlook(proving=0.8), 0.0, Step.WAIT, HELD_POLL),
        (Outlook(proving=0.8), -5.0, Step.WAIT, HELD_POLL),
        # a key freed while the request walked past it: look again, within MAX_KEY_WAIT
        (Outlook(ready=True), 1.0, Step.WAIT, HELD_POLL),
        (Outlook(ready=True), 0.0, Step.FAIL, 0.0),
        (Outlook(ready=True, open=5.0), 1.0, Step.WAIT, HELD_POLL),  # the free key before a failing one
        (Outlook(ready=True, open=5.0), 0.0, Step.PROBE, 0.0),
        # nothing will come back
        (Outlook(), 30.0, Step.FAIL, 0.0),
    ],
)
def test_next_step(outlook, budget, step, wait):
    assert next_step(outlook, budget) == (step, pytest.approx(wait))


def test_outlook_merge_keeps_the_soonest_of_each():
    a = Outlook(rate_limited=5.0, open=None, probing=1.0)
    b = Outlook(ready=True, rate_limited=3.0, open=7.0, proving=0.5)
    assert a.merge(b) == Outlook(True, 3.0, 7.0, 1.0, 0.5)
    assert Outlook().merge(Outlook()) == Outlook()
