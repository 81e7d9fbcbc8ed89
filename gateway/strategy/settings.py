"""The routing strategies' settings, read once at start (``Settings.strategy``).

Imports nothing of the gateway, so gateway/config.py can import it: ``from_env`` gets the
config's environment reader (typed, errors name the variable) and raises ``ValueError`` naming
the variable for what that reader cannot check (config.py turns it into a ``ConfigError``).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol


class Strategy(enum.StrEnum):
    """Which upstreams a request tries first, and whether the local model drafts it."""

    ALWAYS_CEREBRAS = "always_cerebras"  # the cloud chain, as configured (today's behaviour)
    ALWAYS_LOCAL = "always_local"  # local first; the cloud chain when local cannot serve
    SMART = "smart"  # the classifier: simple -> local first, complex -> the cloud chain
    SPECULATIVE = "speculative"  # a local draft, served when confident, else the cloud chain
    PARALLEL_SPECULATIVE = "parallel_speculative"  # several drafts at once, the best served
    SMART_SPECULATIVE = "smart_speculative"  # simple -> speculative, complex -> the cloud chain


STRATEGIES = tuple(s.value for s in Strategy)
USES_LOCAL = frozenset(set(Strategy) - {Strategy.ALWAYS_CEREBRAS})

# the ``model`` names that pick a strategy (listed in /v1/models); each provider is then sent its
# own configured model name
MODEL_PREFIX = "glm-gateway/"
MODEL_ALIASES: dict[str, Strategy] = {
    "glm-gateway/cerebras": Strategy.ALWAYS_CEREBRAS,
    "glm-gateway/local": Strategy.ALWAYS_LOCAL,
    "glm-gateway/smart": Strategy.SMART,
    "glm-gateway/speculative": Strategy.SPECULATIVE,
    "glm-gateway/parallel-speculative": Strategy.PARALLEL_SPECULATIVE,
    "glm-gateway/smart-speculative": Strategy.SMART_SPECULATIVE,
}

DEFAULT_RESERVE = 0.2  # RATE_AWARE_RESERVE: 20% of the Cerebras keys' tokens per minute
DEFAULT_MIN_CONFIDENCE = 0.75
DEFAULT_BORDERLINE = 0.15
DEFAULT_MAX_DRAFTS = 3
DEFAULT_DRAFT_TOKENS = 512
DEFAULT_DRAFT_TIMEOUT = 15.0


class Reader(Protocol):
    """What ``from_env`` needs of gateway.config's environment reader."""

    def text(self, var: str, default: str) -> str: ...

    def number(self, var: str, default: float, minimum: float | None = None,
               maximum: float | None = None) -> float: ...

    def integer(self, var: str, default: int, minimum: int | None = None, maximum: int | None = None) -> int: ...

    def boolean(self, var: str, default: bool) -> bool: ...


def parse_share(var: str, raw: str, default: float) -> float:
    """A share of a whole: ``0.2`` or ``20%``; empty: ``default``. (Pure.)"""
    text = raw.strip()
    if not text:
        return default
    percent = text.endswith("%")
    try:
        value = float(text[:-1].strip() if percent else text)
    except ValueError:
        value = float("nan")
    if percent:
        value /= 100
    if not 0.0 <= value <= 1.0:  # (NaN fails too)
        raise ValueError(f"{var} must be a share from 0 to 1 (0.2) or a percentage (20%), got {text!r}")
    return value


def parse_strategy(var: str, raw: str) -> Strategy:
    name = raw.strip().lower() or Strategy.ALWAYS_CEREBRAS.value
    try:
        return Strategy(name)
    except ValueError:
        raise ValueError(f"{var} must be one of {', '.join(STRATEGIES)}, got {raw.strip()!r}") from None


@dataclass(frozen=True)
class StrategySettings:
    strategy: Strategy = Strategy.ALWAYS_CEREBRAS  # ROUTING_STRATEGY: the default of every request
    local_only: bool = False  # LOCAL_ONLY: never call the cloud (a 503 when local cannot serve)
    reserve: float = DEFAULT_RESERVE  # RATE_AWARE_RESERVE: headroom share below which borderline goes local
    borderline: float = DEFAULT_BORDERLINE  # BORDERLINE_MARGIN: how near a cut "borderline" is
    min_confidence: float = DEFAULT_MIN_CONFIDENCE  # MIN_CONFIDENCE: a draft served at or above it
    max_drafts: int = DEFAULT_MAX_DRAFTS  # MAX_CONCURRENT_DRAFTS (parallel_speculative)
    max_draft_tokens: int = DEFAULT_DRAFT_TOKENS  # MAX_DRAFT_TOKENS: a draft's completion cap
    draft_timeout: float = DEFAULT_DRAFT_TIMEOUT  # DRAFT_TIMEOUT: seconds a draft may take

    @classmethod
    def from_env(cls, r: Reader) -> StrategySettings:
        return cls(
            strategy=parse_strategy("ROUTING_STRATEGY", r.text("ROUTING_STRATEGY", "")),
            local_only=r.boolean("LOCAL_ONLY", False),
            reserve=parse_share("RATE_AWARE_RESERVE", r.text("RATE_AWARE_RESERVE", ""), DEFAULT_RESERVE),
            borderline=r.number("BORDERLINE_MARGIN", DEFAULT_BORDERLINE, minimum=0.0, maximum=1.0),
            min_confidence=r.number("MIN_CONFIDENCE", DEFAULT_MIN_CONFIDENCE, minimum=0.0, maximum=1.0),
            max_drafts=r.integer("MAX_CONCURRENT_DRAFTS", DEFAULT_MAX_DRAFTS, minimum=1, maximum=16),
            max_draft_tokens=r.integer("MAX_DRAFT_TOKENS", DEFAULT_DRAFT_TOKENS, minimum=1),
            draft_timeout=r.number("DRAFT_TIMEOUT", DEFAULT_DRAFT_TIMEOUT, minimum=0.1),
        )
