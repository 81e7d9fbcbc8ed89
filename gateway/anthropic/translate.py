"""Pure translation between Anthropic's Messages API and OpenAI chat completions.

Request (``to_openai``), checked as it is translated; a bad body raises ``InvalidRequest`` whose
message starts with the field's path (``messages.2.content.0.type: ...``), as Anthropic's do:

- ``system`` (a string or text blocks) becomes a leading system message;
- consecutive messages of one role are one turn (Anthropic merges them too);
- a user turn's ``tool_result`` blocks become tool messages, placed first (OpenAI wants them right
  after the assistant's calls), then one user message with its text and images; images inside a
  tool result follow in that user message (tool messages carry text only);
- an assistant turn's text, ``tool_use`` blocks (tool calls) and ``thinking`` blocks
  (``reasoning_content``, which GLM reads back for interleaved thinking) make one message;
  ``redacted_thinking`` is dropped;
- tools, ``tool_choice`` (auto, any -> required, tool -> that function, none), ``stop_sequences``
  -> stop, temperature, top_p, max_tokens, ``metadata.user_id`` -> user; ``top_k`` has no OpenAI
  field and is dropped; ``thinking: {type: disabled}`` -> GLM's ``thinking: {type: disabled}``
  (GLM thinks by default, and has no budget: ``budget_tokens`` is not sent).

Response (``from_openai``): reasoning -> a ``thinking`` block (with a synthetic signature: the
SDKs expect one), content -> a text block, tool calls -> ``tool_use`` blocks; finish reasons ->
stop reasons; usage -> input (less cached), cache reads, output.
"""
from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import orjson

from ..chat import load_json_object
from ..errors import BadGateway, InvalidRequest

Json = dict[str, Any]

SIGNATURE = "glm-gateway"  # thinking blocks' signature: not Anthropic's, nothing checks it here
TOOL_ERROR = "[tool error] "  # prefixes a tool_result with is_error: OpenAI has no such flag
TOOL_IMAGE = "[image from the result of tool call {id}]"
BAD_ARGUMENTS = "_invalid_arguments"  # tool_use input when the upstream's arguments are not a JSON object
TOOL_CHOICES = ("auto", "any", "tool", "none")
THINKING_TYPES = ("enabled", "disabled", "adaptive")
USER_BLOCKS = "text, image, document (text) and tool_result"
ASSISTANT_BLOCKS = "text, tool_use, thinking and redacted_thinking"


def _fail(path: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{path}: {message}", param=path, code="invalid_request")


def _within(prefix: str, e: InvalidRequest) -> InvalidRequest:
    """``e``, raised with a path relative to a content block, with the block's path in front.
    (Paths are built only for errors: a request's thousands of blocks cost no string work.)"""
    field = e.param or ""
    return _fail(f"{prefix}.{field}" if field else prefix, e.message[len(field) + 2:])


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _str(block: Json, key: str, path: str = "") -> str:
    value = block.get(key)
    if value.__class__ is not str:
        raise _fail(_join(path, key), "field required (a string)" if value is None else "must be a string")
    return value


def _object(value: object, path: str) -> Json:
    if not isinstance(value, dict):
        raise _fail(path, "must be an object")
    return value


def load_body(raw: bytes) -> Json:
    return load_json_object(raw, "a JSON Messages API request")


# ---- request: Anthropic -> OpenAI ---------------------------------------------------------------
# A turn is [(message index, content)]; block helpers name fields relative to their block, and
# the turn's loop puts the block's path in front when one fails (``_within``).

Turn = list[tuple[int, Any]]


def _kind(block: object) -> str:
    if block.__class__ is not dict:
        raise _fail("", "must be a content block object")
    kind = block.get("type")
    if kind.__class__ is not str:
        raise _fail("type", "field required (a string)")
    return kind


def _image_part(block: Json) -> Json:
    source = _object(block.get("source"), "source")
    kind = source.get("type")
    if kind == "base64":
        media = _str(source, "media_type", "source")
        data = _str(source, "data", "source")
        return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{data}"}}
    if kind == "url":
        return {"type": "image_url", "image_url": {"url": _str(source, "url", "source")}}
    raise _fail("source.type", "must be 'base64' or 'url'")


def _document_text(block: Json) -> str:
    source = _object(block.get("source"), "source")
    if source.get("type") != "text":
        raise _fail("source.type", "only text documents can be sent to GLM (not PDFs or other files)")
    text = _str(source, "data", "source")
    title = block.get("title")
    return f"{title}\n\n{text}" if isinstance(title, str) and title else text


def _tool_result(block: Json) -> tuple[Json, list[Json]]:
    """The tool message, and the image parts the result held (for the user message after it)."""
    call_id = _str(block, "tool_use_id")
    content = block.get("content")
    texts: list[str] = []
    images: list[Json] = []
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for k, part in enumerate(content):
            try:
                kind = _kind(part)
                if kind == "text":
                    texts.append(_str(part, "text"))
                elif kind == "image":
                    images.append(_image_part(part))
                elif kind == "document":
                    texts.append(_document_text(part))
                else:
                    raise _fail("type", f"a tool result holds text, image or document blocks, not {kind!r}")
            except InvalidRequest as e:
                raise _within(f"content.{k}", e) from None
    elif content is not None:
        raise _fail("content", "must be a string or an array of content blocks")
    text = "\n".join(texts)
    is_error = block.get("is_error")
    if is_error is not None and not isinstance(is_error, bool):
        raise _fail("is_error", "must be true or false")
    if is_error:
        text = TOOL_ERROR + text
    if images:
        images = [{"type": "text", "text": TOOL_IMAGE.format(id=call_id)}, *images]
    return {"role": "tool", "tool_call_id": call_id, "content": text}, images


def _user_turn(turn: Turn, out: list[Json]) -> None:
    tool_messages: list[Json] = []
    parts: list[Json] = []
    for i, content in turn:
        if content.__class__ is str:
            parts.append({"type": "text", "text": content})
            continue
        for j, block in enumerate(content):
            try:
                kind = _kind(block)
                if kind == "text":
                    parts.append({"type": "text", "text": _str(block, "text")})
                elif kind == "tool_result":
                    message, images = _tool_result(block)
                    tool_messages.append(message)
                    parts.extend(images)
                elif kind == "image":
                    parts.append(_image_part(block))
                elif kind == "document":
                    parts.append({"type": "text", "text": _document_text(block)})
                else:
                    raise _fail("type", f"a user message holds {USER_BLOCKS} blocks, not {kind!r}")
            except InvalidRequest as e:
                raise _within(f"messages.{i}.content.{j}", e) from None
    out.extend(tool_messages)
    if not parts:
        return
    if all(p["type"] == "text" for p in parts):
        out.append({"role": "user", "content": parts[0]["text"] if len(parts) == 1 else
                    "\n\n".join(p["text"] for p in parts)})
    else:
        out.append({"role": "user", "content": parts})


def _assistant_turn(turn: Turn, out: list[Json]) -> None:
    texts: list[str] = []
    calls: list[Json] = []
    thinking: list[str] = []
    for i, content in turn:
        if content.__class__ is str:
            if content:
                texts.append(content)
            continue
        for j, block in enumerate(content):
            try:
                kind = _kind(block)
                if kind == "text":
                    text = _str(block, "text")
                    if text:
                        texts.append(text)
                elif kind == "tool_use":
                    call_id = _str(block, "id")
                    name = _str(block, "name")
                    arguments = _object(block.get("input", {}), "input")
                    calls.append({"id": call_id, "type": "function",
                                  "function": {"name": name, "arguments": orjson.dumps(arguments).decode()}})
                elif kind == "thinking":
                    thinking.append(_str(block, "thinking"))
                elif kind != "redacted_thinking":
                    raise _fail("type", f"an assistant message holds {ASSISTANT_BLOCKS} blocks, not {kind!r}")
            except InvalidRequest as e:
                raise _within(f"messages.{i}.content.{j}", e) from None
    if not texts and not calls:
        return  # nothing a provider could read (only thinking, or empty text)
    message: Json = {"role": "assistant", "content": "\n\n".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    if thinking:
        message["reasoning_content"] = "".join(thinking)
    out.append(message)


def _system(system: object) -> str | None:
    if system is None:
        return None
    if isinstance(system, str):
        return system or None
    if not isinstance(system, list):
        raise _fail("system", "must be a string or an array of text blocks")
    texts = []
    for i, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise _fail(f"system.{i}", "must be a text block ({'type': 'text', 'text': ...})")
        texts.append(_str(block, "text", f"system.{i}"))
    return "\n\n".join(t for t in texts if t) or None


def _messages(body: Json) -> list[Json]:
    messages = body.get("messages")
    if messages is None:
        raise _fail("messages", "field required")
    if not isinstance(messages, list) or not messages:
        raise _fail("messages", "must be a non-empty array of messages")
    out: list[Json] = []
    system = _system(body.get("system"))
    if system is not None:
        out.append({"role": "system", "content": system})
    turn_role: object = None
    turn: Turn = []
    for i, message in enumerate(messages):
        if message.__class__ is not dict:
            raise _fail(f"messages.{i}", "must be an object with role and content")
        role = message.get("role")
        if role != "user" and role != "assistant":
            raise _fail(f"messages.{i}.role", f"must be 'user' or 'assistant', got {role!r}")
        content = message.get("content")
        if content.__class__ is not str and content.__class__ is not list:
            raise _fail(f"messages.{i}.content", "field required" if "content" not in message else
                        "must be a string or an array of content blocks")
        if role != turn_role and turn_role is not None:
            (_user_turn if turn_role == "user" else _assistant_turn)(turn, out)
            turn = []
        turn_role = role
        turn.append((i, content))
    (_user_turn if turn_role == "user" else _assistant_turn)(turn, out)
    if len(out) == (system is not None):
        raise _fail("messages", "the messages hold no content a model could read")
    return out


def _tools(tools: object) -> list[Json]:
    if not isinstance(tools, list):
        raise _fail("tools", "must be an array of tools")
    out = []
    for i, tool in enumerate(tools):
        path = f"tools.{i}"
        if not isinstance(tool, dict):
            raise _fail(path, "must be a tool object")
        kind = tool.get("type")
        if kind not in (None, "custom"):
            raise _fail(f"{path}.type", f"Anthropic's server tool {kind!r} is not available through this gateway; "
                                        "only client tools (name, description, input_schema) are")
        name = _str(tool, "name", path)
        schema = _object(tool.get("input_schema"), f"{path}.input_schema")
        function: Json = {"name": name}
        description = tool.get("description")
        if description is not None:
            function["description"] = _str(tool, "description", path)
        function["parameters"] = schema
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: object) -> tuple[object, bool]:
    """OpenAI's tool_choice, and whether parallel calls are off."""
    choice = _object(choice, "tool_choice")
    kind = choice.get("type")
    if kind not in TOOL_CHOICES:
        raise _fail("tool_choice.type", f"must be one of {', '.join(TOOL_CHOICES)}, got {kind!r}")
    serial = choice.get("disable_parallel_tool_use")
    if serial is not None and not isinstance(serial, bool):
        raise _fail("tool_choice.disable_parallel_tool_use", "must be true or false")
    if kind == "tool":
        return {"type": "function", "function": {"name": _str(choice, "name", "tool_choice")}}, bool(serial)
    return {"auto": "auto", "any": "required", "none": "none"}[kind], bool(serial)


def _unit(body: Json, field: str) -> float | None:
    value = body.get(field)
    if value is None:
        return None
    if not _is_number(value) or not 0 <= value <= 1:
        raise _fail(field, "must be a number from 0 to 1")
    return value


def _thinking(thinking: object) -> Json | None:
    """GLM's own thinking switch, sent only to turn thinking off: on is GLM's default."""
    thinking = _object(thinking, "thinking")
    kind = thinking.get("type")
    if kind not in THINKING_TYPES:
        raise _fail("thinking.type", f"must be one of {', '.join(THINKING_TYPES)}, got {kind!r}")
    budget = thinking.get("budget_tokens")
    if budget is not None and (not _is_int(budget) or budget < 1):
        raise _fail("thinking.budget_tokens", "must be a positive integer")
    return {"type": "disabled"} if kind == "disabled" else None


def to_openai(body: Json, *, for_count: bool = False) -> Json:
    """The chat completion request for an Anthropic Messages request (``for_count``: a
    count_tokens body, which has no max_tokens). Raises InvalidRequest naming the bad field."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _fail("model", "field required (a model name)" if model is None else "must be a non-empty string")
    payload: Json = {"model": model, "messages": _messages(body)}
    max_tokens = body.get("max_tokens")
    if max_tokens is None and not for_count:
        raise _fail("max_tokens", "field required (the most tokens to generate)")
    if max_tokens is not None:
        if not _is_int(max_tokens) or max_tokens < 1:
            raise _fail("max_tokens", "must be a positive integer")
        payload["max_tokens"] = max_tokens
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _fail("stream", "must be true or false")
    if stream and not for_count:
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}  # so message_delta has the usage
    stop = body.get("stop_sequences")
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise _fail("stop_sequences", "must be an array of strings")
        if stop:
            payload["stop"] = stop
    for field in ("temperature", "top_p"):
        value = _unit(body, field)
        if value is not None:
            payload[field] = value
    top_k = body.get("top_k")
    if top_k is not None and (not _is_int(top_k) or top_k < 0):
        raise _fail("top_k", "must be a non-negative integer")
    metadata = body.get("metadata")
    if metadata is not None:
        user = _object(metadata, "metadata").get("user_id")
        if user is not None:
            payload["user"] = _str(metadata, "user_id", "metadata")
    tools = body.get("tools")
    if tools is not None:
        translated = _tools(tools)
        if translated:
            payload["tools"] = translated
    choice = body.get("tool_choice")
    if choice is not None:
        tool_choice, serial = _tool_choice(choice)
        if "tools" in payload:  # without tools, a tool_choice only makes providers refuse
            payload["tool_choice"] = tool_choice
            if serial:
                payload["parallel_tool_calls"] = False
    if body.get("thinking") is not None:
        thinking = _thinking(body["thinking"])
        if thinking is not None:
            payload["thinking"] = thinking
    return payload


# ---- response: OpenAI -> Anthropic --------------------------------------------------------------


def message_id(upstream_id: object) -> str:
    return f"msg_{upstream_id}" if isinstance(upstream_id, str) and upstream_id else f"msg_{uuid.uuid4().hex}"


def tool_id(upstream_id: object) -> str:
    return upstream_id if isinstance(upstream_id, str) and upstream_id else f"toolu_{uuid.uuid4().hex[:24]}"


def tool_input(arguments: object) -> Json:
    """A tool call's arguments (JSON text) as tool_use input. Not a JSON object: the text is
    kept under ``_invalid_arguments``, so the client's tool check fails visibly to the model."""
    if isinstance(arguments, dict):
        return arguments
    if isinstance(arguments, str):
        if not arguments.strip():
            return {}
        try:
            value = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            return value
    return {BAD_ARGUMENTS: arguments if isinstance(arguments, str) else orjson.dumps(arguments).decode()}


def reasoning_of(message: Json) -> str | None:
    """GLM's reasoning: ``reasoning_content`` (Z.ai, llama.cpp) or ``reasoning`` (Cerebras)."""
    value = message.get("reasoning_content")
    if not isinstance(value, str):
        value = message.get("reasoning")
    return value if isinstance(value, str) else None


def text_of(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def stop_reason_for(
    finish: object, matched: object, stop_sequences: Sequence[str], tool_calls: bool
) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence). ``matched``: the stop string the upstream says it hit, where
    it says so (vLLM's ``stop_reason``, llama.cpp's ``stopping_word``); else a stop reads end_turn."""
    if finish == "length":
        return "max_tokens", None
    if tool_calls or finish in ("tool_calls", "function_call"):
        return "tool_use", None
    if finish == "content_filter":
        return "refusal", None
    if isinstance(matched, str) and matched in stop_sequences:
        return "stop_sequence", matched
    return "end_turn", None


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_for(usage: object) -> Json:
    """Anthropic's usage for OpenAI's: input tokens exclude the cached ones, reported apart."""
    if not isinstance(usage, dict):
        usage = {}
    prompt = _count(usage.get("prompt_tokens"))
    details = usage.get("prompt_tokens_details")
    cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    cached = min(cached, prompt)
    return {
        "input_tokens": prompt - cached,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "output_tokens": _count(usage.get("completion_tokens")),
    }


def matched_stop(choice: Json) -> object:
    return choice.get("stop_reason", choice.get("stopping_word"))


def from_openai(completion: object, *, model: str, stop_sequences: Sequence[str] = ()) -> Json:
    """The Anthropic message for a chat completion; BadGateway if it is not one."""
    choices = completion.get("choices") if isinstance(completion, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise BadGateway("the upstream's answer holds no choices")
    assert isinstance(completion, dict)
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        raise BadGateway("the upstream's answer holds no message")
    content: list[Json] = []
    reasoning = reasoning_of(message)
    if reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": SIGNATURE})
    text = text_of(message.get("content"))
    if text:
        content.append({"type": "text", "text": text})
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict):
            continue
        name = fn.get("name")
        content.append({"type": "tool_use", "id": tool_id(call.get("id")),
                        "name": name if isinstance(name, str) else "", "input": tool_input(fn.get("arguments"))})
    has_calls = any(block["type"] == "tool_use" for block in content)
    reason, sequence = stop_reason_for(choice.get("finish_reason"), matched_stop(choice), stop_sequences, has_calls)
    upstream_model = completion.get("model")
    return {
        "id": message_id(completion.get("id")),
        "type": "message",
        "role": "assistant",
        "model": upstream_model if isinstance(upstream_model, str) and upstream_model else model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": usage_for(completion.get("usage")),
    }
