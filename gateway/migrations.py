"""Append-only schema migrations for the client-key database.

Each step runs once, in order, and is recorded in ``_migrations``. Never edit a released step:
add a new one.
"""
from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import aiosqlite

MIGRATIONS: list[tuple[str, str]] = [
    (
        "001_api_keys",
        """
        CREATE TABLE api_keys (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            key_hash TEXT NOT NULL UNIQUE,
            key_prefix TEXT NOT NULL,
            created_at REAL NOT NULL,
            revoked_at REAL,
            request_count INTEGER NOT NULL DEFAULT 0,
            last_used_at REAL
        );
        """,
    ),
    (
        # one row per chat request that passed auth (gateway/usage/ledger.py writes it)
        "002_usage",
        """
        CREATE TABLE usage (
            id INTEGER PRIMARY KEY,
            ts REAL NOT NULL,
            request_id TEXT NOT NULL,
            client_key_id INTEGER,
            client_name TEXT,
            provider TEXT,
            upstream_key TEXT,
            model_requested TEXT,
            model_served TEXT,
            stream INTEGER NOT NULL,
            status INTEGER NOT NULL,
            prompt_tokens INTEGER NOT NULL DEFAULT 0,
            completion_tokens INTEGER NOT NULL DEFAULT 0,
            cached_tokens INTEGER NOT NULL DEFAULT 0,
            reasoning_tokens INTEGER NOT NULL DEFAULT 0,
            cost_usd REAL,
            primary_cost_usd REAL,
            priced INTEGER NOT NULL DEFAULT 0,
            tokens_estimated INTEGER NOT NULL DEFAULT 0,
            latency_ms REAL,
            ttft_ms REAL,
            attempts INTEGER NOT NULL DEFAULT 0,
            fallback_reason TEXT,
            repairs INTEGER NOT NULL DEFAULT 0,
            error_code TEXT
        );
        CREATE INDEX usage_ts ON usage (ts);
        CREATE INDEX usage_client_ts ON usage (client_key_id, ts);
        """,
    ),
    (
        # roles (an existing key becomes a plain client) and per-key budgets and rate limits,
        # NULL: no limit of that kind (gateway/clients/budgets.py)
        "003_roles_budgets",
        """
        ALTER TABLE api_keys ADD COLUMN role TEXT NOT NULL DEFAULT 'client' CHECK (role IN ('admin', 'client'));
        ALTER TABLE api_keys ADD COLUMN daily_usd REAL;
        ALTER TABLE api_keys ADD COLUMN monthly_usd REAL;
        ALTER TABLE api_keys ADD COLUMN daily_tokens INTEGER;
        ALTER TABLE api_keys ADD COLUMN monthly_tokens INTEGER;
        ALTER TABLE api_keys ADD COLUMN rpm INTEGER;
        ALTER TABLE api_keys ADD COLUMN tpm INTEGER;
        """,
    ),
]


async def connect(path: Path | str, busy_timeout: float = 5.0) -> aiosqlite.Connection:
    """A connection to the database at ``path`` (created if need be), in WAL mode with a busy
    timeout, migrated to the latest schema."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A file sqlite cannot open fails here, in a worker thread: when aiosqlite's own connect fails,
    # its thread reports back later, and at start-up that is after the event loop closed (a
    # traceback on stderr after the one-line error).
    await asyncio.to_thread(lambda: sqlite3.connect(str(path)).close())
    conn = aiosqlite.connect(str(path), isolation_level=None, timeout=busy_timeout)
    try:
        db = await conn
    except BaseException:  # (the file changed since the check above)
        await _worker_stopped(conn)
        raise
    try:
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        await db.execute("PRAGMA synchronous=NORMAL")
        await migrate(db)
    except BaseException:
        await db.close()
        raise
    return db


async def _worker_stopped(conn: aiosqlite.Connection) -> None:
    """Wait for the worker thread of a connection that failed to open.

    aiosqlite (0.22) answers a failed connect by queueing a stop it does not wait for; its thread
    then calls back into the loop, and if the loop has closed meanwhile (a start-up that fails
    ends the process) it prints "Event loop is closed". aiosqlite has no public join (its issue
    #387), so this joins the thread it keeps in ``_thread``, off the loop.
    """
    thread = getattr(conn, "_thread", None)
    if isinstance(thread, threading.Thread) and thread.is_alive():
        await asyncio.to_thread(thread.join, 5.0)


async def migrate(db: aiosqlite.Connection) -> list[str]:
    """Apply the steps not yet recorded; returns the names applied."""
    await db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    async with db.execute("SELECT name FROM _migrations") as cur:
        done = {row[0] for row in await cur.fetchall()}
    applied = []
    for name, sql in MIGRATIONS:
        if name in done:
            continue
        await db.execute("BEGIN IMMEDIATE")
        try:
            # re-check inside the write lock: another process may have migrated meanwhile
            async with db.execute("SELECT 1 FROM _migrations WHERE name = ?", (name,)) as cur:
                if await cur.fetchone():
                    await db.execute("COMMIT")
                    continue
            for statement in filter(str.strip, sql.split(";")):
                await db.execute(statement)
            await db.execute("INSERT INTO _migrations (name, applied_at) VALUES (?, ?)", (name, time.time()))
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        applied.append(name)
    return applied
