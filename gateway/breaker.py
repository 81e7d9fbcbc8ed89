"""One upstream key's error breaker: pure arithmetic, the time passed in (no clock, no awaits).

States:

- **closed**: the key takes any number of requests. ``ERRORS_TO_OPEN`` faults in a row (5xx,
  timeouts, connection errors, streams broken midway) open it;
- **open** until a time: plain requests do not use the key. The rest is ``FIRST_REST`` seconds,
  doubled each time it re-opens without a success between, up to ``MAX_REST``. The router may
  send one *early probe* while it is open, when nothing else can serve a request;
- **half-open** once the rest is over: exactly one request, the probe, may use the key. Its
  success closes the breaker (and resets the doubling); its fault re-opens it with the next
  longer rest; an answer that says nothing of the key's health (a 429, the client's own 4xx) or
  a request abandoned midway frees the probe for the next request.

Apart from those states, a key never heard from (no answer since start) takes one request at a
time until its first answer, so a burst does not land whole on a key that will answer 401. That
hold lapses after ``PROVING_HOLD`` seconds without an answer, so a slow first answer never
keeps other requests waiting longer. Timeouts and connection errors are not answers.

A stream counts as a success at its first event; one that then breaks midway takes that success
back (unless another outcome came since), so streams that keep breaking open the breaker too.

Only the request that holds the probe (its ``token``, the pool's pick number) frees it, so a
request that was already in flight when the breaker opened cannot release someone else's probe,
and its fault does not lengthen the rest (it says nothing the opening did not).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

ERRORS_TO_OPEN = 3  # faults in a row that open the breaker
FIRST_REST = 5.0  # seconds of the first rest; doubled per re-opening ...
MAX_REST = 60.0  # ... up to this
PROVING_HOLD = 1.0  # seconds a never-heard-from key's first request holds others off, at most


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Hold(enum.Enum):
    """Why a key (not disabled, not rate limited) cannot take a plain request now."""

    NONE = "none"  # it can
    OPEN = "open"  # breaker open, no probe out: an early probe may use it
    PROBING = "probing"  # a probe (scheduled or early) is out: wait for its answer
    PROVING = "proving"  # never heard from, its first request is out


def rest_for(opens: int) -> float:
    """Seconds of rest for the ``opens``-th opening in a row (1 = the first)."""
    return min(FIRST_REST * 2.0 ** min(max(opens - 1, 0), 32), MAX_REST)


@dataclass
class Breaker:
    errors: int = 0  # faults in a row
    opens: int = 0  # openings since the last success; 0 = closed
    open_until: float = 0.0
    reason: str | None = None  # what opened it
    heard: bool = False  # the key has answered at least once
    probe: int = 0  # token of the request holding the probe / first request; 0 = none
    probe_since: float = 0.0
    undo: tuple[int, int, float] | None = None  # (errors, opens, open_until) the last success reset

    def state(self, now: float) -> State:
        if self.opens == 0:
            return State.CLOSED
        return State.OPEN if now < self.open_until else State.HALF_OPEN

    def hold(self, now: float) -> tuple[Hold, float]:
        """What keeps a plain request off the key now, and for how many seconds at most (the
        rest left for OPEN/PROBING, the hold left for PROVING; 0 when unknown or none)."""
        if self.opens:
            left = max(0.0, self.open_until - now)
            if self.probe:
                return Hold.PROBING, left
            if left > 0:
                return Hold.OPEN, left
            return Hold.NONE, 0.0  # half-open, the probe is free
        if self.probe and not self.heard:
            left = self.probe_since + PROVING_HOLD - now
            if left > 0:
                return Hold.PROVING, left
        return Hold.NONE, 0.0

    def admits(self, now: float) -> bool:
        """Whether a plain request may use the key now (``hold`` is NONE), cheaply when closed."""
        if not self.opens and (self.heard or not self.probe):
            return True
        return self.hold(now)[0] is Hold.NONE

    def take(self, now: float, token: int) -> bool:
        """A request uses the key (after ``hold`` said NONE, or as an early probe while OPEN).
        True if it is the one request the key was limited to (a probe, or the first request)."""
        gated = self.opens > 0 or not self.heard
        if gated and not self.probe:
            self.probe, self.probe_since = token, now
            return True
        return False

    def settle(self, token: int) -> None:
        """The request ``token`` is over (whatever its outcome): free the probe if it held it."""
        if token and self.probe == token:
            self.probe = 0

    def succeeded(self) -> None:
        self.heard = True
        self.undo = (self.errors, self.opens, self.open_until) if self.errors or self.opens else None
        self.errors = 0
        self.opens = 0
        self.reason = None

    def answered(self) -> None:
        """An answer that says nothing of the key's health (429, 402, 401, the client's 4xx)."""
        self.heard = True
        self.undo = None

    def failed(self, now: float, token: int, reason: str, answer: bool = True, midstream: bool = False) -> bool:
        """A fault on this key, seen by request ``token`` before ``settle``; ``answer`` False for
        timeouts and connection errors. True if the breaker (re-)opened.

        ``midstream``: a stream broke after its first event counted as a success (its lease is
        settled). That success is taken back, unless another outcome came since, so streams that
        keep breaking open the breaker (and a probe whose stream broke re-opens it)."""
        if answer:
            self.heard = True
        undo, self.undo = self.undo, None
        probe_failed = self.opens > 0 and token != 0 and self.probe == token
        if midstream and undo is not None:
            self.errors, self.opens, self.open_until = undo
            probe_failed = self.opens > 0
        self.errors += 1
        if self.opens:
            if not probe_failed:
                return False  # a request sent before it opened: the rest stands
            self.opens += 1
        elif self.errors >= ERRORS_TO_OPEN:
            self.opens = 1
        else:
            return False
        self.open_until = now + rest_for(self.opens)
        self.reason = f"{self.errors} errors in a row ({reason})"
        self.probe = 0
        return True
