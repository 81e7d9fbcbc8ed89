"""The strategies' pure decisions: which strategy, which order, rate-aware shifting, accepting a draft."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import ConfigError, Settings
from gateway.errors import InvalidRequest
from gateway.keypool import KeyState
from gateway.ratelimits import RateLimits
from gateway.strategy.plan import (
    CLOUD,
    DRAFT,
    LOCAL_FIRST,
    LOCAL_ONLY,
    NO_LOCAL,
    SHIFTED,
    Policy,
    accept,
    header_text,
    headroom_share,
    order,
    requested,
)
from gateway.strategy.settings import MODEL_ALIASES, Strategy, parse_share

S = Strategy
CHAIN = ("cerebras", "synthetic", "zai", "local")
LOCAL_FIRST_CHAIN = ("local", "cerebras", "synthetic", "zai")
P = Policy(reserve=0.2, borderline=0.15, min_confidence=0.75, max_drafts=3, simple_threshold=0.35)


@dataclass(frozen=True)
class V:  # a classifier verdict
    label: str
    score: float
    reason: str = "why"


SIMPLE, COMPLEX, BORDERLINE = V("simple", 0.1, "simple: 30 tokens, no tools"), V("complex", 0.9), V("complex", 0.45)


@pytest.mark.parametrize("model, header, expected", [
    ("zai-glm-4.7", None, S.SMART),  # no choice: the default
    (None, None, S.SMART),
    ("glm-gateway/local", None, S.ALWAYS_LOCAL),
    ("glm-gateway/cerebras", None, S.ALWAYS_CEREBRAS),
    ("glm-gateway/parallel-speculative", None, S.PARALLEL_SPECULATIVE),
    ("glm-gateway/smart-speculative", None, S.SMART_SPECULATIVE),
    ("glm-gateway/local", "speculative", S.SPECULATIVE),  # the header wins
    ("zai-glm-4.7", " Always_Local ", S.ALWAYS_LOCAL),  # case and spaces do not matter
])
def test_requested_strategy(model, header, expected):
    assert requested(model, header, S.SMART) is expected


@pytest.mark.parametrize("model, header, param", [
    ("zai-glm-4.7", "cheapest", "X-Gateway-Strategy"),
    ("zai-glm-4.7", "", "X-Gateway-Strategy"),
    ("glm-gateway/fastest", None, "model"),
    ("glm-gateway/", None, "model"),
])
def test_a_bad_choice_is_a_400_naming_it(model, header, param):
    with pytest.raises(InvalidRequest) as e:
        requested(model, header, S.SMART)
    assert e.value.status == 400 and e.value.param == param
    assert param in e.value.message or "glm-gateway/smart" in e.value.message


def test_every_alias_names_a_strategy_and_every_strategy_has_one():
    assert set(MODEL_ALIASES.values()) == set(Strategy)
    assert all(name.startswith("glm-gateway/") for name in MODEL_ALIASES)


@pytest.mark.parametrize("strategy, names, verdict, headroom, targets, outcome, drafts, reason", [
    (S.ALWAYS_CEREBRAS, CHAIN, None, None, None, CLOUD, 0, "always_cerebras: the cloud chain"),
    (S.ALWAYS_CEREBRAS, CHAIN, None, 0.01, None, CLOUD, 0, "always_cerebras: the cloud chain"),  # never shifts
    (S.ALWAYS_LOCAL, CHAIN, None, None, LOCAL_FIRST_CHAIN, LOCAL_FIRST, 0, "always_local: local first"),
    (S.SPECULATIVE, CHAIN, None, None, None, DRAFT, 1, "speculative: a local draft first"),
    (S.PARALLEL_SPECULATIVE, CHAIN, None, None, None, DRAFT, 3, "parallel_speculative: up to 3 local drafts first"),
    # smart: simple -> local first; complex -> the chain
    (S.SMART, CHAIN, SIMPLE, None, LOCAL_FIRST_CHAIN, LOCAL_FIRST, 0, "simple: 30 tokens, no tools"),
    (S.SMART, CHAIN, COMPLEX, None, None, CLOUD, 0, "why"),
    (S.SMART, CHAIN, BORDERLINE, 0.5, None, CLOUD, 0, "why"),  # headroom enough: no shift
    (S.SMART, CHAIN, BORDERLINE, None, None, CLOUD, 0, "why"),  # headroom unknown: no shift
    (S.SMART, CHAIN, COMPLEX, 0.05, None, CLOUD, 0, "why"),  # low, but far from the cut: cloud
    (S.SMART, CHAIN, BORDERLINE, 0.125, LOCAL_FIRST_CHAIN, SHIFTED, 0,
     "why; borderline (score 0.45), cerebras headroom 12% < 20%: local"),
    (S.SMART, CHAIN, V("complex", 0.5), 0.1, None, CLOUD, 0, "why"),  # 0.5 = 0.35 + 0.15: not under the band
    # smart_speculative: simple (and shifted borderline) -> a draft
    (S.SMART_SPECULATIVE, CHAIN, SIMPLE, None, None, DRAFT, 1, "simple: 30 tokens, no tools"),
    (S.SMART_SPECULATIVE, CHAIN, COMPLEX, 0.9, None, CLOUD, 0, "why"),
    (S.SMART_SPECULATIVE, CHAIN, BORDERLINE, 0.0, None, DRAFT, 1,
     "why; borderline (score 0.45), cerebras headroom 0% < 20%: local"),
    # no local upstream: every strategy is the chain
    (S.SMART, CHAIN[:3], SIMPLE, None, None, NO_LOCAL, 0, "no local upstream: the cloud chain"),
    (S.SPECULATIVE, CHAIN[:3], None, None, None, NO_LOCAL, 0, "no local upstream: the cloud chain"),
])
def test_order(strategy, names, verdict, headroom, targets, outcome, drafts, reason):
    r = order(strategy, names, verdict, headroom, P)
    assert (r.targets, r.outcome, r.drafts, r.reason) == (targets, outcome, drafts, reason)
    assert r.strategy is strategy and not r.local_only


@pytest.mark.parametrize("strategy", list(Strategy))
def test_local_only_is_local_and_nothing_else(strategy):
    r = order(strategy, CHAIN, SIMPLE, 0.5, Policy(local_only=True))
    assert (r.targets, r.outcome, r.drafts, r.local_only) == (("local",), LOCAL_ONLY, 0, True)


def test_a_smart_strategy_without_a_verdict_is_a_bug():
    with pytest.raises(ValueError):
        order(S.SMART, CHAIN, None, None, P)


@pytest.mark.parametrize("confidence, problem, headroom, served, reason", [
    (0.91, None, None, True, "draft accepted: confidence 0.91"),
    (0.75, None, None, True, "draft accepted: confidence 0.75"),
    (0.74, None, None, False, "escalated: draft confidence 0.74 < 0.75"),
    (0.99, "draft finish_reason=length", None, False, "escalated: draft finish_reason=length"),
    (0.99, "draft finish_reason=length", 0.0, False, "escalated: draft finish_reason=length"),  # never shifted
    # Cerebras keys low: a borderline draft is served
    (0.65, None, 0.1, True, "draft accepted: confidence 0.65, borderline, cerebras headroom 10% < 20%"),
    (0.59, None, 0.1, False, "escalated: draft confidence 0.59 < 0.75"),  # below the band
    (0.65, None, 0.2, False, "escalated: draft confidence 0.65 < 0.75"),  # at the reserve: not low
])
def test_accept(confidence, problem, headroom, served, reason):
    assert accept(confidence, problem, headroom, P) == (served, reason)


def key(name, limit, remaining, *, at=0.0, reset=60.0, cooldown=0.0, disabled=None, reserved=0):
    k = KeyState(name, "s", cooldown_until=cooldown, disabled_reason=disabled, reserved_tokens=reserved)
    if limit is not None:
        k.limits = RateLimits(limit_tokens_minute=limit, remaining_tokens_minute=remaining, reset_tokens_minute=reset)
        k.limits_at = at
    return k


@pytest.mark.parametrize("keys, now, share", [
    ([], 10.0, None),
    ([key("a", None, None)], 10.0, None),  # never reported: unknown
    ([key("a", 1000, 500)], 10.0, 0.5),
    ([key("a", 1000, 500), key("b", 1000, 100)], 10.0, 0.3),
    ([key("a", 1000, 500), key("b", 1000, 1000, cooldown=30.0)], 10.0, 0.25),  # resting: nothing left
    ([key("a", 1000, 500), key("b", 1000, 0, disabled="401")], 10.0, 0.5),  # disabled: not counted
    ([key("a", 1000, 500), key("b", None, None)], 10.0, 0.5),  # unknown key: out of both sums
    ([key("a", 1000, 100, reset=5.0)], 10.0, 1.0),  # the minute reset since the report: full again
    ([key("a", 1000, 500, reserved=400)], 10.0, 0.1),  # requests in flight were charged
    ([key("a", 1000, 500, reserved=900)], 10.0, 0.0),  # (never below nothing)
])
def test_headroom_share(keys, now, share):
    got = headroom_share(keys, now)
    assert got == share if share is None else got == pytest.approx(share)


@pytest.mark.parametrize("raw, value", [("", 0.2), ("0.2", 0.2), ("20%", 0.2), (" 5 % ", 0.05), ("0", 0.0),
                                        ("1", 1.0), ("100%", 1.0)])
def test_parse_share(raw, value):
    assert parse_share("RATE_AWARE_RESERVE", raw, 0.2) == pytest.approx(value)


@pytest.mark.parametrize("raw", ["20", "-1%", "abc", "nan", "150%", "%"])
def test_parse_share_refuses(raw):
    with pytest.raises(ValueError, match="RATE_AWARE_RESERVE"):
        parse_share("RATE_AWARE_RESERVE", raw, 0.2)


BASE = {"CEREBRAS_API_KEYS": "csk-a"}
LOCAL_ENV = {**BASE, "LOCAL_BASE_URL": "http://127.0.0.1:8080/v1"}


def test_settings_defaults_are_todays_behaviour():
    s = Settings.from_env(BASE).strategy
    assert (s.strategy, s.local_only, s.reserve, s.max_drafts) == (S.ALWAYS_CEREBRAS, False, 0.2, 3)
    assert not any(p.accepts_prediction for p in Settings.from_env(BASE).providers)


def test_settings_read():
    s = Settings.from_env({**LOCAL_ENV, "ROUTING_STRATEGY": "Parallel_Speculative", "RATE_AWARE_RESERVE": "35%",
                           "MAX_CONCURRENT_DRAFTS": "5", "MIN_CONFIDENCE": "0.6", "MAX_DRAFT_TOKENS": "64",
                           "DRAFT_TIMEOUT": "2.5", "LOCAL_ONLY": "yes", "CEREBRAS_ACCEPTS_PREDICTION": "true"})
    st_ = s.strategy
    assert (st_.strategy, st_.reserve, st_.max_drafts, st_.min_confidence) == (S.PARALLEL_SPECULATIVE, 0.35, 5, 0.6)
    assert (st_.max_draft_tokens, st_.draft_timeout, st_.local_only) == (64, 2.5, True)
    assert [p.accepts_prediction for p in s.providers] == [True, False]


@pytest.mark.parametrize("env, var", [
    ({**LOCAL_ENV, "ROUTING_STRATEGY": "cheapest"}, "ROUTING_STRATEGY"),
    ({**BASE, "ROUTING_STRATEGY": "smart"}, "ROUTING_STRATEGY"),  # needs a local upstream
    ({**BASE, "LOCAL_ONLY": "true"}, "LOCAL_ONLY"),
    ({**LOCAL_ENV, "RATE_AWARE_RESERVE": "2"}, "RATE_AWARE_RESERVE"),
    ({**LOCAL_ENV, "MAX_CONCURRENT_DRAFTS": "0"}, "MAX_CONCURRENT_DRAFTS"),
    ({**LOCAL_ENV, "MIN_CONFIDENCE": "1.5"}, "MIN_CONFIDENCE"),
    ({**LOCAL_ENV, "DRAFT_TIMEOUT": "0"}, "DRAFT_TIMEOUT"),
    ({**LOCAL_ENV, "ZAI_API_KEY": "z", "ZAI_ACCEPTS_PREDICTION": "maybe"}, "ZAI_ACCEPTS_PREDICTION"),
])
def test_bad_settings_name_the_variable(env, var):
    with pytest.raises(ConfigError, match=var):
        Settings.from_env(env)


@pytest.mark.parametrize("reason, shown", [
    ("simple: 310 tokens, no tools", "simple: 310 tokens, no tools"),
    ("caf\u00e9\r\nX-Evil: 1", "caf???X-Evil: 1"),
    ("x" * 300, "x" * 197 + "..."),
])
def test_header_text(reason, shown):
    assert header_text(reason) == shown


@given(st.text(max_size=400))
def test_header_text_is_always_a_sendable_header_value(reason):
    shown = header_text(reason)
    assert len(shown) <= 200 and shown.isascii() and shown.isprintable()
