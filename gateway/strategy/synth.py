"""A whole chat.completion as the answer a client gets (pure): its JSON, or the SSE stream an
OpenAI-compatible server would have sent for it.

A streamed request that the speculative path serves from its (non-streamed) draft gets
:func:`stream_events`: a role chunk, the reasoning and the content, each tool call whole (with
its index, id, type, name and arguments), a chunk with the finish reason, the usage chunk when
the client asked for it (``stream_options.include_usage``), then ``[DONE]``.
"""
from __future__ import annotations

from typing import Any

import orjson

from ..sse import DONE, data_event


def wants_logprobs(payload: dict[str, Any]) -> bool:
    return payload.get("logprobs") is True


def wants_usage(payload: dict[str, Any]) -> bool:
    options = payload.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def answer_body(body: dict[str, Any], payload: dict[str, Any]) -> bytes:
    """The draft as the client's non-streamed answer: without the log-probabilities the gateway
    asked for, unless the client asked for them too."""
    if wants_logprobs(payload):
        return orjson.dumps(body)
    choices = [{k: v for k, v in c.items() if k != "logprobs"} if isinstance(c, dict) else c
               for c in body.get("choices") or []]
    return orjson.dumps({**body, "choices": choices})


def stream_events(body: dict[str, Any], payload: dict[str, Any]) -> list[bytes]:
    """The SSE events of ``body`` (a chat.completion), ``[DONE]`` last."""
    head = {
        "id": body.get("id") or "chatcmpl-draft",
        "object": "chat.completion.chunk",
        "created": body.get("created") or 0,
        "model": body.get("model") or "",
    }
    if body.get("system_fingerprint") is not None:
        head["system_fingerprint"] = body["system_fingerprint"]
    choices = body.get("choices") or [{}]
    choice: dict[str, Any] = choices[0] if isinstance(choices[0], dict) else {}
    found = choice.get("message")
    message: dict[str, Any] = found if isinstance(found, dict) else {}
    logprobs = choice.get("logprobs") if wants_logprobs(payload) else None

    def event(delta: dict[str, Any], finish: str | None = None, lp: Any = None) -> bytes:
        part: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": lp, "finish_reason": finish}
        return data_event(orjson.dumps({**head, "choices": [part]}))

    events = [event({"role": "assistant", "content": ""})]
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        events.append(event({"reasoning_content": reasoning}))
    content = message.get("content")
    if isinstance(content, str) and content:
        events.append(event({"content": content}, lp=logprobs))
    calls = message.get("tool_calls")
    for i, call in enumerate(calls if isinstance(calls, list) else []):
        if not isinstance(call, dict):
            continue
        fn = call.get("function")
        fn = fn if isinstance(fn, dict) else {}
        args = fn.get("arguments")
        delta_call = {
            "index": i,
            "id": call.get("id") or f"call_draft_{i}",
            "type": "function",
            "function": {"name": fn.get("name"), "arguments": args if isinstance(args, str) else orjson.dumps(
                args if args is not None else {}).decode()},
        }
        events.append(event({"tool_calls": [delta_call]}))
    events.append(event({}, choice.get("finish_reason") or "stop"))
    if wants_usage(payload) and isinstance(body.get("usage"), dict):
        events.append(data_event(orjson.dumps({**head, "choices": [], "usage": body["usage"]})))
    events.append(DONE)
    return events
