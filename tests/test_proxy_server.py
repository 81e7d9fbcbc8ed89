"""The real entrypoint, as a process: it serves, and bad settings stop it with one clear line."""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from gateway.keystore import KeyStore

ROOT = Path(__file__).resolve().parent.parent


def run(env: dict[str, str], timeout: float = 20) -> subprocess.CompletedProcess:
    full = {"PATH": os.environ["PATH"], "ENV_FILE": "/nonexistent.env", **env}
    return subprocess.run([sys.executable, "proxy_server.py"], cwd=ROOT, env=full, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize(
    "env, names",
    [
        ({"CEREBRAS_API_KEYS": "csk-x", "PORT": "eighty"}, "PORT"),
        ({}, "CEREBRAS_API_KEYS"),
        ({"CEREBRAS_API_KEYS": "csk-x", "LOG_DIR": "/proc/no-logs-here"}, "LOG_DIR"),
        ({"CEREBRAS_API_KEYS": "csk-x", "LOG_DIR": "", "INCOMING_KEY_DB": "/proc/keys.db"}, "INCOMING_KEY_DB"),
    ],
)
def test_bad_settings_stop_with_one_line(env, names):
    result = run(env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("glm-gateway: configuration error: ")
    assert names in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_an_unusable_key_db_leaves_no_thread_to_call_a_closed_loop(monkeypatch, tmp_path):
    """The root of the flaky INCOMING_KEY_DB exit: aiosqlite's worker outlived a failed open and
    called back into the closed loop ("Event loop is closed" on stderr, some runs in ten)."""
    crashes: list = []
    monkeypatch.setattr(threading, "excepthook", crashes.append)

    def workers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if "_connection_worker_thread" in t.name and t.is_alive()]

    async def an_open_store_has_a_worker() -> None:
        store = await KeyStore.open(tmp_path / "k.db")
        assert workers()  # the test can see the thread it looks for
        await store.close()

    asyncio.run(an_open_store_has_a_worker())

    async def open_then_look() -> list[threading.Thread]:
        with pytest.raises(sqlite3.OperationalError):
            await KeyStore.open("/proc/keys.db")
        return workers()

    for _ in range(5):
        assert asyncio.run(open_then_look()) == []  # stopped before open() returned
    for t in workers():
        t.join(5)
    assert crashes == []


def test_port_in_use_is_one_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = run({"CEREBRAS_API_KEYS": "csk-x", "LOG_DIR": "", "PORT": str(port),
                      "INCOMING_KEY_DB": str(tmp_path / "k.db")})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


@contextlib.contextmanager
def serving(tmp_path, extra_env: dict[str, str] | None = None, **popen_kwargs):
    """The real entrypoint as a process, until it answers /health; yields (process, env)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"PATH": os.environ["PATH"], "ENV_FILE": "/nonexistent.env", "CEREBRAS_API_KEYS": "csk-secret-entry",
           "PORT": str(port), "INCOMING_KEY_DB": str(tmp_path / "k.db"), "LOG_DIR": str(tmp_path / "logs"),
           **(extra_env or {})}
    proc = subprocess.Popen([sys.executable, "proxy_server.py"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen_kwargs)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    assert r.status == 200
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"gateway did not start: {proc.stderr.read()}") from None
                time.sleep(0.05)
        yield proc, env
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serves_and_stops_cleanly(tmp_path):
    with serving(tmp_path) as (proc, env):
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert '"event":"starting"' in out
    log_text = (tmp_path / "logs" / "gateway.log").read_text()
    assert '"event":"starting"' in log_text  # flushed to the file before exit
    assert "csk-secret-entry" not in out + err + log_text
    assert (tmp_path / "k.db").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_low_open_file_limit_is_lifted_at_start(tmp_path):
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip("the hard limit leaves nothing to lift")
    expected = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)

    def low_soft_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    with serving(tmp_path, preexec_fn=low_soft_limit) as (proc, _):
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        (line,) = [x for x in limits.splitlines() if x.startswith("Max open files")]
        assert int(line.split()[3]) == expected  # the soft limit, lifted from 256


def test_the_entrypoint_serves_through_the_server_edge(tmp_path):
    """proxy_server serves with gateway.server: a connection that sends nothing gets its 408."""
    with serving(tmp_path, {"REQUEST_HEAD_TIMEOUT": "0.3"}) as (_, env):
        with socket.create_connection(("127.0.0.1", int(env["PORT"])), timeout=5) as s:
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
    assert answer.startswith(b"HTTP/1.0 408 Request Timeout\r\n")
    assert b"Connection: close" in answer and b'"code":"request_timeout"' in answer
