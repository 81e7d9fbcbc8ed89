"""The breaker's arithmetic: a table of event sequences, with the time passed in (no sleeping)."""
import pytest

from gateway.breaker import FIRST_REST, MAX_REST, PROVING_HOLD, Breaker, Hold, State, rest_for


@pytest.mark.parametrize(
    "opens, rest",
    [(0, 5.0), (1, 5.0), (2, 10.0), (3, 20.0), (4, 40.0), (5, 60.0), (6, 60.0), (10_000, 60.0)],
)
def test_rest_doubles_up_to_the_cap(opens, rest):
    assert rest_for(opens) == rest
    assert (FIRST_REST, MAX_REST) == (5.0, 60.0)


def play(events):
    """Run ``(time, event, token)`` steps on a fresh breaker; return it and what each step returned.

    Events: take (a request uses the key), ok / fault / silent (a timeout) / neutral (a 429) /
    settle (the request ``token`` is over; ok and fault settle too, as the pool does) / broke (a
    stream that succeeded broke midway, after its lease was settled)."""
    b = Breaker()
    out = []
    for now, event, token in events:
        if event == "take":
            out.append(b.take(now, token))
        elif event == "ok":
            b.succeeded()
            b.settle(token)
            out.append(None)
        elif event in ("fault", "silent"):
            out.append(b.failed(now, token, "server", answer=event == "fault"))
            b.settle(token)
        elif event == "neutral":
            b.answered()
            b.settle(token)
            out.append(None)
        elif event == "settle":
            b.settle(token)
            out.append(None)
        elif event == "broke":  # a stream whose first event counted as a success broke midway
            out.append(b.failed(now, 0, "midstream", midstream=True))
    return b, out


def faults(n, start=0.0, token=0):
    return [(start, "fault", token)] * n


HEARD = [(0.0, "take", 1), (0.0, "ok", 1)]  # answered once: no longer limited to one request


@pytest.mark.parametrize(
    "events, now, state, hold, left, errors",
    [
        # never heard from: one request at a time until an answer, or the hold lapses
        ([], 0.0, State.CLOSED, Hold.NONE, 0.0, 0),
        ([(0.0, "take", 1)], 0.5, State.CLOSED, Hold.PROVING, PROVING_HOLD - 0.5, 0),
        ([(0.0, "take", 1)], PROVING_HOLD, State.CLOSED, Hold.NONE, 0.0, 0),
        ([(0.0, "take", 1), (0.1, "neutral", 1)], 0.2, State.CLOSED, Hold.NONE, 0.0, 0),
        ([(0.0, "take", 1), (0.1, "fault", 1)], 0.2, State.CLOSED, Hold.NONE, 0.0, 1),  # a 5xx is an answer
        ([(0.0, "take", 1), (0.1, "silent", 1)], 0.2, State.CLOSED, Hold.NONE, 0.0, 1),  # probe freed
        ([(0.0, "take", 1), (0.1, "silent", 1), (0.2, "take", 2)], 0.3, State.CLOSED, Hold.PROVING, 0.9, 1),
        ([(0.0, "take", 1), (0.1, "settle", 1)], 0.2, State.CLOSED, Hold.NONE, 0.0, 0),  # abandoned
        # closed, heard from: two faults in a row do nothing, a success forgets them
        (HEARD + faults(2), 1.0, State.CLOSED, Hold.NONE, 0.0, 2),
        (HEARD + faults(2) + [(0.0, "ok", 0)] + faults(2), 1.0, State.CLOSED, Hold.NONE, 0.0, 2),
        (HEARD + faults(2) + [(0.0, "neutral", 0)], 1.0, State.CLOSED, Hold.NONE, 0.0, 2),  # a 429 is no success
        # the third opens it for FIRST_REST
        (HEARD + faults(3, 10.0), 11.0, State.OPEN, Hold.OPEN, 4.0, 3),
        (faults(3, 10.0), 11.0, State.OPEN, Hold.OPEN, 4.0, 3),  # also for a key never heard from
        # requests sent before it opened fail too: the rest stands
        (HEARD + faults(3, 10.0) + faults(5, 12.0), 13.0, State.OPEN, Hold.OPEN, 2.0, 8),
        # the rest is over: half-open, the probe is free
        (HEARD + faults(3, 10.0), 15.0, State.HALF_OPEN, Hold.NONE, 0.0, 3),
        # the probe is out: nobody else
        (HEARD + faults(3, 10.0) + [(15.0, "take", 7)], 15.5, State.HALF_OPEN, Hold.PROBING, 0.0, 3),
        # the probe succeeds: closed, doubling reset
        (HEARD + faults(3, 10.0) + [(15.0, "take", 7), (15.5, "ok", 7)], 16.0, State.CLOSED, Hold.NONE, 0.0, 0),
        # the probe fails: open again, twice as long
        (HEARD + faults(3, 10.0) + [(15.0, "take", 7), (15.5, "fault", 7)], 16.0, State.OPEN, Hold.OPEN, 9.5, 4),
        # ... and again: 20 s
        (HEARD + faults(3, 10.0) + [(15.0, "take", 7), (15.5, "fault", 7), (25.5, "take", 8), (26.0, "fault", 8)],
         26.0, State.OPEN, Hold.OPEN, 20.0, 5),
        # a success after that resets the doubling: the next opening rests FIRST_REST again
        (HEARD + faults(3, 10.0) + [(15.0, "take", 7), (15.5, "fault", 7), (25.5, "take", 8), (26.0, "ok", 8)]
         + faults(3, 30.0), 30.0, State.OPEN, Hold.OPEN, 5.0, 3),
        # a 429 on the probe says nothing of health: still half-open, the probe free for the next
        (HEARD + faults(3, 10.0) + [(15.0, "take", 7), (15.5, "neutral", 7)], 16.0, State.HALF_OPEN, Hold.NONE, 0.0, 3),
        # a request that was out before the opening cannot free the probe, nor lengthen the rest
        (HEARD + faults(3, 10.0) + [(15.0, "take", 7), (15.5, "fault", 3), (15.6, "settle", 3)],
         16.0, State.HALF_OPEN, Hold.PROBING, 0.0, 4),
        # an early probe while open: holds the key; its fault re-opens it, longer, from now
        (HEARD + faults(3, 10.0) + [(11.0, "take", 7)], 11.5, State.OPEN, Hold.PROBING, 3.5, 3),
        (HEARD + faults(3, 10.0) + [(11.0, "take", 7), (11.5, "fault", 7)], 12.0, State.OPEN, Hold.OPEN, 9.5, 4),
        (HEARD + faults(3, 10.0) + [(11.0, "take", 7), (11.5, "ok", 7)], 12.0, State.CLOSED, Hold.NONE, 0.0, 0),
        # streams that break midway count, although their first event counted as a success
        (HEARD + [(1.0, "ok", 0), (1.1, "broke", 0)] * 2, 2.0, State.CLOSED, Hold.NONE, 0.0, 2),
        (HEARD + [(1.0, "ok", 0), (1.1, "broke", 0)] * 3, 2.0, State.OPEN, Hold.OPEN, 4.1, 3),
        (HEARD + faults(2) + [(1.0, "ok", 0), (1.1, "broke", 0)], 2.0, State.OPEN, Hold.OPEN, 4.1, 3),
        # ... unless another request succeeded since: then only the break counts
        (HEARD + faults(2) + [(1.0, "ok", 0), (1.0, "ok", 0), (1.1, "broke", 0)], 2.0, State.CLOSED, Hold.NONE, 0.0, 1),
        # a probe whose stream broke midway re-opens it, longer
        (HEARD + faults(3, 10.0) + [(15.0, "take", 7), (15.5, "ok", 7), (16.0, "broke", 0)],
         16.0, State.OPEN, Hold.OPEN, 10.0, 4),
        # a straggler's success closes it too: the key works
        (HEARD + faults(3, 10.0) + [(11.0, "ok", 0)], 12.0, State.CLOSED, Hold.NONE, 0.0, 0),
    ],
)
def test_breaker_states(events, now, state, hold, left, errors):
    b, _ = play(events)
    assert b.state(now) is state
    assert b.hold(now) == (hold, pytest.approx(left))
    assert b.admits(now) is (hold is Hold.NONE)
    assert b.errors == errors


def test_only_the_first_request_of_a_gated_key_holds_it():
    b = Breaker()
    assert b.take(0.0, 1) is True  # the first request: holds the key
    assert b.admits(0.5) is False
    assert b.take(PROVING_HOLD, 2) is False  # let in once the hold lapsed, holding nothing
    b.settle(2)
    assert b.probe == 1
    b.succeeded()
    b.settle(1)
    assert (b.probe, b.heard, b.take(5.0, 3)) == (0, True, False)  # closed and heard: nothing to hold


def test_opening_reports_why():
    b, out = play(HEARD + faults(3, 10.0))
    assert out[-3:] == [False, False, True]
    assert b.reason == "3 errors in a row (server)"
    b.succeeded()
    assert b.reason is None
