"""The usage ledger: one row per chat request that passed auth, served or failed.

``Ledger.record`` is the app's first recorder (the middleware calls it when the request ends, on
the event loop): it prices the request (``ctx.cost_usd``, ``ctx.primary_cost_usd``, read by the
recorders after it) and queues its row. Nothing else happens on the request's path: no I/O.

The writer (``run``, a task of the app's life) takes the queue every ``USAGE_FLUSH_INTERVAL``
seconds, or as soon as ``FLUSH_ROWS`` rows are queued if that comes first, and writes it in one
transaction (``Database.insert_rows``; SQLite: multi-row INSERTs on aiosqlite's own thread;
PostgreSQL with ``DATABASE_URL``: asyncpg's ``executemany`` through its pool, which reconnects by
itself). The count bounds what the queue holds whatever the request rate. Each queued row is
~600 bytes of small Python objects, and the interpreter's allocator keeps the memory of the
queue's highest mark: when the writer took everything queued every 2 s, at 4,000 requests a
second each batch took longer to write than the last (``executemany``, a GIL handoff per row,
behind a busy event loop), the queue reached 45,000 rows and the 100k soak grew RSS by 17 MB.

Rows whose tokens were estimated get their tiktoken count first, in a worker thread. The queue is
bounded (``USAGE_QUEUE_MAX``): while the database cannot be written (locked by another process,
say, or a PostgreSQL server that is down) the gateway keeps serving, and rows beyond the bound
are dropped and counted (one log line per interval; ``/_status`` shows the count and the queue
depth). A failed batch goes back to the front of the queue, as much of it as fits.

``close`` (the app's cleanup, which aiohttp runs on SIGTERM after the last request finished)
writes everything still queued. A SIGKILL loses what was queued: at most one flush interval.

Retention: rows older than ``USAGE_RETENTION_DAYS`` are deleted at start and every hour, in
batches of ``PRUNE_BATCH`` rows, each its own short transaction.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from ..context import RequestContext, Usage
from ..storage import ERRORS, Database, insert_sql, open_database
from .estimate import PendingUsage
from .prices import Price, PriceTable, cost

if TYPE_CHECKING:
    from ..config import ProviderConfig

log = structlog.get_logger("gateway.usage")

CHAT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions", "/v1/messages"})
COLUMNS = (
    "ts", "request_id", "client_key_id", "client_name", "provider", "upstream_key", "model_requested",
    "model_served", "stream", "status",
    "prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens", "cost_usd", "primary_cost_usd",
    "priced", "tokens_estimated",
    "latency_ms", "ttft_ms", "attempts", "fallback_reason", "repairs", "error_code",
)
_TOKENS_AT = COLUMNS.index("prompt_tokens")  # the block an estimate's refinement rewrites ...
_TOKENS_END = COLUMNS.index("tokens_estimated") + 1  # ... up to here
INSERT = insert_sql("usage", COLUMNS, 1)  # one row (the PostgreSQL tests)
FLUSH_ROWS = 1000  # queued rows that start a flush before the interval is up
PRUNE_EVERY = 3600.0  # seconds
PRUNE_BATCH = 500  # rows a delete removes; one short transaction each
PRUNE_BATCHES = 20  # batches a pass removes before it lets the next flush run

Row = tuple[Any, ...]
# a queued row, and for an estimate the usage to refine with the prices to apply to it
Entry = tuple[Row, PendingUsage | None, Price | None, Price | None]


def _usage_block(usage: Usage | None, cost_usd: float | None, primary_cost_usd: float | None, priced: bool) -> Row:
    if usage is None:
        return (0, 0, 0, 0, cost_usd, primary_cost_usd, int(priced), 0)
    return (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, usage.reasoning_tokens,
            cost_usd, primary_cost_usd, int(priced), int(usage.estimated))


def refine(entries: Sequence[Entry]) -> list[Row]:
    """The rows to write: estimated ones with their tiktoken counts and costs. Slow for big texts:
    the writer runs it in a worker thread."""
    rows = []
    for row, pending, price, primary in entries:
        if pending is not None:
            usage = pending.refined()
            block = _usage_block(usage, cost(usage, price) if price else None,
                                 cost(usage, primary) if primary else None, price is not None)
            row = row[:_TOKENS_AT] + block + row[_TOKENS_END:]
        rows.append(row)
    return rows


class Ledger:
    def __init__(
        self,
        prices: PriceTable,
        primary: ProviderConfig | None,
        *,
        auth: bool,
        queue_max: int,
        flush_interval: float,
        retention_days: float,
        flush_rows: int = FLUSH_ROWS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.prices = prices
        self.primary = primary  # what a request would have cost there is its primary_cost_usd
        self.auth = auth
        self.queue_max = queue_max
        self.flush_interval = flush_interval
        self.flush_rows = flush_rows
        self.retention_days = retention_days
        self.clock = clock
        self.rows_dropped = 0
        self.written = 0
        self._dropped_logged = 0
        self._queue: deque[Entry] = deque()
        self._unpriced_seen: set[tuple[str | None, str | None]] = set()
        self._db: Database | None = None
        self.reader: Database | None = None  # for queries (/stats): never behind a write
        self._lock = asyncio.Lock()  # one transaction at a time on the writer's connection
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()  # the writer's: flush_rows are queued, or stop()

    # ---- on the request's path --------------------------------------------------------------------

    def record(self, ctx: RequestContext) -> None:
        """The recorder: price the request, queue its row. Chat requests that passed auth only."""
        if ctx.path not in CHAT_PATHS or ctx.method != "POST" or (self.auth and ctx.client_id is None):
            return
        usage = ctx.usage
        price = primary = None
        if usage is None:  # nothing was served: nothing was billed
            ctx.cost_usd = ctx.primary_cost_usd = 0.0
            priced = True
        else:
            price = self.prices.lookup(ctx.provider, ctx.model_served)
            primary = self.primary_price(ctx.model_asked)
            ctx.cost_usd = cost(usage, price) if price is not None else None
            # (served by the primary, as most requests are: the same price, the same cost)
            if primary is price:
                ctx.primary_cost_usd = ctx.cost_usd
            else:
                ctx.primary_cost_usd = cost(usage, primary) if primary is not None else None
            priced = price is not None
            if not priced:
                self._unpriced(ctx.provider, ctx.model_served)
        depth = len(self._queue)
        if depth >= self.queue_max:
            self.rows_dropped += 1
            return
        error = ctx.error_code
        if error is None:
            if ctx.stream_error is not None:
                error = "upstream_stream_error"
            elif ctx.client_disconnected:
                error = "client_disconnected"
        key = ctx.upstream_key
        if key is None and ctx.provider is not None and ctx.attempts:  # an upstream 4xx: its last attempt's key
            key = ctx.attempts[-1].key
        row = (
            ctx.started_at, ctx.request_id, ctx.client_id, ctx.client_name, ctx.provider, key,
            ctx.model_asked, ctx.model_served, 1 if ctx.stream else 0, ctx.status,
            *_usage_block(usage, ctx.cost_usd, ctx.primary_cost_usd, priced),
            ctx.latency_ms, ctx.ttft_ms, ctx.attempt_count, ctx.fallback_reason,
            sum(ctx.repairs.values()) if ctx.repairs else 0, error,
        )
        pending = usage if isinstance(usage, PendingUsage) else None
        self._queue.append((row, pending, price, primary))
        if depth + 1 >= self.flush_rows:
            self._wake.set()  # a batch is full: the writer need not wait for the interval

    def primary_price(self, model_asked: str | None) -> Price | None:
        primary = self.primary
        if primary is None:
            return None
        return self.prices.lookup(primary.name, primary.model_for(model_asked))

    def _unpriced(self, provider: str | None, model: str | None) -> None:
        if (provider, model) not in self._unpriced_seen:
            self._unpriced_seen.add((provider, model))
            log.warning("model_not_priced", provider=provider, model=model,
                        detail="tokens are counted, cost is left empty; give its price in PRICES_FILE")

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def status(self) -> dict[str, int]:
        """For ``/_status``; ``rows_dropped`` and ``queue_depth`` are also what the metrics read."""
        return {"usage_rows_dropped": self.rows_dropped, "usage_queue_depth": self.queue_depth,
                "usage_rows_written": self.written}

    # ---- the writer ---------------------------------------------------------------------------------

    async def open(self, target: Path | str, busy_timeout: float = 5.0) -> None:
        """Connect to the SQLite file or the PostgreSQL URL ``target`` (a writer and a reader)."""
        self._db = await open_database(target, busy_timeout)
        try:
            self.reader = await open_database(target, busy_timeout)
        except BaseException:
            await self._db.close()
            raise

    async def run(self) -> None:
        """Flush every interval, or once ``flush_rows`` are queued, and prune every hour, until
        ``stop()``. A failure is logged and the next interval tries again: after a failed write
        the writer waits the whole interval, however full the queue."""
        next_prune = 0.0
        failed = False
        while not self._stop.is_set():
            if self.clock() >= next_prune:
                more = await self._guarded(self.prune)
                next_prune = self.clock() + (0.0 if more else PRUNE_EVERY)
            if failed or len(self._queue) < self.flush_rows:
                self._wake.clear()
                try:
                    await asyncio.wait_for((self._stop if failed else self._wake).wait(), self.flush_interval)
                except TimeoutError:
                    pass
            failed = await self._guarded(self.flush) is None
            self._report_drops()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def close(self) -> None:
        """Write what is queued, then close. Call after ``run`` returned (``stop()``)."""
        try:
            await self.flush()
        except Exception as e:
            log.error("usage_flush_failed", error=repr(e), rows_lost=len(self._queue))
            raise
        finally:
            self._report_drops()
            for db in (self._db, self.reader):
                if db is not None:
                    await db.close()

    async def flush(self) -> int:
        """Write every queued row in one transaction; returns how many were written."""
        async with self._lock:
            if not self._queue or self._db is None:
                return 0
            batch = list(self._queue)
            self._queue.clear()
            rows: list[Row] = [e[0] for e in batch]
            try:
                if any(e[1] is not None for e in batch):
                    rows = await asyncio.to_thread(refine, batch)
                await self._db.insert_rows("usage", COLUMNS, rows)
            except BaseException:
                self._requeue(rows)
                raise
            self.written += len(rows)
            return len(rows)

    def _requeue(self, rows: list[Row]) -> None:
        """A failed batch back to the front of the queue, as much as the bound leaves room for."""
        room = max(0, self.queue_max - len(self._queue))
        kept = rows[:room]
        self.rows_dropped += len(rows) - len(kept)
        self._queue.extendleft((row, None, None, None) for row in reversed(kept))

    async def prune(self) -> bool:
        """Delete rows older than the retention, a few batches at a time; True if more are left."""
        if self._db is None:
            return False
        cutoff = self.clock() - self.retention_days * 86400
        for _ in range(PRUNE_BATCHES):
            async with self._lock:
                deleted = await self._db.execute(
                    "DELETE FROM usage WHERE id IN (SELECT id FROM usage WHERE ts < ? ORDER BY ts LIMIT ?)",
                    (cutoff, PRUNE_BATCH),
                )
            if deleted < PRUNE_BATCH:
                return False
        return True

    async def _guarded(self, step: Callable[[], Any]) -> Any:
        """Run a writer step; a failure is logged and the writer goes on (the next interval retries)."""
        try:
            return await step()
        except ERRORS as e:  # e.g. the database is locked or down: keep serving, retry later
            log.warning("usage_write_failed", step=step.__name__, error=repr(e), queued=len(self._queue))
        except Exception:
            log.exception("usage_writer_failed", step=step.__name__, queued=len(self._queue))
        return None

    def _report_drops(self) -> None:
        if self.rows_dropped != self._dropped_logged:
            log.warning("usage_rows_dropped", dropped=self.rows_dropped - self._dropped_logged, total=self.rows_dropped,
                        queue_max=self.queue_max)
            self._dropped_logged = self.rows_dropped
