import sqlite3

import pytest

from gateway.keystore import KEY_PREFIX, UNCACHED, KeyStore, KeyStoreError, hash_key
from gateway.migrations import MIGRATIONS, migrate


async def test_migrates_a_blank_database(tmp_path):
    db = tmp_path / "new" / "keys.db"
    store = await KeyStore.open(db)
    await store.close()
    con = sqlite3.connect(db)
    names = [r[0] for r in con.execute("SELECT name FROM _migrations ORDER BY name")]
    assert names == [name for name, _ in MIGRATIONS]
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()


async def test_reopening_an_old_database_keeps_data_and_applies_nothing(tmp_path):
    import aiosqlite

    db = tmp_path / "keys.db"
    store = await KeyStore.open(db)
    key, plaintext = await store.add("old")
    await store.close()
    async with aiosqlite.connect(db, isolation_level=None) as con:
        assert await migrate(con) == []
    store = await KeyStore.open(db)
    try:
        assert (await store.authenticate(plaintext)).name == "old"
    finally:
        await store.close()


async def test_only_hashes_are_stored(tmp_path):
    db = tmp_path / "keys.db"
    store = await KeyStore.open(db)
    key, plaintext = await store.add("alice")
    await store.close()
    assert plaintext.startswith(KEY_PREFIX) and len(plaintext) > 40
    raw = db.read_bytes() + (tmp_path / "keys.db-wal").read_bytes() if (tmp_path / "keys.db-wal").exists() else db.read_bytes()
    assert plaintext.encode() not in raw
    con = sqlite3.connect(db)
    (stored,) = con.execute("SELECT key_hash FROM api_keys").fetchone()
    con.close()
    assert stored == hash_key(plaintext)


async def test_authenticate_add_revoke_enable(tmp_path):
    store = await KeyStore.open(tmp_path / "k.db")
    try:
        key, plaintext = await store.add("bob")
        assert (await store.authenticate(plaintext)).id == key.id
        assert await store.authenticate(plaintext + "x") is None
        assert await store.authenticate("") is None
        await store.set_revoked("bob", True)
        assert await store.authenticate(plaintext) is None
        await store.set_revoked(str(key.id), False)
        assert (await store.authenticate(plaintext)).name == "bob"
        await store.set_revoked(plaintext, True)  # by the key itself
        assert (await store.list())[0].active is False
    finally:
        await store.close()


async def test_revocation_by_another_connection_drops_the_cache(tmp_path):
    db = tmp_path / "k.db"
    server = await KeyStore.open(db)
    admin = await KeyStore.open(db)
    try:
        _, plaintext = await admin.add("carol")
        assert await server.authenticate(plaintext) is not None  # now cached
        await admin.set_revoked("carol", True)
        assert await server.authenticate(plaintext) is not None  # still cached ...
        assert await server.refresh() is True  # ... until the refresh sees the commit
        assert await server.authenticate(plaintext) is None
        assert await server.refresh() is False
    finally:
        await server.close()
        await admin.close()


async def test_known_answers_from_the_cache_only_and_agrees_with_authenticate(tmp_path):
    """The request path's sync look: nothing it has not looked up (UNCACHED, so the caller awaits
    ``authenticate``), then what ``authenticate`` found, a revoked key refused as soon as the
    cache learns it, and an unknown key's None cached too (no database read per bad key)."""
    db = tmp_path / "k.db"
    server = await KeyStore.open(db)
    admin = await KeyStore.open(db)
    try:
        _, plaintext = await admin.add("dave")
        assert server.known(plaintext) is UNCACHED
        assert server.known("sk-glm-nope") is UNCACHED
        assert (await server.authenticate(plaintext)).name == "dave"
        assert await server.authenticate("sk-glm-nope") is None
        assert server.known(plaintext).name == "dave"
        assert server.known("sk-glm-nope") is None
        await admin.set_revoked("dave", True)
        assert await server.refresh() is True
        assert server.known(plaintext) in (None, UNCACHED)  # refused, or looked up again
        assert await server.authenticate(plaintext) is None
        assert server.known(plaintext) is None
    finally:
        await server.close()
        await admin.close()


async def test_usage_is_batched(tmp_path):
    store = await KeyStore.open(tmp_path / "k.db")
    try:
        key, _ = await store.add("dave")
        for t in (100.0, 300.0, 200.0):
            store.record_use(key.id, t)
        assert (await store.list())[0].request_count == 0  # nothing written yet
        assert await store.flush_usage() == 1
        (row,) = await store.list()
        assert (row.request_count, row.last_used_at) == (3, 300.0)
        assert await store.flush_usage() == 0
    finally:
        await store.close()


async def test_close_flushes_pending_usage(tmp_path):
    db = tmp_path / "k.db"
    store = await KeyStore.open(db)
    key, _ = await store.add("erin")
    store.record_use(key.id, 5.0)
    await store.close()
    store = await KeyStore.open(db)
    try:
        assert (await store.list())[0].request_count == 1
    finally:
        await store.close()


@pytest.mark.parametrize("name", ["", "   "])
async def test_empty_name_is_refused(tmp_path, name):
    store = await KeyStore.open(tmp_path / "k.db")
    try:
        with pytest.raises(KeyStoreError):
            await store.add(name)
    finally:
        await store.close()


async def test_duplicate_name_and_unknown_ref(tmp_path):
    store = await KeyStore.open(tmp_path / "k.db")
    try:
        await store.add("same")
        with pytest.raises(KeyStoreError, match="already exists"):
            await store.add("same")
        with pytest.raises(KeyStoreError, match="no key matches"):
            await store.find("nobody")
        with pytest.raises(KeyStoreError) as e:
            await store.find(KEY_PREFIX + "x" * 40)
        assert "x" * 20 not in str(e.value)  # a typed key is never echoed whole
    finally:
        await store.close()


async def test_budgets_and_roles_set_by_another_connection_reach_the_cache(tmp_path):
    from gateway.clients.budgets import Limits

    db = tmp_path / "k.db"
    server = await KeyStore.open(db)
    admin = await KeyStore.open(db)
    try:
        _, plaintext = await admin.add("frank")
        first = await server.authenticate(plaintext)
        assert (first.role, first.limits) == ("client", None)
        await admin.set_limits("frank", {"daily_usd": 5.0, "rpm": 60})
        await admin.set_role("frank", "admin")
        assert await server.refresh() is True
        key = await server.authenticate(plaintext)
        assert key.limits == Limits(daily_usd=5.0, rpm=60) and key.is_admin
        await admin.set_limits("frank", {"daily_usd": None, "rpm": None})
        await server.refresh()
        assert (await server.authenticate(plaintext)).limits is None
    finally:
        await server.close()
        await admin.close()


async def test_bad_roles_and_limits_are_refused(tmp_path):
    store = await KeyStore.open(tmp_path / "k.db")
    try:
        with pytest.raises(KeyStoreError, match="a role is admin or client"):
            await store.add("x", role="root")
        await store.add("y")
        for values in ({"daily_usd": -1}, {"rpm": float("inf")}, {"name": "z"}):
            with pytest.raises(KeyStoreError):
                await store.set_limits("y", values)
        with pytest.raises(sqlite3.IntegrityError):  # the column's CHECK, for writers other than us
            con = sqlite3.connect(tmp_path / "k.db")
            con.execute("UPDATE api_keys SET role = 'root'")
        con.close()
    finally:
        await store.close()
