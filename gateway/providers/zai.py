"""Z.ai's dialect: OpenAI-shaped, but one HTTP 429 covers concurrency limits, quotas, exhausted
balance and locked accounts alike; the body's business ``code`` tells them apart.

Codes (docs.z.ai "Errors"; the same table as open.bigmodel.cn): 1112/1121 account locked,
1113 balance exhausted, 1261 prompt too long, 1302 too many concurrent requests, 1303 too
frequent, 1304 daily call limit, 1305 traffic limit, 1308 usage cap reached (resets at a time the
message gives), 1309 plan expired, 1310 weekly/monthly cap (resets at a given time), 1312 model
overloaded, 1313 fair-use throttling.
"""
from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Mapping

from ..ratelimits import seconds_to_utc_midnight
from .base import Failure, UpstreamError
from .openai import error_fields
from .openai import map_error as openai_map_error

CONCURRENCY_REST = 2.0
OVERLOAD_REST = 10.0
CAP_REST = 3600.0  # a usage cap whose reset time could not be read
_RESET_AT = re.compile(r"(\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(?::\d{2})?)")
_CN = dt.timezone(dt.timedelta(hours=8))


def reset_in(message: str, now_epoch: float) -> float | None:
    """Seconds until the reset time a 1308/1310 message names. Z.ai does not say the zone; read
    as UTC+8, the earliest plausible, so a wrong guess costs one early retry, not hours idle."""
    m = _RESET_AT.search(message)
    if not m:
        return None
    text = m.group(1).replace("T", " ")
    fmt = "%Y-%m-%d %H:%M:%S" if text.count(":") == 2 else "%Y-%m-%d %H:%M"
    try:
        when = dt.datetime.strptime(text, fmt).replace(tzinfo=_CN)
    except ValueError:
        return None
    return max(0.0, when.timestamp() - now_epoch)


def map_error(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    default_cooldown: float,
    now_epoch: float | None = None,
    content_type: str | None = None,
) -> UpstreamError:
    now = time.time() if now_epoch is None else now_epoch
    err = openai_map_error(
        status, headers, body, default_cooldown=default_cooldown, now_epoch=now, content_type=content_type
    )
    message, _, code = error_fields(body)
    if code is None:
        return err

    def became(kind: Failure, cooldown: float | None = None, reason: str | None = None) -> UpstreamError:
        err.kind = kind
        if cooldown is not None:
            err.cooldown = cooldown
            err.cooldown_reason = reason
        return err

    if code in ("1112", "1121", "1309"):
        return became(Failure.AUTH)
    if code == "1113":
        return became(Failure.PAYMENT)
    if code == "1261":
        return became(Failure.CONTEXT_LENGTH)
    if code == "1302":
        return became(Failure.RATE_LIMITED, CONCURRENCY_REST, "too many concurrent requests (1302)")
    if code == "1312":
        return became(Failure.RATE_LIMITED, OVERLOAD_REST, "model overloaded (1312)")
    if code == "1304":
        return became(Failure.RATE_LIMITED, seconds_to_utc_midnight(now), "daily call limit (1304)")
    if code in ("1308", "1310"):
        seconds = reset_in(message, now)
        return became(Failure.RATE_LIMITED, CAP_REST if seconds is None else seconds, f"usage cap reached ({code})")
    if code in ("1303", "1305", "1313"):
        return became(Failure.RATE_LIMITED, err.cooldown or default_cooldown, f"rate limited ({code})")
    return err
