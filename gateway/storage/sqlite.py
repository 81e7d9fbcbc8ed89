"""The SQLite backend: one aiosqlite connection (its own thread), in autocommit; transactions
are explicit and one at a time on the connection."""
from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import aiosqlite
import structlog

from ..migrations import connect
from . import SQLITE, Conflict, Row, insert_sql

log = structlog.get_logger("gateway.storage")

# ``insert_rows``: ``executemany`` steps SQLite once a row, and the sqlite3 module gives the GIL up
# for every step, so aiosqlite's thread queues for it again behind a busy event loop row after
# row: at 4,000 requests a second the ledger's writer could barely keep up (its queue reached
# 5,800 rows with a flush every 1,000). A statement of many rows is bound in one go and stepped
# once. SQLite keeps each prepared statement in the connection's cache (128 of them), ~5 KB per
# row it carries, so the rows are split into few shapes: ROWS_PER_INSERT at most, the rest in
# powers of two (64, 32, ... 1: seven shapes, ~0.6 MB cached). SQLite allows 32,766 variables a
# statement since 3.32, 999 before.
ROWS_PER_INSERT = 64
MAX_VARIABLES = 32_766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999


def statement_sizes(rows: int, most: int) -> list[int]:
    """The rows of each statement that inserts ``rows`` rows, ``most`` at most: as many of
    ``most`` as fit, then the rest in powers of two, largest first (pure)."""
    sizes = [most] * (rows // most)
    rest = rows % most
    while rest:
        size = 1 << (rest.bit_length() - 1)
        sizes.append(size)
        rest -= size
    return sizes


class SqliteDatabase:
    dialect = SQLITE

    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db
        self._lock = asyncio.Lock()  # one write (or transaction) at a time on this connection
        self._ending: set[asyncio.Future[None]] = set()  # transactions whose callers were cancelled

    @classmethod
    async def open(cls, path: Path | str, busy_timeout: float = 5.0) -> SqliteDatabase:
        return cls(await connect(path, busy_timeout))

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        async with self.db.execute(sql, args) as cur:
            return [tuple(row) for row in await cur.fetchall()]

    async def fetch_dicts(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        async with self.db.execute(sql, args) as cur:
            names = [c[0] for c in cur.description]
            return [dict(zip(names, row, strict=True)) for row in await cur.fetchall()]

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        async with self._lock:
            try:
                cur = await self.db.execute(sql, args)
            except sqlite3.IntegrityError as e:
                raise Conflict(str(e)) from None
            return cur.rowcount

    async def insert(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        """An INSERT … RETURNING: the row it returned."""
        async with self._lock:
            try:
                async with self.db.execute(sql, args) as cur:
                    row = await cur.fetchone()
            except sqlite3.IntegrityError as e:
                raise Conflict(str(e)) from None
            return tuple(row) if row else None

    async def execute_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        async def work() -> None:
            await self.db.executemany(sql, rows)

        await self._transaction(work)

    async def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        shape = tuple(columns)
        sizes = statement_sizes(len(rows), max(1, min(ROWS_PER_INSERT, MAX_VARIABLES // len(shape))))

        async def work() -> None:
            at = 0
            for size in sizes:
                values = list(chain.from_iterable(rows[at:at + size]))
                await self.db.execute(insert_sql(table, shape, size), values)
                at += size

        await self._transaction(work)

    async def _transaction(self, work: Callable[[], Awaitable[None]]) -> None:
        """``work`` in one transaction, to its COMMIT or ROLLBACK even when the caller is
        cancelled (a flush stopped at shutdown): aiosqlite's thread runs a statement whatever
        becomes of the task awaiting it, so a caller cancelled while ``BEGIN`` ran would leave
        the connection inside a transaction, and every later one would fail with "cannot start
        a transaction within a transaction". The caller still sees its cancellation; the
        transaction ends in a task of its own, holding the lock until then."""

        async def run() -> None:
            async with self._lock:
                await self.db.execute("BEGIN IMMEDIATE")
                try:
                    await work()
                    await self.db.execute("COMMIT")
                except BaseException:
                    await self.db.execute("ROLLBACK")
                    raise

        task = asyncio.ensure_future(run())
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():  # ends on its own; kept referenced until then, its error logged
                self._ending.add(task)
                task.add_done_callback(self._ended)
            raise

    def _ended(self, task: asyncio.Future[None]) -> None:
        self._ending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("sqlite_transaction_failed_after_cancel", error=repr(task.exception()))

    async def version(self) -> int:
        """``PRAGMA data_version``: changes when another connection commits."""
        async with self.db.execute("PRAGMA data_version") as cur:
            row = await cur.fetchone()
        assert row is not None
        return int(row[0])

    async def close(self) -> None:
        if self._ending:  # a transaction a cancelled caller left: let it end before closing
            await asyncio.gather(*self._ending, return_exceptions=True)
        await self.db.close()
