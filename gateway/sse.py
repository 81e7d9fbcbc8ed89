"""Pure Server-Sent Events framing: split a byte stream into whole events, and build events."""
from __future__ import annotations

import orjson

DONE = b"data: [DONE]\n\n"
MAX_EVENT_BYTES = 8 * 1024 * 1024  # far above any chat chunk; bounds what a broken upstream can make us hold


class EventTooLarge(Exception):
    """An event grew past the splitter's cap: the stream cannot go on (the caller ends it)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"an upstream event is larger than {limit} bytes")
        self.limit = limit


class SSESplitter:
    """Feed arbitrary chunks; get back the whole events they complete, each ending in a blank line.

    Lines may end in LF, CRLF or a bare CR (the SSE spec); events come out with LF line ends.
    Work is linear in the input however it is cut: each chunk is searched once, and an event
    spread over many chunks is joined once, when its end arrives. In the common case (LF line
    ends, nothing pending) an event is one slice of the chunk it came in. An event, counted
    with its blank line, may hold at most ``max_event`` bytes; past that ``feed`` raises
    ``EventTooLarge``.
    """

    __slots__ = ("_cr", "_max", "_parts", "_size")

    def __init__(self, max_event: int = MAX_EVENT_BYTES) -> None:
        self._parts: list[bytes] = []  # the unfinished event's bytes, line ends already LF
        self._size = 0  # their total length
        self._cr = False  # the last chunk ended in CR: a LF starting the next one belongs to it
        self._max = max_event

    def feed(self, chunk: bytes) -> list[bytes]:
        if self._cr or b"\r" in chunk:
            chunk = self._to_lf(chunk)
        if self._parts:
            events: list[bytes] = []
            start = self._resume(chunk, events)
            if start < 0:
                return events
            end = chunk.find(b"\n\n", start)
        else:
            end = chunk.find(b"\n\n")
            if end == len(chunk) - 2 and 0 <= end <= self._max - 2:  # one whole event, within the cap
                return [chunk]
            start = 0
            events = []
        while end >= 0:
            events.append(chunk[start : end + 2])
            start = end + 2
            end = chunk.find(b"\n\n", start)
        size = len(chunk)
        if start < size:
            rest = chunk[start:] if start else chunk
            self._parts.append(rest)
            self._size = len(rest)
        if size > self._max:  # only a chunk this big can hold a too-large event
            self._enforce_cap(events)
        return events

    def _resume(self, chunk: bytes, events: list[bytes]) -> int:
        """Finish the pending event with the (LF-only) chunk, into ``events``: returns where the
        chunk's unread part starts, or -1 if it all went to the pending event."""
        parts = self._parts
        if not chunk:
            return -1
        if chunk[:1] == b"\n" and parts[-1].endswith(b"\n"):
            start = 1  # the blank line was cut after its first LF
        else:
            end = chunk.find(b"\n\n")
            if end < 0:
                parts.append(chunk)
                self._size += len(chunk)
                if self._size > self._max:
                    raise self._overflow()
                return -1
            start = end + 2
        if self._size + start > self._max:
            raise self._overflow()
        parts.append(chunk[:start])
        events.append(b"".join(parts))
        self._parts = []
        self._size = 0
        return start

    def _to_lf(self, chunk: bytes) -> bytes:
        """The chunk with CRLF and CR line ends made LF; a CRLF cut after its CR is one line end."""
        if not chunk:
            return chunk
        if self._cr and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._cr = chunk[-1:] == b"\r"
        return chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")

    def _enforce_cap(self, events: list[bytes]) -> None:
        if self._size > self._max or any(len(event) > self._max for event in events):
            raise self._overflow()

    def _overflow(self) -> EventTooLarge:
        """The error for an event over the cap; what was pending is dropped (the stream ends)."""
        self._reset()
        return EventTooLarge(self._max)

    def tail(self) -> bytes:
        """What is left at the end of the stream (an unterminated event), if anything."""
        rest = b"".join(self._parts)
        self._reset()
        return rest

    def _reset(self) -> None:
        self._parts = []
        self._size = 0
        self._cr = False


def event_data(event: bytes) -> bytes | None:
    """The event's ``data:`` payload (several data lines joined by LF), or None if it has none."""
    parts = []
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            parts.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(parts) if parts else None


def has_data(chunk: bytes) -> bool:
    """Whether the events in ``chunk`` carry any data but ``[DONE]`` (not so: keep-alive comments,
    ``data: [DONE]``, events with no or empty data)."""
    if chunk.startswith(b"data: {"):  # the usual first chunk: a JSON payload
        return True
    for line in chunk.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:].strip()
            if value and value != b"[DONE]":
                return True
    return False


def data_event(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


def error_event(message: str, type: str = "api_error", code: str | None = None) -> bytes:
    return data_event(orjson.dumps({"error": {"message": message, "type": type, "param": None, "code": code}}))
