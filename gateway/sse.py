"""Pure Server-Sent Events framing: split a byte stream into whole events, and build events."""
from __future__ import annotations

import orjson

DONE = b"data: [DONE]\n\n"
_SEP = b"\n\n"


class SSESplitter:
    """Feed arbitrary chunks; get back the whole events they complete (each ending in a blank line).

    Bytes are passed through untouched (CRLF line ends are normalised to LF), so relaying the
    result costs one ``find`` per event and no re-encoding.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n")
        buf = self._buf + chunk if self._buf else chunk
        events = []
        start = 0
        while True:
            end = buf.find(_SEP, start)
            if end < 0:
                break
            events.append(buf[start : end + 2])
            start = end + 2
        self._buf = buf[start:]
        return events

    def tail(self) -> bytes:
        """What is left at the end of the stream (an unterminated event), if anything."""
        rest, self._buf = self._buf, b""
        return rest


def event_data(event: bytes) -> bytes | None:
    """The event's ``data:`` payload (several data lines joined by LF), or None if it has none."""
    parts = []
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            parts.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(parts) if parts else None


def is_done(event: bytes) -> bool:
    return event_data(event) == b"[DONE]"


def data_event(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


def error_event(message: str, type: str = "api_error", code: str | None = None) -> bytes:
    return data_event(orjson.dumps({"error": {"message": message, "type": type, "param": None, "code": code}}))
