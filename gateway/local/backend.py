"""The managed local backend: the folder of models, the supervised server, the chain's ``local``
provider, switching and prompt-cache warm-up.

On the request path it adds two cheap checks (:meth:`LocalBackend.owns`,
:meth:`LocalBackend.unready`: a suffix test and a few attribute reads) and, per call, a count of
the requests in flight on the server that serves it (so a switch can drain the old one).
Everything else (folder scans, header reads, memory checks, starting servers, warm-ups) happens
on the admin API or in background tasks.
"""
from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from ..chat import ChatRequest
from ..config import LOCAL, LocalSettings
from ..errors import NO_RETRY_HEADER, GatewayError, InvalidRequest, NotFound, ServiceUnavailable
from ..providers.base import Completion, Failure, Stream, UpstreamError
from ..tasks import cancelled
from .models import DEFAULT_CTX, ModelFile, ModelFolder, available_memory, check, default_ctx, owns
from .supervisor import (
    Child,
    Launch,
    LoadFailed,
    Phase,
    ProviderFor,
    Supervisor,
    SwitchInProgress,
    background,
    backoff,
)

log = structlog.get_logger("gateway.local")

LOADING_RETRY = 2.0  # Retry-After while a model loads, seconds
FAILED_RETRY = 30.0  # Retry-After while the local model is failed (an admin has to act)
WARM_TIMEOUT = 600.0  # seconds a warm-up may take (a long prompt on a CPU)


class LocalModelFailed(ServiceUnavailable):
    """The local model will not serve until an admin switches to another: a client's retry cannot
    help, so SDKs are told not to (``x-should-retry: false``); Retry-After stays, for people."""

    code = "local_model_failed"

    def headers(self) -> dict[str, str]:
        return {**super().headers(), NO_RETRY_HEADER: "false"}


class Conflict(GatewayError):
    status = 409
    type = "invalid_request_error"
    code = "switch_in_progress"


@dataclass
class _HeldStream(Stream):
    """A stream that tells its server when it is over (closed, finished or abandoned)."""

    child: Child | None = None

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            child, self.child = self.child, None
            if child is not None:
                child.release()


class LocalProvider:
    """The chain's ``local`` provider: each call goes to the server that is active when it starts."""

    name = LOCAL

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def _child(self) -> Child:
        child = self.supervisor.serving()
        if child is None:  # it went down between routing's check and this call
            raise UpstreamError(Failure.OVERLOADED, "the local model is not ready", status=503)
        return child

    async def chat(self, req: ChatRequest, secret: str) -> Completion:
        child = self._child()
        child.hold()
        try:
            return await child.provider.chat(req, child.api_key)
        finally:
            child.release()

    async def chat_stream(self, req: ChatRequest, secret: str) -> Stream:
        child = self._child()
        child.hold()
        try:
            stream = await child.provider.chat_stream(req, child.api_key)
        except BaseException:
            child.release()
            raise
        return _HeldStream(stream.events, stream.rate_limits, child=child)


class LocalBackend:
    def __init__(self, settings: LocalSettings, provider_for: ProviderFor, supervisor: Supervisor | None = None,
                 drain_timeout: float = 600.0) -> None:
        self.settings = settings
        self.folder = ModelFolder(root=settings.models_dir, single=settings.model_path)
        self.supervisor = supervisor or Supervisor(
            provider_for, start_timeout=settings.start_timeout, drain_timeout=drain_timeout
        )
        self.supervisor.on_ready.append(self._restore_warm)
        self.provider = LocalProvider(self.supervisor)
        self._switch_task: asyncio.Task[None] | None = None
        self.http: object | None = None  # the client its servers' chat calls go through (set by the app)
        self._slot_dir: Path | None = None  # LOCAL_SLOT_DIR, once it is known to be usable

    # ---- life -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Scan the folder and start the default model in the background; returns at once. A
        default model that cannot load leaves local failed, with the reason naming the setting."""
        await asyncio.to_thread(self._prepare)
        s = self.settings
        name, var = s.default_model, "LOCAL_MODEL_PATH" if s.model_path else "LOCAL_MODEL"
        launch, reason = await asyncio.to_thread(self.launch, name, s.ctx_size, "LOCAL_CTX_SIZE")
        if launch is None:
            path = s.model_path or (s.models_dir / name if s.models_dir else None)
            gone = Launch(name, path or Path(name), s.ctx_size or DEFAULT_CTX)
            self.supervisor.refuse(gone, f"{var}: {name} is gone")
        elif reason is not None:
            self.supervisor.refuse(launch, reason if reason.startswith("LOCAL_CTX_SIZE") else f"{var}: {reason}")
        else:
            self.supervisor.begin(launch)

    def _prepare(self) -> None:
        self.folder.scan()
        slot_dir = self.settings.slot_dir
        if slot_dir is not None:
            try:
                slot_dir.mkdir(parents=True, exist_ok=True)
                self._slot_dir = slot_dir.resolve()  # the child may resolve a relative path elsewhere
            except OSError as e:
                log.warning("local_slot_dir_unusable", path=str(slot_dir), error=str(e))

    async def close(self) -> None:
        if self._switch_task is not None:
            await cancelled(self._switch_task)
        await self.supervisor.close()

    # ---- models ---------------------------------------------------------------------------------------

    def launch(self, name: str, ctx_size: int | None, ctx_var: str = "ctx_size") -> tuple[Launch | None, str | None]:
        """What loading ``name`` would run (None: no such model), and why it may not (None: it
        may); ``ctx_size`` None: the default for that model. Reads the memory figure (a /proc
        read): a worker thread's job on the admin paths."""
        model = self.folder.resolve(name)
        if model is None:
            return None, None
        s = self.settings
        if ctx_size is None:
            ctx_size = default_ctx(model)
        launch = Launch(
            model=model.name, path=model.path, ctx_size=ctx_size, parallel=s.parallel, threads=s.threads,
            gpu_layers=s.gpu_layers, server_args=s.server_args,
            slot_dir=self._slot_dir,
        )
        return launch, check(model, ctx_size, s.gpu_layers, s.server_args, available_memory(), ctx_var)

    @property
    def loaded(self) -> str | None:
        child = self.supervisor.active
        return child.launch.model if child is not None else None

    def model_for(self, requested: object) -> str:
        return self.loaded or self.settings.default_model

    async def scan(self) -> list[ModelFile]:
        return await asyncio.to_thread(self.folder.scan)

    async def names(self) -> list[str]:
        return [m.name for m in await self.scan() if m.info is not None]

    async def listing(self) -> dict[str, Any]:
        """``GET /admin/local/models``: every file found, which is loaded, and the server's state."""
        models = await self.scan()
        sup = self.supervisor
        active = sup.active
        pending = sup.pending
        rows = []
        for m in models:
            row = m.as_dict()
            row["loaded"] = active is not None and active.launch.model == m.name
            if row["loaded"] and active is not None:
                row["state"] = active.phase.value
                if active.reason is not None and active.phase is not Phase.READY:
                    row["reason"] = active.reason
            elif pending is not None and pending.launch.model == m.name:
                row["state"] = pending.phase.value
            rows.append(row)
        return {
            "object": "list",
            "data": rows,
            "loaded": active.status() if active is not None else None,
            "switching_to": pending.launch.model if pending is not None else None,
            "last_switch": sup.last_switch,
            "restarts": sup.restarts,
            "auto_switch": self.settings.auto_switch,
        }

    # ---- switching ------------------------------------------------------------------------------------

    async def switch(self, name: str, ctx_size: int | None) -> Launch:
        """Start switching to ``name`` (``POST /admin/local/model``); the load goes on in the
        background. 404 for an unknown model, 400 for one that cannot load, 409 during a switch."""
        await self.scan()
        if self.supervisor.switching:
            raise self._busy()
        launch, reason = await asyncio.to_thread(self.launch, name, self.settings.ctx_size if ctx_size is None
                                                 else ctx_size)  # (None: the model's default)
        return self._start_switch(name, launch, reason)

    def _start_switch(self, name: str, launch: Launch | None, reason: str | None) -> Launch:
        if launch is None:
            raise NotFound(f"no model {name!r} among the local models; GET /admin/local/models lists them",
                           param="model", code="model_not_found")
        if reason is not None:
            param = "ctx_size" if reason.startswith("ctx_size") else "model"
            raise InvalidRequest(reason, param=param, code="model_cannot_load")
        if self.supervisor.switching:
            raise self._busy()
        self._switch_task = background(self._switch(launch))
        return launch

    def _busy(self) -> Conflict:
        pending = self.supervisor.pending
        return Conflict(f"a switch to {pending.launch.model if pending else 'another model'} is in progress; "
                        "one switch at a time (GET /admin/local/models shows it)")

    async def _switch(self, launch: Launch) -> None:
        try:
            await self.supervisor.switch(launch)
        except (LoadFailed, SwitchInProgress):
            pass  # logged by the supervisor; its last_switch says why
        except Exception:
            log.exception("local_switch_crashed", model=launch.model)

    # ---- the request path -------------------------------------------------------------------------------

    owns = staticmethod(owns)

    def unready(self, model: object) -> GatewayError | None:
        """None when local can take a request for ``model`` now; else the error to answer when
        nothing else can: a loading model's 503 (Retry-After), an unknown GGUF's 404, a GGUF not
        loaded 400 (or, with LOCAL_AUTO_SWITCH, a switch to it and a 503 until it is ready)."""
        sup = self.supervisor
        child = sup.active
        if owns(model):
            found = self.folder.resolve(model)  # type: ignore[arg-type]
            if found is None:
                return NotFound(f"no model {model!r} among the local models; GET /v1/models lists them",
                                param="model", code="model_not_found")
            if child is None or found.name != child.launch.model:
                return self._not_loaded(found.name)
        if child is not None and child.phase is Phase.READY:
            return None
        if child is None:
            return ServiceUnavailable("the local model is not started", code="local_model_unavailable",
                                      retry_after=LOADING_RETRY)
        name, phase = child.launch.model, child.phase
        if phase is Phase.FAILED:
            return LocalModelFailed(f"the local model {name} failed: {child.reason}; switch to another with "
                                    "POST /admin/local/model", retry_after=FAILED_RETRY)
        if phase is Phase.RESTARTING:
            return ServiceUnavailable(f"the local model {name} is restarting ({child.reason})",
                                      code="local_model_restarting", retry_after=backoff(1) + LOADING_RETRY)
        return ServiceUnavailable(f"the local model {name} is loading", code="local_model_loading",
                                  retry_after=LOADING_RETRY)

    def _not_loaded(self, name: str) -> GatewayError:
        pending = self.supervisor.pending
        if pending is not None and pending.launch.model == name:
            return ServiceUnavailable(f"the local model {name} is loading", code="local_model_loading",
                                      retry_after=LOADING_RETRY)
        if not self.settings.auto_switch:
            return InvalidRequest(
                f"{name} is not the loaded local model ({self.loaded}); switch with POST /admin/local/model, "
                "or set LOCAL_AUTO_SWITCH=true", param="model", code="model_not_loaded")
        if self.supervisor.switching:
            return ServiceUnavailable(f"a local model switch is in progress; retry {name} shortly",
                                      code="local_model_loading", retry_after=LOADING_RETRY)
        launch, reason = self.launch(name, self.settings.ctx_size)  # (a /proc read; only when switching)
        try:
            self._start_switch(name, launch, reason)
        except GatewayError as e:
            return e
        log.info("local_auto_switch", model=name)
        return ServiceUnavailable(f"switching the local model to {name}; retry shortly", code="local_model_loading",
                                  retry_after=LOADING_RETRY)

    def state(self) -> str:
        """The active server's phase: loading, ready, restarting, failed (or stopped)."""
        child = self.supervisor.active
        return child.phase.value if child is not None else Phase.LOADING.value

    # ---- prompt-cache warm-up ------------------------------------------------------------------------

    def _slot_file(self, model: str) -> str:
        """The slot file of a model's warmed prefix (a plain name: llama.cpp refuses paths)."""
        return "warm-" + hashlib.sha256(model.encode()).hexdigest()[:24] + ".bin"

    async def warm(self, messages: list[Any], tools: list[Any] | None) -> dict[str, Any]:
        """Make the server read ``messages`` and ``tools`` into its prompt cache without generating:
        the chat template renders them (``/apply-template``), a completion of 0 tokens reads the
        prefix into slot 0, which is saved to ``LOCAL_SLOT_DIR`` (kept for restarts) and restored
        into the other slots, so any slot a request lands on starts from it."""
        child = self.supervisor.serving()
        if child is None:
            error = self.unready(None)
            raise error or ServiceUnavailable("the local model is not ready", retry_after=LOADING_RETRY)
        body: dict[str, Any] = {"messages": messages}
        if tools:
            body["tools"] = tools
        child.hold()
        try:
            rendered = await self._call(child, "/apply-template", body)
            prompt = rendered.get("prompt")
            if not isinstance(prompt, str):
                raise ServiceUnavailable("the llama.cpp server did not render the chat template")
            done = await self._call(child, "/completion", {
                "prompt": prompt, "n_predict": 0, "cache_prompt": True, "id_slot": 0, "stream": False})
            timings = done.get("timings")
            if not isinstance(timings, dict):
                timings = {}
            saved = restored = 0
            if child.launch.slot_dir is not None:
                name = self._slot_file(child.launch.model)
                await self._call(child, "/slots/0?action=save", {"filename": name})
                saved = 1
                restored = await self._restore(child, name, range(1, child.launch.parallel))
        finally:
            child.release()
        return {
            "model": child.launch.model,
            "prompt_tokens": done.get("tokens_evaluated"),
            "prompt_ms": timings.get("prompt_ms"),
            "slots_warmed": 1 + restored,
            "saved": bool(saved),
        }

    async def _restore(self, child: Child, name: str, slots: range) -> int:
        restored = 0
        for slot in slots:
            try:
                await self._call(child, f"/slots/{slot}?action=restore", {"filename": name})
                restored += 1
            except GatewayError as e:
                log.warning("local_slot_restore_failed", model=child.launch.model, slot=slot, error=e.message)
        return restored

    async def _restore_warm(self, child: Child) -> None:
        """A server that just became ready gets its model's warmed prefix back, if one was saved."""
        slot_dir = child.launch.slot_dir
        if slot_dir is None:
            return
        name = self._slot_file(child.launch.model)
        if not (slot_dir / name).is_file():  # (a stat)
            return
        restored = await self._restore(child, name, range(child.launch.parallel))
        log.info("local_warm_restored", model=child.launch.model, slots=restored)

    async def _call(self, child: Child, path: str, body: dict[str, Any]) -> dict[str, Any]:
        session = self.supervisor.session
        try:
            async with session.post(child.base + path, json=body, timeout=aiohttp.ClientTimeout(total=WARM_TIMEOUT),
                                    headers={"Authorization": f"Bearer {child.api_key}"}) as r:
                data = await r.json(content_type=None)
                if r.status >= 400:
                    error = data.get("error") if isinstance(data, dict) else None
                    message = error.get("message") if isinstance(error, dict) else error
                    raise GatewayError(f"the llama.cpp server refused {path.split('?')[0]}: {message or r.status}",
                                       status=502 if r.status >= 500 else 400,
                                       type="api_error" if r.status >= 500 else "invalid_request_error",
                                       code="local_server_error")
                return data if isinstance(data, dict) else {}
        except (TimeoutError, aiohttp.ClientError, ValueError) as e:
            raise ServiceUnavailable(f"the llama.cpp server did not answer {path.split('?')[0]}: {e}",
                                     code="local_model_unavailable", retry_after=LOADING_RETRY) from None
