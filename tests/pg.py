"""A real PostgreSQL server for tests: Debian's ``postgresql`` package (binaries under
/usr/lib/postgresql/*/bin), initialised in a temporary directory and listening on a free port on
127.0.0.1 (trust authentication: a password in a URL is accepted and ignored). PostgreSQL refuses
to run as root, so as root it runs as the ``postgres`` user (``runuser``). Tests that need it skip
with the reason when the binaries are missing."""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import pytest


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="gw-pg-"))
        self.data = self.root / "data"
        self.proc: subprocess.Popen[bytes] | None = None
        self._as: list[str] = []
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("PostgreSQL will not run as root and there is no postgres user")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        subprocess.run([*self._as, str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                        "--no-sync"], check=True, capture_output=True)

    def url(self, db: str = "postgres", password: str = "") -> str:
        auth = f"postgres:{password}" if password else "postgres"
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{db}"

    def start(self, timeout: float = 20.0) -> None:
        self.proc = subprocess.Popen(
            [*self._as, str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.root),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # ready when it accepts a session, polled
            ready = subprocess.run([str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"])
            if ready.returncode == 0:
                return
            if self.proc.poll() is not None:
                raise RuntimeError("postgres exited at start")
            time.sleep(0.05)
        raise RuntimeError("postgres did not become ready")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:  # fast shutdown: clients are cut off
            subprocess.run([*self._as, str(self.bin / "pg_ctl"), "-D", str(self.data), "stop", "-m", "fast", "-w"],
                           capture_output=True, timeout=30)
            self.proc.wait(30)
        self.proc = None

    async def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        name = "t_" + uuid.uuid4().hex[:12]
        conn = await asyncpg.connect(self.url())
        try:
            await conn.execute(f"CREATE DATABASE {name}")
        finally:
            await conn.close()
        return self.url(name)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def server() -> PgServer:
    bin_dir = _bin_dir()
    if bin_dir is None or not (bin_dir / "postgres").exists():
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql): /usr/lib/postgresql/*/bin")
    pg = PgServer(bin_dir)
    pg.start()
    return pg
