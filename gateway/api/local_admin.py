"""The managed local models, for admins: list, switch, warm the prompt cache.

- ``GET /admin/local/models``: every GGUF file found (name, size, architecture, quantization,
  trained context length, embedded chat template), which one is loaded and its state (loading,
  ready, restarting, failed with the reason), the last switch;
- ``POST /admin/local/model {"model": "x.gguf", "ctx_size": 8192}``: switch (202: the load goes
  on in the background; requests keep going to the loaded model until the new one is ready);
  ``ctx_size`` is optional (default ``LOCAL_CTX_SIZE``). 404 unknown model, 400 a model that
  cannot load (not GGUF, too large for memory, a context past its trained length), 409 while
  another switch runs;
- ``POST /admin/local/warm {"messages": [...], "tools": [...]}``: read that prefix into the
  server's prompt cache without generating (see ``LocalBackend.warm``).

With client auth on, only an admin key (``client_role == "admin"``, as ``/metrics``); with auth
off, anyone who can reach the gateway. 404 when the gateway runs no local model.
"""
from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from ..chat import parse_chat_request
from ..errors import InvalidRequest, NotFound
from ..local.backend import LocalBackend
from ..middleware import context_of
from ..state import LOCAL_BACKEND, SETTINGS
from .metrics import AdminRequired

MODELS_PATH = "/admin/local/models"
MAX_CTX = 1 << 24


def add_routes(app: web.Application) -> None:
    app.router.add_get(MODELS_PATH, list_models)
    app.router.add_post("/admin/local/model", switch)
    app.router.add_post("/admin/local/warm", warm)


def _backend(request: web.Request) -> LocalBackend:
    app = request.app
    if app[SETTINGS].enable_incoming_auth and context_of(request).client_role != "admin":
        raise AdminRequired(f"{request.path} needs an admin key")
    backend = app.get(LOCAL_BACKEND)
    if backend is None:
        raise NotFound("the gateway runs no local model: set LOCAL_MODEL_PATH or LOCAL_MODELS_DIR",
                       code="local_not_managed")
    return backend


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def _object(request: web.Request, allowed: frozenset[str]) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = orjson.loads(raw) if raw.strip() else None
    except orjson.JSONDecodeError as e:
        raise InvalidRequest(f"the request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object", code="invalid_request")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidRequest(f"unknown field {unknown[0]!r}; expected {', '.join(sorted(allowed))}",
                             param=unknown[0], code="unknown_field")
    return body


async def list_models(request: web.Request) -> web.Response:
    return _json(await _backend(request).listing())


async def switch(request: web.Request) -> web.Response:
    backend = _backend(request)
    body = await _object(request, frozenset({"model", "ctx_size"}))
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest("'model' must be the name of a GGUF file (GET /admin/local/models lists them)",
                             param="model", code="invalid_model")
    ctx = body.get("ctx_size")
    if ctx is not None and (isinstance(ctx, bool) or not isinstance(ctx, int) or not 0 <= ctx <= MAX_CTX):
        raise InvalidRequest(f"'ctx_size' must be an integer from 0 (the model's trained context) to {MAX_CTX}",
                             param="ctx_size", code="invalid_ctx_size")
    launch = await backend.switch(model.strip(), ctx)
    return _json({"model": launch.model, "ctx_size": launch.ctx_size, "state": "loading",
                  "status": MODELS_PATH}, status=202)


async def warm(request: web.Request) -> web.Response:
    backend = _backend(request)
    body = await _object(request, frozenset({"messages", "tools"}))
    messages = body.get("messages")
    parse_chat_request(orjson.dumps({"messages": messages}))  # the same checks as a chat request (400s)
    tools = body.get("tools")
    if tools is not None and (not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools)):
        raise InvalidRequest("'tools' must be an array of tool objects", param="tools", code="invalid_tools")
    assert isinstance(messages, list)
    return _json(await backend.warm(messages, tools))
