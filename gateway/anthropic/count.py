"""``count_tokens``: the prompt's tokens as GLM will see them, erring high by a stated margin.

The count covers what the translated request holds: every message (text, tool calls with their
arguments, tool results, reasoning), the system prompt, images at a fixed cost and the tool
definitions, with tiktoken's cl100k (``gateway.tokens``). GLM's tokenizer is not cl100k: on
English prose and code the two differ by a few percent either way, on other languages and on
long runs of symbols by more. Claude Code compacts its context by these counts, and a count
too low lets a conversation outgrow the window (the upstream then refuses it), while one a
little high only compacts a little early; hence ``MARGIN`` (+10%).
"""
from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

from .. import tokens

MARGIN = 1.10
THREAD_ABOVE = 16 * 1024  # bodies larger than this are counted in a worker thread (~1 ms of tokenizing)


def count_tokens(payload: dict[str, Any], count: Callable[[str], int] | None = None) -> int:
    """Tokens of a translated (OpenAI-shaped) request, with the margin (pure given ``count``)."""
    return math.ceil(tokens.estimate_prompt_tokens(payload, count) * MARGIN)


async def count_request_tokens(payload: dict[str, Any], body_bytes: int) -> int:
    """``count_tokens`` off the event loop when the body is big or the tokenizer not yet loaded
    (loading it takes longer than any request should hold the loop)."""
    if body_bytes > THREAD_ABOVE or tokens.encoder.cache_info().currsize == 0:
        return await asyncio.to_thread(count_tokens, payload)
    return count_tokens(payload)
