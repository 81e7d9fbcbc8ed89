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


# ---- odd shapes never raise: repair is pure and total over objects -------------------------------

ODD = [None, 5, 1.5, True, "", ["a"], {"id": "a"}, [["x"]], {"a": {"b": []}}]


@pytest.mark.parametrize("odd", ODD, ids=repr)
def test_odd_tool_call_ids_are_orphans_or_ignored(odd):
    """A tool_call_id that is not a string answers no call (it was TypeError: unhashable type)."""
    messages = [user(), asst(A), {"role": "tool", "tool_call_id": odd, "content": "x"}, tool("a")]
    repaired, counts = repair_messages(messages)
    assert repaired == [user(), asst(A), tool("a")]
    assert dict(counts) == {"orphan_tool_result": 1}


@pytest.mark.parametrize("odd", [o for o in ODD if o != ""], ids=repr)
def test_odd_call_ids_get_no_result_inserted(odd):
    weird = {"id": odd, "type": "function", "function": {"name": "ls", "arguments": "{}"}}
    messages = [user(), asst(weird, A), tool("a")]
    assert repair_messages(messages) == (None, {})  # only string ids can be answered
    assert is_valid(messages)


def test_tool_message_without_tool_call_id_is_an_orphan():
    repaired, counts = repair_messages([user(), asst(A), {"role": "tool", "content": "x"}, tool("a")])
    assert repaired == [user(), asst(A), tool("a")] and dict(counts) == {"orphan_tool_result": 1}


@pytest.mark.parametrize("field, odd", [
    ("content", 5), ("content", {"text": ""}), ("content", [5, None, "x"]), ("content", [{"type": 1, "text": []}]),
    ("content", [{"type": "text", "text": {"deep": [[[]]]}}]), ("tool_calls", 5), ("tool_calls", True),
    ("tool_calls", "abc"), ("tool_calls", {"id": "a"}), ("tool_calls", [5, None, "x", []]),
    ("function", None), ("function", "ls"), ("function", {"name": ["x"]}), ("function", {"name": {"a": 1}}),
])
def test_odd_field_shapes_never_raise(field, odd):
    if field == "function":
        messages = [user(), asst({"id": "a", "type": "function", "function": odd})]
    else:
        messages = [user(), {"role": "assistant", field: odd, **({} if field == "tool_calls" else {"tool_calls": [A]})},
                    tool("a")]
    repaired, _ = repair_messages(messages)
    again = repaired if repaired is not None else messages
    assert repair_messages(again)[0] is None  # whatever came out is stable


def test_huge_arrays():
    calls = [call(f"c{i}") for i in range(20_000)]
    repaired, counts = repair_messages([user(), asst(*calls), *[tool(f"c{i}") for i in range(0, 20_000, 2)]])
    assert counts["missing_tool_result"] == 10_000 and len(repaired) == 2 + 20_000
