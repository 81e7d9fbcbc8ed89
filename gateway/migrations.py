"""Append-only schema migrations for the client-key database.

Each step runs once, in order, and is recorded in ``_migrations``. Never edit a released step:
add a new one.
"""
from __future__ import annotations

import time

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
