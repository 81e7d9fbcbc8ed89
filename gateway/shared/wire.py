"""Pure parts of sharing state through Redis: names, messages, and merging news into local state.

Times cross processes as wall-clock epoch seconds (each replica's key pool runs on its own
monotonic clock): ``to_wall``/``to_local`` convert with both clocks read now. Merges only ever
make local state stricter (a longer rest, a later breaker opening, newer limits, a disabled key),
so news arriving twice or out of order changes nothing; rests end by themselves, on the local
clock and by the Redis key's TTL.
"""
from __future__ import annotations

import math
from typing import Any

import orjson

from ..keypool import KeyState
from ..ratelimits import RateLimits

PREFIX = "gw:"
CHANNEL = PREFIX + "events"
# one Redis key per field and upstream key, each with its own expiry
REST, DISABLED, BREAKER, LIMITS = "rest", "disabled", "breaker", "limits"
KEY_FIELDS = (REST, DISABLED, BREAKER, LIMITS)
DISABLED_TTL = 86400.0  # a 401/403 key stays off for replicas starting within a day
LIMITS_TTL = 60.0  # remaining-tokens-minute says nothing after a minute
SPEND = "spend"
WINDOW = "window"  # additions to clients' sliding minutes: {"w": [[kind, key id, amount], ...]}
WINDOW_KINDS = ("requests", "tokens")


def key_name(field: str, provider: str, key: str) -> str:
    return f"{PREFIX}{field}:{provider}:{key}"


def parse_key_name(name: str) -> tuple[str, str, str] | None:
    """(field, provider, key) of a Redis key made by ``key_name``, or None."""
    if not name.startswith(PREFIX):
        return None
    parts = name[len(PREFIX):].split(":", 2)
    if len(parts) != 3 or parts[0] not in KEY_FIELDS:
        return None
    return parts[0], parts[1], parts[2]


def spend_name(scope: str, who: str | int, window: str, start: float) -> str:
    """The Redis hash of one client's (scope ``c``) or provider's (``p``) spend in one window."""
    return f"{PREFIX}{SPEND}:{scope}:{who}:{window}:{int(start)}"


def held_name(key_id: str | int) -> str:
    """The Redis sorted set of a client's requests admitted and not charged yet (its holds)."""
    return f"{PREFIX}held:c:{key_id}"


def parse_spend_name(name: str) -> tuple[str, str, str, float] | None:
    """(scope, who, window, start) of a name made by ``spend_name``, or None."""
    if not name.startswith(PREFIX + SPEND + ":"):
        return None
    parts = name[len(PREFIX + SPEND) + 1:].split(":")
    if len(parts) != 4 or parts[0] not in ("c", "p"):
        return None
    try:
        return parts[0], parts[1], parts[2], float(parts[3])
    except ValueError:
        return None


def to_wall(mono_at: float, mono_now: float, wall_now: float) -> float:
    return wall_now + (mono_at - mono_now)


def to_local(wall_at: float, mono_now: float, wall_now: float) -> float:
    return mono_now + (wall_at - wall_now)


def snapshot(key: KeyState, field: str, mono_now: float, wall_now: float) -> tuple[dict[str, Any], float] | None:
    """What ``field`` of ``key`` says now, for other replicas, and for how many seconds it holds;
    None when there is nothing to say (the rest is over)."""
    if field == REST:
        left = key.cooldown_until - mono_now
        if left <= 0:
            return None
        return {"until": to_wall(key.cooldown_until, mono_now, wall_now), "reason": key.cooldown_reason}, left
    if field == DISABLED:
        return ({"reason": key.disabled_reason}, DISABLED_TTL) if key.disabled_reason is not None else None
    if field == BREAKER:
        br = key.breaker
        left = br.open_until - mono_now
        if not br.opens or left <= 0:
            return None
        return {"until": to_wall(br.open_until, mono_now, wall_now), "opens": br.opens, "errors": br.errors,
                "reason": br.reason}, left
    if field == LIMITS:
        if key.limits_at <= 0:
            return None
        return {"at": to_wall(key.limits_at, mono_now, wall_now), "l": list(key.limits)}, LIMITS_TTL
    return None


def _time(value: Any) -> float:
    t = float(value)
    if not math.isfinite(t):
        raise ValueError("a time must be finite")
    return t


def merge(key: KeyState, field: str, value: dict[str, Any], mono_now: float, wall_now: float) -> bool:
    """Lay another replica's news on ``key``, only ever making it stricter. True if it changed.
    Raises (KeyError, TypeError, ValueError, OverflowError) on a malformed value: the caller drops it."""
    if field == REST:
        until = to_local(_time(value["until"]), mono_now, wall_now)
        if until <= key.cooldown_until or until <= mono_now:
            return False
        key.cooldown_until = until
        key.cooldown_reason = str(value.get("reason") or "rate limited")
        return True
    if field == DISABLED:
        if key.disabled_reason is not None:
            return False
        key.disabled_reason = str(value.get("reason") or "disabled")
        return True
    if field == BREAKER:
        until = to_local(_time(value["until"]), mono_now, wall_now)
        br = key.breaker
        if until <= br.open_until or until <= mono_now:
            return False
        br.opens = max(br.opens, int(value["opens"]), 1)
        br.errors = max(br.errors, int(value.get("errors") or 0))
        br.open_until = until
        br.reason = str(value.get("reason") or "opened by another replica")
        br.heard = True
        br.undo = None
        return True
    if field == LIMITS:
        at = to_local(_time(value["at"]), mono_now, wall_now)
        if at <= key.limits_at:
            return False
        raw = value["l"]
        if not isinstance(raw, list) or len(raw) != len(RateLimits._fields):
            raise ValueError("limits: expected a list of six values")
        key.limits = RateLimits(*raw)
        key.limits_at = at
        return True
    raise ValueError(f"unknown field {field!r}")


def key_message(origin: str, field: str, provider: str, key: str, value: dict[str, Any]) -> bytes:
    return orjson.dumps({"o": origin, "f": field, "p": provider, "k": key, "v": value})


def spend_message(origin: str, name: str, usd: float, tokens: int) -> bytes:
    return orjson.dumps({"o": origin, "f": SPEND, "n": name, "usd": usd, "tokens": tokens})


def window_message(origin: str, adds: list[tuple[str, int, float]]) -> bytes:
    return orjson.dumps({"o": origin, "f": WINDOW, "w": adds})


def window_adds(msg: dict[str, Any]) -> list[tuple[str, int, float]]:
    """The well-formed additions of a window message (the others dropped)."""
    out = []
    for item in msg["w"]:
        if not (isinstance(item, list) and len(item) == 3):
            continue
        kind, key_id, amount = item
        if kind in WINDOW_KINDS and type(key_id) is int and isinstance(amount, (int, float)) \
                and not isinstance(amount, bool) and 0 <= amount < math.inf:
            out.append((kind, key_id, float(amount)))
    return out


def parse_message(raw: bytes | str) -> dict[str, Any] | None:
    """A message off the channel, or None when it is not one of ours (or not JSON)."""
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(msg, dict) or not isinstance(msg.get("o"), str):
        return None
    if msg.get("f") == WINDOW:
        return msg if isinstance(msg.get("w"), list) else None
    if msg.get("f") == SPEND:
        ok = isinstance(msg.get("n"), str) and isinstance(msg.get("usd"), (int, float, str))
        return msg if ok else None
    if msg.get("f") in KEY_FIELDS and isinstance(msg.get("p"), str) and isinstance(msg.get("k"), str) \
            and isinstance(msg.get("v"), dict):
        return msg
    return None
