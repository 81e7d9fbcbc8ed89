import email.utils

import pytest

from gateway.ratelimits import parse_rate_limits, rate_limit_cooldown, retry_after, seconds_to_utc_midnight

CEREBRAS = {
    "x-ratelimit-limit-requests-day": "14400",
    "x-ratelimit-limit-tokens-minute": "60000",
    "x-ratelimit-remaining-requests-day": "14390",
    "x-ratelimit-remaining-tokens-minute": "58000",
    "x-ratelimit-reset-requests-day": "33011.38",
    "x-ratelimit-reset-tokens-minute": "11.38",
}


def test_parse_cerebras_headers():
    r = parse_rate_limits(CEREBRAS)
    assert (r.limit_tokens_minute, r.remaining_tokens_minute, r.reset_tokens_minute) == (60000, 58000, 11.38)
    assert (r.limit_requests_day, r.remaining_requests_day, r.reset_requests_day) == (14400, 14390, 33011.38)


@pytest.mark.parametrize("headers", [{}, {"x-ratelimit-remaining-tokens-minute": "lots", "x-ratelimit-reset-tokens-minute": "-3"}])
def test_missing_or_bad_headers_are_none(headers):
    r = parse_rate_limits(headers)
    assert r.remaining_tokens_minute is None and r.reset_tokens_minute is None


@pytest.mark.parametrize("remaining, reset, expected", [
    ("58000", "11.38", (58000, 11.38)),
    (" 58000 ", " 11.38 ", (58000, 11.38)),  # stray spaces
    ("58000.0", "11.38s", (58000, 11.38)),  # float-shaped count, a unit on the seconds
    ("1e3", "0", (1000, 0.0)),
    ("inf", "inf", (None, None)),
    ("nan", "nan", (None, None)),
    ("", "-0.5", (None, None)),
])
def test_header_value_shapes(remaining, reset, expected):
    r = parse_rate_limits({"x-ratelimit-remaining-tokens-minute": remaining, "x-ratelimit-reset-tokens-minute": reset})
    assert (r.remaining_tokens_minute, r.reset_tokens_minute) == expected


NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    "headers, expected",
    [
        ({}, None),
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "2.5"}, 2.5),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after": email.utils.formatdate(NOW + 20, usegmt=True)}, 20.0),
        ({"retry-after": "garbage"}, None),
    ],
)
def test_retry_after(headers, expected):
    assert retry_after(headers, NOW) == expected


TPM = "Tokens per minute limit exceeded - too many tokens processed."
TPD = "Tokens per day limit exceeded - too many tokens processed."


@pytest.mark.parametrize(
    "headers, message, code, expected_seconds, reason_has",
    [
        (CEREBRAS, TPM, "token_quota_exceeded", 11.38, "minute"),
        ({**CEREBRAS, "retry-after": "3"}, TPM, "token_quota_exceeded", 3.0, "retry-after"),
        (CEREBRAS, TPD, "token_quota_exceeded", 33011.38, "daily"),
        ({**CEREBRAS, "x-ratelimit-remaining-requests-day": "0"}, "limit", None, 33011.38, "daily"),
        ({}, TPM, None, 60.0, "rate limited"),
        ({"retry-after": "40000", **CEREBRAS}, TPD, None, 40000.0, "daily"),  # never shorter than asked
    ],
)
def test_cooldown_after_429(headers, message, code, expected_seconds, reason_has):
    seconds, reason = rate_limit_cooldown(headers, message, code, 60.0, NOW)
    assert seconds == pytest.approx(expected_seconds)
    assert reason_has in reason


def test_daily_limit_without_headers_waits_for_utc_midnight():
    seconds, _ = rate_limit_cooldown({}, TPD, None, 60.0, NOW)
    assert seconds == pytest.approx(seconds_to_utc_midnight(NOW))
    assert 0 < seconds <= 86400
