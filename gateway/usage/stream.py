"""Usage on streams: asked of every upstream, read from the stream, hidden from clients that did
not ask for it.

Every stream is sent upstream with ``stream_options.include_usage: true`` (merged into what the
client sent), so the provider reports what it bills. ``StreamTap.feed`` sees each chunk the relay
writes: one byte search for ``"usage"`` per chunk; only a chunk that has it is parsed. When the
client did not ask for usage, it gets the stream it would have had: a chunk holding only usage
(``choices: []``) is dropped, and a content chunk that carries usage (Cerebras and Z.ai put it on
the ``finish_reason`` chunk) loses that field. (llama.cpp's own ``timings`` travel on its usage
chunk once usage is asked, so a client that did not ask does not get them.)

A stream that ends without usage gets an estimate (``usage.estimate``) from the text of the first
``SAMPLE_BYTES`` of its events, extrapolated by byte count to the whole.
"""
from __future__ import annotations

from typing import Any

import orjson

from ..context import Usage
from ..sse import event_data
from .answer import answer_texts, usage_from
from .estimate import PendingUsage

USAGE_MARK = b'"usage"'
NULL_USAGE = b'"usage":null'
TIMINGS_MARK = b'"timings"'
SAMPLE_BYTES = 32 * 1024  # kept per stream for an estimate, in case no usage comes
_SEP = b"\n\n"


def wants_usage(payload: dict[str, Any]) -> bool:
    """Whether the client asked for the usage chunk itself."""
    options = payload.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def upstream_stream_options(payload: dict[str, Any]) -> dict[str, Any] | None:
    """The ``stream_options`` that make the upstream report usage, keeping the client's other
    options; None when the client's own already ask for it."""
    options = payload.get("stream_options")
    if isinstance(options, dict):
        return None if options.get("include_usage") is True else {**options, "include_usage": True}
    return {"include_usage": True}


def _events(chunk: bytes) -> list[bytes]:
    """The whole events in a relayed chunk (each ends in a blank line: the splitter's output)."""
    return [e for e in chunk.split(_SEP) if e.strip()]


def _json(event: bytes) -> object:
    data = event_data(event)
    if data is None or data == b"[DONE]":
        return None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


class StreamTap:
    """One stream's usage: found as it passes, or estimated when it ends."""

    __slots__ = (
        "before_last",
        "kept",
        "kept_bytes",
        "last",
        "payload",
        "prompt_bytes",
        "prompt_tokens",
        "strip",
        "total_bytes",
        "usage",
    )

    def __init__(self, payload: dict[str, Any], *, strip: bool, prompt_tokens: int | None = None,
                 prompt_bytes: int = 0) -> None:
        self.strip = strip  # the client did not ask for usage: take it out of what it gets
        self.usage: Usage | None = None
        self.payload = payload
        self.prompt_tokens = prompt_tokens
        self.prompt_bytes = prompt_bytes
        self.kept: list[bytes] = []
        self.kept_bytes = 0
        self.total_bytes = 0
        self.last = self.before_last = b""

    def feed(self, chunk: bytes) -> bytes:
        """What the client gets for ``chunk`` (``b""``: nothing). The common case, a chunk with no
        usage in it, costs a byte search and a few additions."""
        size = len(chunk)
        self.total_bytes += size
        if self.kept_bytes < SAMPLE_BYTES:
            self.kept.append(chunk)
            self.kept_bytes += size
        self.before_last, self.last = self.last, chunk
        if USAGE_MARK not in chunk:
            return chunk
        if chunk.count(NULL_USAGE) == chunk.count(USAGE_MARK):  # "usage": null on an ordinary chunk
            if not self.strip:
                return chunk
            out = chunk.replace(b',' + NULL_USAGE, b"").replace(NULL_USAGE + b',', b"")
            if USAGE_MARK not in out:
                return out
        return self._read(chunk)

    def _read(self, chunk: bytes) -> bytes:
        out: list[bytes] = []
        changed = False
        for event in _events(chunk):
            obj = _json(event) if USAGE_MARK in event else None
            if not isinstance(obj, dict) or "usage" not in obj:
                out.append(event)
                continue
            found = usage_from(obj)
            if found is not None:
                self.usage = found
            if not self.strip:
                out.append(event)
                continue
            changed = True
            if isinstance(obj.pop("usage"), dict) and not obj.get("choices"):
                obj.pop("timings", None)
                continue  # a chunk that only carried usage: the client would not have had it
            out.append(b"data: " + orjson.dumps(obj))
        if not changed:
            return chunk
        return b"".join(e + _SEP for e in out)

    def finish(self) -> Usage:
        """The stream's usage: as reported, else llama.cpp's closing ``timings``, else an estimate."""
        if self.usage is not None:
            return self.usage
        for chunk in (self.last, self.before_last):
            if TIMINGS_MARK in chunk:
                for event in _events(chunk):
                    found = usage_from(_json(event))
                    if found is not None:
                        return found
        texts: list[str] = []
        reasoning: list[str] = []
        for chunk in self.kept:
            for event in _events(chunk):
                answer_texts(_json(event), texts, reasoning)
        scale = self.total_bytes / self.kept_bytes if self.kept_bytes else 1.0
        return PendingUsage(self.payload, texts, reasoning, scale=scale, prompt_tokens=self.prompt_tokens,
                            prompt_bytes=self.prompt_bytes)

