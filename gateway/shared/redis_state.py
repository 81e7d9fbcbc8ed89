"""Upstream key state and spend shared by gateway replicas through Redis (``REDIS_URL``).

Nothing here is on a request's path. The key pools and the spend tracker decide from local
memory as they always did; they only *tell* this object what changed (a dictionary write, no
await), and two background tasks do the rest:

- the **flusher** writes what changed to Redis, in one pipeline per wake-up: a key's rest, its
  breaker opening, its disabling (each a Redis key with a TTL: a rest ends by itself) and a
  ``PUBLISH`` on one channel, from a Lua script so the write and the news are one step; spend
  is added with ``HINCRBYFLOAT``/``HINCRBY`` in a Lua script that also publishes the new totals
  (atomic: concurrent charges from every replica add up exactly); spend no budget or cap watches
  is gathered for ``SPEND_BATCH`` (5 ms) so one pipeline carries many requests' charges.
  Reported remaining tokens, which change on every answer, are sent at most every
  ``LIMITS_EVERY`` seconds per key;
  Additions to clients' sliding minutes (rpm at admission, tpm as really used) are published in
  the same pipelines, not stored (a minute's counts);
- the **listener** is subscribed to the channel and lays other replicas' news on the local pools
  and tracker (merges that only make local state stricter: gateway/shared/wire.py). A rest set
  by one replica reaches the others in about a millisecond on a LAN.

Budgets are still checked locally against spend as last known: every replica learns every
charge within a few milliseconds. Those milliseconds matter only near a budget, so a client past
``NEAR_BUDGET`` (80%) of one is admitted by Redis (``ADMIT``: one round trip, at most
``LATEST_TIMEOUT``), which checks the spend and *holds* the request in the client's in-flight set
in one atomic step. Far from a budget the hold is queued like a charge (no round trip). A
request's charge releases its hold; a hold a crashed replica left expires (``HOLD_TTL``). The
charge that crosses a budget counts the holds left then (``crossed`` in the spend hash, and a
``budget_crossed`` log line): the requests in flight when it was crossed, every one of them
admitted before it, and none after (a request answered but not charged yet is still in flight:
its charge follows its last byte by a few milliseconds).

Redis unreachable: the gateway serves on local state (``degraded``: logged once, a metric and
``/_status`` say so). Changes keep queueing (bounded: one entry per key field and per spend
window, deltas added up), the listener retries every ``retry`` seconds, and on reconnecting it
catches up both ways: spend totals are raised to what this replica knew (minus its own unsent
charges, which then follow), local rests are re-published, and everything stored in Redis is
read back and merged.

The Redis protocol is the ``redis`` package's (redis-py asyncio); nothing here speaks RESP.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import orjson
import redis.asyncio as aioredis
import structlog
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ..clients.budgets import DAY, MONTH, Limits
from ..clients.tracker import SpendTracker
from ..keypool import KeyPool, KeyState
from ..tasks import cancelled
from . import wire

log = structlog.get_logger("gateway.shared")

LIMITS_EVERY = 0.25  # seconds between two sends of one key's reported remaining tokens
# spend is gathered this long before it is sent: one pipeline for the charges of many requests
# (per-request writes cost ~10% of throughput at c=10); rests and breaker news, and spend that
# counts against a client's budget or a provider's cap, go at once
SPEND_BATCH = 0.005
WINDOW_QUEUE_MAX = 10_000  # unsent additions to sliding minutes kept, at most
LATEST_TIMEOUT = 0.05  # seconds a request near its budget waits for Redis's totals, at most
SPEND_KEEP = 86400.0  # a spend window's hash outlives its window by this (late requests, restarts)
HOLD_TTL = 900.0  # seconds a hold lasts unless released (longer than UPSTREAM_TIMEOUT's default 600)
TOLERANCE = 5e-10  # spend compares as the tracker's totals do (rounded to a billionth of a dollar)

# KEYS[1] the field's key; ARGV: value, ttl ms, channel, message. Never shortens a longer TTL,
# so the longest rest any replica set is the one a replica starting later reads.
PUT = """
local ttl = redis.call('PTTL', KEYS[1])
if tonumber(ARGV[2]) > ttl then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"""
# KEYS[1] a spend hash, KEYS[2] (watched client windows only) the client's held set; ARGV: usd,
# tokens, expire at (epoch s), channel, origin, [now (ms), usd limit, tokens limit ('' = none)].
# Returns {usd, tokens, in flight}: in flight is -1 unless this charge crossed a limit, then the
# holds left in the set (the requests admitted and not charged yet), also kept in the hash's
# ``crossed`` field (the window's first crossing)
CHARGE = """
local before_usd = tonumber(redis.call('HGET', KEYS[1], 'usd') or '0')
local before_tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens') or '0')
local usd = redis.call('HINCRBYFLOAT', KEYS[1], 'usd', ARGV[1])
local tokens = redis.call('HINCRBY', KEYS[1], 'tokens', ARGV[2])
redis.call('EXPIREAT', KEYS[1], ARGV[3])
local in_flight = -1
if #KEYS > 1 then
  local function crosses(limit, before, after)
    if limit == '' then return false end
    local edge = tonumber(limit) - """ + repr(TOLERANCE) + """
    return before < edge and after >= edge
  end
  if crosses(ARGV[7], before_usd, tonumber(usd)) or crosses(ARGV[8], before_tokens, tokens) then
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[6])
    in_flight = redis.call('ZCARD', KEYS[2])
    redis.call('HSETNX', KEYS[1], 'crossed',
      cjson.encode({in_flight = in_flight, usd = usd, tokens = tokens, at_ms = tonumber(ARGV[6])}))
  end
end
redis.call('PUBLISH', ARGV[4], cjson.encode({o = ARGV[5], f = 'spend', n = KEYS[1], usd = usd, tokens = tokens}))
return {usd, tokens, in_flight}
"""
# KEYS[1] a client's day hash, KEYS[2] its month hash, KEYS[3] its held set; ARGV: hold id, now
# (ms), hold ttl (ms), then the daily usd, daily tokens, monthly usd, monthly tokens limits ('' =
# none). Admitted (no limit spent): the hold is added, expired ones dropped. Returns {1 admitted
# or 0, day usd, day tokens, month usd, month tokens} (totals as strings: Lua numbers are integers)
ADMIT = """
local totals = {}
for i = 1, 2 do
  local v = redis.call('HMGET', KEYS[i], 'usd', 'tokens')
  totals[#totals + 1] = v[1] or '0'
  totals[#totals + 1] = v[2] or '0'
end
local admitted = 1
for i = 1, 4 do
  local limit = ARGV[3 + i]
  if limit ~= '' and tonumber(totals[i]) >= tonumber(limit) - """ + repr(TOLERANCE) + """ then admitted = 0 end
end
if admitted == 1 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[2])
  redis.call('ZADD', KEYS[3], tonumber(ARGV[2]) + tonumber(ARGV[3]), ARGV[1])
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
end
return {admitted, totals[1], totals[2], totals[3], totals[4]}
"""
# KEYS[1] a spend hash; ARGV: usd, tokens, expire at: raise the totals to at least these
FLOOR = """
local usd = tonumber(redis.call('HGET', KEYS[1], 'usd') or '0')
if tonumber(ARGV[1]) > usd then redis.call('HSET', KEYS[1], 'usd', ARGV[1]) end
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens') or '0')
if tonumber(ARGV[2]) > tokens then redis.call('HSET', KEYS[1], 'tokens', ARGV[2]) end
redis.call('EXPIREAT', KEYS[1], ARGV[3])
return 1
"""

Field = tuple[str, str, str]  # (provider, key name, field)


class RedisShared:
    def __init__(
        self,
        url: str,
        pools: Iterable[KeyPool],
        tracker: SpendTracker,
        *,
        retry: float = 0.5,
        timeout: float = 2.0,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.client = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=1,
            retry=Retry(NoBackoff(), 0),  # fail fast: the listener's loop is the retry
        )
        self.origin = uuid.uuid4().hex[:12]  # this replica, to skip its own news
        self.pools = {p.provider: p for p in pools}
        self.keys: dict[tuple[str, str], KeyState] = {
            (p.provider, k.name): k for p in self.pools.values() for k in p.keys
        }
        self.tracker = tracker
        self.retry = retry
        self.wall = wall
        self.connected = False
        self.times_degraded = 0
        self.degraded_since: float | None = None  # wall clock
        self.merged = 0  # news from other replicas that changed local state
        self.dropped = 0  # malformed messages
        self.ready = asyncio.Event()  # set once the first catch-up is done
        self._urgent: dict[Field, None] = {}
        self._limits: dict[tuple[str, str], None] = {}
        self._limits_sent = 0.0
        self._spend: dict[str, list[float]] = {}  # hash name -> [usd, tokens, expire at], unsent
        self._hurry = False  # some unsent spend counts against a budget or cap
        self._windows: list[tuple[str, int, float]] = []  # additions to clients' sliding minutes, unsent
        self._holds: dict[str, dict[str, float]] = {}  # held set -> hold id -> expires at (ms), unsent
        self._releases: dict[str, list[str]] = {}  # held set -> hold ids to drop, unsent
        self._watched: dict[str, tuple[str, str, str]] = {}  # spend hash -> (held set, usd, tokens limits)
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._put = self.client.register_script(PUT)
        self._charge = self.client.register_script(CHARGE)
        self._floor = self.client.register_script(FLOOR)
        self._admit = self.client.register_script(ADMIT)

    # ---- what the pools and the tracker call (sync, no await: a dict write) ------------------

    def attach(self) -> None:
        for pool in self.pools.values():
            pool.shared = self._teller(pool.provider)
        self.tracker.shared = self

    def _teller(self, provider: str) -> Callable[[KeyState, str], None]:
        def tell(key: KeyState, field: str) -> None:
            if field == wire.LIMITS:
                self._limits[(provider, key.name)] = None
            else:
                self._urgent[(provider, key.name, field)] = None
            self._wake.set()

        return tell

    def charge(self, scope: str, who: str | int, window: str, start: float, end: float, usd: float,
               tokens: int, urgent: bool = False,
               limits: tuple[float | None, float | None] | None = None) -> None:
        """``urgent``: spend against a budget or a cap, sent at once rather than gathered.
        ``limits``: a client's (usd, tokens) budgets in this window, whose crossing is counted."""
        if urgent:
            self._hurry = True
        name = wire.spend_name(scope, who, window, start)
        if limits is not None:
            self._watched[name] = (wire.held_name(who), _limit_arg(limits[0]), _limit_arg(limits[1]))
        entry = self._spend.get(name)
        if entry is None:
            self._spend[name] = [usd, float(tokens), end + SPEND_KEEP]
        else:
            entry[0] += usd
            entry[1] += tokens
        self._wake.set()

    def window(self, kind: str, key_id: int, amount: float) -> None:
        if len(self._windows) < WINDOW_QUEUE_MAX:  # a minute's counts: not worth more while degraded
            self._windows.append((kind, key_id, amount))
            self._wake.set()

    def hold(self, key_id: int, hold_id: str | None = None) -> str:
        """A request of a budgeted client admitted locally: queue its hold (sent with the next
        flush). Returns the hold's id, for ``release``."""
        hold_id = hold_id or self.hold_id()
        self._holds.setdefault(wire.held_name(key_id), {})[hold_id] = (self.wall() + HOLD_TTL) * 1000
        self._wake.set()
        return hold_id

    def hold_id(self) -> str:
        return f"{self.origin}:{next(self._seq)}"

    def release(self, key_id: int, hold_id: str) -> None:
        """The request has ended (its charge, if any, is queued now too): its hold goes."""
        name = wire.held_name(key_id)
        unsent = self._holds.get(name)
        if unsent is not None and unsent.pop(hold_id, None) is not None:
            if not unsent:
                del self._holds[name]
            return  # never sent: nothing to drop in Redis
        self._releases.setdefault(name, []).append(hold_id)
        self._wake.set()

    async def admit(self, key_id: int, day: float, month: float, limits: Limits, hold_id: str) -> bool | None:
        """Near a budget: Redis checks the client's day and month totals against ``limits`` and,
        if none is spent, holds the request (``hold_id``), in one atomic step; the totals read
        are adopted. True: held; False: refused (a budget is spent); None: no answer within
        ``LATEST_TIMEOUT`` or degraded (the local totals serve, and the caller queues the hold)."""
        if not self.connected:
            return None
        names = [wire.spend_name("c", key_id, DAY, day), wire.spend_name("c", key_id, MONTH, month)]
        now_ms = self.wall() * 1000
        try:
            async with asyncio.timeout(LATEST_TIMEOUT):
                result = await self._admit(
                    keys=[*names, wire.held_name(key_id)],
                    args=[hold_id, int(now_ms), int(HOLD_TTL * 1000),
                          *(_limit_arg(limits.daily_usd), _limit_arg(limits.daily_tokens),
                            _limit_arg(limits.monthly_usd), _limit_arg(limits.monthly_tokens))])
        except (RedisError, OSError, TimeoutError):
            return None
        admitted, day_usd, day_tokens, month_usd, month_tokens = result
        self._adopt_spend(names[0], float(day_usd), int(day_tokens))
        self._adopt_spend(names[1], float(month_usd), int(month_tokens))
        return bool(admitted)

    # ---- the tasks --------------------------------------------------------------------------

    async def run(self) -> None:
        """The listener (and, beside it, the flusher) until cancelled."""
        flusher = asyncio.create_task(self._flush_loop())
        try:
            while True:
                pubsub = self.client.pubsub(ignore_subscribe_messages=True)
                try:
                    await pubsub.subscribe(wire.CHANNEL)
                    await self._catch_up()
                    self._restored()
                    while True:
                        msg = await pubsub.get_message(timeout=1.0)
                        if msg is not None:
                            self.on_message(msg["data"])
                except (RedisError, OSError) as e:
                    self._lost(e)
                finally:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()
                self.ready.set()  # start degraded rather than wait for Redis
                await asyncio.sleep(self.retry)
        finally:
            await cancelled(flusher)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.flush()  # the last changes, if Redis is there
        await self.client.aclose()

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            if not self.connected:
                await asyncio.sleep(self.retry)  # kept queued; sent once the listener is back
                continue
            if not (self._urgent or self._hurry):
                await asyncio.sleep(SPEND_BATCH)
            self._wake.clear()
            self._hurry = False
            try:
                await self.flush()
            except (RedisError, OSError) as e:
                self._lost(e)
                self._wake.set()
            if self._limits and not (self._urgent or self._spend or self._windows):
                await asyncio.sleep(LIMITS_EVERY)  # remaining tokens only: not worth a write per answer
                self._wake.set()

    async def flush(self) -> None:
        """Send what changed since the last flush, in one pipeline; on failure it stays queued."""
        now = self.wall()
        urgent, self._urgent = self._urgent, {}
        limits: dict[tuple[str, str], None] = {}
        if self._limits and now - self._limits_sent >= LIMITS_EVERY:
            limits, self._limits = self._limits, {}
            self._limits_sent = now
        spend, self._spend = self._spend, {}
        windows, self._windows = self._windows, []
        holds, self._holds = self._holds, {}
        releases, self._releases = self._releases, {}
        if not (urgent or limits or spend or windows or holds or releases):
            return
        pipe = self.client.pipeline(transaction=False)
        if windows:  # news only: a minute's counts are not stored (a replica starting later has none)
            pipe.publish(wire.CHANNEL, wire.window_message(self.origin, windows))
        fields = [*urgent, *((p, k, wire.LIMITS) for p, k in limits)]
        for provider, name, field in fields:
            key, pool = self.keys.get((provider, name)), self.pools.get(provider)
            if key is None or pool is None:
                continue
            snap = wire.snapshot(key, field, pool.clock(), now)
            if snap is None:
                continue
            value, ttl = snap
            message = wire.key_message(self.origin, field, provider, name, value)
            await self._put(keys=[wire.key_name(field, provider, name)],
                            args=[orjson.dumps(value), max(1, int(ttl * 1000)), wire.CHANNEL, message], client=pipe)
        # holds, then releases, then charges (last: their results are read): a request's release
        # and its charge are queued together, so the count a crossing charge takes excludes it
        for held, ids in holds.items():
            pipe.zadd(held, ids)
            pipe.pexpire(held, int(HOLD_TTL * 1000))
        for held, released in releases.items():
            pipe.zrem(held, *released)
        names = list(spend)
        watching = {name: self._watched.pop(name) for name in names if name in self._watched}
        for name in names:
            usd, tokens, expire = spend[name]
            keys = [name]
            args: list[str | int] = [repr(usd), int(tokens), int(expire), wire.CHANNEL, self.origin]
            watched = watching.get(name)
            if watched is not None:
                keys.append(watched[0])
                args.extend((int(now * 1000), watched[1], watched[2]))
            await self._charge(keys=keys, args=args, client=pipe)
        try:
            results = await pipe.execute()
        except BaseException:
            self._requeue(urgent, limits, spend, holds, releases)
            for name, watched in watching.items():
                self._watched.setdefault(name, watched)
            raise
        for name, result in zip(names, results[len(results) - len(names):], strict=True):
            self._adopt_spend(name, float(result[0]), int(result[1]))
            if int(result[2]) >= 0:
                log.warning("budget_crossed", spend=name, usd=float(result[0]), tokens=int(result[1]),
                            in_flight=int(result[2]), note="requests admitted before the crossing and not charged yet")

    def _requeue(self, urgent: dict[Field, None], limits: dict[tuple[str, str], None],
                 spend: dict[str, list[float]], holds: dict[str, dict[str, float]],
                 releases: dict[str, list[str]]) -> None:
        for held, ids in holds.items():
            self._holds.setdefault(held, {}).update(ids)
        for held, released in releases.items():
            for hold_id in released:
                unsent = self._holds.get(held)
                if unsent is not None and unsent.pop(hold_id, None) is not None:
                    continue  # released while its hold waited: neither is sent
                self._releases.setdefault(held, []).append(hold_id)
        for f in urgent:
            self._urgent[f] = None
        for k in limits:
            self._limits[k] = None
        for name, (usd, tokens, expire) in spend.items():
            entry = self._spend.get(name)
            if entry is None:
                self._spend[name] = [usd, tokens, expire]
            else:
                entry[0] += usd
                entry[1] += tokens

    # ---- catching up ------------------------------------------------------------------------

    async def _catch_up(self) -> None:
        """On (re)connecting: Redis's spend raised to what this replica knows (less its unsent
        charges), local rests re-published, and what Redis holds merged here."""
        now = self.wall()
        pipe = self.client.pipeline(transaction=False)
        for scope, who, window, start, end, usd, tokens in self.tracker.windows():
            name = wire.spend_name(scope, who, window, start)
            unsent = self._spend.get(name, (0.0, 0.0))
            if usd - unsent[0] > 0 or tokens - unsent[1] > 0:
                await self._floor(keys=[name], args=[repr(round(usd - unsent[0], 9)), int(tokens - unsent[1]),
                                                     int(end + SPEND_KEEP)], client=pipe)
        await pipe.execute()
        for (provider, name), key in self.keys.items():
            for field in wire.KEY_FIELDS:
                if wire.snapshot(key, field, self.pools[provider].clock(), now) is not None:
                    if field == wire.LIMITS:
                        self._limits[(provider, name)] = None
                    else:
                        self._urgent[(provider, name, field)] = None
        names = [n async for n in self.client.scan_iter(match=wire.PREFIX + "*", count=1000)]
        spends = [n for n in names if wire.parse_spend_name(_text(n)) is not None]
        fields = [n for n in names if wire.parse_key_name(_text(n)) is not None]
        if fields:
            for name, raw in zip(fields, await self.client.mget(fields), strict=True):
                parsed = wire.parse_key_name(_text(name))
                if parsed is not None and raw is not None:
                    field, provider, key_name = parsed
                    try:
                        value = orjson.loads(raw)
                    except orjson.JSONDecodeError:
                        self.dropped += 1
                        continue
                    self._merge_key(provider, key_name, field, value)
        if spends:
            pipe = self.client.pipeline(transaction=False)
            for name in spends:
                pipe.hmget(name, "usd", "tokens")
            for name, (usd, tokens) in zip(spends, await pipe.execute(), strict=True):
                if usd is not None:
                    self._adopt_spend(_text(name), float(usd), int(tokens or 0))

    # ---- news -------------------------------------------------------------------------------

    def on_message(self, raw: bytes | str) -> None:
        msg = wire.parse_message(raw)
        if msg is None:
            self.dropped += 1
            return
        if msg["o"] == self.origin:
            return
        if msg["f"] == wire.WINDOW:
            for kind, key_id, amount in wire.window_adds(msg):
                self.tracker.foreign(kind, key_id, amount)
            return
        if msg["f"] == wire.SPEND:
            try:
                self._adopt_spend(msg["n"], float(msg["usd"]), int(msg.get("tokens") or 0))
            except (TypeError, ValueError, OverflowError):
                self.dropped += 1
            return
        self._merge_key(msg["p"], msg["k"], msg["f"], msg["v"])

    def _merge_key(self, provider: str, name: str, field: str, value: Any) -> None:
        key, pool = self.keys.get((provider, name)), self.pools.get(provider)
        if key is None or pool is None or not isinstance(value, dict):
            return  # a key this replica is not configured with
        try:
            if wire.merge(key, field, value, pool.clock(), self.wall()):
                self.merged += 1
        except (KeyError, TypeError, ValueError, OverflowError):
            self.dropped += 1

    def _adopt_spend(self, name: str, usd: float, tokens: int) -> None:
        """Redis's totals for a window, plus this replica's charges not sent yet (which they
        cannot hold), become the local totals' floor."""
        parsed = wire.parse_spend_name(name)
        if parsed is None:
            return
        scope, who, window, start = parsed
        unsent = self._spend.get(name)
        if unsent is not None:
            usd, tokens = usd + unsent[0], tokens + int(unsent[1])
        self.tracker.adopt(scope, who, window, start, usd, tokens)

    # ---- health -------------------------------------------------------------------------------

    def _lost(self, e: BaseException) -> None:
        if self.connected or self.degraded_since is None:
            self.times_degraded += 1
            self.degraded_since = self.wall()
            log.warning("shared_state_degraded", backend="redis", error=type(e).__name__, detail=str(e)[:200],
                        note="serving on local state; retrying")
        self.connected = False

    def _restored(self) -> None:
        if self.degraded_since is not None:
            log.info("shared_state_restored", backend="redis", after_s=round(self.wall() - self.degraded_since, 3))
        else:
            log.info("shared_state_connected", backend="redis", replica=self.origin)
        self.connected = True
        self.degraded_since = None
        self.ready.set()
        self._wake.set()

    def status(self) -> dict[str, Any]:
        return {
            "backend": "redis",
            "replica": self.origin,
            "connected": self.connected,
            "degraded": not self.connected,
            "degraded_for_s": round(self.wall() - self.degraded_since, 3) if self.degraded_since else 0.0,
            "times_degraded": self.times_degraded,
            "pending": len(self._urgent) + len(self._limits) + len(self._spend) + len(self._holds)
            + len(self._releases),
            "merged": self.merged,
        }


def _limit_arg(limit: float | None) -> str:
    """A limit as a script argument: '' for none."""
    return "" if limit is None else repr(limit)


def _text(name: bytes | str) -> str:
    return name.decode() if isinstance(name, bytes) else name
