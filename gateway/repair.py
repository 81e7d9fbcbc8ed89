"""Pure repair of broken tool-call transcripts, in one pass over the messages (O(n)).

Coding agents break transcripts (a compaction drops a tool result, a user interrupts parallel
calls, a tool message outlives its call), and providers then reject the whole request. Rules:

- A tool message belongs to the nearest assistant message before it (its *turn* runs to the next
  assistant message), if that message made a call with its ``tool_call_id``. Results are placed
  directly after their assistant message, in the order of the calls (``reordered_tool_result``).
- A tool message answering no call of its turn is removed (``orphan_tool_result``); a second
  answer to the same call is removed (``duplicate_tool_result``).
- A call with no answer in its turn gets a tool message saying the result is missing
  (``missing_tool_result``).
- A call id repeated within one assistant message keeps its first call (``duplicate_tool_call``).
- An assistant message with calls and empty content (``""``, blank, or only empty text parts)
  gets ``null`` content (``empty_assistant_content``): Cerebras rejects ``""`` there and Z.ai
  rejects empty text, while ``null`` is what the OpenAI format specifies. An empty
  ``tool_calls`` list is removed (``empty_tool_calls``).

``repair_messages`` returns ``None`` when nothing needed repair, so a valid request is forwarded
byte for byte. It takes any values inside the message objects (parse_chat_request refuses odd
shapes first, but repair does not rely on it): only string ids are matched, a non-string
``tool_call_id`` answers no call, and ``tool_calls`` that is not an array is left alone.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

Message = dict[str, Any]

MISSING_RESULT = (
    "[tool result missing: the call {name!r} (id {id}) was interrupted or its result was removed "
    "from the conversation; treat it as not having completed]"
)


def _calls(message: Message) -> list[dict] | None:
    calls = message.get("tool_calls")
    return calls if isinstance(calls, list) else None


def _call_id(call: Any) -> str | None:
    if isinstance(call, dict) and isinstance(call.get("id"), str):
        return call["id"]
    return None


def _is_blank_text(part: Any) -> bool:
    if not isinstance(part, dict) or part.get("type", "text") != "text":
        return False
    text = part.get("text")
    return text is None or (isinstance(text, str) and not text.strip())


def _is_empty_content(content: Any) -> bool:
    if isinstance(content, str):
        return not content.strip()
    if isinstance(content, list):
        return all(_is_blank_text(p) for p in content)
    return False


def _fixed_assistant(message: Message, counts: Counter) -> tuple[Message, list[str], dict[str, str]]:
    """The assistant message with calls deduplicated and content made acceptable; its call ids
    in order, and their function names."""
    calls = _calls(message) or []
    seen: dict[str, str] = {}
    kept = []
    for call in calls:
        cid = _call_id(call)
        if cid is not None and cid in seen:
            counts["duplicate_tool_call"] += 1
            continue
        if cid is not None:
            fn = call.get("function")
            name = fn.get("name") if isinstance(fn, dict) else None
            seen[cid] = name if isinstance(name, str) else ""
        kept.append(call)
    fixed = message
    if len(kept) != len(calls):
        fixed = {**fixed, "tool_calls": kept}
    if not kept and "tool_calls" in message:
        fixed = {k: v for k, v in fixed.items() if k != "tool_calls"}
        counts["empty_tool_calls"] += 1
    elif "content" in message and message["content"] is not None and _is_empty_content(message["content"]):
        fixed = {**fixed, "content": None}
        counts["empty_assistant_content"] += 1
    return fixed, list(seen), seen


def _skip_dropped(messages: list[Message], owner_of: dict[int, int], k: int) -> int:
    """The first index from k on that is not a tool message being dropped."""
    while k < len(messages) and messages[k].get("role") == "tool" and k not in owner_of:
        k += 1
    return k


def is_valid(messages: list[Message]) -> bool:
    """One tight pass: does every call get exactly its results, right after it, in call order,
    with no stray tool message and no empty content beside calls? (Then nothing needs repair.)"""
    i, n = 0, len(messages)
    while i < n:
        m = messages[i]
        role = m.get("role")
        if role == "tool":
            return False  # a result no call just before it claimed
        if role == "assistant":
            calls = m.get("tool_calls")
            if isinstance(calls, list):
                if not calls:
                    return False
                content = m.get("content")
                if content is not None and _is_empty_content(content):
                    return False
                ids = [cid for c in calls if (cid := _call_id(c)) is not None]
                if len(set(ids)) != len(ids):
                    return False
                for cid in ids:
                    i += 1
                    if i >= n or messages[i].get("role") != "tool" or messages[i].get("tool_call_id") != cid:
                        return False
        i += 1
    return True


def repair_messages(messages: list[Message]) -> tuple[list[Message] | None, Counter]:
    """``(repaired, counts)``; ``repaired`` is None when the transcript was already valid."""
    counts: Counter = Counter()
    if is_valid(messages):
        return None, counts
    # pass 1: which tool message answers which assistant message's call
    owner_of: dict[int, int] = {}  # tool message index -> assistant message index
    results: dict[int, dict[str, int]] = {}  # assistant index -> call id -> tool message index
    ids_of: dict[int, set[str]] = {}
    current: int | None = None
    for i, m in enumerate(messages):
        role = m.get("role")
        if role == "assistant":
            current = i
            calls = _calls(m)
            ids_of[i] = {cid for c in calls or () if (cid := _call_id(c)) is not None}
            results[i] = {}
        elif role == "tool":
            cid = m.get("tool_call_id")
            if current is None or not isinstance(cid, str) or cid not in ids_of[current]:
                counts["orphan_tool_result"] += 1
            elif cid in results[current]:
                counts["duplicate_tool_result"] += 1
            else:
                results[current][cid] = i
                owner_of[i] = current
    # pass 2: emit, each assistant message followed by its results in call order
    out: list[Message] = []
    for i, m in enumerate(messages):
        role = m.get("role")
        if role == "tool":
            continue  # emitted after its assistant message, or dropped
        if role != "assistant" or _calls(m) is None:
            out.append(m)
            continue
        fixed, order, names = _fixed_assistant(m, counts)
        out.append(fixed)
        found = results[i]
        expected = _skip_dropped(messages, owner_of, i + 1)  # where the next result should sit
        for cid in order:
            j = found.get(cid)
            if j is None:
                counts["missing_tool_result"] += 1
                out.append({"role": "tool", "tool_call_id": cid,
                            "content": MISSING_RESULT.format(name=names[cid], id=cid)})
                continue
            if j != expected:  # separated from its assistant message, or out of call order
                counts["reordered_tool_result"] += 1
            expected = _skip_dropped(messages, owner_of, (j if j == expected else expected) + 1)
            out.append(messages[j])
    if not counts:
        return None, counts
    return out, counts
