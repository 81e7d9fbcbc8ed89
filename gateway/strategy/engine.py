"""The strategies at work on one request: its route (:meth:`Strategies.route`, no awaits), and
for the speculative strategies the drafts and the verdict on them (:meth:`Strategies.speculate`).

Every decision is written on the request's context: ``route_strategy`` and ``route_reason``
(the response headers ``X-Gateway-Strategy`` / ``X-Gateway-Route-Reason``), ``routing``
(strategy, outcome) for the metrics, and for a draft ``draft_outcome`` ("accepted" or
"escalated"), ``draft_ms``, ``draft_confidence``, ``draft_count`` and ``draft_tokens``.

The default route (``always_cerebras`` with no per-request choice) is built once: a request
that names no strategy costs two dict look-ups and four attribute writes here.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from ..chat import ChatRequest
from ..context import RequestContext
from ..errors import GatewayError, ServiceUnavailable
from ..routing import Router, Upstream
from .confidence import DraftScore, pick, score_draft
from .drafts import Draft, Drafter
from .plan import (
    DRAFT_ACCEPTED,
    DRAFT_ESCALATED,
    LOCAL,
    Classifier,
    Policy,
    Route,
    accept,
    header_text,
    headroom_share,
    order,
    requested,
)
from .settings import MODEL_PREFIX, Strategy, StrategySettings

log = structlog.get_logger("gateway.strategy")

CEREBRAS = "cerebras"
REQUEST_INDEPENDENT = (Strategy.ALWAYS_CEREBRAS, Strategy.ALWAYS_LOCAL, Strategy.SPECULATIVE,
                       Strategy.PARALLEL_SPECULATIVE)
SMART = (Strategy.SMART, Strategy.SMART_SPECULATIVE)


class Accepted:
    """A draft the client is served."""

    __slots__ = ("body", "score")

    def __init__(self, body: dict[str, Any], score: DraftScore) -> None:
        self.body = body
        self.score = score


class Strategies:
    def __init__(
        self,
        settings: StrategySettings,
        router: Router,
        classifier: Classifier,
        *,
        simple_threshold: float,
        drafter: Drafter | None = None,
        accepts_prediction: Sequence[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.default = settings.strategy
        self.policy = Policy.of(settings, simple_threshold)
        self.classifier = classifier
        self.drafter = drafter
        self.clock = clock
        self.by_name = {up.name: up for up in router.upstreams}
        self.names = tuple(self.by_name)
        self.cerebras = self.by_name.get(CEREBRAS)
        self.local_name = LOCAL if LOCAL in self.by_name else None
        self.predicting = tuple(accepts_prediction)  # providers sent an escalated draft as `prediction`
        self._fixed = {s: order(s, self.names, None, None, self.policy) for s in REQUEST_INDEPENDENT}
        self._targets: dict[tuple[str, ...], list[Upstream]] = {}

    # ---- the route -------------------------------------------------------------------------------

    def route(self, req: ChatRequest, header: str | None, ctx: RequestContext) -> Route:
        """The request's route, written on ``ctx``. A bad ``X-Gateway-Strategy`` header or
        ``glm-gateway/`` model raises InvalidRequest (400)."""
        model = req.payload.get("model")
        if header is None and not (isinstance(model, str) and model.startswith(MODEL_PREFIX)):
            strategy = self.default
        else:
            strategy = requested(model, header, self.default)
        r = self._fixed.get(strategy)
        if r is None:
            verdict = self.classifier(req.payload, req.prompt_tokens)
            headroom = self.headroom() if verdict.label != "simple" else None
            r = order(strategy, self.names, verdict, headroom, self.policy)
        if r.drafts and req.payload.get("n") not in (None, 1):
            r = Route(strategy, None, f"{strategy.value}: n>1 is not drafted; the cloud chain", "cloud")
        ctx.route_strategy = strategy.value
        ctx.route_reason = header_text(r.reason)
        ctx.routing = (strategy.value, r.outcome)
        return r

    def targets(self, r: Route) -> list[Upstream] | None:
        """The upstreams of a route, in its order (None: the router's configured chain)."""
        if r.targets is None:
            return None
        found = self._targets.get(r.targets)
        if found is None:
            found = self._targets[r.targets] = [self.by_name[n] for n in r.targets if n in self.by_name]
        return found

    def headroom(self) -> float | None:
        """The Cerebras keys' tokens-per-minute headroom share (None: unknown or no Cerebras)."""
        if self.cerebras is None:
            return None
        return headroom_share(self.cerebras.pool.keys, self.cerebras.pool.clock())

    @staticmethod
    def failed(r: Route, e: GatewayError) -> GatewayError:
        """The error a client gets when its route failed: under LOCAL_ONLY a failing (or rate
        limited) local server is a 503 that says the cloud is never used."""
        if not r.local_only or (e.status < 500 and e.status != 429):
            return e
        return ServiceUnavailable(
            f"the local model cannot serve and LOCAL_ONLY=true keeps the cloud out; {e.message}",
            code="local_unavailable", retry_after=e.retry_after if e.retry_after is not None else 1.0,
        )

    # ---- drafts ----------------------------------------------------------------------------------

    async def speculate(self, req: ChatRequest, r: Route, ctx: RequestContext) -> Accepted | None:
        """Draft on the local server and judge it: the draft to serve, or None to escalate (the
        route reason then says why)."""
        drafter = self.drafter
        if drafter is None:  # (a strategy that drafts is routed to the chain when there is no local)
            return None
        began = time.perf_counter_ns()
        n = min(r.drafts, await drafter.slots()) if r.drafts > 1 else 1
        first_attempt = ctx.attempt_count
        drafts, cut_by_gateway = await drafter.run(req, n, ctx)
        ended = time.perf_counter_ns()
        ctx.upstream_ns += ended - began
        ctx.draft_ms = (ended - began) // 1000 / 1000
        ctx.draft_count = n
        back = [d for d in drafts if d.body is not None]
        payload = req.payload
        scores = [score_draft(d.body, payload.get("tools"), payload.get("tool_choice"), cut_by_gateway) for d in back]
        ctx.draft_tokens = sum(s.completion_tokens for s in scores)
        if not back:
            self._escalate(req, r, ctx, drafts[0].failure or "no draft", None, first_attempt)
            return None
        best, combined, agree = pick(scores)
        score = scores[best]
        ctx.draft_confidence = round(combined, 4)
        needs_headroom = score.problem is None and combined < self.policy.min_confidence
        ok, reason = accept(combined, score.problem, self.headroom() if needs_headroom else None, self.policy)
        if len(back) > 1:
            reason += f" ({len(back)} drafts, agreement {agree:.2f})"
        if not ok:
            self._escalate(req, r, ctx, reason, score, first_attempt)
            return None
        return self._accepted(r, ctx, back[best], score, reason, first_attempt, ended)

    def _accepted(self, r: Route, ctx: RequestContext, draft: Draft, score: DraftScore, reason: str,
                  first_attempt: int, ended: int) -> Accepted:
        ctx.draft_outcome = "accepted"
        ctx.route_reason = header_text(reason)
        ctx.routing = (r.strategy.value, DRAFT_ACCEPTED)
        for a in (ctx.attempts or [])[first_attempt:]:
            if a.outcome == "draft" and a.key == draft.key:
                a.outcome = "ok"  # the draft served: the local upstream's answer
                break
        ctx.provider, ctx.upstream_key, ctx.model_served = LOCAL, draft.key, draft.model
        ctx.first_token_ns = ended
        assert draft.body is not None
        return Accepted(draft.body, score)

    def _escalate(self, req: ChatRequest, r: Route, ctx: RequestContext, reason: str, score: DraftScore | None,
                  first_attempt: int) -> None:
        if not reason.startswith("escalated"):
            reason = f"escalated: {reason}"
        ctx.draft_outcome = "escalated"
        ctx.route_reason = header_text(reason)
        ctx.routing = (r.strategy.value, DRAFT_ESCALATED)
        for a in (ctx.attempts or [])[first_attempt:]:
            if a.outcome == "draft":
                a.outcome = "escalated"
        if score is not None and self.predicting and score.content and not score.calls:
            payload = req.payload
            if not payload.get("tools") and not payload.get("logprobs") and "prediction" not in payload:
                req.prediction = score.content  # providers that take predicted outputs get it
        log.info("draft_escalated", reason=ctx.route_reason, drafts=ctx.draft_count, draft_ms=ctx.draft_ms)
