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

When no candidate can take the request now, :func:`next_step` decides (pure). A request's
*candidates* are the keys of the upstreams it may still use: not those it is done with (context
too long, provider-wide faults), not keys that already failed it, and with
``FALLBACK_ON_COOLDOWN=false`` nothing after the primary while the primary rests on a rate
limit or its keys are being proven (a primary whose breakers are open is failing, not resting:
errors fall back whatever that setting says). Then:

1. some candidate rests only on its error breaker (open, no probe out): the one whose rest ends
   first is tried at once, as an early probe, rather than answering with no attempt. One
   exception: a candidate resting on a rate limit that is back sooner than that breaker would
   half-open, and within ``MAX_KEY_WAIT``, is waited for instead (it is known to be healthy and
   is known to come back; the failing key is only known to fail). A key is probed early at most
   once per request;
2. else the request waits (holding no lock) for the first rate-limited key back, up to
   ``MAX_KEY_WAIT``, or polls a key held by its probe (up to ``MAX_KEY_WAIT`` as well) or by its
   first request (up to ``breaker.PROVING_HOLD``, whatever ``MAX_KEY_WAIT`` says: that rule must
   never fail a request), and walks again;
3. else :func:`final_error`, whose status follows what was seen: rate limits give 429, failing
   upstreams 503 ``upstream_unavailable``, both with Retry-After.
"""
from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

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
from .keypool import FAULTS, KeyPool, KeyState, Outlook
from .logs import shorten
from .providers.base import Failure, Provider, Stream, UpstreamError
from .sse import has_data
from .tokens import estimate_prompt_tokens, may_exceed

log = structlog.get_logger("gateway.routing")

R = TypeVar("R")

MIN_ROUND_WAIT = 0.1  # seconds between two passes over the same upstreams
HELD_POLL = 0.05  # seconds between looks at a key held by its probe or its first request
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
    # a backend that is not always there (the managed local model): for a requested model, None
    # when it can take the request now, else the error to answer if nothing else can
    unready: Callable[[object], GatewayError | None] | None = None
    owns: Callable[[object], bool] | None = None  # requested models only it may serve (a local GGUF)


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


def admit(upstreams: Sequence[Upstream], model: object) -> list[Upstream]:
    """The upstreams that may take a request for ``model`` now: the one that owns the model if
    one does (a local GGUF's name goes to local only), less those not ready (a local model that
    is loading). None left: the first one's error (503 with Retry-After while a model loads)."""
    owners = [up for up in upstreams if up.owns is not None and up.owns(model)]
    kept: list[Upstream] = []
    error: GatewayError | None = None
    for up in owners or upstreams:
        why = up.unready(model) if up.unready is not None else None
        if why is None:
            kept.append(up)
        elif error is None:
            error = why
    if not kept and error is not None:
        raise error
    return kept


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
        self._gated = any(up.unready is not None or up.owns is not None for up in self.upstreams)

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

    async def complete(
        self, req: ChatRequest, ctx: RequestContext | None = None, order: Sequence[Upstream] | None = None
    ) -> Served:
        """The answer of the first upstream that serves. ``order``: the upstreams to walk, first
        choice first (a routing strategy's; None: the configured chain)."""

        # (no closure: _walk awaits the provider's chat itself, one coroutine less a request)
        return await self._walk(req, None, ctx or RequestContext("-", "", ""), order)

    async def open_stream(
        self, req: ChatRequest, ctx: RequestContext | None = None, order: Sequence[Upstream] | None = None
    ) -> Served:
        """An open stream whose first data has arrived: ``result`` is ``(stream, first_chunk)``.
        Until that chunk, nothing has reached the client, so any failure moves on invisibly.
        Chunks before it holding no data (keep-alive comments, a lone ``[DONE]``) are dropped,
        and a stream that ends with no data is a failure: the client never gets an empty answer."""

        async def call(up: Upstream, secret: str) -> tuple[tuple[Stream, bytes], object]:
            stream = await up.provider.chat_stream(req, secret)
            try:
                async for first in stream.events:
                    if has_data(first):
                        return (stream, first), stream.rate_limits
            except UpstreamError as e:
                await stream.aclose()
                raise UpstreamError(Failure.CONNECTION, e.message) from None
            except BaseException:
                await stream.aclose()
                raise
            await stream.aclose()
            raise UpstreamError(Failure.SERVER, "upstream sent an empty stream")

        return await self._walk(req, call, ctx or RequestContext("-", "", ""), order)

    async def _walk(
        self,
        req: ChatRequest,
        call: Callable[[Upstream, str], Awaitable[tuple[R, object]]] | None,
        ctx: RequestContext,
        order: Sequence[Upstream] | None = None,
    ) -> Served:
        capped = self.capped() if self.capped is not None else NOTHING_CAPPED
        upstreams = self.upstreams if order is None else order
        if self._gated:
            upstreams = admit(upstreams, req.model)
        smallest = self._smallest_limit
        prompt = None if smallest is None or not may_exceed(len(req.raw), smallest) else await self.prompt_tokens(req)
        targets, notes = plan(upstreams, prompt, capped)
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
        probe: Upstream | None = None  # where next_step said to send an early probe
        while True:
            reached = targets
            for i, up in enumerate(targets):
                if up.name in done_with:
                    continue
                tried: set[str] = set(given_up[up.name])
                while True:
                    lease = up.pool.acquire(exclude=tried, cost=cost, early=up is probe)
                    if lease is None:
                        break
                    if up is probe:
                        probe = None
                        if lease.early:
                            given_up[up.name].add(lease.key.name)  # probed early once per request
                    tried.add(lease.key.name)
                    began = time.perf_counter_ns()
                    try:
                        if call is None:  # a whole answer (complete)
                            done = await up.provider.chat(req, lease.key.secret)
                            result: object = done
                            limits: object = done.rate_limits
                        else:
                            result, limits = await call(up, lease.key.secret)
                    except UpstreamError as e:
                        ended = time.perf_counter_ns()
                        ctx.upstream_ns += ended - began
                        ctx.add_attempt(AttemptRecord(up.name, lease.key.name, e.kind.value, e.status,
                                                      (ended - began) // 1000 / 1000, shorten(e.message, 200)))
                        changed = up.pool.failed(lease, e)
                        attempts.append(Attempt(up.name, lease.key.name, e))
                        log.warning(
                            "upstream_failed",
                            provider=up.name,
                            upstream_key=lease.key.name,
                            kind=e.kind.value,
                            status=e.status,
                            detail=shorten(e.message, 200),
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
                    held = up.pool.outlook(exclude=given_up[up.name])
                    if held.rate_limited is not None or held.proving is not None:
                        reached = targets[: i + 1]  # wait for this provider rather than fall back
                        break
            missed, probe = probe is not None, None  # an early probe not sent: its key changed meanwhile
            outlook, first_open = self._outlook(reached, given_up, done_with)
            step, wait = next_step(outlook, deadline - self.clock())
            if step is Step.PROBE and not missed:
                probe = first_open
                log.info("probing_early", provider=probe.name if probe else None)
                continue
            if step is Step.PROBE:
                step, wait = Step.WAIT, HELD_POLL  # never a loop without an await
            if step is Step.FAIL:
                retry_in = [w for up in reached for w in [up.pool.next_ready_in()] if w is not None]
                raise final_error(
                    attempts,
                    outlook,
                    min(retry_in) if retry_in else None,
                    notes + self._resting_notes(reached, given_up, done_with),
                )
            if wait > HELD_POLL:  # (not each poll of a held key)
                log.info("waiting_for_key", seconds=round(wait, 3))
            await self.sleep(wait)

    @staticmethod
    def _outlook(
        targets: Sequence[Upstream], given_up: dict[str, set[str]], done_with: set[str]
    ) -> tuple[Outlook, Upstream | None]:
        """What keeps the request's candidates from it, and the upstream whose open breaker
        (no probe out) half-opens first."""
        total = Outlook()
        first_open: Upstream | None = None
        for up in targets:
            if up.name in done_with:
                continue
            o = up.pool.outlook(exclude=given_up[up.name])
            if o.open is not None and (total.open is None or o.open < total.open):
                first_open = up
            total = total.merge(o)
        return total, first_open

    @staticmethod
    def _resting_notes(targets: Sequence[Upstream], given_up: dict[str, set[str]], done_with: set[str]) -> list[str]:
        return [
            f"{up.name}/{note}"
            for up in targets
            if up.name not in done_with
            for note in up.pool.resting(exclude=given_up[up.name])
        ]


NOTHING_RESTING = Outlook()


class Step(enum.Enum):
    PROBE = "probe"  # try the candidate whose breaker half-opens first, now
    WAIT = "wait"  # sleep, then walk again
    FAIL = "fail"  # answer with final_error


def next_step(o: Outlook, budget: float) -> tuple[Step, float]:
    """What a request does when none of its candidates can take it now, and how long it sleeps
    (pure; see the module docstring). ``budget``: the seconds it may still wait for a rest to end
    or a probe to answer (``MAX_KEY_WAIT`` less what it has waited)."""
    rate = o.rate_limited if o.rate_limited is not None and o.rate_limited <= budget else None
    if o.ready and budget > 0:
        return Step.WAIT, HELD_POLL  # a key freed while the request walked past it: walk again
    if o.open is not None:
        if rate is not None and rate < o.open:
            return Step.WAIT, max(rate, MIN_ROUND_WAIT)  # a healthy key is back sooner
        return Step.PROBE, 0.0
    if o.proving is not None or (o.probing is not None and budget > 0):
        # held until an answer: look again shortly
        return Step.WAIT, HELD_POLL if rate is None else min(HELD_POLL, max(rate, MIN_ROUND_WAIT))
    if rate is not None:
        return Step.WAIT, max(rate, MIN_ROUND_WAIT)  # a "retry after 0" must not turn into a busy loop
    return Step.FAIL, 0.0


def final_error(
    attempts: Sequence[Attempt],
    outlook: Outlook = NOTHING_RESTING,
    retry_in: float | None = None,
    notes: Sequence[str] = (),
) -> GatewayError:
    """The error a client gets when nothing could serve: its status follows what was seen (pure).

    ``outlook``: what keeps the request's remaining candidates off; ``retry_in``: seconds until
    the first key of its upstreams is out of its rests (rate limit or breaker), whatever its state
    for this request. A rate limit anywhere gives 429 (backing off is what helps, and SDKs retry
    it); upstreams failing (faults, or breakers open or probing) give 503 ``upstream_unavailable``;
    both carry Retry-After: the rate limit's end, or when the first key may be tried again.
    """
    parts = [f"{a.upstream}/{a.key}: {a.error.kind.value} ({shorten(a.error.message, 80)})" for a in attempts]
    parts += notes
    detail = "; ".join(parts) if parts else "every upstream key is resting"
    kinds = {a.error.kind for a in attempts}
    resting_on_errors = outlook.open is not None or outlook.probing is not None
    failing = bool(kinds & FAULTS) or resting_on_errors
    again = 1.0 if retry_in is None else retry_in
    rate = outlook.rate_limited
    if rate is None and Failure.RATE_LIMITED in kinds:
        rate = again  # a 429 that set no rest (or one that is already over)
    if rate is not None:  # something will be able to serve later: tell the client when
        if failing:
            wait = min(rate, again)
            return RateLimited(f"upstreams are rate limited or failing; retry after {wait:.1f}s. {detail}",
                               retry_after=wait)
        return RateLimited(f"all upstreams are rate limited; retry after {rate:.1f}s. {detail}", retry_after=rate)
    if kinds == {Failure.CONTEXT_LENGTH} and not resting_on_errors:
        return InvalidRequest(
            f"the request is too long for every upstream's context window. {detail}", code="context_length_exceeded"
        )
    if kinds and kinds <= {Failure.TIMEOUT} and not resting_on_errors:
        return GatewayTimeout(f"every upstream timed out. {detail}")
    if failing:
        return ServiceUnavailable(f"upstreams failing; retry after {again:.1f}s. {detail}",
                                  code="upstream_unavailable", retry_after=again)
    if not attempts:
        return ServiceUnavailable(f"no upstream key is usable (all disabled; see /_status). {detail}")
    return BadGateway(f"no upstream could serve the request. {detail}")
