"""Local drafts: the request asked of the local llama.cpp server, bounded, with log-probabilities.

A draft is the client's request, non-streamed, capped at ``MAX_DRAFT_TOKENS`` (or the client's
own smaller cap), with ``logprobs: true`` and ``top_logprobs`` of at least 1 (llama.cpp returns
no log-probabilities with ``top_logprobs: 0``), within ``DRAFT_TIMEOUT``. Parallel drafts
differ by seed and temperature, and are as many as the server has slots (``total_slots`` of its
``GET /props``, read once a minute; a server that does not say runs one).

Each draft call goes through the local upstream's key pool, so its breaker sees the local
server's faults as any request's would; a draft that times out is not held against it.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from ..chat import ChatRequest
from ..context import AttemptRecord, RequestContext
from ..providers.base import UpstreamError
from ..routing import Upstream

SLOTS_TTL = 60.0  # seconds a /props answer is trusted
BASE_TEMPERATURE = 0.2  # parallel drafts when the client set none: the first near-greedy...
TEMPERATURE_STEP = 0.3  # ...each next one warmer
MAX_TEMPERATURE = 1.5
DRAFT_FIELDS_DROPPED = ("stream", "stream_options", "max_tokens", "max_completion_tokens", "n", "prediction")


def draft_payload(payload: dict[str, Any], max_draft_tokens: int) -> tuple[dict[str, Any], bool]:
    """The draft's request body, and whether its cap is the gateway's own (the client allowed
    more, or set none) rather than the client's: a draft cut by it is unfinished. (Pure.)"""
    asked = payload.get("max_completion_tokens") or payload.get("max_tokens")
    limit = asked if isinstance(asked, int) and asked > 0 else None
    cap = max_draft_tokens if limit is None else min(limit, max_draft_tokens)
    body = {k: v for k, v in payload.items() if k not in DRAFT_FIELDS_DROPPED}
    top = payload.get("top_logprobs") if payload.get("logprobs") is True else None
    body["max_tokens"] = cap
    body["logprobs"] = True
    body["top_logprobs"] = top if isinstance(top, int) and top >= 1 else 1
    return body, limit is None or limit > max_draft_tokens


def variants(payload: dict[str, Any], n: int, seed: int) -> list[dict[str, Any]]:
    """Seeds and temperatures of ``n`` parallel drafts (pure): the client's temperature (or
    ``BASE_TEMPERATURE``) for the first, each next one ``TEMPERATURE_STEP`` warmer; seeds from
    the client's seed (or ``seed``) up. One draft keeps the client's settings."""
    if n <= 1:
        return [{}]
    given = payload.get("temperature")
    base = float(given) if isinstance(given, (int, float)) and not isinstance(given, bool) else BASE_TEMPERATURE
    first = payload.get("seed")
    start = first if isinstance(first, int) and not isinstance(first, bool) else seed
    return [{"seed": (start + i) % 2**31, "temperature": round(min(MAX_TEMPERATURE, base + i * TEMPERATURE_STEP), 3)}
            for i in range(n)]


@dataclass
class Draft:
    """A draft's answer (``body``), or why there is none (``failure``)."""

    body: dict[str, Any] | None
    failure: str | None
    key: str = ""
    model: str | None = None


class Drafter:
    """Makes drafts on the local upstream. ``slots``: the local server's parallel slots (None
    when it cannot tell); ``seed``: the first seed of parallel drafts when the client gave none."""

    def __init__(
        self,
        local: Upstream,
        *,
        max_tokens: int,
        timeout: float,
        slots: Callable[[], Awaitable[int | None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        seed: Callable[[], int] | None = None,
    ) -> None:
        self.local = local
        self.max_tokens = max_tokens
        self.timeout = timeout
        self._probe = slots
        self._clock = clock
        self._seed = seed or (lambda: time.perf_counter_ns() % 2**31)
        self._slots: int = 1
        self._slots_at: float | None = None
        self._probing: asyncio.Task[int | None] | None = None

    async def slots(self) -> int:
        """How many drafts the local server runs at once: its ``total_slots``, read at most once
        per ``SLOTS_TTL`` (concurrent callers share one read; 1 when it cannot tell)."""
        now = self._clock()
        if self._probe is None or (self._slots_at is not None and now - self._slots_at < SLOTS_TTL):
            return self._slots
        task = self._probing
        if task is None:
            task = self._probing = asyncio.ensure_future(self._probe())
        try:
            found = await asyncio.shield(task)
        except Exception:
            found = None
        if self._probing is task:
            self._probing = None
            self._slots = found if isinstance(found, int) and found >= 1 else 1
            self._slots_at = self._clock()
        return self._slots

    async def run(self, req: ChatRequest, n: int, ctx: RequestContext) -> tuple[list[Draft], bool]:
        """``n`` drafts at once, each recorded on ``ctx`` as an attempt on the local upstream
        (outcome "draft"); and whether the gateway's own cap bounds them."""
        body, cut_by_gateway = draft_payload(req.payload, self.max_tokens)
        deadline = asyncio.get_running_loop().time() + self.timeout
        bodies = [{**body, **v} for v in variants(req.payload, n, self._seed())]
        drafts = await asyncio.gather(*(self._one(b, deadline, ctx) for b in bodies))
        return list(drafts), cut_by_gateway

    async def _one(self, body: dict[str, Any], deadline: float, ctx: RequestContext) -> Draft:
        up = self.local
        lease = up.pool.acquire(cost=int(body["max_tokens"]))
        if lease is None:
            return Draft(None, "local upstream unavailable")
        name = lease.key.name
        began = time.perf_counter_ns()

        def record(outcome: str, status: int | None, detail: str | None = None) -> None:
            ms = (time.perf_counter_ns() - began) // 1000 / 1000
            ctx.add_attempt(AttemptRecord(up.name, name, outcome, status, ms, detail))

        try:
            async with asyncio.timeout_at(deadline):
                done = await up.provider.chat(ChatRequest(body, b"", False, modified=True), lease.key.secret)
        except UpstreamError as e:
            up.pool.failed(lease, e)
            record(e.kind.value, e.status, e.message[:200])
            return Draft(None, f"draft failed ({e.kind.value})", name)
        except TimeoutError:
            up.pool.release(lease)  # slow within the draft's bound: not the server's fault
            record("timeout", None, "draft timeout")
            return Draft(None, f"draft timed out ({self.timeout:g}s)", name)
        except BaseException:
            up.pool.release(lease)
            raise
        up.pool.succeeded(lease, done.rate_limits)
        record("draft", done.status)
        try:
            parsed = orjson.loads(done.body)
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            return Draft(None, "draft unreadable", name)
        model = up.model_for(body.get("model")) if up.model_for else None
        return Draft(parsed, None, name, model)
