"""Which upstreams serve a request, in which order, and the loop that walks them.

``plan()`` is pure: request + upstreams -> ordered targets. ``Router.complete`` and
``Router.open_stream`` walk the plan: each upstream's keys in the pool's order, moving on per the
failure's kind, and waiting (holding no lock) for the earliest resting key when nothing else can
serve, up to ``MAX_KEY_WAIT``. The final error takes its status from the failures it collected.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Sequence, TypeVar

import structlog

from .chat import ChatRequest
from .errors import BadGateway, GatewayError, GatewayTimeout, InvalidRequest, RateLimited, ServiceUnavailable, UpstreamPassthrough
from .keypool import KeyPool, KeyState
from .providers.base import Completion, Failure, Provider, Stream, UpstreamError

log = structlog.get_logger("gateway.routing")

R = TypeVar("R")

MIN_ROUND_WAIT = 0.1  # seconds between two passes over the same upstreams


@dataclass
class Upstream:
    name: str
    provider: Provider
    pool: KeyPool


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


def plan(req: ChatRequest, upstreams: Sequence[Upstream]) -> list[Upstream]:
    """The upstreams to try for this request, in order."""
    return list(upstreams)


def request_cost(req: ChatRequest) -> int:
    """Tokens a rate limiter charges up front: a cheap prompt estimate plus the completion cap."""
    asked = req.payload.get("max_completion_tokens") or req.payload.get("max_tokens") or 0
    return len(req.raw) // 4 + int(asked)


class Router:
    def __init__(
        self,
        upstreams: Sequence[Upstream],
        *,
        max_key_wait: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.upstreams = list(upstreams)
        self.max_key_wait = max_key_wait
        self.clock = clock
        self.sleep = sleep

    async def complete(self, req: ChatRequest) -> Served:
        async def call(up: Upstream, secret: str) -> tuple[Completion, object]:
            done = await up.provider.chat(req, secret)
            return done, done.rate_limits

        return await self._walk(req, call)

    async def open_stream(self, req: ChatRequest) -> Served:
        """An open stream whose first chunk has arrived: ``result`` is ``(stream, first_chunk)``."""

        async def call(up: Upstream, secret: str) -> tuple[tuple[Stream, bytes], object]:
            stream = await up.provider.chat_stream(req, secret)
            try:
                first = await stream.events.__anext__()
            except StopAsyncIteration:
                await stream.aclose()
                raise UpstreamError(Failure.SERVER, "upstream closed the stream before any event") from None
            except UpstreamError as e:
                await stream.aclose()
                # nothing reached the client yet: this is an ordinary, retryable failure
                raise UpstreamError(Failure.CONNECTION, e.message) from None
            except BaseException:
                await stream.aclose()
                raise
            return (stream, first), stream.rate_limits

        return await self._walk(req, call)

    async def _walk(self, req: ChatRequest, call: Callable[[Upstream, str], Awaitable[tuple[R, object]]]) -> Served:
        targets = plan(req, self.upstreams)
        cost = request_cost(req)
        attempts: list[Attempt] = []
        given_up: dict[str, set[str]] = {up.name: set() for up in targets}  # keys failing for this request
        done_with: set[str] = set()  # upstreams that cannot serve this request at all
        deadline = self.clock() + self.max_key_wait
        while True:
            for up in targets:
                if up.name in done_with:
                    continue
                tried: set[str] = set(given_up[up.name])
                while True:
                    lease = up.pool.acquire(exclude=tried, cost=cost)
                    if lease is None:
                        break
                    tried.add(lease.key.name)
                    try:
                        result, limits = await call(up, lease.key.secret)
                    except UpstreamError as e:
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
                        if e.kind is not Failure.RATE_LIMITED:
                            given_up[up.name].add(lease.key.name)
                        continue
                    except BaseException:
                        up.pool.release(lease)
                        raise
                    up.pool.succeeded(lease, limits)  # type: ignore[arg-type]
                    return Served(result, up, lease.key, attempts)
            wait = self._next_ready_in(targets, given_up, done_with)
            if wait is None or self.clock() + wait > deadline:
                raise final_error(attempts, wait)
            wait = max(wait, MIN_ROUND_WAIT)  # a "retry after 0" must not turn into a busy loop
            log.info("waiting_for_key", seconds=round(wait, 3))
            await self.sleep(wait)

    def _next_ready_in(self, targets, given_up, done_with) -> float | None:
        waits = [
            w
            for up in targets
            if up.name not in done_with
            for w in [up.pool.next_ready_in(exclude=given_up[up.name])]
            if w is not None
        ]
        return min(waits) if waits else None


def final_error(attempts: Sequence[Attempt], wait: float | None) -> GatewayError:
    """The error a client gets when nothing could serve: its status follows what was seen."""
    parts = [f"{a.upstream}/{a.key}: {a.error.kind.value} ({a.error.message[:80]})" for a in attempts]
    detail = "; ".join(parts) if parts else "every upstream key is resting"
    kinds = {a.error.kind for a in attempts}
    if wait is not None:  # something will be able to serve later: tell the client when
        return RateLimited(f"all upstream keys are rate limited; retry after {wait:.1f}s. {detail}", retry_after=wait)
    if kinds == {Failure.CONTEXT_LENGTH}:
        return InvalidRequest(
            f"the request is too long for every upstream's context window. {detail}", code="context_length_exceeded"
        )
    if kinds and kinds <= {Failure.TIMEOUT}:
        return GatewayTimeout(f"every upstream timed out. {detail}")
    if kinds & {Failure.RATE_LIMITED, Failure.OVERLOADED}:
        return ServiceUnavailable(f"no upstream can serve now. {detail}", retry_after=1.0)
    if not attempts:
        return ServiceUnavailable("no upstream key is usable (all disabled); see /_status")
    return BadGateway(f"no upstream could serve the request. {detail}")
