"""The ledger's durability with the real entrypoint as a process: SIGTERM under load writes a row
for every request answered; SIGKILL loses no more than the last flush interval."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from pathlib import Path

import aiohttp

from tests import fakes
from tests.conftest import CHAT, eventually
from tests.usage_db import rows

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def start_gateway(tmp_path, upstream_url: str, flush_interval: str):
    port = free_port()
    env = {"PATH": os.environ["PATH"], "ENV_FILE": "/nonexistent.env", "CEREBRAS_API_KEYS": "csk-shutdown-1",
           "CEREBRAS_BASE_URL": upstream_url, "PORT": str(port), "ENABLE_INCOMING_AUTH": "false",
           "INCOMING_KEY_DB": str(tmp_path / "k.db"), "LOG_DIR": str(tmp_path / "logs"),
           "USAGE_FLUSH_INTERVAL": flush_interval, "MAX_KEY_WAIT": "0"}
    proc = await asyncio.create_subprocess_exec(sys.executable, "proxy_server.py", cwd=ROOT, env=env,
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"

    async def up() -> bool:
        try:
            async with aiohttp.ClientSession() as s, s.get(base + "/health") as r:
                return r.status == 200
        except aiohttp.ClientError:
            assert proc.returncode is None, "the gateway exited at start"
            return False

    await eventually(up, timeout=20, interval=0.05)
    return proc, base


async def test_sigterm_under_load_writes_a_row_for_every_request_answered(fake, tmp_path):
    fake.default = fakes.hang(0.3)  # every answer takes a while: many are in flight at the signal
    proc, base = await start_gateway(tmp_path, fake.url, flush_interval="3600")  # only shutdown writes
    answered = 0
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

            async def one() -> None:
                nonlocal answered
                try:
                    async with session.post(base + "/v1/chat/completions", json=CHAT) as resp:
                        await resp.read()
                        answered += 1
                except aiohttp.ClientError:
                    pass  # sent after the gateway stopped listening: never answered

            async def load() -> None:
                while proc.returncode is None:
                    await asyncio.gather(*(one() for _ in range(20)))

            loaders = [asyncio.create_task(load()) for _ in range(2)]
            await eventually(lambda: answered >= 40, timeout=20)
            await eventually(lambda: len(fake.received) - answered >= 20, timeout=10)  # in flight now
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(proc.communicate(), 60)
            await asyncio.gather(*loaders)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    got = rows(tmp_path / "k.db")
    assert len(got) == answered >= 60
    assert all(r["status"] == 200 and r["prompt_tokens"] == 5 and r["completion_tokens"] == 1 for r in got)


async def test_sigkill_loses_at_most_the_last_flush_interval(fake, tmp_path):
    proc, base = await start_gateway(tmp_path, fake.url, flush_interval="0.2")
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(25):
                async with session.post(base + "/v1/chat/completions", json=CHAT) as resp:
                    assert resp.status == 200
        done = time.monotonic()
        await eventually(lambda: len(rows(tmp_path / "k.db")) == 25, timeout=5)
        assert time.monotonic() - done < 1.0  # written within a few intervals, without a shutdown
    finally:
        proc.kill()
        await proc.wait()
    assert len(rows(tmp_path / "k.db")) == 25
