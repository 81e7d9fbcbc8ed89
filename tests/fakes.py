"""A fake OpenAI-compatible upstream that speaks Cerebras's wire format, on a real aiohttp server.

Replies are scripted per upstream key (``fake.script("csk-a", reply, reply, ...)``) and consumed in
order; a key with no script left gets ``default``. Every request is recorded with the key it used.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

Reply = Callable[[web.Request, dict], Awaitable[web.StreamResponse]]


@dataclass
class Received:
    key: str | None
    body: dict
    raw: bytes
    headers: dict[str, str]
    path: str = ""


BILLED: web.AppKey[list[dict[str, Any]]] = web.AppKey("billed", list)  # the usage each answer reported


def usage(prompt: int = 5, completion: int = 1, cached: int = 0, reasoning: int = 0) -> dict[str, Any]:
    """A usage object as OpenAI (and Cerebras, Z.ai, Synthetic) report it."""
    out: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                           "total_tokens": prompt + completion}
    if cached:
        out["prompt_tokens_details"] = {"cached_tokens": cached}
    if reasoning:
        out["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return out


def completion(content: str = "hello", model: str = "zai-glm-4.7", usage_: dict | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": usage() if usage_ is None else usage_,
    }
    if not out["usage"]:
        del out["usage"]
    return out


def chunk(content: str, delta: dict | None = None, finish_reason: str | None = None, **extra: Any) -> bytes:
    choice: dict[str, Any] = {"index": 0, "delta": {"content": content} if delta is None else delta}
    if finish_reason is not None:
        choice["finish_reason"] = finish_reason
    obj = {"id": "c", "object": "chat.completion.chunk", "choices": [choice], **extra}
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _billed(request: web.Request, reported: dict[str, Any]) -> None:
    request.app[BILLED].append(reported)


def ok(content: str = "hello", headers: dict[str, str] | None = None, usage_: dict | None = None) -> Reply:
    """A whole answer; ``usage_`` replaces the default usage (``{}``: an answer without usage)."""

    async def reply(request: web.Request, body: dict) -> web.StreamResponse:
        if body.get("stream"):  # as a real upstream: a streamed request is answered in SSE
            return await stream([content], headers=headers)(request, body)
        answer = completion(content, body.get("model", ""), usage_)
        if "usage" in answer:
            _billed(request, answer["usage"])
        return web.json_response(answer, headers=headers)

    return reply


def error(status: int, payload: dict | None = None, headers: dict[str, str] | None = None) -> Reply:
    """An error in Cerebras's shape: a top-level object with message/type/param/code."""

    async def reply(request: web.Request, body: dict) -> web.StreamResponse:
        data = payload if payload is not None else {"message": f"error {status}", "type": "error", "code": None}
        return web.json_response(data, status=status, headers=headers)

    return reply


def rate_limited(reset_tokens_minute: float = 30.0, per_day: bool = False, extra: dict[str, str] | None = None) -> Reply:
    message = (
        "Requests per day limit exceeded - too many requests sent."
        if per_day
        else "Tokens per minute limit exceeded - too many tokens processed."
    )
    headers = {
        "x-ratelimit-limit-tokens-minute": "60000",
        "x-ratelimit-remaining-tokens-minute": "0",
        "x-ratelimit-reset-tokens-minute": str(reset_tokens_minute),
        "x-ratelimit-limit-requests-day": "14400",
        "x-ratelimit-remaining-requests-day": "0" if per_day else "14000",
        "x-ratelimit-reset-requests-day": "43200.5",
        **(extra or {}),
    }
    return error(
        429,
        {"message": message, "type": "too_many_requests_error", "param": "quota",
         "code": "request_quota_exceeded" if per_day else "token_quota_exceeded"},
        headers,
    )


def hang(seconds: float = 3600) -> Reply:
    async def reply(request: web.Request, body: dict) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return web.json_response(completion())

    return reply


def stream(parts: list[str], gate: asyncio.Event | None = None, done: bool = True,
           die_after: int | None = None, headers: dict[str, str] | None = None,
           usage_: dict | None = None, usage_on: str = "chunk", reasoning: list[str] = ()) -> Reply:
    """SSE chunks; with ``gate``, everything after the first chunk waits until the gate is set.
    With ``die_after=n`` the connection is cut after n chunks, mid-stream.

    ``usage_`` is reported as a real server does: ``usage_on="chunk"`` (OpenAI, llama.cpp) in a
    chunk of its own with ``choices: []``, and only when the request asked for it
    (``stream_options.include_usage``); ``"finish"`` (Cerebras, Z.ai) on the chunk with the
    ``finish_reason``, asked or not. ``reasoning`` deltas (``reasoning_content``) come first."""

    async def reply(request: web.Request, body: dict) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", **(headers or {})})
        await resp.prepare(request)
        events = [chunk("", delta={"reasoning_content": r}) for r in reasoning] + [chunk(p) for p in parts]
        for i, event in enumerate(events):
            if i == 1 and gate is not None:
                await gate.wait()
            if die_after is not None and i == die_after:
                request.transport.close()  # cut the connection mid-stream
                return resp
            await resp.write(event)
        asked = (body.get("stream_options") or {}).get("include_usage") is True
        if usage_ is not None and usage_on == "finish":
            await resp.write(chunk("", delta={}, finish_reason="stop", usage=usage_))
            _billed(request, usage_)
        elif usage_ is not None and asked:
            await resp.write(b"data: " + orjson.dumps({"id": "c", "object": "chat.completion.chunk", "choices": [],
                                                        "usage": usage_}) + b"\n\n")
            _billed(request, usage_)
        if done:
            await resp.write(b"data: [DONE]\n\n")
        return resp

    return reply


def sse(*writes: bytes) -> Reply:
    """A 200 ``text/event-stream`` answer of exactly these bytes, one write each (``sse()``: a
    stream that ends with nothing in it)."""

    async def reply(request: web.Request, body: dict) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for data in writes:
            await resp.write(data)
        return resp

    return reply


@dataclass
class FakeUpstream:
    default: Reply = field(default_factory=ok)
    received: list[Received] = field(default_factory=list)
    scripts: dict[str | None, list[Reply]] = field(default_factory=dict)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    billed: list[dict[str, Any]] = field(default_factory=list)  # the usage each answer reported
    url: str = ""

    def script(self, key: str | None, *replies: Reply) -> None:
        self.scripts.setdefault(key, []).extend(replies)

    def keys_used(self) -> list[str | None]:
        return [r.key for r in self.received]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = orjson.loads(raw)
        auth = request.headers.get("Authorization", "")
        key = auth[7:] if auth.startswith("Bearer ") else None
        self.received.append(Received(key, body, raw, dict(request.headers), request.path))
        queue = self.scripts.get(key) or []
        reply = queue.pop(0) if queue else self.default
        try:
            return await reply(request, body)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app[BILLED] = self.billed
        app.router.add_post("/v1/chat/completions", self.handle)
        return app
