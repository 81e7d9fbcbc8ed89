"""A client's chat request: parsed and checked once, carried unchanged through routing."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from .errors import InvalidRequest

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


@dataclass
class ChatRequest:
    payload: dict[str, Any]
    raw: bytes  # the client's bytes; valid for ``payload`` while ``modified`` is False
    stream: bool
    modified: bool = False
    prompt_tokens: int | None = None  # estimated once, when routing needs it

    @property
    def model(self) -> object:
        return self.payload.get("model")

    def replace_messages(self, messages: list[dict[str, Any]]) -> None:
        self.payload["messages"] = messages
        self.modified = True

    def body(self) -> bytes:
        return orjson.dumps(self.payload) if self.modified else self.raw


def _reject_message(messages: list) -> None:
    """Name the first malformed message (the slow path of the check in parse_chat_request)."""
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidRequest(f"messages[{i}] must be an object", param=f"messages[{i}]", code="invalid_messages")
        role = message.get("role")
        if not isinstance(role, str) or role not in _ROLES:
            raise InvalidRequest(
                f"messages[{i}].role must be one of {', '.join(sorted(_ROLES))}, got {role!r}",
                param=f"messages[{i}].role",
                code="invalid_messages",
            )


def parse_chat_request(raw: bytes) -> ChatRequest:
    """Check that ``raw`` is a chat completion request; raise InvalidRequest (400) if not."""
    if not raw.strip():
        raise InvalidRequest("the request body is empty; send a JSON chat completion request", code="invalid_json")
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise InvalidRequest(f"the request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise InvalidRequest("the request body must be a JSON object", code="invalid_request")
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array", param="messages", code="invalid_messages")
    for message in messages:
        if message.__class__ is not dict or (role := message.get("role")).__class__ is not str or role not in _ROLES:
            _reject_message(messages)
    model = payload.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidRequest("'model' must be a string", param="model", code="invalid_model")
    stream = payload.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be true or false", param="stream", code="invalid_stream")
    for field in ("max_tokens", "max_completion_tokens"):
        value = payload.get(field)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InvalidRequest(f"'{field}' must be a positive integer", param=field, code="invalid_max_tokens")
    return ChatRequest(payload=payload, raw=raw, stream=stream)
