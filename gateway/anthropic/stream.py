"""OpenAI ``chat.completion.chunk`` events in, Anthropic's stream events out (pure state machine).

Anthropic's sequence: ``message_start``; per content block, ``content_block_start``, its
``content_block_delta`` events (``thinking_delta`` then a ``signature_delta``, ``text_delta``,
``input_json_delta``) and ``content_block_stop``, with indexes counting up from 0; then
``message_delta`` (stop reason, usage) and ``message_stop``. OpenAI streams reasoning, content
and tool-call fragments as deltas of one choice; a change of kind (or a new tool call) closes the
open block and opens the next. Usage comes in the last chunk (the request asks for it with
``stream_options.include_usage``), so the final usage is in ``message_delta``; when the upstream
sends none, output tokens are estimated from the characters streamed (``usage_estimated``).

``feed`` takes one SSE event's data; ``finish`` ends the message (once); ``fail`` ends it with an
``error`` event. Each returns the bytes to write, in order.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import orjson

from .errors import error_event
from .translate import (
    SIGNATURE,
    matched_stop,
    message_id,
    reasoning_of,
    stop_reason_for,
    tool_id,
    usage_for,
)

Json = dict[str, Any]

PING = b'event: ping\ndata: {"type":"ping"}\n\n'
THINKING, TEXT, TOOL = "thinking", "text", "tool_use"
CHARS_PER_TOKEN = 3  # with no usage from the upstream: tokens.char_estimate's rate, erring high


def event(kind: str, data: Json) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class StreamTranslator:
    __slots__ = ("model", "stop_sequences", "input_tokens", "started", "ended", "_next_index", "_open",
                 "_tool_blocks", "_tool_ids", "_finish", "_matched", "usage", "_chars", "_had_tools", "failed")

    def __init__(self, model: str, stop_sequences: Sequence[str] = (), input_tokens: int = 0) -> None:
        self.model = model
        self.stop_sequences = stop_sequences
        self.input_tokens = input_tokens  # message_start's, before the upstream's count arrives
        self.started = False
        self.ended = False
        self._next_index = 0
        self._open: str | None = None  # the open block's kind
        self._tool_blocks: dict[int, int] = {}  # OpenAI tool-call index -> block index
        self._tool_ids: dict[int, str] = {}
        self._finish: object = None
        self._matched: object = None
        self._had_tools = False
        self._chars = 0
        self.usage: Json | None = None  # the upstream's (OpenAI) usage, once reported
        self.failed: str | None = None  # why the stream ended in an error event

    # ---- in -------------------------------------------------------------------------------------

    def feed(self, data: bytes) -> list[bytes]:
        """One upstream event's ``data``: a chunk, ``[DONE]`` (ends the message) or an error."""
        if self.ended:
            return []
        if data.strip() == b"[DONE]":
            return self.finish()
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return []  # not a chunk (a comment-like line); OpenAI's clients skip these too
        if not isinstance(chunk, dict):
            return []
        if "error" in chunk:
            err = chunk["error"]
            message = err.get("message") if isinstance(err, dict) else err
            return self.fail(f"upstream stream failed: {message if isinstance(message, str) else 'error'}")
        out = self._start(chunk)
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        choices = chunk.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if isinstance(choice, dict) and choice.get("index", 0) == 0:
                    self._choice(choice, out)
        return out

    def _start(self, chunk: Json) -> list[bytes]:
        if self.started:
            return []
        self.started = True
        model = chunk.get("model")
        message: Json = {
            "id": message_id(chunk.get("id")),
            "type": "message",
            "role": "assistant",
            "model": model if isinstance(model, str) and model else self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self.input_tokens, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0, "output_tokens": 0},
        }
        return [event("message_start", {"type": "message_start", "message": message})]

    def _choice(self, choice: Json, out: list[bytes]) -> None:
        delta = choice.get("delta")
        if isinstance(delta, dict):
            reasoning = reasoning_of(delta)
            if reasoning:
                self._delta(THINKING, {"type": "thinking_delta", "thinking": reasoning}, len(reasoning), out)
            content = delta.get("content")
            if isinstance(content, str) and content:
                self._delta(TEXT, {"type": "text_delta", "text": content}, len(content), out)
            calls = delta.get("tool_calls")
            if isinstance(calls, list):
                for call in calls:
                    if isinstance(call, dict):
                        self._tool(call, out)
        finish = choice.get("finish_reason")
        if finish:
            self._finish = finish
            self._matched = matched_stop(choice)

    # ---- blocks ---------------------------------------------------------------------------------

    def _begin(self, kind: str, block: Json, out: list[bytes]) -> int:
        self._close(out)
        index = self._next_index
        self._next_index += 1
        self._open = kind
        out.append(event("content_block_start",
                         {"type": "content_block_start", "index": index, "content_block": block}))
        return index

    def _close(self, out: list[bytes]) -> None:
        kind = self._open
        if kind is None:
            return
        index = self._next_index - 1
        if kind == THINKING:
            out.append(event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                     "delta": {"type": "signature_delta", "signature": SIGNATURE}}))
        out.append(event("content_block_stop", {"type": "content_block_stop", "index": index}))
        self._open = None

    def _delta(self, kind: str, delta: Json, chars: int, out: list[bytes]) -> None:
        if self._open != kind:
            block: Json = {"type": "thinking", "thinking": "", "signature": ""} if kind == THINKING else {
                "type": "text", "text": ""}
            self._begin(kind, block, out)
        self._chars += chars
        out.append(event("content_block_delta", {"type": "content_block_delta", "index": self._next_index - 1,
                                                 "delta": delta}))

    def _tool(self, call: Json, out: list[bytes]) -> None:
        position = call.get("index")
        if not isinstance(position, int) or isinstance(position, bool):
            position = 0
        fn = call.get("function")
        fn = fn if isinstance(fn, dict) else {}
        given_id = call.get("id")
        known = self._tool_ids.get(position)
        if position not in self._tool_blocks or (isinstance(given_id, str) and given_id and given_id != known):
            # a new call (some upstreams number every call 0 and tell them apart by id)
            name = fn.get("name")
            call_id = tool_id(given_id)
            self._tool_ids[position] = call_id
            self._tool_blocks[position] = self._begin(
                TOOL, {"type": "tool_use", "id": call_id, "name": name if isinstance(name, str) else "", "input": {}},
                out)
            self._had_tools = True
        arguments = fn.get("arguments")
        if arguments is None or arguments == "":
            return
        if not isinstance(arguments, str):
            arguments = orjson.dumps(arguments).decode()
        self._chars += len(arguments)
        # a fragment of a call whose block is already closed still goes to its own index
        out.append(event("content_block_delta", {"type": "content_block_delta", "index": self._tool_blocks[position],
                                                 "delta": {"type": "input_json_delta", "partial_json": arguments}}))

    # ---- out ------------------------------------------------------------------------------------

    @property
    def usage_estimated(self) -> bool:
        return self.usage is None

    def final_usage(self) -> Json:
        if self.usage is not None:
            return usage_for(self.usage)
        return {"input_tokens": self.input_tokens, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                "output_tokens": math.ceil(self._chars / CHARS_PER_TOKEN)}

    def finish(self) -> list[bytes]:
        """Close the open block, then ``message_delta`` and ``message_stop`` (once)."""
        if self.ended:
            return []
        out = self._start({})
        self._close(out)
        self.ended = True
        reason, sequence = stop_reason_for(self._finish, self._matched, self.stop_sequences, self._had_tools)
        out.append(event("message_delta", {"type": "message_delta",
                                           "delta": {"stop_reason": reason, "stop_sequence": sequence},
                                           "usage": self.final_usage()}))
        out.append(event("message_stop", {"type": "message_stop"}))
        return out

    def fail(self, message: str, type: str = "api_error") -> list[bytes]:
        """End the stream with Anthropic's ``error`` event (the SDKs raise it as an APIError)."""
        if self.ended:
            return []
        self.ended = True
        self.failed = message
        return [error_event(type, message)]
