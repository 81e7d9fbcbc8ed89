"""Several real gateways (proxy_server.py processes) on one machine, for the replica tests."""
from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Replica:
    def __init__(self, proc: asyncio.subprocess.Process, port: int, log_dir: Path) -> None:
        self.proc = proc
        self.port = port
        self.log_dir = log_dir
        self.url = f"http://127.0.0.1:{port}"

    async def status(self, http: aiohttp.ClientSession, headers: dict[str, str] | None = None) -> dict[str, Any]:
        async with http.get(self.url + "/_status", headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def start_replicas(n: int, tmp_path: Path, env: dict[str, str]) -> list[Replica]:
    """``n`` gateways with the same settings (``env``), each on its own port; returns once each
    answers /health (polled with a deadline)."""
    replicas = []
    for i in range(n):
        port = free_port()
        log_dir = tmp_path / f"logs{i}"
        full = {"PATH": os.environ["PATH"], "ENV_FILE": "/nonexistent.env", "PORT": str(port),
                "LOG_DIR": str(log_dir), "MAX_KEY_WAIT": "0", "KEY_CACHE_REFRESH": "0.05",
                "USAGE_FLUSH_INTERVAL": "0.1", **env}
        proc = await asyncio.create_subprocess_exec(sys.executable, "proxy_server.py", cwd=ROOT, env=full,
                                                    stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.PIPE)
        replicas.append(Replica(proc, port, log_dir))
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as http:
        for r in replicas:
            while True:
                try:
                    async with http.get(r.url + "/health") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if r.proc.returncode is not None or time.monotonic() > deadline:
                    err = await r.proc.stderr.read() if r.proc.stderr else b""
                    raise AssertionError(f"gateway did not start: {err.decode()[-2000:]}")
                await asyncio.sleep(0.05)
    return replicas


def upstream_env(fake_url: str, keys: dict[str, str]) -> dict[str, str]:
    return {"CEREBRAS_API_KEYS": json.dumps(keys), "CEREBRAS_BASE_URL": fake_url}
