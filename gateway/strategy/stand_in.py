"""A stand-in for the complexity classifier (gateway/classify.py, built on its own branch):
the same call shape, ``(payload, prompt_tokens) -> Classification``, on two signals only, so
the smart strategies run before it lands. On merge, app.py passes ``classify`` bound to
``settings.classifier`` instead, with its ``simple_threshold`` (see ``app._strategies``).

Simple: no tools offered, the last message not a tool result, a prompt under
``SIMPLE_TOKENS`` (characters / 3). Pure.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SIMPLE_TOKENS = 2000
THRESHOLD = 0.5


@dataclass(frozen=True)
class Verdict:
    label: str
    score: float
    reason: str


def _chars(content: object) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(len(p.get("text") or "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return 0


def classify(payload: dict[str, Any], prompt_tokens: int | None = None) -> Verdict:
    messages = payload.get("messages") or []
    tokens = prompt_tokens if prompt_tokens is not None else sum(
        _chars(m.get("content")) for m in messages if isinstance(m, dict)) // 3
    tools = payload.get("tools")
    n_tools = len(tools) if isinstance(tools, list) else 0
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    if last.get("role") == "tool":
        return Verdict("complex", 0.9, f"complex: ~{tokens} tokens, mid agent loop")
    if n_tools:
        return Verdict("complex", 0.8, f"complex: ~{tokens} tokens, {n_tools} tools")
    score = min(1.0, tokens / (2 * SIMPLE_TOKENS))
    if tokens < SIMPLE_TOKENS:
        return Verdict("simple", score, f"simple: ~{tokens} tokens, no tools")
    return Verdict("complex", score, f"complex: ~{tokens} tokens")
