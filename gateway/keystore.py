"""Client API keys in SQLite (aiosqlite): only SHA-256 hashes are stored.

Keys are 256-bit random tokens, so a fast unsalted hash is the right tool (as for GitHub or
Stripe tokens): no dictionary to attack, and lookups cost a microsecond.

The request path never touches the database for a key it has seen: lookups are cached, and the
cache is dropped whenever another connection (``manage_keys.py``, another replica) commits, which
``PRAGMA data_version`` reports. ``refresh()`` runs every ``KEY_CACHE_REFRESH`` seconds, so a
revoked key stops working within that time. Usage counts are kept in memory and written in one
batch every ``USAGE_FLUSH_INTERVAL`` seconds and at shutdown.
"""
from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from .migrations import connect

KEY_PREFIX = "sk-glm-"
SHOWN_PREFIX_LEN = 12
_CACHE_LIMIT = 10_000


class KeyStoreError(Exception):
    """A user error in key management (unknown key, duplicate name)."""


@dataclass(frozen=True)
class ClientKey:
    id: int
    name: str
    prefix: str
    created_at: float
    revoked_at: float | None
    request_count: int
    last_used_at: float | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def hash_key(plaintext: str) -> str:
    """SHA-256 of the key's UTF-8; total: a lone surrogate (from bytes that were not UTF-8, as
    aiohttp and argv decode them) is encoded as is and can match no issued key."""
    return hashlib.sha256(plaintext.encode("utf-8", "surrogatepass")).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


_COLUMNS = "id, name, key_prefix, created_at, revoked_at, request_count, last_used_at"


class KeyStore:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self._cache: dict[str, ClientKey | None] = {}
        self._data_version: int | None = None
        self._pending: dict[int, list[float]] = {}  # id -> [count, last_used_at]
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path | str, busy_timeout: float = 5.0) -> KeyStore:
        store = cls(await connect(path, busy_timeout))
        store._data_version = await store._read_data_version()
        return store

    async def close(self) -> None:
        try:
            await self.flush_usage()
        finally:
            await self._db.close()

    # ---- request path -------------------------------------------------------------------------

    async def authenticate(self, plaintext: str) -> ClientKey | None:
        """The active key for this plaintext, or None. Cached; no DB access for known keys."""
        digest = hash_key(plaintext)
        try:
            found = self._cache[digest]
        except KeyError:
            found = await self._fetch_one("key_hash = ?", digest)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[digest] = found
        if found is None or not found.active:
            return None
        return found

    def record_use(self, key_id: int, when: float | None = None) -> None:
        """Count one request; written to the database by the next flush."""
        when = time.time() if when is None else when
        entry = self._pending.get(key_id)
        if entry is None:
            self._pending[key_id] = [1, when]
        else:
            entry[0] += 1
            entry[1] = max(entry[1], when)

    async def flush_usage(self) -> int:
        """Write pending usage counts in one transaction; returns the number of keys updated."""
        if not self._pending:
            return 0
        batch, self._pending = self._pending, {}
        rows = [(int(count), last, key_id) for key_id, (count, last) in batch.items()]
        try:
            async with self._write_lock:
                await self._db.execute("BEGIN IMMEDIATE")
                try:
                    await self._db.executemany(
                        "UPDATE api_keys SET request_count = request_count + ?, "
                        "last_used_at = max(coalesce(last_used_at, 0), ?) WHERE id = ?",
                        rows,
                    )
                    await self._db.execute("COMMIT")
                except BaseException:
                    await self._db.execute("ROLLBACK")
                    raise
        except BaseException:
            for key_id, (count, last) in batch.items():  # keep the counts for the next try
                entry = self._pending.setdefault(key_id, [0, last])
                entry[0] += count
                entry[1] = max(entry[1], last)
            raise
        return len(rows)

    async def refresh(self) -> bool:
        """Drop the lookup cache if another connection committed since the last check."""
        version = await self._read_data_version()
        if version != self._data_version:
            self._data_version = version
            self._cache.clear()
            return True
        return False

    async def run_maintenance(self, refresh_every: float, flush_every: float, log) -> None:
        """Background loop: cache refresh and usage flushes, until cancelled."""
        next_flush = time.monotonic() + flush_every
        while True:
            await asyncio.sleep(refresh_every)
            try:
                await self.refresh()
                if time.monotonic() >= next_flush:
                    next_flush = time.monotonic() + flush_every
                    await self.flush_usage()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # keep serving; the next tick retries
                log.warning("keystore_maintenance_failed", error=repr(e))

    # ---- administration -------------------------------------------------------------------------

    async def add(self, name: str) -> tuple[ClientKey, str]:
        name = name.strip()
        if not name:
            raise KeyStoreError("a key needs a non-empty name")
        plaintext = new_key()
        try:
            async with self._write_lock:
                cur = await self._db.execute(
                    "INSERT INTO api_keys (name, key_hash, key_prefix, created_at) VALUES (?, ?, ?, ?)",
                    (name, hash_key(plaintext), plaintext[:SHOWN_PREFIX_LEN], time.time()),
                )
        except aiosqlite.IntegrityError:
            raise KeyStoreError(f"a key named {name!r} already exists") from None
        key = await self._fetch_one("id = ?", cur.lastrowid)
        assert key is not None
        return key, plaintext

    async def list(self) -> list[ClientKey]:
        async with self._db.execute(f"SELECT {_COLUMNS} FROM api_keys ORDER BY id") as cur:
            return [ClientKey(*row) for row in await cur.fetchall()]

    async def find(self, ref: str) -> ClientKey:
        """A key by id, name or full plaintext key."""
        ref = ref.strip()
        key = None
        if ref.startswith(KEY_PREFIX):
            key = await self._fetch_one("key_hash = ?", hash_key(ref))
        if key is None and ref.isdigit():
            key = await self._fetch_one("id = ?", int(ref))
        if key is None:
            key = await self._fetch_one("name = ?", ref)
        if key is None:
            raise KeyStoreError(f"no key matches {_shown(ref)!r} (give an id, a name or the key itself)")
        return key

    async def set_revoked(self, ref: str, revoked: bool) -> ClientKey:
        key = await self.find(ref)
        async with self._write_lock:
            await self._db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ?", (time.time() if revoked else None, key.id)
            )
        self._cache.clear()
        updated = await self._fetch_one("id = ?", key.id)
        assert updated is not None
        return updated

    # ---- internals ------------------------------------------------------------------------------

    async def _fetch_one(self, where: str, value: object) -> ClientKey | None:
        async with self._db.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE {where}", (value,)) as cur:
            row = await cur.fetchone()
        return ClientKey(*row) if row else None

    async def _read_data_version(self) -> int:
        async with self._db.execute("PRAGMA data_version") as cur:
            row = await cur.fetchone()
        return int(row[0])


def _shown(ref: str) -> str:
    """What of a user-typed reference may be echoed: never a whole key."""
    return ref[:SHOWN_PREFIX_LEN] + "…" if ref.startswith(KEY_PREFIX) else ref
