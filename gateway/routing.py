"""Which upstreams serve a request, in which order, and the loop that walks them.

``plan()`` is pure: upstreams + prompt estimate -> ordered targets (and why any were skipped).
``Router.complete`` / ``Router.open_stream`` walk the plan: each upstream's keys in its pool's
order, moving on by the failure's kind:

- the client's own 4xx: returned unchanged, nothing else tried;
- context too long: the next provider;
- rate limited: another key of the same provider; when all its keys rest, the next provider
  (``FALLBACK_ON_COOLDOWN``, default) or, for the primary upstream (Cerebras), a wait for its
  first key back;
- 5xx, 503: one more key, then the next provider; timeouts and connection failures: the next
  provider at once (its keys share a host), or one more key when no provider follows.

When nothing can serve now but a resting key will, the request waits (holding no lock) up to
``MAX_KEY_WAIT`` and walks again. The final error's status follows the failures collected.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Mapping, Sequence, TypeVar

import structlog

from .chat import ChatRequest
from .clients.budgets import MONTH, window_end
from .context import AttemptRecord, RequestContext
from .errors import (
    BadGateway,
    GatewayError,
    GatewayTimeout,
    InvalidRequest,
    QuotaExhausted,
    RateLimited,
    ServiceUnavailable,
    UpstreamPassthrough,
)
from .keypool import KeyPool, KeyState
from .providers.base import Completion, Failure, Provider, Stream, UpstreamError
from .tokens import estimate_prompt_tokens, may_exceed

log = structlog.get_logger("gateway.routing")

R = TypeVar("R")

MIN_ROUND_WAIT = 0.1  # seconds between two passes over the same upstreams
# 5xx/503: try this many keys of a provider, then the next provider. A timeout or a connection
# failure moves on at once when another provider follows (every key shares the provider's host,
# and a second timeout would double the client's wait); with no other provider, one more key.
KEYS_TRIED_ON_ERROR = 2
PROVIDER_WIDE = frozenset({Failure.TIMEOUT, Failure.CONNECTION})
KEY_FAULTS = frozenset({Failure.AUTH, Failure.PAYMENT})  # this key's problem, not the provider's


@dataclass
class Upstream:
    name: str
    provider: Provider
    pool: KeyPool
    max_prompt_tokens: int | None = None
    model_for: Callable[[object], str] | None = None  # the model it is sent for a requested one


@dataclass
class Attempt:
    upstream: str
    key: str
    error: UpstreamError


@dataclass
class Served:
    result: object
    upstream: Upstream
    key: KeyState
    attempts: list[Attempt] = field(default_factory=list)


NOTHING_CAPPED: Mapping[str, str] = {}


def plan(
    upstreams: Sequence[Upstream], prompt_tokens: int | None, capped: Mapping[str, str] = NOTHING_CAPPED
) -> tuple[list[Upstream], list[str]]:
    """The upstreams to try in order, and a note for each one skipped.

    A provider whose monthly budget is reached (``capped``: name -> note) is skipped, always.
    A provider is skipped when the prompt is over its ``max_prompt_tokens``, unless that would
    leave nothing: then all the others are tried, and the upstream itself decides.
    """
    notes: list[str] = []
    if capped:
        notes = [capped[up.name] for up in upstreams if up.name in capped]
        upstreams = [up for up in upstreams if up.name not in capped]
    if prompt_tokens is None:
        return list(upstreams), notes
    kept, skipped = [], []
    for up in upstreams:
        if up.max_prompt_tokens is not None and prompt_tokens > up.max_prompt_tokens:
            skipped.append(f"{up.name}: skipped, prompt ~{prompt_tokens} tokens > {up.max_prompt_tokens}")
        else:
            kept.append(up)
    return (kept, notes + skipped) if kept else (list(upstreams), notes)


def request_cost(req: ChatRequest) -> int:
    """Tokens a rate limiter charges up front: a cheap prompt estimate plus the completion cap."""
    asked = req.payload.get("max_completion_tokens") or req.payload.get("max_tokens") or 0
    return (req.prompt_tokens or len(req.raw) // 4) + int(asked)


class Router:
    def __init__(
        self,
        upstreams: Sequence[Upstream],
        *,
        max_key_wait: float,
        fallback_on_cooldown: bool = True,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        capped: Callable[[], Mapping[str, str]] | None = None,
    ) -> None:
        self.upstreams = list(upstreams)
        self.capped = capped  # providers over their monthly budget, each with a note
        self.max_key_wait = max_key_wait
        self.fallback_on_cooldown = fallback_on_cooldown
        self.clock = clock
        self.sleep = sleep
        # with a single upstream there is nowhere else to send a big prompt: never estimate
        limits = [up.max_prompt_tokens for up in self.upstreams if up.max_prompt_tokens is not None]
        self._smallest_limit = min(limits) if limits and len(self.upstreams) > 1 else None

    @property
    def needs_estimates(self) -> bool:
        """Whether some request may need its prompt size estimated (so: load the tokenizer)."""
        return self._smallest_limit is not None

    async def prompt_tokens(self, req: ChatRequest) -> int | None:
        """The prompt estimate, computed only when the byte size cannot settle routing; big
        requests are tokenized in a worker thread so the event loop keeps serving."""
        if self._smallest_limit is None or not may_exceed(len(req.raw), self._smallest_limit):
            return None
        if req.prompt_tokens is None:
            req.prompt_tokens = await asyncio.to_thread(estimate_prompt_tokens, req.payload)
        return req.prompt_tokens

    async def complete(self, req: ChatRequest, ctx: RequestContext | None = None) -> Served:
        async def call(up: Upstream, secret: str) -> tuple[Completion, object]:
            done = await up.provider.chat(req, secret)
            return done, done.rate_limits

        return await self._walk(req, call, ctx or RequestContext("-", "", ""))

    async def open_stream(self, req: ChatRequest, ctx: RequestContext | None = None) -> Served:
        """An open stream whose first chunk has arrived: ``result`` is ``(stream, first_chunk)``.
        Until that chunk, nothing has reached the client, so any failure moves on invisibly."""

        async def call(up: Upstream, secret: str) -> tuple[tuple[Stream, bytes], object]:
            stream = await up.provider.chat_stream(req, secret)
            try:
                first = await stream.events.__anext__()
            except StopAsyncIteration:
                await stream.aclose()
                raise UpstreamError(Failure.SERVER, "upstream closed the stream before any event") from None
            except UpstreamError as e:
                await stream.aclose()
                raise UpstreamError(Failure.CONNECTION, e.message) from None
            except BaseException:
                await stream.aclose()
                raise
            return (stream, first), stream.rate_limits

        return await self._walk(req, call, ctx or RequestContext("-", "", ""))

    async def _walk(
        self,
        req: ChatRequest,
        call: Callable[[Upstream, str], Awaitable[tuple[R, object]]],
        ctx: RequestContext,
    ) -> Served:
        capped = self.capped() if self.capped is not None else NOTHING_CAPPED
        targets, notes = plan(self.upstreams, await self.prompt_tokens(req), capped)
        if notes:
            ctx.skipped = notes
        if not targets:
            now = time.time()
            raise QuotaExhausted(f"every provider's monthly budget is reached: {'; '.join(notes)}",
                                 code="provider_budget_exceeded", retry_after=window_end(MONTH, now) - now)
        cost = request_cost(req)
        attempts: list[Attempt] = []
        given_up: dict[str, set[str]] = {up.name: set() for up in targets}  # keys failing for this request
        done_with: set[str] = set()  # upstreams that cannot serve this request at all
        provider_errors: dict[str, int] = {}
        deadline = self.clock() + self.max_key_wait
        while True:
            reached = targets
            for i, up in enumerate(targets):
                if up.name in done_with:
                    continue
                tried: set[str] = set(given_up[up.name])
                while True:
                    lease = up.pool.acquire(exclude=tried, cost=cost)
                    if lease is None:
                        break
                    tried.add(lease.key.name)
                    began = time.perf_counter_ns()
                    try:
                        result, limits = await call(up, lease.key.secret)
                    except UpstreamError as e:
                        ended = time.perf_counter_ns()
                        ctx.upstream_ns += ended - began
                        ctx.add_attempt(AttemptRecord(up.name, lease.key.name, e.kind.value, e.status,
                                                      (ended - began) // 1000 / 1000, e.message[:200]))
                        changed = up.pool.failed(lease, e)
                        attempts.append(Attempt(up.name, lease.key.name, e))
                        log.warning(
                            "upstream_failed",
                            provider=up.name,
                            upstream_key=lease.key.name,
                            kind=e.kind.value,
                            status=e.status,
                            detail=e.message[:200],
                            key_state_changed=changed,
                        )
                        if e.kind is Failure.CLIENT:
                            raise UpstreamPassthrough(e.status or 400, e.body, e.content_type, up.name) from None
                        if e.kind is Failure.CONTEXT_LENGTH:
                            done_with.add(up.name)
                            break
                        if e.kind is Failure.RATE_LIMITED:
                            continue  # another key of this provider, if one is free
                        given_up[up.name].add(lease.key.name)
                        if e.kind in KEY_FAULTS:
                            continue
                        provider_errors[up.name] = provider_errors.get(up.name, 0) + 1
                        moves_on = e.kind in PROVIDER_WIDE and up is not targets[-1]
                        if moves_on or provider_errors[up.name] >= KEYS_TRIED_ON_ERROR:
                            done_with.add(up.name)  # provider-wide trouble: do not stall on it
                            break
                        continue
                    except BaseException:  # cancelled (the client left), or a bug
                        up.pool.release(lease)
                        ended = time.perf_counter_ns()
                        ctx.upstream_ns += ended - began
                        ctx.add_attempt(AttemptRecord(up.name, lease.key.name, "cancelled", None,
                                                      (ended - began) // 1000 / 1000))
                        raise
                    ended = time.perf_counter_ns()
                    ctx.upstream_ns += ended - began
                    ctx.first_token_ns = ended  # the whole answer, or a stream's first event
                    ctx.add_attempt(AttemptRecord(up.name, lease.key.name, "ok", 200, (ended - began) // 1000 / 1000))
                    ctx.served_by(up.name, lease.key.name, up.model_for(req.model) if up.model_for else None)
                    up.pool.succeeded(lease, limits)  # type: ignore[arg-type]
                    if attempts or notes:
                        log.info("served_after_fallback", provider=up.name, failures=len(attempts), skipped=notes)
                    return Served(result, up, lease.key, attempts)
                if not self.fallback_on_cooldown and up is self.upstreams[0] and up.name not in done_with:
                    resting = up.pool.next_ready_in(exclude=given_up[up.name])
                    if resting is not None and resting > 0:
                        reached = targets[: i + 1]  # wait for this provider rather than fall back
                        break
            wait = self._next_ready_in(reached, given_up, done_with)
            if wait is None or self.clock() + wait > deadline:
                raise final_error(attempts, wait, notes + self._resting_notes(reached, given_up, done_with))
            wait = max(wait, MIN_ROUND_WAIT)  # a "retry after 0" must not turn into a busy loop
            log.info("waiting_for_key", seconds=round(wait, 3))
            await self.sleep(wait)

    @staticmethod
    def _next_ready_in(targets, given_up, done_with) -> float | None:
        waits = [
            w
            for up in targets
            if up.name not in done_with
            for w in [up.pool.next_ready_in(exclude=given_up[up.name])]
            if w is not None
        ]
        return min(waits) if waits else None

    @staticmethod
    def _resting_notes(targets, given_up, done_with) -> list[str]:
        notes = []
        for up in targets:
            if up.name in done_with:
                continue
            w = up.pool.next_ready_in(exclude=given_up[up.name])
            if w is not None and w > 0:
                notes.append(f"{up.name}: every key resting ({w:.1f}s left)")
        return notes


def final_error(attempts: Sequence[Attempt], wait: float | None, notes: Sequence[str] = ()) -> GatewayError:
    """The error a client gets when nothing could serve: its status follows what was seen."""
    parts = [f"{a.upstream}/{a.key}: {a.error.kind.value} ({a.error.message[:80]})" for a in attempts]
    parts += notes
    detail = "; ".join(parts) if parts else "every upstream key is resting"
    kinds = {a.error.kind for a in attempts}
    if wait is not None:  # something will be able to serve later: tell the client when
        return RateLimited(f"all upstreams are rate limited; retry after {wait:.1f}s. {detail}", retry_after=wait)
    if kinds == {Failure.CONTEXT_LENGTH}:
        return InvalidRequest(
            f"the request is too long for every upstream's context window. {detail}", code="context_length_exceeded"
        )
    if kinds and kinds <= {Failure.TIMEOUT}:
        return GatewayTimeout(f"every upstream timed out. {detail}")
    if kinds & {Failure.RATE_LIMITED, Failure.OVERLOADED}:
        return ServiceUnavailable(f"no upstream can serve now. {detail}", retry_after=1.0)
    if not attempts:
        return ServiceUnavailable(f"no upstream key is usable (all disabled; see /_status). {detail}")
    return BadGateway(f"no upstream could serve the request. {detail}")
