"""Pure reading of providers' rate-limit signals: headers and 429 bodies -> numbers and cooldowns."""
from __future__ import annotations

import datetime as dt
import email.utils
from collections.abc import Mapping
from typing import NamedTuple


class RateLimits(NamedTuple):
    """What one response said about the key's budget; None where a header was absent/bad.
    (A named tuple: read on every upstream answer, and cheaper to build than a frozen dataclass.)"""

    limit_tokens_minute: int | None = None
    remaining_tokens_minute: int | None = None
    reset_tokens_minute: float | None = None  # seconds from the response
    limit_requests_day: int | None = None
    remaining_requests_day: int | None = None
    reset_requests_day: float | None = None


NO_LIMITS = RateLimits()


_INF = float("inf")


def _int(raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        return int(raw)  # the usual shape, and the cheapest
    except ValueError:
        pass
    try:
        return int(float(raw))
    except (ValueError, OverflowError):
        return None


def _seconds(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)  # (float() already ignores surrounding spaces)
    except ValueError:
        try:
            value = float(raw.strip().rstrip("s"))  # "12.5s"
        except ValueError:
            return None
    return value if 0 <= value < _INF else None  # (NaN fails both comparisons)


def parse_rate_limits(headers: Mapping[str, str]) -> RateLimits:
    """Cerebras's ``x-ratelimit-*`` headers (also OpenAI's ``-requests``/``-tokens`` names)."""
    get = headers.get
    remaining = get("x-ratelimit-remaining-tokens-minute") or get("x-ratelimit-remaining-tokens")
    reset = get("x-ratelimit-reset-tokens-minute") or get("x-ratelimit-reset-tokens")
    day_remaining = get("x-ratelimit-remaining-requests-day")
    day_reset = get("x-ratelimit-reset-requests-day")
    if remaining is None and reset is None and day_remaining is None and day_reset is None:
        return NO_LIMITS
    return RateLimits(
        limit_tokens_minute=_int(get("x-ratelimit-limit-tokens-minute") or get("x-ratelimit-limit-tokens")),
        remaining_tokens_minute=_int(remaining),
        reset_tokens_minute=_seconds(reset),
        limit_requests_day=_int(get("x-ratelimit-limit-requests-day")),
        remaining_requests_day=_int(day_remaining),
        reset_requests_day=_seconds(day_reset),
    )


def retry_after(headers: Mapping[str, str], now_epoch: float | None = None) -> float | None:
    """``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date), in seconds."""
    ms = _seconds(headers.get("retry-after-ms"))
    if ms is not None:
        return ms / 1000.0
    raw = headers.get("retry-after")
    if raw is None:
        return None
    secs = _seconds(raw)
    if secs is not None:
        return secs
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    now = dt.datetime.now(dt.UTC).timestamp() if now_epoch is None else now_epoch
    return max(0.0, when.timestamp() - now)


def seconds_to_utc_midnight(now_epoch: float) -> float:
    now = dt.datetime.fromtimestamp(now_epoch, dt.UTC)
    midnight = (now + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()


def is_daily_limit(message: str, code: str | None, limits: RateLimits) -> bool:
    text = f"{message} {code or ''}".lower()
    return "per day" in text or "daily" in text or limits.remaining_requests_day == 0


def rate_limit_cooldown(
    headers: Mapping[str, str],
    message: str,
    code: str | None,
    default: float,
    now_epoch: float,
) -> tuple[float, str]:
    """How long a key must rest after a 429, and why. Never less than what the upstream asked."""
    limits = parse_rate_limits(headers)
    asked = retry_after(headers, now_epoch)
    if is_daily_limit(message, code, limits):
        day = limits.reset_requests_day
        if day is None:
            day = seconds_to_utc_midnight(now_epoch)
        return max(day, asked or 0.0), "daily quota exhausted"
    if asked is not None:
        return asked, "rate limited (retry-after)"
    if limits.reset_tokens_minute is not None:
        return limits.reset_tokens_minute, "tokens per minute exhausted"
    return default, "rate limited"
