"""The key pool's decisions, with an injected clock: no sleeping."""
import pytest

from gateway.breaker import PROVING_HOLD
from gateway.config import UpstreamKey
from gateway.keypool import ERROR_REST, PAYMENT_REST, KeyPool, Outlook
from gateway.providers.base import Failure, UpstreamError
from gateway.ratelimits import RateLimits
from gateway.secrets import Secret


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def pool(n=3, clock=None, cooldown=60.0):
    keys = [UpstreamKey(f"k{i}", Secret(f"s{i}")) for i in range(1, n + 1)]
    return KeyPool("cerebras", keys, default_cooldown=cooldown, clock=clock or Clock())


def limits(remaining, reset=60.0, limit=100_000):
    return RateLimits(limit_tokens_minute=limit, remaining_tokens_minute=remaining, reset_tokens_minute=reset)


def err(kind, cooldown=None, status=None):
    return UpstreamError(kind, "x", status=status, cooldown=cooldown)


def test_fresh_keys_rotate():
    p = pool()
    names = []
    for _ in range(6):
        lease = p.acquire()
        names.append(lease.key.name)
        p.succeeded(lease, None)
    assert names == ["k1", "k2", "k3", "k1", "k2", "k3"]


def test_in_flight_requests_spread_over_keys():
    p = pool()
    leases = [p.acquire() for _ in range(3)]
    assert sorted(lease.key.name for lease in leases) == ["k1", "k2", "k3"]


def test_most_headroom_wins():
    p = pool()
    for name, remaining in (("k1", 500), ("k2", 90_000), ("k3", 20_000)):
        lease = p.acquire(exclude={k for k in ("k1", "k2", "k3") if k != name})
        p.succeeded(lease, limits(remaining))
    assert [p.acquire(cost=0).key.name for _ in range(1)] == ["k2"]


def test_reservations_count_against_headroom():
    p = pool(2)
    for name, remaining in (("k1", 10_000), ("k2", 8_000)):
        p.succeeded(p.acquire(exclude={"k1", "k2"} - {name}), limits(remaining))
    first = p.acquire(cost=5_000)
    assert first.key.name == "k1"  # 10k left -> 5k once reserved
    assert p.acquire(cost=5_000).key.name == "k2"  # 8k beats k1's 5k


def test_headroom_refills_after_reset():
    clock = Clock()
    p = pool(2, clock)
    p.succeeded(p.acquire(exclude={"k2"}), limits(0, reset=10))
    p.succeeded(p.acquire(exclude={"k1"}), limits(50_000, reset=10))
    assert p.peek() == "k2"
    clock.t += 11  # k1's bucket is full again (100k)
    assert p.peek() == "k1"


@pytest.mark.parametrize(
    "kind, cooldown, expect_rest, expect_disabled",
    [
        (Failure.RATE_LIMITED, 12.0, 12.0, False),
        (Failure.RATE_LIMITED, None, 60.0, False),  # the configured default
        (Failure.PAYMENT, None, PAYMENT_REST, False),
        (Failure.AUTH, None, 0.0, True),
        (Failure.SERVER, None, 0.0, False),  # one error: no rest yet
        (Failure.CLIENT, None, 0.0, False),
        (Failure.CONTEXT_LENGTH, None, 0.0, False),
    ],
)
def test_failure_effects(kind, cooldown, expect_rest, expect_disabled):
    clock = Clock()
    p = pool(1, clock)
    p.failed(p.acquire(), err(kind, cooldown, status=401 if kind is Failure.AUTH else None))
    (status,) = p.status()
    assert status["rate_limited_for"] == pytest.approx(expect_rest)
    assert (status["disabled_reason"] is not None) is expect_disabled
    assert status["in_flight"] == 0
    assert status["available"] is (expect_rest == 0 and not expect_disabled)


def test_cooling_key_gets_nothing_until_cooldown_ends():
    clock = Clock()
    p = pool(2, clock)
    p.failed(p.acquire(exclude={"k2"}), err(Failure.RATE_LIMITED, 30))
    for _ in range(5):
        lease = p.acquire()
        assert lease.key.name == "k2"
        p.succeeded(lease, None)
    clock.t += 29.9
    assert p.next_ready_in() == 0.0  # k2 is ready
    assert p.next_ready_in(exclude={"k2"}) == pytest.approx(0.1)
    clock.t += 0.1
    assert {p.acquire().key.name, p.acquire().key.name} == {"k1", "k2"}


def test_repeat_failure_extends_never_shortens():
    clock = Clock()
    p = pool(1, clock)
    p.failed(p.acquire(), err(Failure.RATE_LIMITED, 30))
    clock.t += 5
    key = p.keys[0]
    assert p.cool(key, 10, "shorter") is False
    assert key.cooldown_until == 1030.0
    assert p.cool(key, 40, "longer") is True
    assert key.cooldown_until == 1045.0


def test_concurrent_429s_cool_once():
    clock = Clock()
    p = pool(2, clock)
    p.succeeded(p.acquire(exclude={"k2"}), None)  # k1 has answered: it takes concurrent requests
    leases = [p.acquire(exclude={"k2"}) for _ in range(5)]  # five requests in flight on k1
    changed = [p.failed(lease, err(Failure.RATE_LIMITED, 20)) for lease in leases]
    assert changed == [True, False, False, False, False]
    assert p.keys[0].in_flight == 0
    assert p.acquire().key.name == "k2"  # the healthy key is not skipped


def test_repeated_errors_rest_with_backoff():
    clock = Clock()
    p = pool(1, clock)
    for _ in range(2):
        p.failed(p.acquire(), err(Failure.TIMEOUT))
    assert p.keys[0].available(clock())
    p.failed(p.acquire(), err(Failure.SERVER))
    assert p.next_ready_in() == pytest.approx(ERROR_REST)
    clock.t += ERROR_REST
    p.failed(p.acquire(), err(Failure.CONNECTION))
    assert p.next_ready_in() == pytest.approx(2 * ERROR_REST)
    clock.t += 2 * ERROR_REST
    p.succeeded(p.acquire(), None)
    assert p.keys[0].consecutive_errors == 0
    assert p.status()[0]["error_count"] == 4


def test_all_disabled_means_never_ready():
    p = pool(2)
    for _ in range(2):
        p.failed(p.acquire(), err(Failure.AUTH, status=403))
    assert p.acquire() is None
    assert p.next_ready_in() is None
    assert p.peek() is None


def test_release_is_idempotent():
    p = pool(1)
    lease = p.acquire(cost=100)
    p.release(lease)
    p.release(lease)
    assert (p.keys[0].in_flight, p.keys[0].reserved_tokens) == (0, 0)


def test_status_never_holds_secrets():
    p = pool(2)
    assert "s1" not in repr(p.status())
    fields = {"name", "available", "rate_limited_for", "error_count", "disabled_reason", "breaker", "heard_from"}
    assert all(set(s) >= fields for s in p.status())


def heard(p, *names):
    """Each named key answers once (so it is no longer limited to one request at a time)."""
    for name in names:
        p.succeeded(p.acquire(exclude={k.name for k in p.keys} - {name}), None)


def trip(p, name, kind=Failure.SERVER):
    """Three faults in a row on ``name``: its breaker opens."""
    for _ in range(3):
        p.failed(p.acquire(exclude={k.name for k in p.keys} - {name}), err(kind))


def test_a_key_never_heard_from_takes_one_request_at_a_time():
    clock = Clock()
    p = pool(2, clock)
    first = [p.acquire(), p.acquire()]
    assert sorted(lease.key.name for lease in first) == ["k1", "k2"]
    assert p.acquire() is None  # both hold their first request
    assert p.outlook() == Outlook(proving=pytest.approx(PROVING_HOLD))
    p.failed(first[0], err(Failure.AUTH, status=401))  # k1 answers 401: disabled, never more
    assert p.acquire() is None
    p.succeeded(first[1], None)  # k2 answers: it takes concurrent requests now
    assert [p.acquire().key.name for _ in range(3)] == ["k2", "k2", "k2"]


def test_a_first_request_that_takes_long_holds_others_off_only_briefly():
    clock = Clock()
    p = pool(1, clock)
    p.acquire()
    assert p.acquire() is None
    clock.t += PROVING_HOLD
    assert p.acquire().key.name == "k1"


def test_a_timeout_is_no_answer():
    p = pool(1)
    p.failed(p.acquire(), err(Failure.TIMEOUT))
    assert p.status()[0]["heard_from"] is False
    p.acquire()
    assert p.acquire() is None  # still one at a time


def test_breaker_rest_is_apart_from_rate_limit_rest():
    clock = Clock()
    p = pool(2, clock)
    heard(p, "k1", "k2")
    trip(p, "k1")
    p.failed(p.acquire(exclude={"k1"}), err(Failure.RATE_LIMITED, 30))
    k1, k2 = p.status()
    assert (k1["available"], k1["rate_limited_for"], k1["cooldown_reason"]) == (False, 0.0, None)
    assert k1["breaker"] == {"state": "open", "open_for": ERROR_REST, "consecutive_errors": 3,
                             "probe_in_flight": False, "reason": "3 errors in a row (server)"}
    assert (k2["available"], k2["rate_limited_for"], k2["breaker"]["state"]) == (False, 30.0, "closed")
    assert p.outlook() == Outlook(rate_limited=30.0, open=ERROR_REST)
    assert p.acquire() is None
    clock.t += ERROR_REST
    probe = p.acquire()
    assert probe.key.name == "k1" and probe.token  # the rest is over: k1 takes one probe
    assert p.status()[0]["breaker"]["state"] == "half_open" and p.status()[0]["breaker"]["probe_in_flight"]
    assert p.acquire() is None  # nobody else while the probe is out
    assert p.outlook() == Outlook(rate_limited=25.0, probing=0.0)
    p.succeeded(probe, None)
    assert p.status()[0]["breaker"]["state"] == "closed"
    assert [p.acquire().key.name for _ in range(2)] == ["k1", "k1"]


def test_failed_probe_reopens_for_longer():
    clock = Clock()
    p = pool(1, clock)
    heard(p, "k1")
    trip(p, "k1")
    clock.t += ERROR_REST
    assert p.failed(p.acquire(), err(Failure.CONNECTION)) is True
    assert p.next_ready_in() == pytest.approx(2 * ERROR_REST)
    assert p.status()[0]["breaker"]["open_for"] == pytest.approx(2 * ERROR_REST)


def test_requests_out_before_the_opening_do_not_lengthen_the_rest():
    clock = Clock()
    p = pool(1, clock)
    heard(p, "k1")
    leases = [p.acquire() for _ in range(6)]
    changed = [p.failed(lease, err(Failure.SERVER)) for lease in leases]
    assert changed == [False, False, True, False, False, False]
    assert p.next_ready_in() == pytest.approx(ERROR_REST)


def test_early_probe_takes_the_key_whose_rest_ends_first():
    clock = Clock()
    p = pool(3, clock)
    heard(p, "k1", "k2", "k3")
    trip(p, "k2")
    clock.t += 1
    trip(p, "k1")
    p.failed(p.acquire(exclude={"k1", "k2"}), err(Failure.RATE_LIMITED, 1))  # k3 rests on a 429
    assert p.acquire() is None and p.acquire(early=True) is not None
    assert p.keys[1].breaker.probe  # k2 (open since earlier) took it
    second = p.acquire(early=True)
    assert second.key.name == "k1" and second.early  # k2's probe is out: the next one
    assert p.acquire(early=True) is None  # k3 is rate limited: known to refuse, never probed
    p.release(second)  # abandoned (the client left): the probe is free again
    assert p.acquire(early=True).key.name == "k1"


def test_early_probe_prefers_a_usable_key():
    p = pool(2)
    heard(p, "k1", "k2")
    trip(p, "k1")
    lease = p.acquire(early=True)
    assert lease.key.name == "k2" and not lease.early and not lease.token


def test_midstream_break_counts_without_a_probe():
    clock = Clock()
    p = pool(1, clock)
    heard(p, "k1")
    for _ in range(3):
        lease = p.acquire()
        p.succeeded(lease, None)  # the stream's first event arrived ...
        p.penalize(lease.key, err(Failure.MIDSTREAM))  # ... then it broke
    assert p.status()[0]["breaker"]["state"] == "open"


def test_resting_notes_name_keys_and_reasons_only():
    clock = Clock()
    p = pool(3, clock)
    heard(p, "k1", "k2")
    trip(p, "k1")
    p.failed(p.acquire(exclude={"k1", "k3"}), err(Failure.RATE_LIMITED, 12))
    p.acquire(exclude={"k1", "k2"})
    assert p.resting() == [
        "k1: breaker open, 5.0s left (3 errors in a row (server))",
        "k2: rate limited, 12.0s left",
        "k3: not heard from yet, its first request is in flight",
    ]
    assert not any("s1" in n or "s2" in n for n in p.resting())
