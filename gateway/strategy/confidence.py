"""How far a local draft can be trusted (pure).

:func:`score_draft` reads one draft answer (a chat.completion from llama.cpp, asked with
``logprobs: true``) and gives a confidence in 0..1 with a reason, or the problem that rules the
draft out:

- ``finish_reason``: ``length`` when the gateway's own cap (``MAX_DRAFT_TOKENS``) cut it (the
  answer is unfinished; a cut at the client's own ``max_tokens`` is what it asked for), or any
  other than stop / tool_calls;
- an empty answer, a refusal (``message.refusal``, or an answer opening "I can't ...");
- tool calls: each must name an offered tool, its arguments must parse as a JSON object and
  validate against that tool's ``parameters`` JSON schema (jsonschema); no call where
  ``tool_choice`` requires one, a call where it says ``none``;
- otherwise the confidence is the geometric mean of the token probabilities:
  ``exp(mean(logprob))`` over ``choices[0].logprobs.content`` (no log-probabilities: ruled out).

:func:`agreement` and :func:`pick` choose among parallel drafts: the share of drafts that say
what a draft says (itself included: 1 when alone) scales its confidence, from half to whole.
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import jsonschema
import orjson

REFUSAL = re.compile(
    r"\s*(i'm sorry|i am sorry|sorry, (but )?i|i can(no|')t|i can not|i'm not able|i am not able|"
    r"i'm unable|i am unable|i won't|as an ai)",
    re.IGNORECASE,
)
REFUSAL_HEAD = 400  # characters of an answer read for a refusal: only its opening counts
AGREEMENT_FLOOR = 0.5  # what no agreement at all leaves of a draft's confidence


class DraftScore(NamedTuple):
    confidence: float  # 0..1 (0 when ruled out)
    problem: str | None  # why it cannot be served, or None
    content: str  # the answer's text
    calls: tuple[tuple[str, str], ...]  # (name, canonical JSON arguments) of its tool calls
    completion_tokens: int = 0


def _choice(body: Any) -> dict[str, Any] | None:
    if isinstance(body, dict):
        choices = body.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            return choices[0]
    return None


def mean_logprob(logprobs: Any) -> float | None:
    """The mean of the tokens' log-probabilities (OpenAI's ``logprobs.content[].logprob``), or
    None when there are none. A token of probability 0 (``-inf``) makes the mean ``-inf``."""
    if not isinstance(logprobs, dict):
        return None
    tokens = logprobs.get("content")
    if not isinstance(tokens, list):
        return None
    total, n = 0.0, 0
    for token in tokens:
        value = token.get("logprob") if isinstance(token, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value):
            total += min(0.0, float(value))
            n += 1
    return total / n if n else None


def offered_tools(tools: Any) -> dict[str, Any]:
    """Offered function tools by name -> their ``parameters`` schema (None: none given)."""
    out: dict[str, Any] = {}
    if isinstance(tools, list):
        for tool in tools:
            fn = tool.get("function") if isinstance(tool, dict) else None
            if isinstance(fn, dict) and isinstance(fn.get("name"), str):
                out[fn["name"]] = fn.get("parameters")
    return out


def _schema_problem(name: str, schema: Any, args: Any) -> str | None:
    if schema is None:
        return None
    if not isinstance(schema, dict):
        return f"tool {name}: its parameters schema is not an object"
    try:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        error = jsonschema.exceptions.best_match(cls(schema).iter_errors(args))
    except Exception:  # a schema jsonschema cannot use (bad, too deep, a $ref it cannot resolve): unverifiable
        return f"tool {name}: its parameters schema cannot be checked"
    if error is not None:
        where = error.json_path if len(error.json_path) <= 60 else error.json_path[:57] + "..."
        return f"tool call {name}: arguments fail the schema at {where} ({error.validator})"
    return None


def check_tool_calls(calls: Any, tools: Any, tool_choice: Any) -> tuple[tuple[tuple[str, str], ...], str | None]:
    """The calls as (name, canonical arguments), and the first problem with them, if any."""
    offered = offered_tools(tools)
    out: list[tuple[str, str]] = []
    if not isinstance(calls, list):
        return (), "draft tool_calls is not an array"
    if calls and tool_choice == "none":
        return (), "draft made a tool call (tool_choice is none)"
    forced = tool_choice.get("function", {}).get("name") if isinstance(tool_choice, dict) else None
    for call in calls:
        fn = call.get("function") if isinstance(call, dict) else None
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str) or not name:
            return (), "draft tool call has no function name"
        shown = name[:40]
        if name not in offered:
            return (), f"draft tool call {shown}: not an offered tool"
        if forced is not None and name != forced:
            return (), f"draft tool call {shown}: tool_choice names another"
        raw = fn.get("arguments") if isinstance(fn, dict) else None
        try:
            args = raw if isinstance(raw, dict) else orjson.loads(raw or "{}")
        except (orjson.JSONDecodeError, TypeError):
            return (), f"draft tool call {shown}: arguments are not JSON"
        if not isinstance(args, dict):
            return (), f"draft tool call {shown}: arguments are not a JSON object"
        problem = _schema_problem(shown, offered[name], args)
        if problem is not None:
            return (), f"draft {problem}"
        out.append((name, orjson.dumps(args, option=orjson.OPT_SORT_KEYS).decode()))
    if not calls and (tool_choice == "required" or forced is not None) and offered:
        return (), "draft made no tool call (tool_choice requires one)"
    return tuple(out), None


def score_draft(body: Any, tools: Any = None, tool_choice: Any = None, cut_by_gateway: bool = True) -> DraftScore:
    """One draft's confidence, or why it cannot be served (see the module docstring)."""
    choice = _choice(body)
    usage = body.get("usage") if isinstance(body, dict) else None
    used = usage.get("completion_tokens") if isinstance(usage, dict) else None
    tokens = used if isinstance(used, int) else 0
    if choice is None:
        return DraftScore(0.0, "draft unreadable", "", (), tokens)
    message = choice.get("message")
    message = message if isinstance(message, dict) else {}
    content = message.get("content")
    text = content if isinstance(content, str) else ""
    finish = choice.get("finish_reason")

    def out(problem: str | None, calls: tuple[tuple[str, str], ...] = (), confidence: float = 0.0) -> DraftScore:
        return DraftScore(confidence, problem, text, calls, tokens)

    if finish == "length" and cut_by_gateway:
        return out("draft finish_reason=length")
    if finish not in ("stop", "tool_calls", "length", None):
        return out(f"draft finish_reason={str(finish)[:20]}")
    if message.get("refusal"):
        return out("draft refused")
    raw_calls = message.get("tool_calls")
    calls, problem = check_tool_calls(raw_calls or [], tools, tool_choice)
    if problem is not None:
        return out(problem)
    if not calls:
        if not text.strip():
            return out("draft empty")
        if REFUSAL.match(text[:REFUSAL_HEAD]):
            return out("draft refused")
    mean = mean_logprob(choice.get("logprobs"))
    if mean is None:
        return out("draft has no logprobs", calls)
    return out(None, calls, math.exp(mean))


def similarity(a: DraftScore, b: DraftScore) -> float:
    """How alike two drafts are, 0..1: the same tool calls (names and arguments: 1, names only:
    0.5), or the overlap of their words (Jaccard)."""
    if a.calls or b.calls:
        if a.calls == b.calls:
            return 1.0
        return 0.5 if [n for n, _ in a.calls] == [n for n, _ in b.calls] else 0.0
    wa, wb = set(a.content.lower().split()), set(b.content.lower().split())
    if not wa and not wb:
        return 1.0
    return len(wa & wb) / len(wa | wb)


def agreement(drafts: Sequence[DraftScore]) -> list[float]:
    """Each draft's share of the drafts that say the same, itself included: (1 + its similarity
    to each other draft) / their number; 1.0 for a lone draft. A draft ruled out agrees with
    nothing (0.0) and vouches for none of the others."""
    n = len(drafts)
    usable = [i for i, d in enumerate(drafts) if d.problem is None]
    out = [0.0] * n
    for i in usable:
        out[i] = (1 + sum(similarity(drafts[i], drafts[j]) for j in usable if j != i)) / n
    return out


def pick(drafts: Sequence[DraftScore]) -> tuple[int, float, float]:
    """The best draft (its index), its combined score and its agreement: its confidence scaled
    by agreement, from ``AGREEMENT_FLOOR`` (none) to 1 (all alike). With none usable: the first,
    0, 0. ``drafts``: those that came back (a draft whose call failed is not one)."""
    agree = agreement(drafts)
    best, best_score = 0, 0.0
    for i, d in enumerate(drafts):
        if d.problem is None:
            combined = d.confidence * (AGREEMENT_FLOOR + (1 - AGREEMENT_FLOOR) * agree[i])
            if combined > best_score or drafts[best].problem is not None:
                best, best_score = i, combined
    return best, best_score, agree[best] if drafts else 0.0
