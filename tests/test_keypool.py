"""The key pool's decisions, with an injected clock: no sleeping."""
import pytest

from gateway.config import UpstreamKey
from gateway.keypool import ERROR_REST, PAYMENT_REST, KeyPool
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
    assert all(set(s) >= {"name", "available", "rate_limited_for", "error_count", "disabled_reason"} for s in p.status())
