"""A client's chat request: parsed and checked once, carried unchanged through routing."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from .errors import InvalidRequest
from .validate import check_request


@dataclass
class ChatRequest:
    payload: dict[str, Any]
    raw: bytes  # the client's bytes; valid for ``payload`` while ``modified`` is False
    stream: bool
    modified: bool = False
    prompt_tokens: int | None = None  # estimated once, when routing needs it
    prediction: str | None = None  # an escalated local draft: sent as `prediction` where a provider takes it

    @property
    def model(self) -> object:
        return self.payload.get("model")

    def replace_messages(self, messages: list[dict[str, Any]]) -> None:
        if not messages:  # repair removed every message: there is nothing to send
            raise InvalidRequest(
                "'messages' holds only tool results that answer no call; none is left to send once they are removed",
                param="messages", code="invalid_messages",
            )
        self.payload["messages"] = messages
        self.modified = True

    def body(self) -> bytes:
        return orjson.dumps(self.payload) if self.modified else self.raw


def load_json_object(raw: bytes, expected: str) -> dict[str, Any]:
    """A request body that must be a JSON object; a 400 saying what is wrong otherwise.
    ``expected`` names what the route takes ("a JSON chat completion request")."""
    if not raw.strip():
        raise InvalidRequest(f"the request body is empty; send {expected}", code="invalid_json")
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise InvalidRequest(f"the request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise InvalidRequest("the request body must be a JSON object", code="invalid_request")
    return payload


def parse_chat_request(raw: bytes) -> ChatRequest:
    """Check that ``raw`` is a chat completion request, field by field (gateway/validate.py);
    raise InvalidRequest (400) naming the first bad field if not."""
    payload = load_json_object(raw, "a JSON chat completion request")
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array", param="messages", code="invalid_messages")
    normalised = check_request(payload)
    return ChatRequest(payload=payload, raw=raw, stream=payload.get("stream") is True, modified=normalised)
