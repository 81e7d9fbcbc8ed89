"""The supervisor with real llama.cpp servers (the xllamacpp child) on generated models: start,
readiness, kill -9 and restart, models that do not load, switches that drain, orphans. The pure
parts (argv, backoff, failure reasons) are tables."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from gateway.local.supervisor import (
    BACKOFF_MAX,
    Launch,
    LoadFailed,
    Phase,
    Supervisor,
    SwitchInProgress,
    backoff,
    command,
    failure_reason,
)
from tests.conftest import eventually


def provider_for(base_url: str, model: str) -> object:
    return (base_url, model)  # the supervisor only stores it


def launch(path: Path, **kw) -> Launch:
    return Launch(model=path.name, path=path, ctx_size=kw.pop("ctx_size", 512), **kw)


class Sleeps:
    """An injected sleep that records how long the supervisor meant to wait, and waits a tick."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)
        await asyncio.sleep(0)


@pytest.fixture
async def supervisor():
    sup = Supervisor(provider_for, start_timeout=60, drain_timeout=30)
    yield sup
    await sup.close()


@pytest.fixture(scope="module")
def truncated(tmp_path_factory, gguf_models) -> Path:
    """A file whose header is fine but whose tensors are cut off: only llama.cpp can tell."""
    path = tmp_path_factory.mktemp("bad") / "truncated.gguf"
    path.write_bytes(gguf_models["a"].read_bytes()[:300_000])
    return path


# ---- pure parts -----------------------------------------------------------------------------------


def test_command():
    argv = command(Launch("m.gguf", Path("/models/m.gguf"), 8192, parallel=2, threads=4, gpu_layers=-1,
                          server_args=("--jinja",), slot_dir=Path("/slots")), 4321, python="py")
    assert argv == ["py", "-m", "gateway.local.child", "-m", "/models/m.gguf", "--host", "127.0.0.1",
                    "--port", "4321", "-c", "8192", "-np", "2", "-t", "4", "-ngl", "-1", "--alias", "m.gguf",
                    "--slot-save-path", "/slots", "--jinja"]
    assert "--api-key" not in argv  # the key goes in the environment


@pytest.mark.parametrize("failures, seconds", [(0, 0.5), (1, 0.5), (2, 1.0), (3, 2.0), (7, 30.0), (1000, BACKOFF_MAX)])
def test_backoff(failures, seconds):
    assert backoff(failures) == seconds


@pytest.mark.parametrize(
    "lines, code, reason",
    [
        ([], 0, "the llama.cpp server exited with code 0"),
        ([], -9, "the llama.cpp server was killed by signal 9"),
        ([], None, "the llama.cpp server stopped"),
        (["0.00.005.643 E gguf_init_from_reader: invalid magic characters: 'garb', expected 'GGUF'",
          "0.00.006.266 E llama_model_load: error loading model: failed to load model from bad.gguf",
          "0.00.006.399 E gguf_init_from_reader: invalid magic characters: 'garb', expected 'GGUF'",
          "0.00.006.433 I srv operator(): cleaning up", "llama.cpp: Failed to init server"],
         1, "the llama.cpp server exited with code 1: gguf_init_from_reader: invalid magic characters: 'garb', "
            "expected 'GGUF'; llama_model_load: error loading model: failed to load model from bad.gguf; "
            "llama.cpp: Failed to init server"),
        (["LOCAL_SERVER_ARGS: '--x' is not a supported llama-server flag"], 2,
         "the llama.cpp server exited with code 2: LOCAL_SERVER_ARGS: '--x' is not a supported llama-server flag"),
        (["0.00.001.000 W srv warning only", "plain output"], 1, "the llama.cpp server exited with code 1"),
    ],
)
def test_failure_reason(lines, code, reason):
    assert failure_reason(lines, code) == reason


# ---- real servers ---------------------------------------------------------------------------------


async def get(session: aiohttp.ClientSession, url: str, key: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with session.get(url, headers=headers) as r:
        return r.status


async def test_start_then_kill_9_then_restart(supervisor, gguf_models):
    supervisor.begin(launch(gguf_models["a"]))
    assert supervisor.active is not None and supervisor.active.phase is Phase.LOADING
    first = await eventually(supervisor.serving, timeout=30)
    async with aiohttp.ClientSession() as s:
        assert await get(s, first.base + "/health") == 200
        assert await get(s, first.base + "/v1/models") == 401  # only the gateway has its key
        assert await get(s, first.base + "/v1/models", first.api_key) == 200
    os.kill(first.pid, signal.SIGKILL)
    await eventually(lambda: first.phase is Phase.RESTARTING, timeout=10)
    assert "killed by signal 9" in (first.reason or "")
    assert supervisor.serving() is None  # the chain skips local meanwhile
    began = time.monotonic()
    second = await eventually(supervisor.serving, timeout=30)
    assert second is not first and second.pid != first.pid
    assert supervisor.restarts == 1
    print(f"\nrestart after kill -9: serving again in {time.monotonic() - began:.2f}s")
    async with aiohttp.ClientSession() as s:
        assert await get(s, second.base + "/v1/models", second.api_key) == 200


async def test_a_model_that_does_not_load_is_retried_then_left_failed(gguf_models, truncated):
    sleeps = Sleeps()
    sup = Supervisor(provider_for, start_timeout=60, sleep=sleeps)
    try:
        sup.begin(launch(truncated))
        await eventually(lambda: sup.active is not None and sup.active.phase is Phase.FAILED, timeout=60)
        assert sleeps.asked == [0.5, 1.0]  # three loads, two backoffs, then it stops trying
        reason = sup.active.reason or ""  # type: ignore[union-attr]
        assert "exited with code 1" in reason and "model is corrupted or incomplete" in reason, reason
        assert sup.serving() is None
    finally:
        await sup.close()


async def test_refused_arguments_fail_at_once(gguf_models):
    sleeps = Sleeps()
    sup = Supervisor(provider_for, sleep=sleeps)
    try:
        sup.begin(launch(gguf_models["a"], server_args=("--bogus",)))
        await eventually(lambda: sup.active is not None and sup.active.phase is Phase.FAILED, timeout=30)
        assert "LOCAL_SERVER_ARGS: '--bogus' is not a supported llama-server flag" in (sup.active.reason or "")
        assert sleeps.asked == []  # retrying cannot help
    finally:
        await sup.close()


async def test_a_switch_waits_for_requests_on_the_old_server(supervisor, gguf_models):
    supervisor.begin(launch(gguf_models["a"]))
    old = await eventually(supervisor.serving, timeout=30)
    async with aiohttp.ClientSession() as s:
        # a streamed answer in flight on the old server, as the gateway's provider would hold it
        old.hold()
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 40, "stream": True}
        resp = await s.post(old.base + "/v1/chat/completions", json=body,
                            headers={"Authorization": f"Bearer {old.api_key}"})
        first = await resp.content.readline()
        assert first.startswith(b"data: ")
        new = await supervisor.switch(launch(gguf_models["b"]))
        assert supervisor.serving() is new and new.launch.model == "b.gguf"
        assert supervisor.last_switch == {"model": "b.gguf", "state": "ready"}
        assert old.proc.returncode is None  # type: ignore[union-attr]  # still draining
        rest = await resp.read()  # the old server finishes its answer
        assert rest.rstrip().endswith(b"data: [DONE]")
        resp.release()
        assert old.proc.returncode is None  # type: ignore[union-attr]
        old.release()
        await eventually(lambda: old.proc.returncode is not None, timeout=15)  # type: ignore[union-attr]
        assert old.phase is Phase.STOPPED
        assert await get(s, new.base + "/v1/models", new.api_key) == 200


async def test_a_failed_switch_keeps_the_old_model_serving(supervisor, gguf_models, truncated):
    supervisor.begin(launch(gguf_models["a"]))
    old = await eventually(supervisor.serving, timeout=30)
    with pytest.raises(LoadFailed, match="corrupted or incomplete"):
        await supervisor.switch(launch(truncated))
    assert supervisor.serving() is old
    assert supervisor.last_switch["state"] == "failed"  # type: ignore[index]
    assert "corrupted" in supervisor.last_switch["reason"]  # type: ignore[index, operator]
    assert supervisor.pending is None


async def test_one_switch_at_a_time(supervisor, gguf_models):
    supervisor.begin(launch(gguf_models["a"]))
    await eventually(supervisor.serving, timeout=30)
    first = asyncio.create_task(supervisor.switch(launch(gguf_models["b"])))
    await eventually(lambda: supervisor.switching)
    with pytest.raises(SwitchInProgress, match="b.gguf"):
        await supervisor.switch(launch(gguf_models["a"]))
    assert (await first).launch.model == "b.gguf"


async def test_a_crash_during_a_restart_switch_leaves_one_server(supervisor, gguf_models):
    """A switch made while the active server is dead replaces the restart: nothing is left over."""
    sleeps = Sleeps()
    supervisor.sleep = sleeps
    supervisor.begin(launch(gguf_models["a"]))
    dead = await eventually(supervisor.serving, timeout=30)
    os.kill(dead.pid, signal.SIGKILL)
    await eventually(lambda: dead.phase is not Phase.READY, timeout=10)
    new = await supervisor.switch(launch(gguf_models["b"]))
    await eventually(lambda: all(c is new or c.proc is None or c.proc.returncode is not None
                                 for c in _children(supervisor, dead)), timeout=15)
    assert supervisor.serving() is new


def _children(sup: Supervisor, *extra):
    return [c for c in (sup.active, sup.pending, *extra) if c is not None]


ORPHAN_PARENT = """
import os, subprocess, sys, time
child = subprocess.Popen(sys.argv[1:], env={**os.environ, "GATEWAY_PID": str(os.getpid())},
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(child.pid, flush=True)
time.sleep(600)
"""


def test_a_server_whose_gateway_died_exits(gguf_models, tmp_path):
    """The gateway killed with SIGKILL cannot stop its server: the server notices and exits, also
    when the gateway died before the server had even started up."""
    from gateway.local.supervisor import _project_root, free_port

    argv = command(launch(gguf_models["a"]), free_port())
    env = {**os.environ, "PYTHONPATH": _project_root()}
    parent = subprocess.Popen([sys.executable, "-c", ORPHAN_PARENT, *argv], stdout=subprocess.PIPE, env=env)
    try:
        child = int(parent.stdout.readline())  # type: ignore[union-attr]
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 15
        while _alive(child):
            assert time.monotonic() < deadline, "the orphaned server is still running"
            time.sleep(0.05)
    finally:
        parent.kill()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # a zombie has exited (its reaper just has not looked yet)


async def test_close_stops_every_server(gguf_models):
    sup = Supervisor(provider_for)
    sup.begin(launch(gguf_models["a"]))
    child = await eventually(sup.serving, timeout=30)
    await sup.close()
    assert child.proc.returncode is not None  # type: ignore[union-attr]
    assert not _alive(child.pid)  # type: ignore[arg-type]
