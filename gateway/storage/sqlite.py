"""The SQLite backend: one aiosqlite connection (its own thread), in autocommit; transactions
are explicit and one at a time on the connection."""
from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from ..migrations import connect
from . import SQLITE, Conflict, Row


class SqliteDatabase:
    dialect = SQLITE

    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db
        self._lock = asyncio.Lock()  # one write (or transaction) at a time on this connection

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
        async with self._lock:
            await self.db.execute("BEGIN IMMEDIATE")
            try:
                await self.db.executemany(sql, rows)
                await self.db.execute("COMMIT")
            except BaseException:
                await self.db.execute("ROLLBACK")
                raise

    async def version(self) -> int:
        """``PRAGMA data_version``: changes when another connection commits."""
        async with self.db.execute("PRAGMA data_version") as cur:
            row = await cur.fetchone()
        assert row is not None
        return int(row[0])

    async def close(self) -> None:
        await self.db.close()
