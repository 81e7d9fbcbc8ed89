"""One request's record: filled in by each layer on the way down, read once on the way out.

The middleware creates a ``RequestContext`` for every request and, in one ``finally``, hands it to
the log line and to every recorder on the app (the usage ledger, metrics). Nothing reads it back
up the call chain: a layer writes what it knows (auth: the client; the handler: model and stream;
routing: each attempt and who served; the relay: first token, chunks, usage) and moves on.

A plain class with class-level defaults rather than a dataclass: it is built for every request,
and setting four attributes costs a fraction of a 25-argument ``__init__``. Fields that were never
set read as their defaults and stay out of the log line.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .chat import ChatRequest
    from .clients.budgets import Limits

Recorder = Callable[["RequestContext"], None]


class AttemptRecord:
    """One upstream call made for a request: where, how it ended, how long it took."""

    __slots__ = ("provider", "key", "outcome", "status", "ms", "detail")

    def __init__(
        self, provider: str, key: str, outcome: str, status: int | None, ms: float, detail: str | None = None
    ) -> None:
        self.provider = provider
        self.key = key
        self.outcome = outcome  # "ok", or the failure kind (Failure.value)
        self.status = status
        self.ms = ms
        self.detail = detail

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "key": self.key,
            "outcome": self.outcome,
            "status": self.status,
            "ms": self.ms,
            "detail": self.detail,
        }


class Usage:
    """Tokens of one request, as the upstream reported them, or estimated (``estimated=True``)."""

    __slots__ = ("prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens", "estimated")

    def __init__(
        self,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        cached_tokens: int = 0,
        reasoning_tokens: int = 0,
        estimated: bool = False,
    ) -> None:
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.cached_tokens = cached_tokens
        self.reasoning_tokens = reasoning_tokens
        self.estimated = estimated

    def as_dict(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "estimated": self.estimated,
        }


class RequestContext:
    """Everything known about one request. Times are ``perf_counter_ns`` readings (``*_ns``) or
    epoch seconds (``started_at``)."""

    # set by the middleware
    request_id: str
    method: str
    path: str
    started_ns: int
    started_at: float
    status: int = 0
    finished_ns: int = 0
    route: str | None = None  # the matched route's template (/v1/models/{model}); None: no route
    cors_headers: dict[str, str] | None = None  # an allowed browser origin's CORS headers (gateway/cors.py)
    overhead_sent_ms: float | None = None  # X-Gateway-Overhead-Ms as sent (a stream: at its headers)
    # auth
    client_id: int | None = None
    client_name: str | None = None
    client_role: str | None = None  # "admin" or "client"; None when auth is off (all is open)
    client_limits: Limits | None = None  # the key's budgets and rate limits, if it has any
    # the handler
    model_asked: str | None = None
    stream: bool | None = None
    repairs: dict[str, int] | None = None  # transcript repairs by kind
    # routing
    attempts: list[AttemptRecord] | None = None
    provider: str | None = None
    upstream_key: str | None = None
    model_served: str | None = None
    fallback_reason: str | None = None  # why the first choice did not serve
    skipped: list[str] | None = None  # upstreams the plan left out, and why
    # a routing strategy's decision, (strategy, outcome), e.g. ("smart", "local"): counted by
    # glm_gateway_routing_decisions_total; names from a fixed set, never free text (the outcomes:
    # gateway/strategy/plan.py's OUTCOMES)
    routing: tuple[str, str] | None = None
    route_strategy: str | None = None  # the strategy that routed it (X-Gateway-Strategy), e.g. "smart"
    route_reason: str | None = None  # why, short ASCII (X-Gateway-Route-Reason): "simple: 310 tokens, no tools"
    draft_outcome: str | None = None  # a local draft was made: "accepted" (served) or "escalated" (to the cloud)
    draft_ms: float | None = None  # the time drafting took (added latency; local tokens are free)
    draft_confidence: float | None = None  # the best draft's score, 0..1
    draft_count: int = 0  # drafts asked of the local server (parallel_speculative: several)
    draft_tokens: int = 0  # completion tokens the drafts cost on the local server (price 0)
    upstream_ns: int = 0  # time spent waiting on upstream calls (heads, whole bodies)
    # the relay
    first_token_ns: int | None = None  # when the first event (stream) or the answer arrived
    chunks: int = 0
    usage: Usage | None = None
    cost_usd: float | None = None  # None: not priced (a model with no price, or no usage)
    primary_cost_usd: float | None = None  # what the same tokens would cost on the primary provider
    client_disconnected: bool = False
    stream_error: str | None = None  # a stream that broke after its first byte
    # the error the client got, if any
    error_type: str | None = None
    error_code: str | None = None
    # the request log (LOG_REQUESTS, gateway/usage/reqlog.py): references, read in its writer thread
    log_body: bool = False  # this request goes to the request log (on, a chat request, not opted out)
    request_headers: Mapping[str, str] | None = None  # the client's, as received (the log keeps a few)
    request_body: bytes | None = None  # the client's bytes, as read
    chat: ChatRequest | None = None  # as parsed and repaired: what each provider's body is built from
    response_body: bytes | None = None  # a whole answer, as relayed
    response_events: list[bytes] | None = None  # a stream's events as the upstream sent them (log_body only)
    events_kept_bytes: int = 0  # their size ...
    events_seen_bytes: int = 0  # ... and the whole stream's (more: only its first part was kept)
    error_body: bytes | None = None  # the error answer the client got (log_body only)

    def __init__(self, request_id: str, method: str, path: str) -> None:
        self.request_id = request_id
        self.method = method
        self.path = path
        self.started_ns = time.perf_counter_ns()
        self.started_at = time.time()

    # ---- filled in by the layers -----------------------------------------------------------------

    def add_attempt(self, attempt: AttemptRecord) -> None:
        if self.attempts is None:
            self.attempts = [attempt]
        else:
            self.attempts.append(attempt)

    def served_by(self, provider: str, key: str, model: str | None) -> None:
        self.provider = provider
        self.upstream_key = key
        self.model_served = model
        attempts = self.attempts
        if attempts and len(attempts) > 1 and self.fallback_reason is None:
            first = attempts[0]
            self.fallback_reason = f"{first.provider}/{first.key}: {first.outcome}"

    # ---- read on the way out -------------------------------------------------------------------------

    @property
    def latency_ms(self) -> float:
        end = self.finished_ns or time.perf_counter_ns()
        return (end - self.started_ns) // 1000 / 1000  # ms, to the microsecond

    @property
    def ttft_ms(self) -> float | None:
        if self.first_token_ns is None:
            return None
        return (self.first_token_ns - self.started_ns) // 1000 / 1000

    @property
    def overhead_ms(self) -> float:
        """The gateway's own time: the whole request less the time spent waiting on upstreams."""
        end = self.finished_ns or time.perf_counter_ns()
        return max(0, end - self.started_ns - self.upstream_ns) // 1000 / 1000

    @property
    def attempt_count(self) -> int:
        return len(self.attempts) if self.attempts else 0

    def log_fields(self) -> dict[str, Any]:
        """The request's closing log line (before the logger adds event, level and timestamp)."""
        fields: dict[str, Any] = {"request_id": self.request_id}
        if self.client_name is not None:
            fields["client"] = self.client_name
        if self.stream is not None:
            fields["stream"] = self.stream
            fields["model"] = self.model_asked
        if self.provider is not None:
            fields["provider"] = self.provider
            fields["upstream_key"] = self.upstream_key
        attempts = self.attempts
        if attempts:
            fields["attempts"] = len(attempts)
            if len(attempts) > 1 or attempts[0].outcome != "ok":
                fields["attempt_log"] = [f"{a.provider}/{a.key}:{a.outcome}" for a in attempts]
        if self.fallback_reason is not None:
            fields["fallback_reason"] = self.fallback_reason
        if self.route_strategy is not None:
            fields["strategy"] = self.route_strategy
            fields["route_reason"] = self.route_reason
        if self.draft_outcome is not None:
            fields["draft"] = self.draft_outcome
            fields["draft_ms"] = self.draft_ms
        if self.repairs:
            fields["repairs"] = sum(self.repairs.values())
        if self.chunks:
            fields["chunks"] = self.chunks
        if self.first_token_ns is not None and self.stream:
            fields["ttft_ms"] = self.ttft_ms
        usage = self.usage
        if usage is not None:
            fields["prompt_tokens"] = usage.prompt_tokens
            fields["completion_tokens"] = usage.completion_tokens
            if usage.estimated:
                fields["tokens_estimated"] = True
        if self.client_disconnected:
            fields["client_disconnected"] = True
        if self.stream_error is not None:
            fields["stream_error"] = self.stream_error
        if self.error_code is not None:
            fields["error"] = self.error_code
        fields["method"] = self.method
        fields["path"] = self.path
        fields["status"] = self.status
        fields["latency_ms"] = self.latency_ms
        return fields
