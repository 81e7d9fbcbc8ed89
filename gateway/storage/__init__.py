"""Where client keys, roles, budgets and the usage ledger live: SQLite (one machine, the default)
or PostgreSQL (``DATABASE_URL``, shared by replicas), behind one small interface.

``Database`` is what the key store, the usage ledger, ``/stats``, the spend restore and
``manage_keys.py`` call: queries are written once with ``?`` placeholders, and the few places where
the dialects differ ask ``db.dialect``. ``open_database(target)`` picks the backend: a
``postgresql://`` URL or a SQLite path.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import asyncpg

SQLITE = "sqlite"
POSTGRES = "postgres"
PG_SCHEMES = ("postgresql", "postgres")

Row = tuple[Any, ...]

# what a database that is down, locked or gone raises: callers that keep serving catch these
ERRORS: tuple[type[BaseException], ...] = (sqlite3.Error, OSError, asyncpg.PostgresError, asyncpg.InterfaceError,
                                           TimeoutError)


class Conflict(Exception):
    """A unique constraint refused the write (a key name taken)."""


class Database(Protocol):
    dialect: str

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]: ...

    async def fetch_dicts(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]: ...

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Run one statement (its own transaction); returns the rows it changed."""
        ...

    async def insert(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        """An ``INSERT … RETURNING``: the row it returned; ``Conflict`` on a unique violation."""
        ...

    async def execute_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """One statement for each row, all in one transaction."""
        ...

    async def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """INSERT ``rows`` (values in ``columns``' order) into ``table``, all in one transaction;
        for batches (the usage ledger's), in as few statements as the backend allows."""
        ...

    async def version(self) -> int:
        """A number that changes when another connection may have changed the keys."""
        ...

    async def close(self) -> None: ...


def is_postgres_url(target: str | Path) -> bool:
    return isinstance(target, str) and target.split("://", 1)[0].lower() in PG_SCHEMES and "://" in target


def redacted(url: str) -> str:
    """``url`` with its password (if any) replaced by ``****``: what logs and errors may show."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{parts.username or ''}:****@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:  # unparseable: show the scheme only
        return url.split("://", 1)[0] + "://****"


def shown(target: str | Path) -> str:
    """How to name the database in a message: a path as is, a URL without its password."""
    return redacted(target) if isinstance(target, str) and is_postgres_url(target) else str(target)


async def open_database(target: str | Path, busy_timeout: float = 5.0) -> Database:
    """The database at ``target`` (a ``postgresql://`` URL or a SQLite path), migrated."""
    if is_postgres_url(target):
        from .postgres import PostgresDatabase

        return await PostgresDatabase.open(str(target))
    from .sqlite import SqliteDatabase

    return await SqliteDatabase.open(target, busy_timeout)


@lru_cache(maxsize=16)
def insert_sql(table: str, columns: tuple[str, ...], rows: int) -> str:
    """``INSERT INTO table (columns) VALUES (?, …), (?, …)…`` for ``rows`` rows (pure; cached:
    a batch uses at most two shapes)."""
    one = "(" + ", ".join("?" * len(columns)) + ")"
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES " + ", ".join([one] * rows)


def to_dollar(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1``, ``$2``…; a ``?`` inside a quoted literal or
    identifier is left alone."""
    out: list[str] = []
    n = 0
    quote: str | None = None
    for ch in sql:
        if quote is not None:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "?":
            n += 1
            out.append(f"${n}")
            continue
        out.append(ch)
    return "".join(out)
