"""The PostgreSQL backend (asyncpg): a small pool, so a connection lost while the server is down
is replaced by a new one on the next call once it is back (nothing here reconnects by hand)."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg

from ..migrations import migrate_postgres
from . import POSTGRES, Conflict, Row, insert_sql, to_dollar

CONNECT_TIMEOUT = 5.0  # seconds to open a connection: a server that is down fails fast
COMMAND_TIMEOUT = 30.0


class PostgresDatabase:
    dialect = POSTGRES

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._sql: dict[str, str] = {}  # ? -> $n, once per statement

    @classmethod
    async def open(cls, url: str, max_size: int = 4) -> PostgresDatabase:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=max_size, timeout=CONNECT_TIMEOUT,
                                         command_timeout=COMMAND_TIMEOUT)
        try:
            async with pool.acquire() as conn:
                await migrate_postgres(conn)
        except BaseException:
            await pool.close()
            raise
        return cls(pool)

    def _q(self, sql: str) -> str:
        found = self._sql.get(sql)
        if found is None:
            found = self._sql[sql] = to_dollar(sql)
        return found

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return [tuple(r) for r in await self.pool.fetch(self._q(sql), *args, timeout=COMMAND_TIMEOUT)]

    async def fetch_dicts(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return [dict(r.items()) for r in await self.pool.fetch(self._q(sql), *args, timeout=COMMAND_TIMEOUT)]

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        try:
            status = await self.pool.execute(self._q(sql), *args, timeout=COMMAND_TIMEOUT)
        except asyncpg.UniqueViolationError as e:
            raise Conflict(str(e)) from None
        last = status.rsplit(" ", 1)[-1]  # "UPDATE 3", "DELETE 0", "INSERT 0 1"
        return int(last) if last.isdigit() else 0

    async def insert(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        try:
            row = await self.pool.fetchrow(self._q(sql), *args, timeout=COMMAND_TIMEOUT)
        except asyncpg.UniqueViolationError as e:
            raise Conflict(str(e)) from None
        return tuple(row) if row is not None else None

    async def execute_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        async with self.pool.acquire(timeout=CONNECT_TIMEOUT) as conn, conn.transaction():
            await conn.executemany(self._q(sql), rows, timeout=COMMAND_TIMEOUT)

    async def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """asyncpg's ``executemany`` pipelines the rows on the event loop: no thread, nothing to batch."""
        await self.execute_many(insert_sql(table, tuple(columns), 1), rows)

    async def version(self) -> int:
        """The ``key_version`` counter, which a trigger bumps on every change to a key's
        identity, status, role or limits (migration 004), not on usage counts."""
        return int(await self.pool.fetchval("SELECT version FROM key_version WHERE id = 1", timeout=COMMAND_TIMEOUT))

    async def close(self) -> None:
        await self.pool.close()
