"""An upstream's keys: which one serves next, which are resting and why.

All decisions are synchronous (no awaits), so they are atomic on the event loop and need no lock.
Time comes from an injected clock, so tests move time instead of sleeping.

Choice: among keys that are neither disabled nor cooling, the one with the most token headroom
(the last reported ``remaining-tokens-minute``, less what requests in flight on it were charged;
a key not heard from yet counts as full), then the fewest requests in flight, then the least
recently used. Load so spreads by what each key has left.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Collection, Sequence

from .config import UpstreamKey
from .logs import shorten
from .providers.base import Failure, UpstreamError
from .ratelimits import RateLimits

ERRORS_BEFORE_REST = 3  # consecutive 5xx/timeouts/connection errors before a key rests
ERROR_REST = 5.0  # first rest after repeated errors, doubled per further error ...
ERROR_REST_MAX = 60.0  # ... up to this
PAYMENT_REST = 3600.0


@dataclass
class KeyState:
    name: str
    secret: str = field(repr=False)
    cooldown_until: float = 0.0
    cooldown_reason: str | None = None
    disabled_reason: str | None = None
    error_count: int = 0
    consecutive_errors: int = 0
    requests: int = 0
    in_flight: int = 0
    reserved_tokens: int = 0
    last_pick: int = 0  # order of the last choice of this key (LRU tie-break)
    limits: RateLimits = field(default_factory=RateLimits)
    limits_at: float = 0.0

    def available(self, now: float) -> bool:
        return self.disabled_reason is None and self.cooldown_until <= now

    def headroom(self, now: float) -> float:
        remaining = self.limits.remaining_tokens_minute
        reset = self.limits.reset_tokens_minute
        if remaining is None or (reset is not None and now >= self.limits_at + reset):
            remaining = self.limits.limit_tokens_minute  # the bucket has refilled since
        if remaining is None:
            return math.inf
        return remaining - self.reserved_tokens


@dataclass
class Lease:
    key: KeyState
    cost: int
    done: bool = False


class KeyPool:
    def __init__(
        self,
        provider: str,
        keys: Sequence[UpstreamKey],
        *,
        default_cooldown: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.provider = provider
        self.keys = [KeyState(k.name, k.secret.reveal()) for k in keys]
        self.default_cooldown = default_cooldown
        self.clock = clock
        self._picks = 0

    # ---- choosing ---------------------------------------------------------------------------

    def acquire(self, exclude: Collection[str] = (), cost: int = 0) -> Lease | None:
        """The best available key not in ``exclude``, marked in flight; None if there is none."""
        now = self.clock()
        best = self._best(now, exclude)
        if best is None:
            return None
        best.in_flight += 1
        best.reserved_tokens += cost
        best.requests += 1
        self._picks += 1
        best.last_pick = self._picks
        return Lease(best, cost)

    def peek(self) -> str | None:
        """The name of the key ``acquire()`` would choose now, without choosing it."""
        best = self._best(self.clock(), ())
        return best.name if best else None

    def _best(self, now: float, exclude: Collection[str]) -> KeyState | None:
        best: KeyState | None = None
        best_rank: tuple[float, int, int] | None = None
        for key in self.keys:
            if not key.available(now) or key.name in exclude:
                continue
            rank = (-key.headroom(now), key.in_flight, key.last_pick)
            if best_rank is None or rank < best_rank:
                best, best_rank = key, rank
        return best

    def next_ready_in(self, exclude: Collection[str] = ()) -> float | None:
        """Seconds until some key not disabled (nor excluded) is available; None if none ever will."""
        now = self.clock()
        waits = [
            max(0.0, k.cooldown_until - now)
            for k in self.keys
            if k.disabled_reason is None and k.name not in exclude
        ]
        return min(waits) if waits else None

    # ---- outcomes ---------------------------------------------------------------------------

    def succeeded(self, lease: Lease, limits: RateLimits | None) -> None:
        key = lease.key
        key.consecutive_errors = 0
        self._observe(key, limits)
        self.release(lease)

    def failed(self, lease: Lease, err: UpstreamError) -> bool:
        """Apply what a failure says about this key. True if the key changed state (cooled/disabled)."""
        self.release(lease)
        return self.penalize(lease.key, err)

    def penalize(self, key: KeyState, err: UpstreamError) -> bool:
        """What a failure says about a key, also after its lease was settled (a stream that broke
        midway). True if the key changed state (cooled/disabled)."""
        self._observe(key, err.rate_limits)
        kind = err.kind
        if kind is Failure.RATE_LIMITED:
            seconds = err.cooldown if err.cooldown is not None else self.default_cooldown
            return self.cool(key, seconds, err.cooldown_reason or "rate limited")
        if kind is Failure.AUTH:
            changed = key.disabled_reason is None
            key.disabled_reason = f"upstream answered {err.status}: {shorten(err.message, 120)}"
            key.error_count += 1
            return changed
        if kind is Failure.PAYMENT:
            key.error_count += 1
            return self.cool(key, PAYMENT_REST, f"payment required ({err.status})")
        if kind in (Failure.SERVER, Failure.TIMEOUT, Failure.CONNECTION, Failure.OVERLOADED, Failure.MIDSTREAM):
            key.error_count += 1
            key.consecutive_errors += 1
            extra = key.consecutive_errors - ERRORS_BEFORE_REST
            if extra >= 0:
                rest = min(ERROR_REST * (2 ** extra), ERROR_REST_MAX)
                return self.cool(key, rest, f"{key.consecutive_errors} errors in a row ({kind.value})")
            return False
        return False  # CLIENT / CONTEXT_LENGTH: not the key's fault

    def _observe(self, key: KeyState, limits: RateLimits | None) -> None:
        """Keep what a response reported of the key's budget, if it reported any."""
        if limits is not None and (limits.remaining_tokens_minute is not None or limits.remaining_requests_day is not None):
            key.limits = limits
            key.limits_at = self.clock()

    def release(self, lease: Lease) -> None:
        if lease.done:
            return
        lease.done = True
        lease.key.in_flight -= 1
        lease.key.reserved_tokens -= lease.cost

    def cool(self, key: KeyState, seconds: float, reason: str) -> bool:
        """Rest a key until now+seconds; never shortens a rest already longer. True if extended."""
        until = self.clock() + max(0.0, seconds)
        if until <= key.cooldown_until:
            return False
        key.cooldown_until = until
        key.cooldown_reason = reason
        return True

    # ---- reporting ----------------------------------------------------------------------------

    def status(self) -> list[dict]:
        now = self.clock()
        out = []
        for k in self.keys:
            left = max(0.0, k.cooldown_until - now)
            out.append(
                {
                    "name": k.name,
                    "available": k.available(now),
                    "rate_limited_for": round(left, 3),
                    "cooldown_reason": k.cooldown_reason if left > 0 else None,
                    "disabled_reason": k.disabled_reason,
                    "error_count": k.error_count,
                    "requests": k.requests,
                    "in_flight": k.in_flight,
                    "remaining_tokens_minute": k.limits.remaining_tokens_minute,
                    "remaining_requests_day": k.limits.remaining_requests_day,
                    "limit_tokens_minute": k.limits.limit_tokens_minute,
                    "limit_requests_day": k.limits.limit_requests_day,
                }
            )
        return out
