from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from gateway import logs
from gateway.app import create_app
from gateway.config import Settings
from gateway.keystore import KeyStore
from tests.fakes import FakeUpstream

UPSTREAM_KEYS = {"k1": "csk-one-1111111111", "k2": "csk-two-2222222222", "k3": "csk-three-33333333"}


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory) -> Path:
    """Logging is process-wide: configure it once, to a file the tests can read."""
    path = tmp_path_factory.mktemp("logs")
    writer = logs.configure("DEBUG", path, secrets=(), cache=False, stdout=False)
    yield path
    writer.stop()


async def eventually(check: Callable[[], object], timeout: float = 5.0, interval: float = 0.01):
    """Poll ``check`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


@pytest.fixture
async def fake(aiohttp_server) -> FakeUpstream:
    upstream = FakeUpstream()
    server = await aiohttp_server(upstream.app())
    upstream.url = str(server.make_url("/v1"))
    return upstream


@pytest.fixture
def key_db(tmp_path) -> Path:
    return tmp_path / "data" / "keys.db"


@pytest.fixture
async def client_key(key_db) -> str:
    store = await KeyStore.open(key_db)
    try:
        _, plaintext = await store.add("tester")
    finally:
        await store.close()
    return plaintext


@pytest.fixture
async def admin_key(key_db) -> str:
    store = await KeyStore.open(key_db)
    try:
        _, plaintext = await store.add("admin", role="admin")
    finally:
        await store.close()
    return plaintext


GatewayFactory = Callable[..., Awaitable[object]]


def gateway_env(fake: FakeUpstream, key_db: Path, log_dir: Path) -> dict[str, str]:
    """The tests' gateway configuration: the fake upstream's keys, auth off, quick refreshes."""
    import json

    return {
        "CEREBRAS_API_KEYS": json.dumps(UPSTREAM_KEYS),
        "CEREBRAS_BASE_URL": fake.url,
        "INCOMING_KEY_DB": str(key_db),
        "ENABLE_INCOMING_AUTH": "false",
        "LOG_DIR": str(log_dir),
        "KEY_CACHE_REFRESH": "0.05",
        "USAGE_FLUSH_INTERVAL": "0.1",
        "MAX_KEY_WAIT": "0",
    }


@pytest.fixture
def gateway(aiohttp_client, fake, key_db, log_dir) -> GatewayFactory:
    """Start a real gateway app on a real port, pointed at the fake upstream."""

    async def start(env: dict[str, str] | None = None, **kwargs):
        settings = Settings.from_env({**gateway_env(fake, key_db, log_dir), **(env or {})})
        return await aiohttp_client(create_app(settings, **kwargs))

    return start


def auth_header(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


CHAT = {"model": "zai-glm-4.7", "messages": [{"role": "user", "content": "hi"}]}


# ---- more fake upstreams, and a real llama.cpp server for the local backend ----------------------

LLAMA_DIR = Path(__file__).resolve().parent / "llama"


@pytest.fixture
async def make_fake(aiohttp_server):
    """More fake upstreams (Synthetic, Z.ai): ``await make_fake()`` -> FakeUpstream with ``url``."""

    async def make() -> FakeUpstream:
        upstream = FakeUpstream()
        server = await aiohttp_server(upstream.app())
        upstream.url = str(server.make_url("/v1"))
        return upstream

    return make


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory) -> str:
    """A real llama.cpp server (xllamacpp wheel) on a generated tiny GGUF; yields its /v1 URL.

    The model is random (gibberish output) but real: tokenizer, chat template, sampling, SSE,
    usage and llama.cpp's own errors. Context is 1024 split over 2 slots (512 each)."""
    import subprocess
    import sys
    import urllib.request

    model = tmp_path_factory.mktemp("model") / "tiny.gguf"
    subprocess.run([sys.executable, str(LLAMA_DIR / "make_tiny_gguf.py"), "-o", str(model)],
                   check=True, stdout=subprocess.DEVNULL)
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, str(LLAMA_DIR / "serve_xllamacpp.py"), "-m", str(model), "--port", str(port),
         "-a", "glm-local", "-np", "2", "-c", "1024"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(base + "/health", timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"llama.cpp server did not start (exit code {proc.poll()})")
        time.sleep(0.05)
    yield base + "/v1"
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def gguf_models(tmp_path_factory) -> dict[str, Path]:
    """Two different tiny GGUF models (generated, real to llama.cpp): ``a`` (F32, trained context
    2048) and ``b`` (F16, wider, trained context 4096, stops by itself), in a folder of their own."""
    import subprocess
    import sys

    folder = tmp_path_factory.mktemp("gguf")
    variants = {
        "a": [],
        "b": ["--seed", "7", "--n-embd", "128", "--dtype", "f16", "--ctx", "4096", "--eos-boost", "3",
              "--name", "tiny-b"],
    }
    made = {}
    for name, args in variants.items():
        path = folder / f"{name}.gguf"
        subprocess.run([sys.executable, str(LLAMA_DIR / "make_tiny_gguf.py"), "-o", str(path), *args],
                       check=True, stdout=subprocess.DEVNULL)
        made[name] = path
    return made


# ---- a real PostgreSQL (tests/pg.py): one server per session, a fresh database per test --------

@pytest.fixture(scope="session")
def pg_server():
    from tests.pg import server

    pg = server()
    yield pg
    pg.remove()


@pytest.fixture
async def pg_url(pg_server) -> str:
    return await pg_server.new_database()
