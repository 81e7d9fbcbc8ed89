"""Token counts read from upstream answers, and the text an estimate counts. Pure.

What each provider reports (checked against their answers):

- OpenAI's shape, which Cerebras, Synthetic and Z.ai follow: ``usage.prompt_tokens``,
  ``completion_tokens`` (reasoning included), ``prompt_tokens_details.cached_tokens`` (Z.ai and
  Cerebras fill it), ``completion_tokens_details.reasoning_tokens``. Streams carry it on their last
  chunk: a chunk of its own with ``choices: []`` (OpenAI, llama.cpp) or the chunk with the
  ``finish_reason`` (Cerebras, Z.ai). With ``include_usage`` OpenAI-style servers put
  ``"usage": null`` on every other chunk.
- llama.cpp: the same ``usage``, plus ``timings`` (``prompt_n`` tokens evaluated, ``cache_n`` reused
  from its cache, ``predicted_n`` generated); a stream not asked for usage ends with ``timings``
  only, which is read when nothing better came.
- Some servers put ``cached_tokens`` / ``reasoning_tokens`` straight in ``usage``; read as well.
"""
from __future__ import annotations

import math
from typing import Any

import orjson

from ..context import Usage
from .estimate import PendingUsage


def _int(value: object) -> int:
    """A token count as reported; anything that is not a count of 0 or more reads as 0."""
    if value.__class__ is int and value >= 0:  # (the usual answer)
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        return 0
    return int(value)


def _detail(usage: dict[str, Any], details: str, name: str) -> int:
    inner = usage.get(details)
    if isinstance(inner, dict) and name in inner:
        return _int(inner.get(name))
    return _int(usage.get(name))


def usage_from(obj: object) -> Usage | None:
    """The usage an answer (or stream chunk) reports, or None if it reports none."""
    if not isinstance(obj, dict):
        return None
    usage = obj.get("usage")
    if isinstance(usage, dict) and ("prompt_tokens" in usage or "completion_tokens" in usage):
        return Usage(
            prompt_tokens=_int(usage.get("prompt_tokens")),
            completion_tokens=_int(usage.get("completion_tokens")),
            cached_tokens=_detail(usage, "prompt_tokens_details", "cached_tokens"),
            reasoning_tokens=_detail(usage, "completion_tokens_details", "reasoning_tokens"),
        )
    timings = obj.get("timings")
    if isinstance(timings, dict) and "predicted_n" in timings:
        cached = _int(timings.get("cache_n"))
        return Usage(
            prompt_tokens=_int(timings.get("prompt_n")) + cached,
            completion_tokens=_int(timings.get("predicted_n")),
            cached_tokens=cached,
        )
    return None


def message_texts(message: object, out: list[str], reasoning: list[str]) -> None:
    """The generated text of a message or a stream delta: content, reasoning, tool call arguments
    (all billed as output); reasoning goes to ``reasoning`` as well."""
    if not isinstance(message, dict):
        return
    content = message.get("content")
    if isinstance(content, str):
        out.append(content)
    for field in ("reasoning_content", "reasoning"):
        value = message.get(field)
        if isinstance(value, str):
            out.append(value)
            reasoning.append(value)
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        for call in calls:
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict):
                for part in (fn.get("name"), fn.get("arguments")):
                    if isinstance(part, str):
                        out.append(part)


def answer_texts(obj: object, out: list[str], reasoning: list[str]) -> None:
    """The generated text of an answer (``choices[].message``) or a chunk (``choices[].delta``)."""
    choices = obj.get("choices") if isinstance(obj, dict) else None
    if not isinstance(choices, list):
        return
    for choice in choices:
        if isinstance(choice, dict):
            message_texts(choice.get("delta", choice.get("message")), out, reasoning)


def answer_usage(body: bytes, payload: dict[str, Any], *, prompt_tokens: int | None = None,
                 prompt_bytes: int = 0) -> Usage:
    """A whole (non-streamed) answer's usage: as reported, else an estimate from its text."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        obj = None
    found = usage_from(obj)
    if found is not None:
        return found
    texts: list[str] = []
    reasoning: list[str] = []
    answer_texts(obj, texts, reasoning)
    return PendingUsage(payload, texts, reasoning, prompt_tokens=prompt_tokens, prompt_bytes=prompt_bytes)
