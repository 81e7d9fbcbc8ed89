"""Scoring local drafts (pure): log-probabilities, finish reasons, tool calls against schemas, refusals."""
from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.strategy.confidence import DraftScore, agreement, mean_logprob, pick, score_draft
from tests.fake_local import body_of, call

TOOLS = [
    {"type": "function", "function": {"name": "read_file", "parameters": {
        "type": "object", "properties": {"path": {"type": "string"}, "lines": {"type": "integer", "minimum": 1}},
        "required": ["path"], "additionalProperties": False}}},
    {"type": "function", "function": {"name": "list_dir", "parameters": {"type": "object", "properties": {}}}},
    {"type": "function", "function": {"name": "free_form"}},  # no schema: anything goes
]


def draft(content="All good here.", logprob=-0.1, finish="stop", tool_calls=None):
    return body_of(content, logprob, finish, tool_calls, "glm-local", want_logprobs=True)


@pytest.mark.parametrize("body, cut_by_gateway, tool_choice, problem, confidence", [
    (draft(), True, None, None, math.exp(-0.1)),
    (draft(logprob=[-0.1, -0.3, -0.5]), True, None, None, math.exp(-0.3)),  # the geometric mean
    (draft(logprob=[0.0, 0.0, 0.0]), True, None, None, 1.0),
    (draft(logprob=[-0.1, float("-inf"), -0.1]), True, None, None, 0.0),  # a token of probability 0
    (draft(logprob=[0.5, 0.5, 0.5]), True, None, None, 1.0),  # (a positive logprob is read as 0)
    (draft(finish="length"), True, None, "draft finish_reason=length", 0.0),
    (draft(finish="length"), False, None, None, math.exp(-0.1)),  # the client's own cap: what it asked for
    (draft(finish="content_filter"), True, None, "draft finish_reason=content_filter", 0.0),
    (draft(content=""), True, None, "draft empty", 0.0),
    (draft(content="   \n"), True, None, "draft empty", 0.0),
    (draft(content=None), True, None, "draft empty", 0.0),
    (draft(content="I'm sorry, but I can't help with that."), True, None, "draft refused", 0.0),
    (draft(content="  I cannot do this"), True, None, "draft refused", 0.0),
    (draft(content="As an AI language model"), True, None, "draft refused", 0.0),
    (draft(content="I can do that: here it is"), True, None, None, math.exp(-0.1)),  # not a refusal
    (draft(logprob=None), True, None, "draft has no logprobs", 0.0),
    ({"choices": []}, True, None, "draft unreadable", 0.0),
    ("nonsense", True, None, "draft unreadable", 0.0),
    # tool calls
    (draft(None, tool_calls=[call("read_file", {"path": "a.py"})], finish="tool_calls"), True, None, None,
     math.exp(-0.1)),
    (draft(None, tool_calls=[call("read_file", {"path": "a.py", "lines": 3}), call("list_dir", {}, "c2")],
           finish="tool_calls"), True, "auto", None, math.exp(-0.1)),
    (draft(None, tool_calls=[call("free_form", {"x": [1, 2]})]), True, None, None, math.exp(-0.1)),
    (draft(None, tool_calls=[call("delete_all", {})]), True, None, "draft tool call delete_all: not an offered tool",
     0.0),
    (draft(None, tool_calls=[call("read_file", '{"path": "a.py"')]), True, None,
     "draft tool call read_file: arguments are not JSON", 0.0),
    (draft(None, tool_calls=[call("read_file", "[1]")]), True, None,
     "draft tool call read_file: arguments are not a JSON object", 0.0),
    (draft(None, tool_calls=[call("read_file", {})]), True, None,
     "draft tool call read_file: arguments fail the schema at $ (required)", 0.0),
    (draft(None, tool_calls=[call("read_file", {"path": 3})]), True, None,
     "draft tool call read_file: arguments fail the schema at $.path (type)", 0.0),
    (draft(None, tool_calls=[call("read_file", {"path": "a", "lines": 0})]), True, None,
     "draft tool call read_file: arguments fail the schema at $.lines (minimum)", 0.0),
    (draft(None, tool_calls=[call("read_file", {"path": "a", "mode": "w"})]), True, None,
     "draft tool call read_file: arguments fail the schema at $ (additionalProperties)", 0.0),
    (draft(None, tool_calls=[{"type": "function", "function": {"arguments": "{}"}}]), True, None,
     "draft tool call has no function name", 0.0),
    (draft(None, tool_calls="read_file"), True, None, "draft tool_calls is not an array", 0.0),
    # tool_choice
    (draft(None, tool_calls=[call("list_dir", {})]), True, "none", "draft made a tool call (tool_choice is none)",
     0.0),
    (draft("No tool needed."), True, "required", "draft made no tool call (tool_choice requires one)", 0.0),
    (draft("No tool needed."), True, {"type": "function", "function": {"name": "list_dir"}},
     "draft made no tool call (tool_choice requires one)", 0.0),
    (draft(None, tool_calls=[call("read_file", {"path": "a"})]), True,
     {"type": "function", "function": {"name": "list_dir"}}, "draft tool call read_file: tool_choice names another",
     0.0),
])
def test_score_draft(body, cut_by_gateway, tool_choice, problem, confidence):
    s = score_draft(body, TOOLS, tool_choice, cut_by_gateway)
    assert s.problem == problem
    assert s.confidence == pytest.approx(confidence)


def test_a_schema_jsonschema_cannot_use_rules_the_call_out():
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "minProperties": "x"}}},
             {"type": "function", "function": {"name": "g", "parameters": {"$ref": "https://example.com/s.json"}}},
             {"type": "function", "function": {"name": "h", "parameters": ["not", "a", "schema"]}}]
    for name in ("f", "g", "h"):
        s = score_draft(draft(None, tool_calls=[call(name, {})]), tools)
        assert s.problem is not None and s.problem.startswith(f"draft tool {name}: its parameters schema")


def test_tool_calls_are_kept_canonical_for_agreement():
    s = score_draft(draft(None, tool_calls=[call("read_file", {"lines": 2, "path": "a"})]), TOOLS)
    assert s.calls == (("read_file", '{"lines":2,"path":"a"}'),)


@pytest.mark.parametrize("logprobs, mean", [
    (None, None), ({}, None), ({"content": []}, None), ({"content": "x"}, None),
    ({"content": [{"logprob": -1.0}, {"logprob": -3.0}]}, -2.0),
    ({"content": [{"logprob": -1.0}, {"logprob": "x"}, {"token": "t"}, 7, {"logprob": True}]}, -1.0),
    ({"content": [{"logprob": float("nan")}]}, None),
])
def test_mean_logprob(logprobs, mean):
    assert mean_logprob(logprobs) == mean


def ds(content="", confidence=0.9, problem=None, calls=()):
    return DraftScore(confidence, problem, content, calls)


@pytest.mark.parametrize("drafts, agree", [
    ([ds("a b c")], [1.0]),
    ([ds("a b c"), ds("a b c")], [1.0, 1.0]),
    ([ds("a b c"), ds("a b d")], [0.75, 0.75]),  # 2 shared words of 4: half alike
    ([ds("a b"), ds("c d"), ds("a b")], [2 / 3, 1 / 3, 2 / 3]),
    ([ds("a b"), ds("a b", problem="draft empty")], [0.5, 0.0]),  # a ruled-out draft vouches for nobody
    ([ds(calls=(("f", "{}"),)), ds(calls=(("f", "{}"),))], [1.0, 1.0]),
    ([ds(calls=(("f", "{}"),)), ds(calls=(("f", '{"a":1}'),))], [0.75, 0.75]),  # same tool, other arguments
    ([ds(calls=(("f", "{}"),)), ds("f")], [0.5, 0.5]),  # a call against an answer
    ([ds(""), ds("")], [1.0, 1.0]),
])
def test_agreement(drafts, agree):
    assert agreement(drafts) == pytest.approx(agree)


@pytest.mark.parametrize("drafts, best, score", [
    ([ds("a", 0.9)], 0, 0.9),
    ([ds("a", 0.9), ds("a", 0.8)], 0, 0.9),  # alike: each keeps its confidence
    ([ds("a", 0.9), ds("b", 0.8), ds("b", 0.7)], 1, 0.8 * (0.5 + 0.5 * 2 / 3)),  # the one the others back
    ([ds("a", 0.9, "draft empty"), ds("a", 0.5)], 1, 0.5 * 0.75),
    ([ds("a", 0.9, "draft empty"), ds("a", 0.9, "draft empty")], 0, 0.0),
    ([], 0, 0.0),
])
def test_pick(drafts, best, score):
    got_best, got_score, _ = pick(drafts)
    assert (got_best, got_score) == (best, pytest.approx(score))


JSON = st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                    max_leaves=30)
MESSAGE = st.fixed_dictionaries({}, optional={"content": JSON, "tool_calls": JSON, "refusal": JSON})
CHOICE = st.fixed_dictionaries({}, optional={"message": MESSAGE | JSON, "finish_reason": JSON, "logprobs": JSON})
BODY = st.fixed_dictionaries({}, optional={"choices": st.lists(CHOICE | JSON, max_size=2), "usage": JSON}) | JSON


@given(BODY, JSON, JSON)
def test_any_draft_scores_without_raising(body, tools, tool_choice):
    s = score_draft(body, tools, tool_choice)
    assert 0.0 <= s.confidence <= 1.0
    assert (s.problem is None) or s.confidence == 0.0
