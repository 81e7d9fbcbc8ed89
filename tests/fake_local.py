"""A fake local llama.cpp server: chat completions whose drafts and log-probabilities are
scripted per request, and ``GET /props`` with its ``total_slots``, on a real aiohttp server.

``local.script(None, draft("ok", logprob=-0.05), ...)`` queues answers (the local upstream has
no key); each is answered as llama.cpp does: a chat.completion with ``logprobs.content`` (one
entry per whitespace-separated word) when the request asked for them, or SSE when it streams.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.fakes import FakeUpstream, Reply


def body_of(content: str | None, logprob: float | list[float] | None, finish: str, tool_calls: list | None,
            model: str, want_logprobs: bool) -> dict[str, Any]:
    words = (content or "").split() or ([""] if tool_calls else [])
    lps = logprob if isinstance(logprob, list) else [logprob] * len(words)
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": finish}
    if want_logprobs and logprob is not None:
        choice["logprobs"] = {"content": [
            {"id": i, "token": w, "bytes": list(w.encode()), "logprob": lp,
             "top_logprobs": [{"token": w, "logprob": lp}]}
            for i, (w, lp) in enumerate(zip(words, lps, strict=True))
        ]}
    return {
        "id": "chatcmpl-local", "object": "chat.completion", "created": 7, "model": model,
        "system_fingerprint": "b0-fake", "choices": [choice],
        "usage": {"prompt_tokens": 11, "completion_tokens": max(1, len(words)),
                  "total_tokens": 11 + max(1, len(words))},
    }


def draft(content: str | None = "the answer", logprob: float | list[float] | None = -0.05, finish: str = "stop",
          tool_calls: list | None = None, delay: float = 0.0) -> Reply:
    """A llama.cpp answer: confident by default (each token's logprob -0.05: confidence 0.95)."""

    async def reply(request: web.Request, body: dict) -> web.StreamResponse:
        if delay:
            await asyncio.sleep(delay)
        data = body_of(content, logprob, finish, tool_calls, body.get("model", ""), body.get("logprobs") is True)
        if body.get("stream"):
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            delta = {"role": "assistant", "content": content}
            if tool_calls:
                delta["tool_calls"] = [{**c, "index": i} for i, c in enumerate(tool_calls)]
            chunk = {"id": "c", "object": "chat.completion.chunk", "model": data["model"],
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\ndata: [DONE]\n\n")
            return resp
        return web.json_response(data)

    return reply


def call(name: str, arguments: Any, call_id: str = "call_1") -> dict[str, Any]:
    args = arguments if isinstance(arguments, str) else orjson.dumps(arguments).decode()
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}


@dataclass
class FakeLocal(FakeUpstream):
    default: Reply = field(default_factory=draft)
    total_slots: int | None = 1
    props_calls: int = 0

    async def props(self, request: web.Request) -> web.StreamResponse:
        self.props_calls += 1
        if self.total_slots is None:
            return web.json_response({"error": {"message": "not found"}}, status=404)
        return web.json_response({"total_slots": self.total_slots, "model_alias": "glm-local"})

    def app(self) -> web.Application:
        app = super().app()
        app.router.add_get("/props", self.props)
        return app
