"""The usage ledger on a real SQLite file: rows, pricing, batches, a write stall, shutdown, retention."""
from __future__ import annotations

import sqlite3
import time

import pytest

from gateway import tokens
from gateway.config import ProviderConfig
from gateway.context import AttemptRecord, RequestContext, Usage
from gateway.migrations import MIGRATIONS, connect, migrate
from gateway.storage import insert_sql
from gateway.usage import ledger as ledger_module
from gateway.usage.estimate import PendingUsage
from gateway.usage.ledger import COLUMNS, Ledger
from gateway.usage.prices import default_prices
from tests.conftest import eventually
from tests.usage_db import rows

CEREBRAS = ProviderConfig("cerebras", "http://x/v1", (), "zai-glm-4.7", frozenset({"zai-glm-4.7"}))


def make_ledger(**kw) -> Ledger:
    options: dict = {"auth": False, "queue_max": 1000, "flush_interval": 0.05, "retention_days": 90.0}
    options.update(kw)
    return Ledger(default_prices(), CEREBRAS, **options)


def chat(provider: str | None = "cerebras", model: str | None = "zai-glm-4.7", usage: Usage | None = None,
         status: int = 200, client_id: int | None = None, path: str = "/v1/chat/completions",
         rid: str = "rid") -> RequestContext:
    ctx = RequestContext(rid, "POST", path)
    ctx.status = status
    ctx.stream = False
    ctx.model_asked = "zai-glm-4.7"
    ctx.client_id = client_id
    ctx.client_name = None if client_id is None else f"client{client_id}"
    if provider is not None:
        ctx.add_attempt(AttemptRecord(provider, "k1", "ok", 200, 1.0))
        ctx.served_by(provider, "k1", model)
    ctx.usage = usage
    ctx.finished_ns = ctx.started_ns + 2_000_000
    return ctx


@pytest.fixture
async def opened(tmp_path):
    """Ledgers on tmp_path/keys.db (a short busy timeout, for the stall test), closed afterwards."""
    made = []

    async def open_(**kw) -> Ledger:
        ledger = make_ledger(**kw)
        await ledger.open(tmp_path / "keys.db", busy_timeout=0.1)
        made.append(ledger)
        return ledger

    yield open_
    for ledger in made:
        await ledger.close()


async def test_a_served_request_is_priced_and_written_with_every_field(opened, tmp_path):
    ledger = await opened()
    ctx = chat(usage=Usage(1000, 200, cached_tokens=100, reasoning_tokens=50), rid="req-1")
    ctx.repairs = {"missing_tool_result": 2}
    ledger.record(ctx)
    expected_cost = (1000 * 2.25 + 200 * 2.75) / 1e6
    assert ctx.cost_usd == pytest.approx(expected_cost) and ctx.primary_cost_usd == pytest.approx(expected_cost)
    assert ledger.status()["usage_queue_depth"] == 1
    assert await ledger.flush() == 1
    [row] = rows(tmp_path / "keys.db")
    assert set(row) == {"id", *COLUMNS}
    assert row["request_id"] == "req-1" and row["provider"] == "cerebras" and row["upstream_key"] == "k1"
    assert (row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"], row["reasoning_tokens"]) == \
        (1000, 200, 100, 50)
    assert row["cost_usd"] == pytest.approx(expected_cost) and row["priced"] == 1 and row["tokens_estimated"] == 0
    assert row["status"] == 200 and row["stream"] == 0 and row["attempts"] == 1 and row["repairs"] == 2
    assert row["latency_ms"] == pytest.approx(2.0) and row["ts"] == pytest.approx(time.time(), abs=5)
    assert ledger.status() == {"usage_rows_dropped": 0, "usage_queue_depth": 0, "usage_rows_written": 1}


async def test_a_fallback_records_what_the_primary_would_have_cost(opened, tmp_path):
    ledger = await opened()
    local = chat("local", "glm-local", Usage(10_000, 1_000))
    ledger.record(local)
    zai = chat("zai", "glm-4.7", Usage(10_000, 1_000, cached_tokens=8_000))
    ledger.record(zai)
    primary = (10_000 * 2.25 + 1_000 * 2.75) / 1e6
    assert local.cost_usd == 0.0 and local.primary_cost_usd == pytest.approx(primary)
    assert zai.cost_usd == pytest.approx((2_000 * 0.60 + 8_000 * 0.11 + 1_000 * 2.20) / 1e6)
    await ledger.flush()
    assert [r["primary_cost_usd"] for r in rows(tmp_path / "keys.db")] == [pytest.approx(primary)] * 2


async def test_an_unpriced_model_is_counted_in_tokens_flagged_and_never_priced_at_zero(opened, tmp_path):
    ledger = await opened()
    for _ in range(3):
        ctx = chat("cerebras", "qwen-3-coder", Usage(100, 10))
        ledger.record(ctx)
        assert ctx.cost_usd is None
    assert ledger._unpriced_seen == {("cerebras", "qwen-3-coder")}  # logged once for the pair
    await ledger.flush()
    assert [(r["cost_usd"], r["priced"], r["prompt_tokens"]) for r in rows(tmp_path / "keys.db")] == \
        [(None, 0, 100)] * 3


@pytest.mark.parametrize(
    "ctx, auth, recorded",
    [
        (chat(), False, True),
        (chat(path="/chat/completions"), False, True),
        (chat(client_id=3), True, True),
        (chat(provider=None, status=401), True, False),  # did not pass auth
        (chat(path="/health"), False, False),
        (chat(path="/v1/models"), False, False),
    ],
)
async def test_only_chat_requests_that_passed_auth_leave_a_row(ctx, auth, recorded):
    ledger = make_ledger(auth=auth)
    ledger.record(ctx)
    assert ledger.status()["usage_queue_depth"] == int(recorded)


async def test_failed_requests_leave_a_row_at_no_cost(opened, tmp_path):
    ledger = await opened()
    failed = chat(provider=None, status=429)
    failed.error_code = "rate_limit_exceeded"
    ledger.record(failed)
    left = chat(status=499)
    left.client_disconnected = True
    left.stream = True
    ledger.record(left)
    assert failed.cost_usd == 0.0
    await ledger.flush()
    got = [(r["status"], r["error_code"], r["cost_usd"], r["provider"], r["stream"])
           for r in rows(tmp_path / "keys.db")]
    assert got == [(429, "rate_limit_exceeded", 0.0, None, 0), (499, "client_disconnected", 0.0, "cerebras", 1)]


async def test_estimates_are_tokenized_by_the_writer_not_the_recorder(opened, tmp_path):
    ledger = await opened()
    payload = {"messages": [{"role": "user", "content": "word " * 200}]}
    estimate = PendingUsage(payload, ["word " * 100], [], prompt_bytes=1000)
    ctx = chat(usage=estimate)
    ledger.record(ctx)
    provisional = (250 * 2.25 + 125 * 2.75) / 1e6  # bytes / 4 at record time
    assert ctx.cost_usd == pytest.approx(provisional)
    await ledger.flush()
    [row] = rows(tmp_path / "keys.db")
    assert row["tokens_estimated"] == 1
    count = tokens.encoder()
    assert row["prompt_tokens"] == tokens.estimate_prompt_tokens(payload, count)  # tiktoken's counts
    assert row["completion_tokens"] == count("word " * 100)
    assert row["cost_usd"] == pytest.approx((row["prompt_tokens"] * 2.25 + row["completion_tokens"] * 2.75) / 1e6)


async def test_a_write_stall_keeps_the_recorder_cheap_drops_beyond_the_bound_and_recovers(opened, tmp_path):
    ledger = await opened(queue_max=5)
    ledger.record(chat(rid="before"))
    blocker = sqlite3.connect(tmp_path / "keys.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another process holds the database
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await ledger.flush()
        assert ledger.status()["usage_queue_depth"] == 1  # the failed batch went back
        began = time.perf_counter()
        for i in range(7):
            ledger.record(chat(rid=f"during-{i}"))
        assert time.perf_counter() - began < 0.05  # never waits on the database
        assert ledger.status() == {"usage_rows_dropped": 3, "usage_queue_depth": 5, "usage_rows_written": 0}
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert await ledger.flush() == 5
    assert [r["request_id"] for r in rows(tmp_path / "keys.db")] == ["before", *(f"during-{i}" for i in range(4))]
    assert ledger.status()["usage_rows_dropped"] == 3


async def test_the_writer_flushes_every_interval_and_close_writes_the_rest(tmp_path):
    import asyncio

    ledger = make_ledger(flush_interval=0.05)
    await ledger.open(tmp_path / "keys.db")
    task = asyncio.create_task(ledger.run())
    ledger.record(chat(rid="a"))
    await eventually(lambda: len(rows(tmp_path / "keys.db")) == 1)
    ledger.flush_interval = 3600  # the next rows wait for shutdown
    await asyncio.sleep(0.1)
    for i in range(50):
        ledger.record(chat(rid=f"b{i}"))
    ledger.stop()
    await asyncio.wait_for(task, 5)
    await ledger.close()
    assert len(rows(tmp_path / "keys.db")) == 51


async def test_a_full_batch_is_written_at_once_so_the_queue_stays_bounded_whatever_the_rate(tmp_path):
    """The queue's rows are what a burst of requests leaves in memory (the allocator keeps the
    high-water mark of it: issue 12's RSS growth): it is written once ``flush_rows`` are queued,
    not only every interval."""
    import asyncio

    clock_reads: list[float] = []
    ledger = make_ledger(flush_interval=3600, flush_rows=100,
                         clock=lambda: clock_reads.append(time.time()) or clock_reads[-1])
    await ledger.open(tmp_path / "keys.db")
    task = asyncio.create_task(ledger.run())
    try:
        # the writer has pruned and read the clock again: it waits for the interval now
        await eventually(lambda: len(clock_reads) >= 2)
        for i in range(250):
            ledger.record(chat(rid=f"r{i}"))
        assert ledger.queue_depth == 250
        # two full batches, long before the hour is up; the last 50 wait for the interval
        await eventually(lambda: ledger.written >= 200)
        assert ledger.queue_depth == 250 - ledger.written < 100
    finally:
        ledger.stop()
        await asyncio.wait_for(task, 5)
        await ledger.close()
    assert len(rows(tmp_path / "keys.db")) == 250


async def test_after_a_failed_write_the_writer_waits_the_interval_however_full_the_queue(opened, tmp_path):
    import asyncio

    ledger = await opened(flush_interval=0.5, flush_rows=1)
    starts: list[float] = []
    flush = ledger.flush

    async def counted() -> int:
        starts.append(time.monotonic())
        return await flush()

    ledger.flush = counted  # type: ignore[method-assign]
    for i in range(5):
        ledger.record(chat(rid=f"r{i}"))
    blocker = sqlite3.connect(tmp_path / "keys.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # the database refuses every write (busy timeout 0.1 s)
    task = asyncio.create_task(ledger.run())
    try:
        await eventually(lambda: len(starts) >= 3)
        # a full queue starts a write at once, but not again right after a failed one
        assert starts[2] - starts[1] >= 0.5 and starts[1] - starts[0] >= 0.5
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    await eventually(lambda: ledger.written == 5)
    ledger.stop()
    await asyncio.wait_for(task, 5)


@pytest.mark.parametrize("count", [1, 63, 64, 65, 1234])
async def test_a_batch_is_written_in_multi_row_statements_every_row_in_order(tmp_path, count, monkeypatch):
    from gateway.storage import sqlite as sqlite_backend

    statements: list[str] = []
    monkeypatch.setattr(sqlite_backend, "insert_sql", lambda *a: statements.append(insert_sql(*a)) or statements[-1])
    ledger = make_ledger(queue_max=10_000)
    await ledger.open(tmp_path / "keys.db")
    try:
        for i in range(count):
            ledger.record(chat(rid=f"r{i}", usage=Usage(i, 1)))
        assert await ledger.flush() == count
    finally:
        await ledger.close()
    written = rows(tmp_path / "keys.db")
    assert [(r["request_id"], r["prompt_tokens"]) for r in written] == [(f"r{i}", i) for i in range(count)]
    assert len(statements) == len(sqlite_backend.statement_sizes(count, sqlite_backend.ROWS_PER_INSERT))


async def test_a_batch_with_a_bad_row_writes_nothing_and_goes_back_to_the_queue(opened, tmp_path):
    ledger = await opened()
    for i in range(200):
        ledger.record(chat(rid=f"r{i}"))
    row, *rest = ledger._queue[199]
    ledger._queue[199] = ((None, *row[1:]), *rest)  # ts NULL: the last statement fails
    with pytest.raises(sqlite3.IntegrityError):
        await ledger.flush()
    assert rows(tmp_path / "keys.db") == []  # the statements before it were rolled back
    assert ledger.queue_depth == 200
    ledger._queue.pop()
    assert await ledger.flush() == 199


async def test_old_rows_are_pruned_in_batches(opened, tmp_path, monkeypatch):
    monkeypatch.setattr(ledger_module, "PRUNE_BATCH", 10)
    monkeypatch.setattr(ledger_module, "PRUNE_BATCHES", 2)
    now = time.time()
    ledger = await opened(retention_days=90.0)
    for i in range(45):
        ctx = chat(rid=f"old{i}")
        ctx.started_at = now - 91 * 86400
        ledger.record(ctx)
    recent = chat(rid="recent")
    recent.started_at = now - 89 * 86400
    ledger.record(recent)
    await ledger.flush()
    assert await ledger.prune() is True  # 20 deleted, more left: the writer comes back at once
    assert len(rows(tmp_path / "keys.db")) == 26
    assert await ledger.prune() is True
    assert await ledger.prune() is False
    assert [r["request_id"] for r in rows(tmp_path / "keys.db")] == ["recent"]


async def test_migrates_a_blank_database_and_an_old_one(tmp_path):
    db = await connect(tmp_path / "new.db")
    await db.close()
    con = sqlite3.connect(tmp_path / "new.db")
    indexes = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'usage'")}
    assert {"usage_ts", "usage_client_ts"} <= indexes
    con.close()

    old = tmp_path / "old.db"  # a database from before the ledger: keys only
    con = sqlite3.connect(old)
    con.executescript(MIGRATIONS[0][1])
    con.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    con.execute("INSERT INTO _migrations VALUES ('001_api_keys', 0)")
    con.execute("INSERT INTO api_keys (name, key_hash, key_prefix, created_at) VALUES ('kept', 'h', 'p', 0)")
    con.commit()
    con.close()
    db = await connect(old)
    try:
        assert await migrate(db) == []  # connect applied 002 already
    finally:
        await db.close()
    con = sqlite3.connect(old)
    assert [r[0] for r in con.execute("SELECT name FROM _migrations ORDER BY name")] == [m[0] for m in MIGRATIONS]
    assert con.execute("SELECT name FROM api_keys").fetchall() == [("kept",)]
    assert con.execute("SELECT count(*) FROM usage").fetchone() == (0,)
    con.close()
