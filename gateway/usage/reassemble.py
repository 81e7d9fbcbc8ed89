"""A streamed answer put back together from its events, for the request log. Pure.

OpenAI's chunk format, which every upstream here speaks: per choice (its ``index``), the
``delta``'s ``content`` and ``reasoning_content`` (or ``reasoning``) are pieces of text joined in
order; ``tool_calls`` deltas are joined by their own ``index``: the first delta of a call brings
its ``id``, ``type`` and ``function.name``, later ones pieces of ``function.arguments``;
``finish_reason`` is the last one given, ``usage`` the last one reported (on the finish chunk or a
chunk of its own). The result has the shape of a whole answer (``object: chat.completion``), so a
reader of the log treats both alike.

Input is what an upstream sent, so anything goes: events that are not JSON are counted
(``unparsed_events``), fields of the wrong type are skipped, and only scalars (and a usage object
of scalars) are copied out, so the result always renders as JSON. Each text is kept up to
``max_chars`` characters (``truncated: true`` on its choice when cut).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from ..sse import event_data

_SEP = b"\n\n"
_TEXTS = (("content", "content"), ("reasoning_content", "reasoning_content"), ("reasoning", "reasoning_content"))
_SCALARS = (str, int, float, bool, type(None))


class _Text:
    """Pieces of one text, kept up to a number of characters."""

    __slots__ = ("cut", "limit", "parts", "size")

    def __init__(self, limit: int | None) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.limit = limit
        self.cut = False

    def add(self, piece: str) -> None:
        limit = self.limit
        if limit is not None and self.size + len(piece) > limit:
            piece = piece[: max(0, limit - self.size)]
            self.cut = True
        if piece:
            self.parts.append(piece)
            self.size += len(piece)

    def text(self) -> str:
        return "".join(self.parts)


class _Call:
    __slots__ = ("arguments", "id", "name", "type")

    def __init__(self, limit: int | None) -> None:
        self.id: str | None = None
        self.type: str | None = None
        self.name = _Text(limit)
        self.arguments = _Text(limit)


class _Choice:
    __slots__ = ("calls", "finish_reason", "role", "texts")

    def __init__(self) -> None:
        self.role: str | None = None
        self.texts: dict[str, _Text] = {}
        self.calls: dict[int, _Call] = {}
        self.finish_reason: str | None = None


def _index(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _scalars(obj: dict[str, Any], depth: int = 2) -> dict[str, Any]:
    """``obj`` with only scalar values, and dicts of them down to ``depth`` levels."""
    out: dict[str, Any] = {}
    for k, v in obj.items():
        if isinstance(v, _SCALARS):
            out[k] = v
        elif isinstance(v, dict) and depth > 1:
            out[k] = _scalars(v, depth - 1)
    return out


def _payloads(chunks: Iterable[bytes]) -> Iterable[bytes]:
    for chunk in chunks:
        for event in chunk.split(_SEP):
            if event.strip():
                data = event_data(event)
                if data is not None and data != b"[DONE]":
                    yield data


class Reassembler:
    """The state of one reassembly: feed it parsed chunks, then ``answer()``."""

    def __init__(self, max_chars: int | None = None) -> None:
        self.max_chars = max_chars
        self.head: dict[str, Any] = {}
        self.choices: dict[int, _Choice] = {}
        self.usage: dict[str, Any] | None = None
        self.errors: list[dict[str, Any]] = []
        self.events = 0
        self.unparsed = 0

    def feed(self, data: bytes) -> None:
        self.events += 1
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.unparsed += 1
            return
        if not isinstance(obj, dict):
            self.unparsed += 1
            return
        for field in ("id", "model", "created", "system_fingerprint"):
            value = obj.get(field)
            if field not in self.head and isinstance(value, (str, int)) and not isinstance(value, bool):
                self.head[field] = value
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self.usage = _scalars(usage)
        error = obj.get("error")
        if error is not None:
            self.errors.append(_scalars(error) if isinstance(error, dict) else {"message": str(error)[:1000]})
        choices = obj.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if isinstance(choice, dict):
                    self._choice(choice)

    def _choice(self, choice: dict[str, Any]) -> None:
        index = _index(choice.get("index"))
        state = self.choices.get(index)
        if state is None:
            state = self.choices[index] = _Choice()
        finish = choice.get("finish_reason")
        if isinstance(finish, str):
            state.finish_reason = finish
        delta = choice.get("delta", choice.get("message"))
        if not isinstance(delta, dict):
            return
        role = delta.get("role")
        if isinstance(role, str) and state.role is None:
            state.role = role
        for field, name in _TEXTS:
            piece = delta.get(field)
            if isinstance(piece, str) and piece:
                text = state.texts.get(name)
                if text is None:
                    text = state.texts[name] = _Text(self.max_chars)
                text.add(piece)
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            for call in calls:
                if isinstance(call, dict):
                    self._call(state, call)

    def _call(self, state: _Choice, call: dict[str, Any]) -> None:
        index = _index(call.get("index"))
        known = state.calls.get(index)
        if known is None:
            known = state.calls[index] = _Call(self.max_chars)
        for field in ("id", "type"):
            value = call.get(field)
            if isinstance(value, str) and getattr(known, field) is None:
                setattr(known, field, value)
        fn = call.get("function")
        if not isinstance(fn, dict):
            return
        name = fn.get("name")
        if isinstance(name, str) and name and name != known.name.text():  # some servers repeat the name
            known.name.add(name)
        arguments = fn.get("arguments")
        if isinstance(arguments, str):
            known.arguments.add(arguments)

    def answer(self) -> dict[str, Any]:
        out: dict[str, Any] = {"object": "chat.completion", **self.head, "choices": []}
        for index in sorted(self.choices):
            state = self.choices[index]
            message: dict[str, Any] = {"role": state.role or "assistant"}
            cut = False
            for name, text in state.texts.items():
                message[name] = text.text()
                cut = cut or text.cut
            if state.calls:
                message["tool_calls"] = []
                for i in sorted(state.calls):
                    c = state.calls[i]
                    message["tool_calls"].append({"index": i, "id": c.id, "type": c.type or "function",
                                                  "function": {"name": c.name.text(), "arguments": c.arguments.text()}})
                    cut = cut or c.name.cut or c.arguments.cut
            entry: dict[str, Any] = {"index": index, "message": message, "finish_reason": state.finish_reason}
            if cut:
                entry["truncated"] = True
            out["choices"].append(entry)
        out["usage"] = self.usage
        out["events"] = self.events
        if self.unparsed:
            out["unparsed_events"] = self.unparsed
        if self.errors:
            out["errors"] = self.errors
        return out


def reassemble(chunks: Iterable[bytes], max_chars: int | None = None) -> dict[str, Any]:
    """The answer a stream's chunks (whole SSE events, as relayed) make up."""
    state = Reassembler(max_chars)
    for data in _payloads(chunks):
        state.feed(data)
    return state.answer()
