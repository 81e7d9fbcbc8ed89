"""Transcript repair: a table of broken and valid transcripts with their exact expected output."""
from __future__ import annotations

import pytest

from gateway.repair import MISSING_RESULT, is_valid, repair_messages


def user(text="do it"):
    return {"role": "user", "content": text}


def sys_(text="you are an agent"):
    return {"role": "system", "content": text}


def call(cid, name="read_file", args="{}"):
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}


def asst(*calls, content=None, **extra):
    m = {"role": "assistant", "content": content, **extra}
    if calls:
        m["tool_calls"] = list(calls)
    return m


def say(text):
    return {"role": "assistant", "content": text}


def tool(cid, content="ok"):
    return {"role": "tool", "tool_call_id": cid, "content": content}


def missing(cid, name="read_file"):
    return {"role": "tool", "tool_call_id": cid, "content": MISSING_RESULT.format(name=name, id=cid)}


A, B, C = call("a"), call("b", "grep"), call("c", "ls")

CASES = [
    # (id, messages, expected (None = unchanged), counts)
    ("valid single call", [user(), asst(A), tool("a"), say("done")], None, {}),
    ("valid parallel calls", [user(), asst(A, B, C), tool("a"), tool("b"), tool("c"), say("done")], None, {}),
    ("valid several turns",
     [sys_(), user(), asst(A), tool("a"), asst(B), tool("b"), user("more"), asst(C), tool("c"), say("ok")], None, {}),
    ("valid, no tools at all", [sys_(), user(), say("hi"), user("bye")], None, {}),
    ("valid null content stays", [user(), asst(A, content=None), tool("a")], None, {}),
    ("valid text beside calls", [user(), asst(A, content="let me look"), tool("a")], None, {}),
    ("missing result at the end", [user(), asst(A)], [user(), asst(A), missing("a")], {"missing_tool_result": 1}),
    ("missing result before the next user message",
     [user(), asst(A), user("stop")], [user(), asst(A), missing("a"), user("stop")], {"missing_tool_result": 1}),
    ("interrupted parallel call: one of three answered",
     [user(), asst(A, B, C), tool("b"), user("continue")],
     [user(), asst(A, B, C), missing("a"), tool("b"), missing("c", "ls"), user("continue")],
     {"missing_tool_result": 2}),
    ("orphan tool result (its call was trimmed)",
     [sys_(), tool("gone"), user(), say("hi")], [sys_(), user(), say("hi")], {"orphan_tool_result": 1}),
    ("tool result answering another turn's call",
     [user(), asst(A), tool("a"), asst(B), tool("a"), tool("b")],
     [user(), asst(A), tool("a"), asst(B), tool("b")], {"orphan_tool_result": 1}),
    ("tool result before any assistant call", [user(), tool("a"), asst(A), tool("a")],
     [user(), asst(A), tool("a")], {"orphan_tool_result": 1}),
    ("results out of call order",
     [user(), asst(A, B), tool("b"), tool("a")], [user(), asst(A, B), tool("a"), tool("b")],
     {"reordered_tool_result": 2}),
    ("result separated from its call by a user message",
     [user(), asst(A), user("hurry"), tool("a")], [user(), asst(A), tool("a"), user("hurry")],
     {"reordered_tool_result": 1}),
    ("duplicate call id in one message", [user(), asst(A, call("a")), tool("a")],
     [user(), asst(A), tool("a")], {"duplicate_tool_call": 1}),
    ("a call answered twice", [user(), asst(A), tool("a", "first"), tool("a", "second")],
     [user(), asst(A), tool("a", "first")], {"duplicate_tool_result": 1}),
    ("empty string content with calls", [user(), asst(A, content=""), tool("a")],
     [user(), asst(A, content=None), tool("a")], {"empty_assistant_content": 1}),
    ("blank text parts with calls", [user(), asst(A, content=[{"type": "text", "text": " "}]), tool("a")],
     [user(), asst(A, content=None), tool("a")], {"empty_assistant_content": 1}),
    ("empty tool_calls list", [user(), {"role": "assistant", "content": "hi", "tool_calls": []}],
     [user(), {"role": "assistant", "content": "hi"}], {"empty_tool_calls": 1}),
    ("orphan between a call and its result is dropped, not counted as a move",
     [user(), asst(A), tool("zzz"), tool("a")], [user(), asst(A), tool("a")], {"orphan_tool_result": 1}),
    ("everything at once over several turns",
     [sys_(), tool("x"), user(), asst(A, B, content=""), tool("b"), user("wait"), tool("a"), tool("a"),
      asst(C), say("unrelated"), user("again")],
     [sys_(), user(), asst(A, B, content=None), tool("a"), tool("b"), user("wait"),
      asst(C), missing("c", "ls"), say("unrelated"), user("again")],
     {"orphan_tool_result": 1, "empty_assistant_content": 1, "reordered_tool_result": 2,
      "duplicate_tool_result": 1, "missing_tool_result": 1}),
]


@pytest.mark.parametrize("messages, expected, counts", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_repair_table(messages, expected, counts):
    before = repr(messages)
    repaired, got = repair_messages(messages)
    assert repaired == expected
    assert dict(got) == counts
    assert repr(messages) == before  # the input is never mutated


def test_repair_is_idempotent():
    for _, _messages, expected, _ in CASES:
        if expected is not None:
            again, counts = repair_messages(expected)
            assert again is None and not counts


def test_2000_message_transcript():
    """2,000 messages of tool turns: every 50th result dropped, a stale result every 100th turn,
    every 30th turn's results separated from their call by a user message."""
    messages, expected = [sys_()], [sys_()]
    counts = {"missing_tool_result": 0, "orphan_tool_result": 0, "reordered_tool_result": 0}
    t = 0
    while len(messages) < 1990:
        c = call(f"t{t}")
        messages += [user(f"step {t}"), asst(c)]
        expected += [user(f"step {t}"), asst(c)]
        if t % 50 == 7:
            expected.append(missing(f"t{t}"))
            counts["missing_tool_result"] += 1
        elif t % 30 == 11:
            messages += [user("hurry"), tool(f"t{t}")]
            expected += [tool(f"t{t}"), user("hurry")]
            counts["reordered_tool_result"] += 1
        else:
            messages.append(tool(f"t{t}"))
            expected.append(tool(f"t{t}"))
        if t % 100 == 3:
            messages.append(tool(f"stale{t}"))
            counts["orphan_tool_result"] += 1
        t += 1
    while len(messages) < 2000:
        messages.append(say("thinking"))
        expected.append(say("thinking"))
    assert len(messages) == 2000
    repaired, got = repair_messages(messages)
    assert repaired == expected
    assert dict(got) == counts
    assert all(counts.values())


def test_2000_valid_messages_are_unchanged():
    messages = [sys_()]
    while len(messages) < 2000:
        t = len(messages)
        messages += [user(f"s{t}"), asst(call(f"c{t}"), call(f"d{t}")), tool(f"c{t}"), tool(f"d{t}")]
    repaired, counts = repair_messages(messages[:1997])
    assert repaired is None and not counts


@pytest.mark.parametrize("messages, expected", [c[1:3] for c in CASES], ids=[c[0] for c in CASES])
def test_fast_validity_check_agrees_with_full_repair(messages, expected):
    import gateway.repair as repair

    assert is_valid(messages) is (expected is None)
    # the full algorithm alone reaches the same verdict
    original = repair.is_valid
    repair.is_valid = lambda _: False
    try:
        assert repair.repair_messages(messages)[0] == expected
    finally:
        repair.is_valid = original
