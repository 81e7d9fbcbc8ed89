"""The llama.cpp server processes: each on a free loopback port, ready when its ``/health`` says
so, restarted with backoff when it dies, replaced without failing a request on a switch.

- A :class:`Child` is one server process: spawned, polled until ready (llama.cpp answers 503
  while it loads), stopped with SIGTERM then SIGKILL. It counts the requests in flight on it, so
  a switch can wait for them before stopping it.
- The :class:`Supervisor` keeps one child *active*. A keeper task watches it: a child that dies
  is replaced after a backoff (0.5 s doubling to 30 s; the count starts over once a child stayed up
  a minute); a model that does not load three times in a row, or whose arguments are refused,
  stays *failed* with llama.cpp's reason until a switch. ``switch()`` (one at a time) starts the
  new child beside the active one and waits until it is ready; only then does it become active,
  and the old one is stopped once its requests are done (or after ``drain_timeout``).

The port is found by binding port 0 on loopback and closing it; another process could take it
before the child binds it, which shows as a failed start and costs one retry.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import enum
import os
import re
import secrets
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import structlog

from ..providers.base import Provider
from ..tasks import cancelled

log = structlog.get_logger("gateway.local")
T = TypeVar("T")

BACKOFF_FIRST = 0.5  # seconds before the first restart; doubled per failure in a row ...
BACKOFF_MAX = 30.0  # ... up to this
STABLE = 60.0  # a child up this long has its crash count start over
LOAD_FAILURES = 3  # loads failed in a row before the model is left failed
HEALTH_POLL = 0.05  # seconds between readiness checks while a model loads (growing to 0.5)
STOP_GRACE = 5.0  # seconds a child has to exit after SIGTERM before SIGKILL
TAIL = 60  # lines of the child's output kept for failure reasons
BAD_ARGS = 2  # the child's exit code for refused arguments: retrying cannot help


class Phase(enum.Enum):
    LOADING = "loading"
    READY = "ready"
    RESTARTING = "restarting"  # died; a new child starts after the backoff
    FAILED = "failed"  # will not be retried until a switch
    STOPPED = "stopped"


@dataclass(frozen=True)
class Launch:
    """What one server runs: a model file and the settings it is loaded with."""

    model: str  # its name in the folder
    path: Path
    ctx_size: int
    parallel: int = 1
    threads: int = 0  # 0: llama.cpp's choice
    gpu_layers: int = 0
    server_args: tuple[str, ...] = ()
    slot_dir: Path | None = None  # slot save/restore files (prompt-cache warm-ups)


def command(launch: Launch, port: int, python: str = sys.executable) -> list[str]:
    """The child's argv (pure). Its API key goes in the environment, not here."""
    argv = [python, "-m", "gateway.local.child", "-m", str(launch.path), "--host", "127.0.0.1",
            "--port", str(port), "-c", str(launch.ctx_size), "-np", str(launch.parallel),
            "-t", str(launch.threads), "-ngl", str(launch.gpu_layers), "--alias", launch.model]
    if launch.slot_dir is not None:
        argv += ["--slot-save-path", str(launch.slot_dir)]
    return argv + list(launch.server_args)


def backoff(failures: int) -> float:
    """Seconds to wait before start number ``failures + 1`` after ``failures`` in a row (pure)."""
    return min(BACKOFF_FIRST * 2.0 ** min(max(failures - 1, 0), 32), BACKOFF_MAX)


_LOG_PREFIX = re.compile(r"^\d+\.\d+\.\d+\.\d+ [EW] (?:\w+\s+)?")
_ERROR_LINE = re.compile(r"^\d+\.\d+\.\d+\.\d+ E ")


def failure_reason(lines: list[str], code: int | None) -> str:
    """Why a child stopped, from the end of its output (pure): llama.cpp's first error lines, or
    the gateway's own argument message, or the exit code."""
    errors: list[str] = []
    for line in lines:
        text = line.strip()
        if _ERROR_LINE.match(text):
            text = _LOG_PREFIX.sub("", text).strip()
        elif not text.startswith(("LOCAL_SERVER_ARGS:", "llama.cpp:")):
            continue
        if text and text not in errors:
            errors.append(text)
    if code is None:
        head = "the llama.cpp server stopped"
    elif code < 0:
        head = f"the llama.cpp server was killed by signal {-code}"
    else:
        head = f"the llama.cpp server exited with code {code}"
    return f"{head}: {'; '.join(errors[:3])}" if errors else head


def background(coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """A task that outlives the request that started it, so it runs in a fresh context: its log
    lines do not carry that request's id."""
    return asyncio.create_task(coro, context=contextvars.Context())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LoadFailed(Exception):
    def __init__(self, reason: str, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


ProviderFor = Callable[[str, str], Provider]  # (base URL of /v1, model name) -> the chain's provider


class Child:
    """One llama.cpp server process."""

    def __init__(self, launch: Launch, port: int, provider_for: ProviderFor) -> None:
        self.launch = launch
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.api_key = secrets.token_urlsafe(24)  # only the gateway can use its server
        self.provider = provider_for(self.base + "/v1", launch.model)
        self.phase = Phase.LOADING
        self.reason: str | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.output: collections.deque[str] = collections.deque(maxlen=TAIL)
        self.inflight = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self.started_at = time.monotonic()
        self.ready_at: float | None = None
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    def failed(cls, launch: Launch, reason: str, provider_for: ProviderFor) -> Child:
        """A child that never ran: its model was refused before a process was started."""
        child = cls(launch, 0, provider_for)
        child.phase, child.reason = Phase.FAILED, reason
        return child

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def hold(self) -> None:
        self.inflight += 1
        self.idle.clear()

    def release(self) -> None:
        self.inflight -= 1
        if self.inflight <= 0:
            self.inflight = 0
            self.idle.set()

    async def start(self, session: aiohttp.ClientSession, within: float) -> None:
        """Spawn the server and return once it is ready; LoadFailed (the process stopped) if not."""
        env = {**os.environ, "LLAMA_API_KEY": self.api_key, "PYTHONUNBUFFERED": "1",
               "GATEWAY_PID": str(os.getpid())}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_project_root(), env.get("PYTHONPATH")) if p)
        self.started_at = time.monotonic()
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *command(self.launch, self.port),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                start_new_session=True,  # a Ctrl-C meant for the gateway does not kill it mid-request
            )
        except OSError as e:
            raise LoadFailed(f"cannot start the llama.cpp server: {e}", permanent=True) from None
        self._reader = asyncio.create_task(self._read_output())
        log.info("local_server_starting", model=self.launch.model, pid=self.proc.pid, port=self.port)
        await self._wait_ready(session, within)
        self.ready_at = time.monotonic()  # (READY once the supervisor's hooks have run)
        log.info("local_server_up", model=self.launch.model, pid=self.pid, port=self.port,
                 seconds=round(self.ready_at - self.started_at, 3))

    async def _wait_ready(self, session: aiohttp.ClientSession, within: float) -> None:
        assert self.proc is not None
        exited = asyncio.create_task(self.proc.wait())
        deadline = time.monotonic() + within
        poll = HEALTH_POLL
        try:
            while True:
                if exited.done():
                    await self._drained_output()
                    code = exited.result()
                    raise LoadFailed(failure_reason(list(self.output), code), permanent=code == BAD_ARGS)
                try:
                    async with session.get(self.base + "/health", timeout=aiohttp.ClientTimeout(total=2)) as r:
                        if r.status == 200:
                            return
                except (TimeoutError, aiohttp.ClientError):
                    pass  # not listening yet (llama.cpp binds once the model is loaded)
                if time.monotonic() > deadline:
                    await self.stop()
                    raise LoadFailed(f"the llama.cpp server was not ready within {within:g}s (LOCAL_START_TIMEOUT)")
                await asyncio.wait([exited], timeout=poll)
                poll = min(poll * 1.5, 0.5)
        finally:
            if not exited.done():
                exited.cancel()

    async def _read_output(self) -> None:
        """Keep the end of the child's output (for failure reasons) and log it at debug level; the
        pipe must be drained or a chatty server would block on it."""
        assert self.proc is not None and self.proc.stdout is not None
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            async for raw in self.proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip()
                self.output.append(line)
                log.debug("local_server_output", pid=self.pid, line=line[:500])

    async def _drained_output(self) -> None:
        """Wait (briefly) for the output's end: asyncio closes the process's transport only once
        its pipes are read to the end."""
        if self._reader is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._reader), 1.0)

    async def wait_exit(self) -> int:
        assert self.proc is not None
        code = await self.proc.wait()
        await self._drained_output()
        return code

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after ``STOP_GRACE`` seconds; returns once it has exited."""
        proc = self.proc
        self.phase = Phase.STOPPED
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_GRACE)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        await self._drained_output()
        if self._reader is not None and not self._reader.done():
            await cancelled(self._reader)
        log.info("local_server_stopped", model=self.launch.model, pid=proc.pid, code=proc.returncode)

    def status(self) -> dict[str, object]:
        out: dict[str, object] = {
            "model": self.launch.model,
            "state": self.phase.value,
            "ctx_size": self.launch.ctx_size,
            "parallel": self.launch.parallel,
            "pid": self.pid,
            "in_flight": self.inflight,
        }
        if self.reason is not None:
            out["reason"] = self.reason
        return out


def _project_root() -> str:
    """The folder holding the ``gateway`` package, so the child finds it from any working directory."""
    return str(Path(__file__).resolve().parents[2])


class SwitchInProgress(Exception):
    def __init__(self, model: str) -> None:
        super().__init__(f"a switch to {model} is in progress")
        self.model = model


class Supervisor:
    def __init__(
        self,
        provider_for: ProviderFor,
        *,
        start_timeout: float = 300.0,
        drain_timeout: float = 600.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        port: Callable[[], int] = free_port,
    ) -> None:
        self.provider_for = provider_for
        self.start_timeout = start_timeout
        self.drain_timeout = drain_timeout
        self.sleep = sleep
        self.port = port
        self.active: Child | None = None
        self.pending: Child | None = None  # a switch's new child, while it loads
        self.on_ready: list[Callable[[Child], Awaitable[None] | None]] = []
        self.restarts = 0
        self.last_switch: dict[str, object] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._retiring: dict[asyncio.Task[None], Child] = {}  # old servers draining after a switch
        self._switching = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    @property
    def session(self) -> aiohttp.ClientSession:
        """For the gateway's own calls to its servers (health, warm-up): not on a request's path."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    def serving(self) -> Child | None:
        """The child that takes requests now, or None."""
        child = self.active
        return child if child is not None and child.phase is Phase.READY else None

    @property
    def switching(self) -> bool:
        return self._switching.locked()

    # ---- starting, switching, stopping -----------------------------------------------------------

    def begin(self, launch: Launch) -> None:
        """Start keeping ``launch`` running (at the gateway's start); returns at once."""
        self.active = Child(launch, self.port(), self.provider_for)
        self._keeper = background(self._keep(launch, self.active))

    def refuse(self, launch: Launch, reason: str) -> None:
        """``launch`` may not run (checked before any process): local stays failed with ``reason``."""
        self.active = Child.failed(launch, reason, self.provider_for)
        log.error("local_model_refused", model=launch.model, reason=reason)

    async def switch(self, launch: Launch) -> Child:
        """Load ``launch`` beside the active child; once it is ready, it takes new requests and
        the old child is stopped when its requests are done. SwitchInProgress if one is going on;
        LoadFailed if the new model does not load (the active one keeps serving)."""
        if self._switching.locked():
            raise SwitchInProgress(self.pending.launch.model if self.pending else launch.model)
        async with self._switching:
            child = Child(launch, self.port(), self.provider_for)
            self.pending = child
            self.last_switch = {"model": launch.model, "state": Phase.LOADING.value}
            log.info("local_switch_started", model=launch.model,
                     previous=self.active.launch.model if self.active else None)
            try:
                await child.start(self.session, self.start_timeout)
                await self._became_ready(child)
            except LoadFailed as e:
                self.pending = None
                await child.stop()
                child.phase, child.reason = Phase.FAILED, e.reason
                self.last_switch = {"model": launch.model, "state": Phase.FAILED.value, "reason": e.reason}
                log.error("local_switch_failed", model=launch.model, reason=e.reason)
                raise
            except BaseException:
                self.pending = None
                await child.stop()
                raise
            old, keeper = self.active, self._keeper
            self.active, self.pending = child, None  # new requests go to the new server from here on
            self._keeper = background(self._keep(launch, child))
            if keeper is not None:
                await cancelled(keeper)
            if old is not None:
                self._retire(old)
            self.last_switch = {"model": launch.model, "state": Phase.READY.value}
            log.info("local_switch_done", model=launch.model, previous=old.launch.model if old else None)
            return child

    def _retire(self, child: Child) -> None:
        async def retire() -> None:
            try:
                await asyncio.wait_for(child.idle.wait(), self.drain_timeout)
            except TimeoutError:
                log.warning("local_drain_timeout", model=child.launch.model, in_flight=child.inflight)
            await child.stop()

        task = background(retire())
        self._retiring[task] = child
        task.add_done_callback(lambda t: self._retiring.pop(t, None))

    async def close(self) -> None:
        self._closed = True
        if self._keeper is not None:
            await cancelled(self._keeper)
        draining = dict(self._retiring)
        for task in draining:
            task.cancel()  # no more waiting for their requests: the gateway is stopping
        await asyncio.gather(*draining, return_exceptions=True)
        children = [c for c in (self.active, self.pending, *draining.values()) if c is not None]
        await asyncio.gather(*(c.stop() for c in children), return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    # ---- keeping the active child alive ----------------------------------------------------------

    async def _keep(self, launch: Launch, child: Child) -> None:
        """Keep ``launch`` served: by ``child`` (ready, or yet to start), then by a new child each
        time the last one dies, after a backoff."""
        load_failures = crashes = 0
        try:
            while not self._closed:
                if child.phase is not Phase.READY:
                    try:
                        await child.start(self.session, self.start_timeout)
                    except LoadFailed as e:
                        await child.stop()
                        load_failures += 1
                        log.error("local_model_load_failed", model=launch.model, reason=e.reason,
                                  attempt=load_failures)
                        if e.permanent or load_failures >= LOAD_FAILURES:
                            child.phase, child.reason = Phase.FAILED, e.reason
                            return
                        child.phase, child.reason = Phase.RESTARTING, e.reason
                        await self.sleep(backoff(load_failures))
                        child = self._successor(launch)
                        continue
                    load_failures = 0
                    await self._became_ready(child)
                code = await child.wait_exit()
                up_for = time.monotonic() - (child.ready_at or child.started_at)
                crashes = 1 if up_for >= STABLE else crashes + 1
                self.restarts += 1
                child.phase = Phase.RESTARTING
                child.reason = failure_reason(list(child.output), code)
                log.error("local_server_died", model=launch.model, pid=child.pid, code=code, reason=child.reason,
                          restart_in=backoff(crashes), in_flight=child.inflight)
                await self.sleep(backoff(crashes))
                child = self._successor(launch)
        except asyncio.CancelledError:
            if child is not self.active and child.phase is not Phase.READY:
                await child.stop()  # a restart that a switch made pointless (a ready one drains first)
            raise

    def _successor(self, launch: Launch) -> Child:
        child = Child(launch, self.port(), self.provider_for)
        self.active = child
        return child

    async def _became_ready(self, child: Child) -> None:
        """The hooks (a saved warm-up restored, the key's breaker reset) run before the server
        takes requests: its first request finds the warmed prefix."""
        for hook in self.on_ready:
            try:
                result = hook(child)
                if result is not None:
                    await result
            except Exception:  # a hook's bug must not stop the server from serving
                log.exception("local_ready_hook_failed", model=child.launch.model)
        child.phase = Phase.READY
        log.info("local_server_ready", model=child.launch.model, pid=child.pid,
                 seconds=round(time.monotonic() - child.started_at, 3))
