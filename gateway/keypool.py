"""An upstream's keys: which one serves next, which are resting and why.

All decisions are synchronous (no awaits), so they are atomic on the event loop and need no lock.
Time comes from an injected clock, so tests move time instead of sleeping.

Two reasons keep a key from requests, kept apart:

- a **rate-limit rest** (``cooldown_until``): a 429, a 402, a provider-declared cooldown, a daily
  quota. The key is known to refuse until then, so nothing is sent to it before;
- its **error breaker** (:mod:`gateway.breaker`): faults in a row open it for a rest; when the rest
  is over one request probes the key, and its success closes the breaker. A key never heard from
  takes one request at a time until its first answer (briefly: see ``breaker.PROVING_HOLD``).

401/403 disable a key for good. Choice: among keys that none of these keeps off, the one with the
most token headroom (the last reported ``remaining-tokens-minute``, less what requests in flight
on it were charged; a key not heard from yet counts as full), then the fewest requests in flight,
then the least recently used. Load so spreads by what each key has left.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from .breaker import ERRORS_TO_OPEN, FIRST_REST, MAX_REST, Breaker, Hold, State
from .config import UpstreamKey
from .logs import shorten
from .providers.base import Failure, UpstreamError
from .ratelimits import RateLimits

ERRORS_BEFORE_REST = ERRORS_TO_OPEN  # the old names of the breaker's numbers
ERROR_REST = FIRST_REST
ERROR_REST_MAX = MAX_REST
PAYMENT_REST = 3600.0
# what counts against a key's breaker; timeouts and connection errors are faults but no answer
FAULTS = frozenset({Failure.SERVER, Failure.TIMEOUT, Failure.CONNECTION, Failure.OVERLOADED, Failure.MIDSTREAM})
SILENT = frozenset({Failure.TIMEOUT, Failure.CONNECTION})


@dataclass
class KeyState:
    name: str
    secret: str = field(repr=False)
    cooldown_until: float = 0.0  # the rate-limit rest
    cooldown_reason: str | None = None
    disabled_reason: str | None = None
    error_count: int = 0
    requests: int = 0
    in_flight: int = 0
    reserved_tokens: int = 0
    last_pick: int = 0  # order of the last choice of this key (LRU tie-break)
    limits: RateLimits = field(default_factory=RateLimits)
    limits_at: float = 0.0
    breaker: Breaker = field(default_factory=Breaker)

    @property
    def consecutive_errors(self) -> int:
        return self.breaker.errors

    def available(self, now: float) -> bool:
        """Not disabled, not resting on a rate limit, breaker not open (half-open: for its probe)."""
        return (
            self.disabled_reason is None
            and self.cooldown_until <= now
            and self.breaker.state(now) is not State.OPEN
        )

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
    token: int = 0  # non-zero: this request holds the key's probe (or is its first request)
    early: bool = False  # sent while the key's breaker was open (an early probe)


def _least(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


class Outlook(NamedTuple):
    """What keeps keys from a request now: for each reason, the seconds until the first key so
    kept is back (None when no key is)."""

    ready: bool = False  # some key can serve now
    rate_limited: float | None = None  # resting on a rate limit
    open: float | None = None  # breaker open, no probe out (an early probe may use it now)
    probing: float | None = None  # a probe is out (seconds of rest left; 0 once half-open)
    proving: float | None = None  # never heard from, its first request out (seconds of hold left)

    def merge(self, other: Outlook) -> Outlook:
        return Outlook(
            self.ready or other.ready,
            _least(self.rate_limited, other.rate_limited),
            _least(self.open, other.open),
            _least(self.probing, other.probing),
            _least(self.proving, other.proving),
        )


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
        # REDIS_URL: told of each change other replicas should know (gateway/shared): the key and
        # the field ("rest", "disabled", "breaker", "limits"); it only queues, never awaits
        self.shared: Callable[[KeyState, str], None] | None = None

    # ---- choosing ---------------------------------------------------------------------------

    def acquire(self, exclude: Collection[str] = (), cost: int = 0, early: bool = False) -> Lease | None:
        """The best usable key not in ``exclude``, marked in flight; None if there is none. With
        ``early``, when no key is usable, the one whose breaker rest ends first, as an early probe."""
        now = self.clock()
        best = self._best(now, exclude)
        probing_early = False
        if best is None and early:
            best = self._first_open(now, exclude)
            probing_early = best is not None
        if best is None:
            return None
        best.in_flight += 1
        best.reserved_tokens += cost
        best.requests += 1
        self._picks += 1
        best.last_pick = self._picks
        br = best.breaker
        token = self._picks if (br.opens or not br.heard) and br.take(now, self._picks) else 0
        return Lease(best, cost, token=token, early=probing_early)

    def peek(self) -> str | None:
        """The name of the key ``acquire()`` would choose now, without choosing it."""
        best = self._best(self.clock(), ())
        return best.name if best else None

    def _best(self, now: float, exclude: Collection[str]) -> KeyState | None:
        best: KeyState | None = None
        best_rank: tuple[float, int, int] | None = None
        for key in self.keys:  # usable by a plain request: no rest, no probe or first request out
            if key.disabled_reason is not None or key.cooldown_until > now or key.name in exclude:
                continue
            br = key.breaker
            if (br.opens or not br.heard) and not br.admits(now):
                continue
            rank = (-key.headroom(now), key.in_flight, key.last_pick)
            if best_rank is None or rank < best_rank:
                best, best_rank = key, rank
        return best

    def _first_open(self, now: float, exclude: Collection[str]) -> KeyState | None:
        """The key whose breaker rest ends first, of those kept off by nothing else."""
        found = [
            k
            for k in self.keys
            if k.disabled_reason is None
            and k.cooldown_until <= now
            and k.name not in exclude
            and k.breaker.hold(now)[0] is Hold.OPEN
        ]
        return min(found, key=lambda k: k.breaker.open_until) if found else None

    def outlook(self, exclude: Collection[str] = ()) -> Outlook:
        """Why the keys not disabled (nor excluded) cannot serve now, and for how long."""
        now = self.clock()
        ready = False
        rate = open_ = probing = proving = None
        for k in self.keys:
            if k.disabled_reason is not None or k.name in exclude:
                continue
            if k.cooldown_until > now:
                rate = _least(rate, max(k.cooldown_until, k.breaker.open_until) - now)
                continue
            hold, left = k.breaker.hold(now)
            if hold is Hold.NONE:
                ready = True
            elif hold is Hold.OPEN:
                open_ = _least(open_, left)
            elif hold is Hold.PROBING:
                probing = _least(probing, left)
            else:
                proving = _least(proving, left)
        return Outlook(ready, rate, open_, probing, proving)

    def next_ready_in(self, exclude: Collection[str] = ()) -> float | None:
        """Seconds until some key not disabled (nor excluded) is out of its rests (rate limit and
        breaker; a probe or first request in flight is not counted); None if none ever will."""
        now = self.clock()
        waits = [
            max(0.0, k.cooldown_until - now, (k.breaker.open_until - now) if k.breaker.opens else 0.0)
            for k in self.keys
            if k.disabled_reason is None and k.name not in exclude
        ]
        return min(waits) if waits else None

    def resting(self, exclude: Collection[str] = ()) -> list[str]:
        """A note per key (not excluded) that cannot serve now, and why: names and reasons only."""
        now = self.clock()
        notes = []
        for k in self.keys:
            if k.name in exclude:
                continue
            if k.disabled_reason is not None:
                notes.append(f"{k.name}: disabled")
            elif k.cooldown_until > now:
                notes.append(f"{k.name}: {k.cooldown_reason}, {k.cooldown_until - now:.1f}s left")
            else:
                hold, left = k.breaker.hold(now)
                if hold is Hold.OPEN:
                    notes.append(f"{k.name}: breaker open, {left:.1f}s left ({k.breaker.reason})")
                elif hold is Hold.PROBING:
                    notes.append(f"{k.name}: failing, a probe is in flight ({k.breaker.reason})")
                elif hold is Hold.PROVING:
                    notes.append(f"{k.name}: not heard from yet, its first request is in flight")
        return notes

    # ---- outcomes ---------------------------------------------------------------------------

    def succeeded(self, lease: Lease, limits: RateLimits | None) -> None:
        key = lease.key
        br = key.breaker
        if br.errors or br.opens or br.undo is not None or not br.heard:  # (else nothing to change)
            br.succeeded()
        self._observe(key, limits)
        self.release(lease)

    def failed(self, lease: Lease, err: UpstreamError) -> bool:
        """Apply what a failure says about this key. True if the key changed state (rested,
        disabled, breaker opened)."""
        changed = self.penalize(lease.key, err, lease.token)
        self.release(lease)
        return changed

    def penalize(self, key: KeyState, err: UpstreamError, token: int = 0) -> bool:
        """What a failure says about a key, also after its lease was settled (a stream that broke
        midway: ``token`` 0). True if the key changed state (rested, disabled, breaker opened)."""
        self._observe(key, err.rate_limits)
        kind = err.kind
        if kind in FAULTS:
            key.error_count += 1
            opened = key.breaker.failed(
                self.clock(), token, kind.value, answer=kind not in SILENT, midstream=kind is Failure.MIDSTREAM
            )
            if opened and self.shared is not None:
                self.shared(key, "breaker")
            return opened
        key.breaker.answered()
        if kind is Failure.RATE_LIMITED:
            seconds = err.cooldown if err.cooldown is not None else self.default_cooldown
            return self.cool(key, seconds, err.cooldown_reason or "rate limited")
        if kind is Failure.AUTH:
            changed = key.disabled_reason is None
            key.disabled_reason = f"upstream answered {err.status}: {shorten(err.message, 120)}"
            key.error_count += 1
            if changed and self.shared is not None:
                self.shared(key, "disabled")
            return changed
        if kind is Failure.PAYMENT:
            key.error_count += 1
            return self.cool(key, PAYMENT_REST, f"payment required ({err.status})")
        return False  # CLIENT / CONTEXT_LENGTH: not the key's fault

    def _observe(self, key: KeyState, limits: RateLimits | None) -> None:
        """Keep what a response reported of the key's budget, if it reported any."""
        if limits is None:
            return
        if limits.remaining_tokens_minute is not None or limits.remaining_requests_day is not None:
            key.limits = limits
            key.limits_at = self.clock()
            if self.shared is not None:
                self.shared(key, "limits")

    def release(self, lease: Lease) -> None:
        if lease.done:
            return
        lease.done = True
        lease.key.in_flight -= 1
        lease.key.reserved_tokens -= lease.cost
        if lease.token:
            lease.key.breaker.settle(lease.token)

    def cool(self, key: KeyState, seconds: float, reason: str) -> bool:
        """Rest a key until now+seconds; never shortens a rest already longer. True if extended."""
        until = self.clock() + max(0.0, seconds)
        if until <= key.cooldown_until:
            return False
        key.cooldown_until = until
        key.cooldown_reason = reason
        if self.shared is not None:
            self.shared(key, "rest")
        return True

    # ---- reporting ----------------------------------------------------------------------------

    def status(self) -> list[dict]:
        now = self.clock()
        out = []
        for k in self.keys:
            left = max(0.0, k.cooldown_until - now)
            br = k.breaker
            state = br.state(now)
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
                    "breaker": {
                        "state": state.value,
                        "open_for": round(max(0.0, br.open_until - now), 3) if state is State.OPEN else 0.0,
                        "consecutive_errors": br.errors,
                        "probe_in_flight": bool(br.probe) and state is not State.CLOSED,
                        "reason": br.reason if state is not State.CLOSED else None,
                    },
                    "heard_from": br.heard,
                }
            )
        return out
