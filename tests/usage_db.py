"""Reading the usage ledger's rows in tests (plain sqlite3: a reader never waits on the writer in WAL)."""
from __future__ import annotations

import sqlite3
from pathlib import Path


def rows(path: Path, where: str = "1", args: tuple = ()) -> list[dict]:
    if not Path(path).exists():
        return []
    con = sqlite3.connect(path)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute(f"SELECT * FROM usage WHERE {where} ORDER BY id", args)]
    except sqlite3.OperationalError as e:  # not migrated yet
        if "no such table" in str(e):
            return []
        raise
    finally:
        con.close()


def insert(path: Path, **fields) -> None:
    """A row written straight into the ledger (for queries over chosen times)."""
    base = {"ts": 0.0, "request_id": "r", "stream": 0, "status": 200, "priced": 1}
    base.update(fields)
    con = sqlite3.connect(path)
    try:
        sql = f"INSERT INTO usage ({', '.join(base)}) VALUES ({', '.join('?' * len(base))})"
        con.execute(sql, tuple(base.values()))
        con.commit()
    finally:
        con.close()
