"""Client keys, the usage ledger, /stats, the spend restore and manage_keys.py against a real
PostgreSQL (tests/pg.py), and the same checks against SQLite where they are the shared interface."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import asyncpg
import pytest
from click.testing import CliRunner

import manage_keys
from gateway.clients.tracker import SpendTracker
from gateway.keystore import KeyStore, KeyStoreError
from gateway.migrations import MIGRATIONS, POSTGRES_SQL
from gateway.storage import open_database, redacted, to_dollar
from gateway.usage import stats
from gateway.usage.ledger import COLUMNS, INSERT
from tests.conftest import CHAT, auth_header, eventually
from tests.pg import free_port
from tests.test_proxy_server import ROOT

NAMES = [name for name, _ in MIGRATIONS]


# ---- pure parts ---------------------------------------------------------------------------------

@pytest.mark.parametrize("sql, expected", [
    ("SELECT 1", "SELECT 1"),
    ("a = ? AND b = ?", "a = $1 AND b = $2"),
    ("x = '?' AND y = ?", "x = '?' AND y = $1"),
    ('"we?ird" = ?', '"we?ird" = $1'),
    ("VALUES (?, ?, ?)", "VALUES ($1, $2, $3)"),
])
def test_placeholders(sql, expected):
    assert to_dollar(sql) == expected


@pytest.mark.parametrize("url, expected", [
    ("postgresql://gw:s3cret@db:5432/gateway", "postgresql://gw:****@db:5432/gateway"),
    ("postgresql://gw@db/gateway", "postgresql://gw@db/gateway"),
    ("postgres://:pw@[::1]/x", "postgres://:****@[::1]/x"),
    ("postgresql://u:p@h:notaport/x", "postgresql://****"),
])
def test_redacted_urls_never_show_the_password(url, expected):
    assert redacted(url) == expected


# ---- migrations -----------------------------------------------------------------------------------

async def test_every_step_has_postgres_sql():
    assert set(POSTGRES_SQL) == set(NAMES)


async def test_migrates_a_blank_postgres_database_once(pg_url):
    db = await open_database(pg_url)
    await db.close()
    db = await open_database(pg_url)  # again: nothing to apply
    try:
        assert [r[0] for r in await db.fetch("SELECT name FROM _migrations ORDER BY name")] == NAMES
        tables = {r[0] for r in await db.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert {"api_keys", "usage", "key_version", "_migrations"} <= tables
    finally:
        await db.close()


async def test_an_old_postgres_database_keeps_its_keys_as_plain_clients(pg_url):
    conn = await asyncpg.connect(pg_url)  # made before roles: only 001 applied
    await conn.execute(POSTGRES_SQL["001_api_keys"])
    await conn.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)")
    await conn.execute("INSERT INTO _migrations VALUES ('001_api_keys', 0)")
    await conn.execute("INSERT INTO api_keys (name, key_hash, key_prefix, created_at) VALUES ('old', 'h', 'p', 1)")
    await conn.close()
    store = await KeyStore.open(pg_url)
    try:
        [key] = await store.list()
        assert (key.name, key.role, key.daily_usd) == ("old", "client", None)
        await store.set_limits("old", {"daily_usd": 2.5})
        assert (await store.find("old")).daily_usd == 2.5
    finally:
        await store.close()


async def test_replicas_starting_together_migrate_once(pg_url):
    dbs = await asyncio.gather(*(open_database(pg_url) for _ in range(4)))
    try:
        assert [r[0] for r in await dbs[0].fetch("SELECT name FROM _migrations ORDER BY name")] == NAMES
    finally:
        for db in dbs:
            await db.close()


# ---- the key store, on both backends -----------------------------------------------------------------

@pytest.fixture(params=["sqlite", "postgres"])
async def target(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "keys.db")
    return await request.getfixturevalue("pg_server").new_database()


async def test_keystore_on_both(target):
    a, b = await KeyStore.open(target), await KeyStore.open(target)
    try:
        key, plaintext = await a.add("laptop")
        with pytest.raises(KeyStoreError, match="already exists"):
            await b.add("laptop")
        assert (await a.authenticate(plaintext)).id == key.id
        await b.set_revoked(str(key.id), True)  # another replica, or the CLI
        assert await a.refresh() is True
        assert await a.authenticate(plaintext) is None
        a.record_use(key.id, 100.0)
        a.record_use(key.id, 200.0)
        assert await a.flush_usage() == 1
        [found] = await b.list()
        assert (found.request_count, found.last_used_at) == (2, 200.0)
        with pytest.raises(KeyStoreError, match="no key matches"):
            await b.find("99999999999999999999999")  # no id that big: a clear miss, not a driver error
    finally:
        await a.close()
        await b.close()


async def test_usage_counts_do_not_drop_postgres_caches(pg_url):
    a, b = await KeyStore.open(pg_url), await KeyStore.open(pg_url)
    try:
        key, _ = await a.add("k")
        await b.refresh()
        b.record_use(key.id)
        await b.flush_usage()
        assert await a.refresh() is True  # the add
        a.record_use(key.id)
        await a.flush_usage()
        assert await b.refresh() is False  # usage counts bump no version
    finally:
        await a.close()
        await b.close()


# ---- the ledger's queries and the spend restore: the same answers on both ------------------------------

NOW = 1_767_268_800.0  # 2026-01-01T12:00:00Z


def _row(ts, client, provider, prompt, completion, cost, status=200):
    return (ts, "r", client, f"c{client}", provider, "k1", "glm", "glm", 0, status,
            prompt, completion, 0, 0, cost, cost * 2 if cost is not None else None, int(cost is not None), 0,
            10.0, 5.0, 1, None, 0, None)


ROWS = [
    _row(NOW - 60, 1, "cerebras", 10, 5, 0.01),
    _row(NOW - 3700, 1, "zai", 20, 10, 0.02),
    _row(NOW - 86400 * 2, 2, "cerebras", 100, 50, None),
    _row(NOW - 30, 2, "cerebras", 1, 1, 0.001, status=429),
]


async def _answers(target):
    db = await open_database(target)
    try:
        await db.execute_many(INSERT, ROWS)
        out = {"all": await stats.totals(db, NOW - 86400 * 7, NOW + 1)}
        for group in ("client", "provider", "model", "day", "hour", "client,day"):
            out[group] = await stats.totals(db, NOW - 86400 * 7, NOW + 1, group_by=group.split(","))
        out["own"] = await stats.totals(db, 0, NOW + 1, client_id=2)
        out["share"] = await stats.served_share(db, 0, NOW + 1)
        out["spend"] = await stats.spend_by_client(db, NOW)
        tracker = SpendTracker({"cerebras": 100.0}, (50.0,), now=lambda: NOW)
        await tracker.restore(db)
        restored = tracker.status()
        restored["clients"].sort(key=lambda c: c["id"])  # (in the order the database gave them)
        out["restored"] = restored
        return out
    finally:
        await db.close()


async def test_a_ledger_batch_is_written_alike_on_both(tmp_path, pg_url):
    batch = [(*row[:1], f"req-{i}", *row[2:]) for i, row in enumerate(ROWS * 300)]  # 1,200 rows

    async def written(target) -> list:
        db = await open_database(target)
        try:
            await db.insert_rows("usage", COLUMNS, batch)
            return await db.fetch(f"SELECT {', '.join(COLUMNS)} FROM usage ORDER BY id")
        finally:
            await db.close()

    lite, pg = await written(str(tmp_path / "k.db")), await written(pg_url)
    assert lite == pg == [tuple(row) for row in batch]


async def test_stats_and_restore_agree_on_both(tmp_path, pg_url):
    lite, pg = await _answers(str(tmp_path / "k.db")), await _answers(pg_url)
    assert pg == lite
    assert lite["all"][0]["requests"] == 4 and lite["all"][0]["failed_requests"] == 1
    assert [g["day"] for g in lite["day"]] == ["2025-12-30", "2026-01-01"]
    assert lite["hour"][-1]["hour"] == "2026-01-01T11:00:00Z"
    assert lite["spend"][1]["today_cost_usd"] == 0.03


# ---- manage_keys.py against PostgreSQL -------------------------------------------------------------

def test_cli_against_postgres(pg_server):
    url = asyncio.run(pg_server.new_database())
    runner = CliRunner()

    def run(*args):
        return runner.invoke(manage_keys.cli, list(args), env={"DATABASE_URL": url}, catch_exceptions=False)

    added = run("add", "laptop")
    assert added.exit_code == 0 and added.output.startswith("sk-glm-")
    assert run("budget", "laptop", "--daily-usd", "5").exit_code == 0
    listed = run("list").output
    assert "laptop" in listed and "active" in listed
    assert run("revoke", "laptop").exit_code == 0
    assert "revoked" in run("list").output
    assert "laptop" in run("stats").output
    assert run("usage", "--since", "7d", "--by", "provider").exit_code == 0

    async def in_postgres():
        store = await KeyStore.open(url)
        try:
            [key] = await store.list()
            return key
        finally:
            await store.close()

    key = asyncio.run(in_postgres())
    assert (key.name, key.active, key.daily_usd) == ("laptop", False, 5.0)


def test_cli_names_the_url_without_its_password():
    url = f"postgresql://gw:hunter2-secret@127.0.0.1:{free_port()}/gw"
    result = CliRunner().invoke(manage_keys.cli, ["list"], env={"DATABASE_URL": url})
    assert result.exit_code == 1
    assert "cannot open key database postgresql://gw:****@127.0.0.1" in result.output
    assert "hunter2" not in result.output


def test_postgres_unreachable_at_start_is_one_line_naming_database_url(tmp_path):
    env = {"PATH": os.environ["PATH"], "ENV_FILE": "/nonexistent.env", "CEREBRAS_API_KEYS": "csk-x",
           "LOG_DIR": str(tmp_path), "PORT": str(free_port()),
           "DATABASE_URL": f"postgresql://gw:hunter2-secret@127.0.0.1:{free_port()}/gw"}
    result = subprocess.run([sys.executable, "proxy_server.py"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2
    assert result.stderr.startswith("glm-gateway: configuration error: DATABASE_URL: postgresql://gw:****@")
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


# ---- replicas -------------------------------------------------------------------------------------------

async def _key(url: str, name: str = "tester") -> str:
    store = await KeyStore.open(url)
    try:
        return (await store.add(name))[1]
    finally:
        await store.close()


def _replica_env(url: str) -> dict[str, str]:
    return {"DATABASE_URL": url, "ENABLE_INCOMING_AUTH": "true", "KEY_CACHE_REFRESH": "0.25"}


async def test_a_key_revoked_by_the_cli_is_refused_by_every_replica_within_a_second(gateway, pg_url):
    plaintext = await _key(pg_url)
    replicas = [await gateway(_replica_env(pg_url)) for _ in range(2)]
    for r in replicas:  # each has the key cached
        resp = await r.post("/v1/chat/completions", json=CHAT, headers=auth_header(plaintext))
        assert resp.status == 200
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "manage_keys.py", "revoke", "tester", cwd=ROOT,
        env={**os.environ, "DATABASE_URL": pg_url, "ENV_FILE": "/nonexistent.env"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err
    revoked_at = time.monotonic()

    async def refused_everywhere():
        for r in replicas:
            resp = await r.post("/v1/chat/completions", json=CHAT, headers=auth_header(plaintext))
            if resp.status != 401:
                return False
        return True

    await eventually(refused_everywhere, timeout=1.0)
    assert time.monotonic() - revoked_at < 1.0


async def test_postgres_down_mid_run_cached_keys_work_and_rows_arrive_after(gateway, fake):
    from tests.pg import server

    pg = server()  # its own server: this test stops it
    try:
        url = await pg.new_database()
        plaintext = await _key(url)
        client = await gateway(_replica_env(url))
        for _ in range(2):
            assert (await client.post("/v1/chat/completions", json=CHAT, headers=auth_header(plaintext))).status == 200
        await asyncio.to_thread(pg.stop)
        for _ in range(5):
            resp = await client.post("/v1/chat/completions", json=CHAT, headers=auth_header(plaintext))
            assert resp.status == 200, await resp.text()
        unknown = await client.post("/v1/chat/completions", json=CHAT, headers=auth_header("sk-glm-not-cached"))
        assert unknown.status == 503 and unknown.headers["Retry-After"] == "1"  # never a 500
        assert (await unknown.json())["error"]["code"] == "service_unavailable"
        await asyncio.to_thread(pg.start)

        async def all_rows_written():
            conn = await asyncpg.connect(url)
            try:
                return await conn.fetchval("SELECT count(*) FROM usage") == 7
            finally:
                await conn.close()

        await eventually(all_rows_written, timeout=15.0, interval=0.2)
    finally:
        await asyncio.to_thread(pg.remove)
