"""The SQLite backend's transactions on a real file: a cancelled caller never leaves the
connection inside a transaction."""
from __future__ import annotations

import asyncio
import sqlite3

import pytest

from gateway.storage.sqlite import SqliteDatabase


async def _db(tmp_path) -> SqliteDatabase:
    db = await SqliteDatabase.open(tmp_path / "t.db")
    await db.execute("CREATE TABLE t (n INTEGER)")
    return db


def _count(tmp_path) -> int:
    with sqlite3.connect(tmp_path / "t.db") as con:
        return con.execute("SELECT count(*) FROM t").fetchone()[0]


@pytest.mark.parametrize("method", ["execute_many", "insert_rows"])
@pytest.mark.parametrize("turns", [1, 2, 3])  # cancelled during BEGIN, the rows, or the COMMIT
async def test_a_cancelled_write_still_ends_its_transaction(tmp_path, method, turns):
    db = await _db(tmp_path)
    try:
        def write(rows):
            if method == "execute_many":
                return db.execute_many("INSERT INTO t (n) VALUES (?)", rows)
            return db.insert_rows("t", ["n"], rows)

        task = asyncio.create_task(write([(i,) for i in range(100)]))
        for _ in range(turns):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await write([(1000,)])  # before the fix: "cannot start a transaction within a transaction"
        assert _count(tmp_path) in (1, 101)  # the cancelled batch committed whole, or not at all
    finally:
        await db.close()


async def test_close_waits_for_a_transaction_its_caller_left(tmp_path):
    db = await _db(tmp_path)
    task = asyncio.create_task(db.execute_many("INSERT INTO t (n) VALUES (?)", [(i,) for i in range(50)]))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await db.close()  # no "Event loop is closed" from aiosqlite's thread, no transaction lost half-way
    assert _count(tmp_path) in (0, 50)
