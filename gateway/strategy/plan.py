"""Which strategy a request takes, and the order of upstreams it sets (pure).

- :func:`requested`: the ``X-Gateway-Strategy`` header, else a ``glm-gateway/...`` model name,
  else ``ROUTING_STRATEGY``; a bad header or an unknown ``glm-gateway/`` model is a 400 naming it.
- :func:`order`: strategy + the classifier's verdict + the Cerebras keys' headroom -> a
  :class:`Route`: the upstream names to walk first (``None``: the configured chain), whether the
  local model drafts first, and why. The router's walk then applies the fallback chain to that
  order, so a failing first choice is still rescued.
- :func:`headroom_share`: the Cerebras keys' reported tokens-per-minute left, as a share of their
  limits (rate-aware shifting).
- :func:`accept`: whether a scored draft is served.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import InvalidRequest
from ..keypool import KeyState
from ..logs import shorten
from .settings import MODEL_ALIASES, MODEL_PREFIX, STRATEGIES, Strategy, StrategySettings

LOCAL = "local"
SIMPLE = "simple"
STRATEGY_HEADER = "X-Gateway-Strategy"  # the request's choice, and the response's report
# ctx.routing's outcomes (a metrics label: a fixed set)
CLOUD = "cloud"  # the configured chain (cloud first)
LOCAL_FIRST = "local"  # local first, then the cloud chain
SHIFTED = "shifted_local"  # a borderline request sent local first: the Cerebras keys run low
LOCAL_ONLY = "local_only"
NO_LOCAL = "no_local"  # a strategy that uses local, on a gateway with none
DRAFT = "draft"  # a local draft first (then DRAFT_ACCEPTED or DRAFT_ESCALATED)
DRAFT_ACCEPTED = "draft_accepted"
DRAFT_ESCALATED = "draft_escalated"
OUTCOMES = (CLOUD, LOCAL_FIRST, SHIFTED, LOCAL_ONLY, NO_LOCAL, DRAFT, DRAFT_ACCEPTED, DRAFT_ESCALATED)
MAX_REASON = 200  # characters of X-Gateway-Route-Reason


class Classification(Protocol):
    """What routing reads of the classifier's answer (gateway/classify.py's ``Classification``)."""

    @property
    def label(self) -> str: ...  # "simple" or "complex"

    @property
    def score(self) -> float: ...  # 0..1, higher = more complex

    @property
    def reason(self) -> str: ...  # short: "simple: 310 tokens, no tools"


# the classifier, bound to its settings: (payload, prompt token estimate or None) -> Classification
Classifier = Callable[[dict[str, Any], int | None], Classification]


@dataclass(frozen=True)
class Policy:
    """What :func:`order` and :func:`accept` need of the settings."""

    local_only: bool = False
    reserve: float = 0.2  # RATE_AWARE_RESERVE
    borderline: float = 0.15  # BORDERLINE_MARGIN
    min_confidence: float = 0.75  # MIN_CONFIDENCE
    max_drafts: int = 3  # MAX_CONCURRENT_DRAFTS
    simple_threshold: float = 0.5  # the classifier's cut (SIMPLE_TASK_THRESHOLD): scores below are simple

    @classmethod
    def of(cls, s: StrategySettings, simple_threshold: float) -> Policy:
        return cls(s.local_only, s.reserve, s.borderline, s.min_confidence, s.max_drafts, simple_threshold)


@dataclass(frozen=True)
class Route:
    strategy: Strategy
    targets: tuple[str, ...] | None  # upstream names in order; None: the configured chain
    reason: str
    outcome: str  # one of OUTCOMES
    drafts: int = 0  # local drafts to make first (0: none)
    local_only: bool = False  # LOCAL_ONLY: a failure is a 503, never the cloud


def requested(model: object, header: str | None, default: Strategy) -> Strategy:
    """The request's strategy: the header, else a ``glm-gateway/`` model, else ``default``."""
    if header is not None:
        try:
            return Strategy(header.strip().lower())
        except ValueError:
            raise InvalidRequest(
                f"the {STRATEGY_HEADER} header must be one of {', '.join(STRATEGIES)}, got {shorten(header, 60)!r}",
                param=STRATEGY_HEADER, code="invalid_strategy",
            ) from None
    if isinstance(model, str) and model.startswith(MODEL_PREFIX):
        strategy = MODEL_ALIASES.get(model)
        if strategy is None:
            raise InvalidRequest(
                f"the model {shorten(model, 60)!r} is not one of this gateway's strategy models "
                f"({', '.join(MODEL_ALIASES)}); GET /v1/models lists them",
                param="model", code="model_not_found",
            )
        return strategy
    return default


def headroom_share(keys: Iterable[KeyState], now: float) -> float | None:
    """The tokens per minute the keys have left (usable keys only, less what requests in flight
    were charged) as a share of the limits they reported; None when no key reported a limit.
    A key resting or with its breaker open has nothing left; a disabled key is not counted."""
    limits = left = 0.0
    for key in keys:
        limit = key.limits.limit_tokens_minute
        if key.disabled_reason is not None or limit is None or limit <= 0:
            continue
        limits += limit
        if key.available(now):
            left += max(0.0, min(float(limit), key.headroom(now)))
    return left / limits if limits else None


def _low(headroom: float | None, p: Policy) -> bool:
    return headroom is not None and headroom < p.reserve


def _shift_note(headroom: float | None, p: Policy) -> str:
    return f"cerebras headroom {math.floor((headroom or 0.0) * 100)}% < {round(p.reserve * 100)}%"


def order(
    strategy: Strategy,
    upstreams: Sequence[str],
    verdict: Classification | None,
    headroom: float | None,
    p: Policy,
) -> Route:
    """The route of one request (pure). ``upstreams``: the configured chain's names in order;
    ``verdict``: the classifier's (smart strategies); ``headroom``: :func:`headroom_share` of the
    Cerebras keys (None: unknown, never low)."""
    if p.local_only:
        return Route(strategy, (LOCAL,), "local only (LOCAL_ONLY=true)", LOCAL_ONLY, local_only=True)
    if strategy is Strategy.ALWAYS_CEREBRAS:
        return Route(strategy, None, "always_cerebras: the cloud chain", CLOUD)
    if LOCAL not in upstreams:
        return Route(strategy, None, "no local upstream: the cloud chain", NO_LOCAL)
    local_first = (LOCAL, *(name for name in upstreams if name != LOCAL))
    if strategy is Strategy.ALWAYS_LOCAL:
        return Route(strategy, local_first, "always_local: local first", LOCAL_FIRST)
    if strategy is Strategy.SPECULATIVE:
        return Route(strategy, None, "speculative: a local draft first", DRAFT, drafts=1)
    if strategy is Strategy.PARALLEL_SPECULATIVE:
        return Route(strategy, None, f"parallel_speculative: up to {p.max_drafts} local drafts first", DRAFT,
                     drafts=p.max_drafts)
    if verdict is None:  # (a smart strategy is always given one)
        raise ValueError(f"{strategy.value} needs the classifier's verdict")
    drafting = strategy is Strategy.SMART_SPECULATIVE
    if verdict.label == SIMPLE:
        if drafting:
            return Route(strategy, None, verdict.reason, DRAFT, drafts=1)
        return Route(strategy, local_first, verdict.reason, LOCAL_FIRST)
    if _low(headroom, p) and verdict.score < p.simple_threshold + p.borderline:
        reason = f"{verdict.reason}; borderline (score {verdict.score:.2f}), {_shift_note(headroom, p)}: local"
        if drafting:
            return Route(strategy, None, reason, DRAFT, drafts=1)
        return Route(strategy, local_first, reason, SHIFTED)
    return Route(strategy, None, verdict.reason, CLOUD)


def accept(confidence: float, problem: str | None, headroom: float | None, p: Policy) -> tuple[bool, str]:
    """Whether a draft scored ``confidence`` is served, and the route reason (pure). ``problem``:
    why the draft cannot be served at all (finish_reason=length, an invalid tool call...).
    A borderline draft (within ``BORDERLINE_MARGIN`` under ``MIN_CONFIDENCE``) is served while
    the Cerebras keys' headroom is under ``RATE_AWARE_RESERVE``."""
    if problem is not None:
        return False, f"escalated: {problem}"
    if confidence >= p.min_confidence:
        return True, f"draft accepted: confidence {confidence:.2f}"
    if _low(headroom, p) and confidence >= p.min_confidence - p.borderline:
        return True, f"draft accepted: confidence {confidence:.2f}, borderline, {_shift_note(headroom, p)}"
    return False, f"escalated: draft confidence {confidence:.2f} < {p.min_confidence:.2f}"


def header_text(reason: str) -> str:
    """A reason as a header value: printable ASCII, at most ``MAX_REASON`` characters."""
    if not (reason.isascii() and reason.isprintable()):
        reason = "".join(c if " " <= c <= "~" else "?" for c in reason)
    return reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 3] + "..."
