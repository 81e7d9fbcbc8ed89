"""Token estimates for answers that arrived without usage (a stream cut or cancelled, a provider
that omits it).

Two steps, so that no tokenizer runs on the event loop:

1. when the request ends, the stream tap (or the handler, for a whole answer) makes a
   ``PendingUsage``: a provisional count from the text's length (about 4 characters a token;
   the prompt from routing's estimate when it made one, else the body's bytes / 4), marked
   estimated. That is what ``ctx.usage`` holds when the recorders run (the ledger prices it;
   budgets count it);
2. the ledger's writer calls ``refined()`` in a worker thread: tiktoken over the prompt and over
   the generated text (content, reasoning, tool call arguments), and that goes in the ledger row.

A stream keeps only its first ``SAMPLE_BYTES`` of events for this (see ``usage.stream``); the
text of the rest is extrapolated by its byte count (``scale``).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .. import tokens
from ..context import Usage

CHARS_PER_TOKEN = 4  # the provisional count only; the writer's is tiktoken's


class PendingUsage(Usage):
    """A provisional estimate that carries what the writer needs for the tiktoken one."""

    __slots__ = ("payload", "prompt_known", "reasoning_texts", "scale", "texts")

    def __init__(
        self,
        payload: dict[str, Any],
        texts: list[str],
        reasoning_texts: list[str],
        *,
        scale: float = 1.0,
        prompt_tokens: int | None = None,
        prompt_bytes: int = 0,
    ) -> None:
        chars = sum(map(len, texts))
        super().__init__(
            prompt_tokens=prompt_tokens if prompt_tokens is not None else math.ceil(prompt_bytes / CHARS_PER_TOKEN),
            completion_tokens=math.ceil(chars * scale / CHARS_PER_TOKEN),
            reasoning_tokens=math.ceil(sum(map(len, reasoning_texts)) * scale / CHARS_PER_TOKEN),
            estimated=True,
        )
        self.payload = payload
        self.texts = texts
        self.reasoning_texts = reasoning_texts
        self.scale = scale
        self.prompt_known = prompt_tokens is not None

    def refined(self, count: Callable[[str], int] | None = None) -> Usage:
        """The tiktoken estimate (slow for big texts: call it off the event loop)."""
        counter = count or tokens.encoder() or tokens.char_estimate
        prompt = self.prompt_tokens if self.prompt_known else tokens.estimate_prompt_tokens(self.payload, counter)
        completion = math.ceil(counter("".join(self.texts)) * self.scale) if self.texts else 0
        reasoning = math.ceil(counter("".join(self.reasoning_texts)) * self.scale) if self.reasoning_texts else 0
        return Usage(prompt_tokens=prompt, completion_tokens=completion, reasoning_tokens=reasoning, estimated=True)
