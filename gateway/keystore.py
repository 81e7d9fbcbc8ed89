"""Client API keys in SQLite or PostgreSQL (gateway/storage): only SHA-256 hashes are stored.

Keys are 256-bit random tokens, so a fast unsalted hash is the right tool (as for GitHub or
Stripe tokens): no dictionary to attack, and lookups cost a microsecond.

The request path never touches the database for a key it has seen: lookups are cached, and the
cache is dropped whenever another connection (``manage_keys.py``, another replica) changed the keys,
which ``Database.version()`` reports (SQLite's ``PRAGMA data_version``; PostgreSQL's ``key_version``
counter, bumped by a trigger). ``refresh()`` runs every ``KEY_CACHE_REFRESH`` seconds, so a
revoked key stops working within that time. Usage counts are kept in memory and written in one
batch every ``USAGE_FLUSH_INTERVAL`` seconds and at shutdown.
"""
from __future__ import annotations

import asyncio
import hashlib
import math
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from .clients.budgets import Limits
from .errors import ServiceUnavailable
from .storage import ERRORS, SQLITE, Conflict, Database, open_database

ADMIN = "admin"
CLIENT = "client"
ROLES = (ADMIN, CLIENT)
BUDGET_FIELDS = ("daily_usd", "monthly_usd", "daily_tokens", "monthly_tokens")
RATE_FIELDS = ("rpm", "tpm")
KEY_PREFIX = "sk-glm-"
SHOWN_PREFIX_LEN = 12
_CACHE_LIMIT = 10_000


class KeyStoreError(Exception):
    """A user error in key management (unknown key, duplicate name)."""


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise KeyStoreError(f"a role is {' or '.join(ROLES)}, not {role!r}")


@dataclass(frozen=True)
class ClientKey:
    id: int
    name: str
    prefix: str
    created_at: float
    revoked_at: float | None
    request_count: int
    last_used_at: float | None
    role: str = CLIENT  # "admin" sees everything (/_status, every client's stats)
    daily_usd: float | None = None  # budgets and rate limits; None: no limit of that kind
    monthly_usd: float | None = None
    daily_tokens: int | None = None
    monthly_tokens: int | None = None
    rpm: int | None = None
    tpm: int | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN

    @cached_property
    def limits(self) -> Limits | None:
        """Its budgets and rate limits, or None when it has none (built once per cached key)."""
        return Limits.of(daily_usd=self.daily_usd, monthly_usd=self.monthly_usd, daily_tokens=self.daily_tokens,
                         monthly_tokens=self.monthly_tokens, rpm=self.rpm, tpm=self.tpm)


def hash_key(plaintext: str) -> str:
    """SHA-256 of the key's UTF-8; total: a lone surrogate (from bytes that were not UTF-8, as
    aiohttp and argv decode them) is encoded as is and can match no issued key."""
    return hashlib.sha256(plaintext.encode("utf-8", "surrogatepass")).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


_COLUMNS = (
    "id, name, key_prefix, created_at, revoked_at, request_count, last_used_at, "
    "role, daily_usd, monthly_usd, daily_tokens, monthly_tokens, rpm, tpm"
)

_FLUSH_SQL = ("UPDATE api_keys SET request_count = request_count + ?, "
              "last_used_at = max(coalesce(last_used_at, 0), ?) WHERE id = ?")  # PostgreSQL: greatest()


class Uncached:
    """``KeyStore.known``'s answer for a key it has not looked up yet."""


UNCACHED = Uncached()


class KeyStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._cache: dict[str, ClientKey | None] = {}
        self._data_version: int | None = None
        self._pending: dict[int, list[float]] = {}  # id -> [count, last_used_at]
        self._flush_sql = _FLUSH_SQL if db.dialect == SQLITE else _FLUSH_SQL.replace("= max(", "= greatest(")

    @classmethod
    async def open(cls, target: Path | str, busy_timeout: float = 5.0) -> KeyStore:
        """The store in the SQLite file at ``target`` or the PostgreSQL database its URL names."""
        store = cls(await open_database(target, busy_timeout))
        try:
            store._data_version = await store._db.version()
        except BaseException:
            await store._db.close()
            raise
        return store

    async def close(self) -> None:
        try:
            await self.flush_usage()
        finally:
            await self._db.close()

    # ---- request path -------------------------------------------------------------------------

    def known(self, plaintext: str) -> ClientKey | None | Uncached:
        """The cached answer for this plaintext without awaiting (the request path's usual case):
        the active key, or None (unknown or revoked); ``UNCACHED`` when ``authenticate`` must
        look it up."""
        found = self._cache.get(hash_key(plaintext), UNCACHED)
        if isinstance(found, ClientKey) and not found.active:
            return None
        return found

    async def authenticate(self, plaintext: str) -> ClientKey | None:
        """The active key for this plaintext, or None. Cached; no DB access for known keys. A key
        not cached while the database cannot be reached: ``ServiceUnavailable`` (503, Retry-After)."""
        digest = hash_key(plaintext)
        try:
            found = self._cache[digest]
        except KeyError:
            try:
                found = await self._fetch_one("key_hash = ?", digest)
            except ERRORS as e:  # (PostgreSQL down: cached keys keep working, a new one waits)
                raise ServiceUnavailable("the key database cannot be reached just now; retry shortly",
                                         retry_after=1.0) from e
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
            await self._db.execute_many(self._flush_sql, rows)
        except BaseException:
            for key_id, (count, last) in batch.items():  # keep the counts for the next try
                entry = self._pending.setdefault(key_id, [0, last])
                entry[0] += count
                entry[1] = max(entry[1], last)
            raise
        return len(rows)

    async def refresh(self) -> bool:
        """Drop the lookup cache if another connection committed since the last check."""
        version = await self._db.version()
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

    async def add(self, name: str, role: str = CLIENT) -> tuple[ClientKey, str]:
        name = name.strip()
        if not name:
            raise KeyStoreError("a key needs a non-empty name")
        _check_role(role)
        plaintext = new_key()
        try:
            row = await self._db.insert(
                "INSERT INTO api_keys (name, key_hash, key_prefix, created_at, role) VALUES (?, ?, ?, ?, ?) "
                "RETURNING id",
                (name, hash_key(plaintext), plaintext[:SHOWN_PREFIX_LEN], time.time(), role),
            )
        except Conflict:
            raise KeyStoreError(f"a key named {name!r} already exists") from None
        assert row is not None
        key = await self._fetch_one("id = ?", row[0])
        assert key is not None
        return key, plaintext

    async def list(self) -> list[ClientKey]:
        return [ClientKey(*row) for row in await self._db.fetch(f"SELECT {_COLUMNS} FROM api_keys ORDER BY id")]

    async def find(self, ref: str) -> ClientKey:
        """A key by id, name or full plaintext key."""
        ref = ref.strip()
        key = None
        if ref.startswith(KEY_PREFIX):
            key = await self._fetch_one("key_hash = ?", hash_key(ref))
        if key is None and ref.isdigit() and int(ref) < 2**63:  # (a bigger one is no id in either database)
            key = await self._fetch_one("id = ?", int(ref))
        if key is None:
            key = await self._fetch_one("name = ?", ref)
        if key is None:
            raise KeyStoreError(f"no key matches {_shown(ref)!r} (give an id, a name or the key itself)")
        return key

    async def set_revoked(self, ref: str, revoked: bool) -> ClientKey:
        return await self._update(ref, {"revoked_at": time.time() if revoked else None})

    async def set_role(self, ref: str, role: str) -> ClientKey:
        _check_role(role)
        return await self._update(ref, {"role": role})

    async def set_limits(self, ref: str, values: dict[str, float | int | None]) -> ClientKey:
        """Set budgets (``BUDGET_FIELDS``) and rate limits (``RATE_FIELDS``); None clears one.
        A running gateway applies them within ``KEY_CACHE_REFRESH``, as it does a revocation."""
        for name, value in values.items():
            if name not in BUDGET_FIELDS + RATE_FIELDS:
                raise KeyStoreError(f"unknown limit {name!r}")
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise KeyStoreError(f"{name} must be a finite number at least 0, got {value}")
        return await self._update(ref, values)

    async def _update(self, ref: str, values: Mapping[str, object]) -> ClientKey:
        """Set columns of one key (names from the callers above, never from users)."""
        key = await self.find(ref)
        if values:
            assignments = ", ".join(f"{column} = ?" for column in values)
            await self._db.execute(f"UPDATE api_keys SET {assignments} WHERE id = ?", (*values.values(), key.id))
        self._cache.clear()
        updated = await self._fetch_one("id = ?", key.id)
        assert updated is not None
        return updated

    # ---- internals ------------------------------------------------------------------------------

    async def _fetch_one(self, where: str, value: object) -> ClientKey | None:
        rows = await self._db.fetch(f"SELECT {_COLUMNS} FROM api_keys WHERE {where}", (value,))
        return ClientKey(*rows[0]) if rows else None


def _shown(ref: str) -> str:
    """What of a user-typed reference may be echoed: never a whole key."""
    return ref[:SHOWN_PREFIX_LEN] + "…" if ref.startswith(KEY_PREFIX) else ref
