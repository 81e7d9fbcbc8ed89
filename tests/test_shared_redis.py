"""gateway/shared against a real redis-server: two replicas' pools and trackers in one process,
each with its own RedisShared (its own connections), as two gateways would have."""
from __future__ import annotations

import asyncio
import contextlib
import time

import orjson
import pytest
import redis.asyncio as aioredis

from gateway.clients.budgets import DAY, Limits, day_start
from gateway.clients.tracker import SpendTracker
from gateway.config import UpstreamKey
from gateway.context import RequestContext, Usage
from gateway.keypool import KeyPool
from gateway.providers.base import Failure, UpstreamError
from gateway.secrets import Secret
from gateway.shared import RedisShared, wire
from tests.conftest import eventually
from tests.redis_server import redis_server  # noqa: F401  (the fixture)

KEYS = [UpstreamKey("k1", Secret("csk-one")), UpstreamKey("k2", Secret("csk-two"))]


class Replica:
    def __init__(self, url: str) -> None:
        self.pool = KeyPool("cerebras", KEYS)
        self.tracker = SpendTracker()
        self.shared = RedisShared(url, [self.pool], self.tracker, retry=0.05, timeout=0.5)
        self.shared.attach()
        self.task: asyncio.Task | None = None

    async def start(self) -> Replica:
        self.task = asyncio.create_task(self.shared.run())
        await asyncio.wait_for(self.shared.ready.wait(), 5)
        return self

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.shared.close()

    def key(self, name: str):
        return next(k for k in self.pool.keys if k.name == name)

    def spend(self, usd: float = 0.01, key_id: int = 7) -> None:
        ctx = RequestContext("rid", "POST", "/v1/chat/completions")
        ctx.started_at = time.time()
        ctx.client_id, ctx.client_name, ctx.client_limits = key_id, "alice", Limits(daily_usd=1.0)
        ctx.provider, ctx.usage, ctx.cost_usd = "cerebras", Usage(100, 100), usd
        self.tracker.record(ctx)

    def day_usd(self, key_id: int = 7) -> float:
        day = self.tracker._clients[key_id].day if key_id in self.tracker._clients else None
        return day.usd if day is not None else 0.0


@pytest.fixture
async def replicas(redis_server):  # noqa: F811
    started: list[Replica] = []

    async def make(n: int = 2) -> list[Replica]:
        for _ in range(n):
            started.append(await Replica(redis_server.url).start())
        return started[-n:]

    yield make
    for r in started:
        await r.stop()


def rate_limited(seconds: float = 30.0) -> UpstreamError:
    return UpstreamError(Failure.RATE_LIMITED, "tokens per minute", status=429, cooldown=seconds,
                         cooldown_reason="tokens per minute exhausted")


async def test_a_rest_set_by_one_replica_reaches_the_other_within_100_ms(replicas):
    a, b = await replicas(2)
    assert b.key("k1").available(b.pool.clock())
    began = time.monotonic()
    a.pool.penalize(a.key("k1"), rate_limited(30))
    await eventually(lambda: not b.key("k1").available(b.pool.clock()), timeout=0.1, interval=0.001)
    assert time.monotonic() - began < 0.1
    assert b.key("k1").cooldown_reason == "tokens per minute exhausted"
    assert 29 < b.key("k1").cooldown_until - b.pool.clock() <= 30.01  # the same rest, on b's own clock
    assert b.pool.peek() == "k2"  # b no longer chooses it
    assert b.key("k2").available(b.pool.clock())


async def test_disabling_and_a_breaker_opening_are_shared_and_a_later_replica_reads_them(replicas, redis_server):  # noqa: F811
    a, b = await replicas(2)
    a.pool.penalize(a.key("k1"), UpstreamError(Failure.AUTH, "invalid api key", status=401))
    for _ in range(3):
        a.pool.penalize(a.key("k2"), UpstreamError(Failure.SERVER, "boom", status=500))
    await eventually(lambda: b.key("k1").disabled_reason is not None and b.key("k2").breaker.opens)
    assert "401" in b.key("k1").disabled_reason
    assert b.pool.peek() is None
    (late,) = await replicas(1)  # started after: reads what Redis keeps
    assert late.key("k1").disabled_reason is not None
    assert late.key("k2").breaker.state(late.pool.clock()).value == "open"
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        stored = [k.decode() async for k in client.scan_iter(match="gw:*")]
        assert 0 < await client.pttl(wire.key_name(wire.BREAKER, "cerebras", "k2")) <= 5000  # ends by itself
    finally:
        await client.aclose()
    assert not any("csk-" in name for name in stored)  # key names, never secrets


async def test_spend_from_two_replicas_adds_up_exactly_on_both(replicas, redis_server):  # noqa: F811
    a, b = await replicas(2)
    for _ in range(50):
        a.spend(0.01)
        b.spend(0.01)
        await asyncio.sleep(0)
    await eventually(lambda: a.day_usd() == pytest.approx(1.0) and b.day_usd() == pytest.approx(1.0))
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        name = wire.spend_name("c", 7, DAY, day_start(time.time()))
        assert float(await client.hget(name, "usd")) == pytest.approx(1.0)
        assert int(await client.hget(name, "tokens")) == 100 * 200
        assert await client.ttl(name) > 86400  # outlives its day, then goes
    finally:
        await client.aclose()
    # and b now refuses alice, who spent her $1 across both
    from gateway.errors import QuotaExhausted
    ctx = RequestContext("rid", "POST", "/v1/chat/completions")
    ctx.client_id, ctx.client_name, ctx.client_limits = 7, "alice", Limits(daily_usd=1.0)
    with pytest.raises(QuotaExhausted):
        b.tracker.admit(ctx, None)  # type: ignore[arg-type]


async def test_redis_down_is_degraded_then_caught_up(replicas, redis_server):  # noqa: F811
    a, b = await replicas(2)
    for _ in range(10):
        a.spend(0.01)
    await eventually(lambda: b.day_usd() == pytest.approx(0.10))
    redis_server.stop()
    await eventually(lambda: not a.shared.connected and not b.shared.connected)
    assert a.shared.status()["degraded"] and a.shared.times_degraded == 1
    for _ in range(5):  # served on local state meanwhile
        a.spend(0.01)
        b.spend(0.01)
    a.pool.penalize(a.key("k1"), rate_limited(30))
    assert a.day_usd() == pytest.approx(0.15) and b.day_usd() == pytest.approx(0.15)
    redis_server.start()  # empty: it lost everything
    await eventually(lambda: a.shared.connected and b.shared.connected, timeout=10)
    await eventually(lambda: a.day_usd() == pytest.approx(0.20) and b.day_usd() == pytest.approx(0.20))
    await eventually(lambda: not b.key("k1").available(b.pool.clock()))  # the rest learned while apart
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        name = wire.spend_name("c", 7, DAY, day_start(time.time()))
        await eventually(lambda: client.hget(name, "usd"))
        assert float(await client.hget(name, "usd")) == pytest.approx(0.20)
    finally:
        await client.aclose()
    assert not a.shared.status()["degraded"]


async def test_starting_with_redis_down_serves_degraded(redis_server):  # noqa: F811
    redis_server.stop()
    r = await Replica(redis_server.url).start()
    try:
        assert not r.shared.connected and r.shared.status()["degraded"]
        r.pool.penalize(r.key("k1"), rate_limited(30))  # still works locally
        assert r.pool.peek() == "k2"
        redis_server.start()
        await eventually(lambda: r.shared.connected, timeout=10)
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            await eventually(lambda: client.exists(wire.key_name(wire.REST, "cerebras", "k1")))
        finally:
            await client.aclose()
    finally:
        await r.stop()


async def test_hostile_messages_are_dropped_not_raised(replicas, redis_server):  # noqa: F811
    (a,) = await replicas(1)
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        for raw in (b"not json", b"[]", b'{"o": "x", "f": "rest", "p": "cerebras", "k": "k1", "v": {"until": "soon"}}',
                    b'{"o": "x", "f": "limits", "p": "cerebras", "k": "k1", "v": {"at": 1, "l": [1]}}',
                    b'{"o": "x", "f": "spend", "n": "gw:spend:c:zz:day:0", "usd": "lots"}'):
            await client.publish(wire.CHANNEL, raw)
        await eventually(lambda: a.shared.dropped >= 4)
        assert a.shared.connected and a.pool.peek() is not None
    finally:
        await client.aclose()


async def test_rate_windows_count_requests_and_tokens_from_every_replica(replicas):
    from gateway.chat import parse_chat_request
    from gateway.errors import RateLimited

    a, b = await replicas(2)
    req = parse_chat_request(b'{"model": "zai-glm-4.7", "messages": [{"role": "user", "content": "hi"}], '
                             b'"max_tokens": 10}')
    limits = Limits(rpm=6)

    def admit(replica: Replica) -> None:
        ctx = RequestContext("rid", "POST", "/v1/chat/completions")
        ctx.client_id, ctx.client_name, ctx.client_limits = 8, "bob", limits
        replica.tracker.admit(ctx, req)

    for _ in range(3):
        admit(a)
        admit(b)
    await eventually(lambda: a.tracker._clients[8].requests.total == 6 and b.tracker._clients[8].requests.total == 6)
    for replica in (a, b):  # 3 here and 3 there: the minute's 6 are spent on both
        with pytest.raises(RateLimited):
            admit(replica)

    # tokens: what a request on a really used counts on b's tpm window
    ctx = RequestContext("rid", "POST", "/v1/chat/completions")
    ctx.started_at = time.time()
    ctx.client_id, ctx.client_name, ctx.client_limits = 9, "carol", Limits(tpm=1000)
    a.tracker.admit(ctx, req)
    ctx.provider, ctx.usage, ctx.cost_usd = "cerebras", Usage(600, 390), 0.0
    a.tracker.record(ctx)
    await eventually(lambda: 9 in b.tracker._clients and b.tracker._clients[9].tokens.total == 990)
    ctx2 = RequestContext("rid", "POST", "/v1/chat/completions")
    ctx2.client_id, ctx2.client_name, ctx2.client_limits = 9, "carol", Limits(tpm=1000)
    with pytest.raises(RateLimited):
        b.tracker.admit(ctx2, req)  # 990 used on a + this one's estimate > 1000


# ---- near a budget: Redis checks and holds in one step (ADMIT), the crossing counts the holds ----

DOLLAR_A_DAY = Limits(daily_usd=1.0)


def budgeted(key_id: int = 7) -> RequestContext:
    ctx = RequestContext("rid", "POST", "/v1/chat/completions")
    ctx.started_at = time.time()
    ctx.client_id, ctx.client_name, ctx.client_limits = key_id, "alice", DOLLAR_A_DAY
    return ctx


async def admitted(replica: Replica, ctx: RequestContext) -> bool:
    """Admission near a budget as the handler walks it: Redis's check and hold, then the local one."""
    from gateway.errors import QuotaExhausted

    await replica.tracker.refresh(ctx)
    try:
        replica.tracker.admit(ctx, None)  # type: ignore[arg-type]
    except QuotaExhausted:
        return False
    return True


def ended(replica: Replica, ctx: RequestContext, usd: float | None) -> None:
    """The request's recorder: charged ``usd`` (None: it failed, nothing to charge)."""
    if usd is not None:
        ctx.provider, ctx.usage, ctx.cost_usd = "cerebras", Usage(100, 100), usd
    replica.tracker.record(ctx)


async def test_near_a_budget_redis_holds_admitted_requests_and_the_crossing_counts_them(replicas, redis_server):  # noqa: F811
    a, b = await replicas(2)
    first = budgeted()
    assert await admitted(a, first)
    ended(a, first, 0.95)
    client = aioredis.Redis.from_url(redis_server.url)
    day, held = wire.spend_name("c", 7, DAY, day_start(time.time())), wire.held_name(7)
    try:
        await eventually(lambda: _hget_float(client, day, "usd", 0.95))
        assert await client.zcard(held) == 0  # its hold went with its charge
        on_b = [budgeted() for _ in range(3)]
        on_a = [budgeted() for _ in range(2)]
        assert [await admitted(b, ctx) for ctx in on_b] == [True] * 3
        assert [await admitted(a, ctx) for ctx in on_a] == [True] * 2
        assert b.day_usd() == pytest.approx(0.95)  # read by the check, not waited for
        assert await client.zcard(held) == 5  # held at once, in the same step as the check
        assert await client.ttl(held) > 0
        ended(a, on_a[0], 0.05)  # crosses $1: the other four are in flight
        await eventually(lambda: client.hexists(day, "crossed"))
        crossed = orjson.loads(await client.hget(day, "crossed"))
        assert crossed["in_flight"] == 4 and float(crossed["usd"]) == pytest.approx(1.0)
        # from now on Redis refuses, on b as well, whatever b's local totals say, and holds nothing
        assert await b.shared.admit(7, day_start(time.time()), 0.0, DOLLAR_A_DAY, "x") is False
        assert not await admitted(b, budgeted())
        assert await client.zcard(held) == 4
        for replica, ctx in [*((b, c) for c in on_b), (a, on_a[1])]:
            ended(replica, ctx, None)  # failed requests release their holds too
        await eventually(lambda: _zcard(client, held, 0))
        ended(b, budgeted(), 0.5)  # a later charge past the budget leaves the first crossing's count
        await eventually(lambda: _hget_float(client, day, "usd", 1.5))
        assert orjson.loads(await client.hget(day, "crossed")) == crossed
    finally:
        await client.aclose()


async def test_far_from_a_budget_holds_are_queued_and_stale_ones_expire(replicas, redis_server):  # noqa: F811
    (a,) = await replicas(1)
    client = aioredis.Redis.from_url(redis_server.url)
    held = wire.held_name(7)
    try:
        ctx = budgeted()
        assert not a.tracker.near_budget(ctx)
        a.tracker.admit(ctx, None)  # type: ignore[arg-type]  # far from it: no round trip, the hold follows
        await eventually(lambda: _zcard(client, held, 1))
        ended(a, ctx, 0.01)
        await eventually(lambda: _zcard(client, held, 0))
        # a crashed replica's hold (its expiry passed) is dropped by the next check
        await client.zadd(held, {"gone:1": (time.time() - 1) * 1000})
        assert await a.shared.admit(7, day_start(time.time()), 0.0, DOLLAR_A_DAY, "live:1") is True
        assert [m.decode() for m in await client.zrange(held, 0, -1)] == ["live:1"]
    finally:
        await client.aclose()


async def test_near_a_budget_with_redis_down_admits_on_local_totals_and_holds_later(replicas, redis_server):  # noqa: F811
    (a,) = await replicas(1)
    redis_server.stop()
    await eventually(lambda: not a.shared.connected)
    ctx = budgeted()
    assert await a.shared.admit(7, day_start(time.time()), 0.0, DOLLAR_A_DAY, "x") is None
    assert await admitted(a, ctx)  # degraded: the local totals decide, never an error
    assert a.shared.status()["pending"] >= 1
    redis_server.start()
    await eventually(lambda: a.shared.connected, timeout=10)
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        await eventually(lambda: _zcard(client, wire.held_name(7), 1))  # queued while apart, sent on return
        ended(a, ctx, 0.01)
        await eventually(lambda: _zcard(client, wire.held_name(7), 0))
    finally:
        await client.aclose()


async def _hget_float(client, name: str, field: str, expected: float) -> bool:
    return float(await client.hget(name, field) or 0) == pytest.approx(expected)


async def _zcard(client, name: str, expected: int) -> bool:
    return await client.zcard(name) == expected
