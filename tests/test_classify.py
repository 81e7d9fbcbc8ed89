"""The complexity classifier: each signal moves the score its way; hostile input never raises; the
labelled set meets the issue's targets (a regression in the weights fails here)."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.routing import dataset, evaluate, make_set
from gateway.classify import (
    COMPLEX,
    DEFAULT_KEYWORDS,
    DEFAULT_THRESHOLD,
    SIMPLE,
    ClassifierSettings,
    classify,
    parse_keywords,
)
from gateway.config import ConfigError, _Reader

S = ClassifierSettings()
QUESTION = "How do I reverse a list in Python?"
TASK = "Refactor the payment flow to support Stripe and Adyen behind one interface."
TOOLS = [{"type": "function", "function": {"name": f"tool{i}", "parameters": {"type": "object"}}} for i in range(14)]
CLINE_SYSTEM = "You are Cline.\n\n# Tools\n" + "".join(
    f"## {t}\n<{t}>\n<path>here</path>\n</{t}>\n" for t in ("read_file", "write_to_file", "execute_command",
                                                             "list_files", "search_files"))


def user(text):
    return {"role": "user", "content": text}


def req(*messages, **extra):
    return {"model": "glm-4.7", "messages": list(messages), **extra}


def score(payload, **kw):
    return classify(payload, S, **kw).score


BASE = req(user(QUESTION))


def test_a_short_question_is_simple_and_a_refactor_complex():
    simple, complex_ = classify(BASE, S), classify(req(user(TASK)), S)
    assert simple.label == SIMPLE and simple.reason.startswith("simple: ")
    assert complex_.label == COMPLEX and complex_.reason.startswith("complex: ")
    assert 0 <= simple.score < DEFAULT_THRESHOLD <= complex_.score <= 1


# (what changes, the request with that one signal added, whether it must also flip the label to complex)
RAISERS = [
    ("14 tools", {**BASE, "tools": TOOLS}, True),
    ("2 tools", {**BASE, "tools": TOOLS[:2]}, False),
    ("legacy functions", {**BASE, "functions": [t["function"] for t in TOOLS]}, True),
    ("an XML tool protocol", req({"role": "system", "content": CLINE_SYSTEM}, user(QUESTION)), True),
    ("a native tool result last", req(user(QUESTION), {"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "read", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "file contents"}), True),
    ("a Cline tool result last", req(user(QUESTION), {"role": "assistant", "content": "<read_file>..."},
                                     user([{"type": "text", "text": "[read_file for 'a.py'] Result:"},
                                           {"type": "text", "text": "print(1)"}])), True),
    ("a code block", req(user(QUESTION + "\n```python\nxs = [1, 2]\n```")), False),
    ("a keyword", req(user("How do I debug a list in Python?")), True),
    ("three keywords", req(user("How do I debug a race condition in the security layer?")), True),
    ("a long conversation", req(*[user(QUESTION), {"role": "assistant", "content": "Like this."}] * 8), False),
    ("reasoning_effort high", {**BASE, "reasoning_effort": "high"}, True),
    ("reasoning.effort high", {**BASE, "reasoning": {"effort": "high"}}, True),
    ("thinking enabled", {**BASE, "thinking": {"type": "enabled"}}, False),
    ("enable_thinking", {**BASE, "chat_template_kwargs": {"enable_thinking": True}}, False),
    ("an image", req(user([{"type": "text", "text": QUESTION},
                           {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}])), True),
    ("a long instruction", req(user(QUESTION + " I need it to work for lists of dicts, sets and tuples, keep "
                                    "the original intact, and explain the cost of each approach.")), True),
    ("a change request", req(user("Add a reverse helper to the list utilities.")), False),
    ("a big conversation", req(user(QUESTION + " " + "context " * 6000)), True),
]


@pytest.mark.parametrize("what, payload, flips", RAISERS, ids=[r[0] for r in RAISERS])
def test_signal_raises_the_score(what, payload, flips):
    assert score(payload) > score(BASE)
    if flips:
        assert classify(payload, S).label == COMPLEX


MID = req(user("Explain what the function in utils.py returns and what its arguments are for, please."))
LOWERERS = [
    ("reasoning_effort low", {**MID, "reasoning_effort": "low"}),
    ("thinking disabled", {**MID, "thinking": {"type": "disabled"}}),
    ("enable_thinking false", {**MID, "chat_template_kwargs": {"enable_thinking": False}}),
    ("max_tokens 100", {**MID, "max_tokens": 100}),
    ("max_completion_tokens 100", {**MID, "max_completion_tokens": 100}),
    ("a shorter instruction", req(user("What does utils.py return?"))),
]


@pytest.mark.parametrize("what, payload", LOWERERS, ids=[r[0] for r in LOWERERS])
def test_signal_lowers_the_score(what, payload):
    assert score(payload) < score(MID)


@pytest.mark.parametrize("last", [
    {"role": "tool", "tool_call_id": "c1", "content": "print(1)"},
    user([{"type": "text", "text": "[read_file for 'a.py'] Result:"}, {"type": "text", "text": "print(1)"}]),
], ids=["native", "cline"])
def test_an_agent_mid_task_stays_in_the_cloud_even_asked_for_a_short_cheap_answer(last):
    call = {"role": "assistant", "content": "", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "read", "arguments": '{"path": "a.py"}'}}]}
    c = classify(req(user(QUESTION), call, last, max_tokens=100, reasoning_effort="low"), S)
    assert c.label == COMPLEX and "agent loop mid-task" in c.reason
    answered = req(user(QUESTION), {"role": "assistant", "content": "Use reversed()."}, user("And for tuples?"),
                   max_tokens=100, reasoning_effort="low")
    assert classify(answered, S).label == SIMPLE  # the same conversation, not mid-task


def test_prompt_tokens_beyond_a_small_models_context_are_complex():
    assert classify(BASE, S, prompt_tokens=50_000).label == COMPLEX
    assert "long context" in classify(BASE, S, prompt_tokens=50_000).reason
    assert classify(BASE, S, prompt_tokens=300).label == SIMPLE
    assert classify(BASE, S, prompt_tokens=300).reason.startswith("simple: 300 tokens")


@pytest.mark.parametrize("n, size", [(5000, 100), (40, 4000)], ids=["many short messages", "fewer long ones"])
def test_a_big_transcript_is_long_context_though_only_its_end_is_read(n, size):
    turns = [user("x " * (size // 2)) if i % 2 == 0 else {"role": "assistant", "content": "y " * (size // 2)}
             for i in range(n)]
    c = classify(req(*turns, user(QUESTION)), S)
    assert c.label == COMPLEX and "long context" in c.reason
    tokens = int(c.reason.split(" tokens")[0].rsplit(" ", 1)[-1])
    assert n * size / 4 < tokens < n * size  # the size of the whole, estimated from the part read


TITLE_SYSTEM = "You are a title generator. You output ONLY a thread title. Nothing else."
COMMIT_SYSTEM = "You are an expert software engineer that writes one-line Git commit messages from diffs."
SUMMARY_SYSTEM = "*Briefly* summarize this partial conversation about programming."
DIFF = "diff --git a/app.py b/app.py\n--- a/app.py\n+++ b/app.py\n@@ -1 +1 @@\n-x = 1\n+x = 2\n"
STEPS = [m for i in range(8) for m in (
    {"role": "assistant", "tool_calls": [{"id": f"c{i}", "type": "function",
                                          "function": {"name": "read", "arguments": '{"path": "a.py"}'}}]},
    {"role": "tool", "tool_call_id": f"c{i}", "content": "def f(x):\n    return x + 1\n" * 80})]
BACKGROUND = [
    ("title, system prompt only", req({"role": "system", "content": TITLE_SYSTEM}, user(TASK)), "title"),
    ("title, in the user message", req(user("Generate a title for this conversation:\n" + TASK)), "title"),
    ("commit message, system prompt", req({"role": "system", "content": COMMIT_SYSTEM}, user("# Diffs:\n" + DIFF)),
     "commit"),
    ("commit message, user message", req(user("Write a commit message for this diff:\n```diff\n" + DIFF + "```")),
     "commit"),
    ("summary, system prompt", req({"role": "system", "content": SUMMARY_SYSTEM}, user("# USER\n" + TASK)), "summary"),
    ("compaction, last user message", {**req(user(TASK), {"role": "assistant", "content": "Done."},
                                             user("Provide a detailed summary of our conversation above.")),
                                       "tools": TOOLS}, "summary"),
    ("compaction deep in an agent session", {**req(user(TASK), *STEPS, {"role": "assistant", "content": "Done."},
                                                   user("Summarize the conversation so far for a new session.")),
                                             "tools": TOOLS}, "summary"),
]


@pytest.mark.parametrize("what, payload, kind", BACKGROUND, ids=[b[0] for b in BACKGROUND])
def test_background_jobs_are_simple_even_about_complex_work(what, payload, kind):
    c = classify(payload, S)
    assert c.label == SIMPLE, c
    assert kind in c.reason


def test_a_background_job_over_a_long_context_goes_to_the_cloud():
    summary = req({"role": "system", "content": SUMMARY_SYSTEM}, user("# USER\n" + TASK))
    assert classify(summary, S, prompt_tokens=50_000).label == COMPLEX


@pytest.mark.parametrize("text", [
    "Implement conversation summarization for our chatbot, with tests and a migration.",  # "our chatbot" is no chat
    "Add a title to the chat page header and refactor the layout.",  # no verb of making a title
])
def test_tasks_that_mention_background_words_stay_complex(text):
    assert classify(req(user(text)), S).label == COMPLEX


def test_a_long_agent_system_prompt_that_mentions_commits_is_not_a_commit_job():
    system = "You are an agent. " + "Rules. " * 1200 + "When asked, write a commit message."
    c = classify(req({"role": "system", "content": system}, user(TASK)), S)
    assert c.label == COMPLEX and "commit" not in c.reason


def test_a_go_ahead_is_read_with_the_task_it_answers():
    plan = {"role": "assistant", "content": "Plan: 1. new module 2. move callers 3. remove the old path. Shall I?"}
    go = req(user(TASK), plan, user("yes, go ahead"))
    thanks = req(user(QUESTION), {"role": "assistant", "content": "Use reversed(xs)."}, user("thanks!"))
    assert classify(go, S).label == COMPLEX
    assert classify(thanks, S).label == SIMPLE


def test_cline_environment_details_are_not_read_as_the_task():
    env = "<environment_details>\n# Files\nsecurity/migrate_db.py\nrefactor_notes.md\n</environment_details>"
    parts = [{"type": "text", "text": f"<task>\n{QUESTION}\n</task>"}, {"type": "text", "text": env}]
    c = classify(req(user(parts)), S)
    assert "keywords" not in c.reason


@pytest.mark.parametrize("text, found", [
    ("Fix the bug in the parser", True),
    ("Start the debugger", True),  # "debug" starts the word
    ("Why is my cache slow? Let's discuss the debugging.", True),
    ("Rename the ladybug sprite", False),  # "bug" inside a word
    ("Remove the debounce", False),
])
def test_keywords_match_at_the_start_of_a_word(text, found):
    c = classify(req(user(text)), S)
    assert any(name.startswith("keywords") for name, _ in c.signals) is found


def test_complexity_keywords_are_a_setting():
    custom = replace(S, keywords=("frobnicate",))
    text = req(user("Please frobnicate the widget"))
    assert classify(text, custom).score > classify(text, S).score
    assert "keywords: frobnicate" in classify(text, custom).reason
    assert classify(req(user("How do I debug a list?")), custom).score < classify(req(user("How do I debug a list?")),
                                                                                 S).score


def test_the_threshold_is_a_setting():
    c = classify(BASE, S)
    assert classify(BASE, replace(S, simple_threshold=c.score)).label == COMPLEX  # not under: complex
    assert classify(BASE, replace(S, simple_threshold=min(1.0, c.score + 0.01))).label == SIMPLE
    assert classify(req(user(TASK)), replace(S, simple_threshold=1.0)).label == SIMPLE
    assert classify(BASE, replace(S, simple_threshold=0.0)).label == COMPLEX


@pytest.mark.parametrize("raw, expected", [
    ("", DEFAULT_KEYWORDS),
    (" , ,", DEFAULT_KEYWORDS),
    ("Refactor, Race  Condition ,refactor", ("refactor", "race condition")),
    ("kubernetes", ("kubernetes",)),
])
def test_parse_keywords(raw, expected):
    assert parse_keywords(raw) == expected


def test_settings_from_the_environment():
    assert ClassifierSettings.from_env(_Reader({})) == ClassifierSettings()
    s = ClassifierSettings.from_env(_Reader({"SIMPLE_TASK_THRESHOLD": "0.3", "COMPLEXITY_KEYWORDS": "k8s, helm"}))
    assert s == ClassifierSettings(simple_threshold=0.3, keywords=("k8s", "helm"))
    for bad in ("1.5", "-0.1", "high"):
        with pytest.raises(ConfigError, match="SIMPLE_TASK_THRESHOLD"):
            ClassifierSettings.from_env(_Reader({"SIMPLE_TASK_THRESHOLD": bad}))


ODD = [
    {},
    {"messages": []},
    {"messages": None},
    {"messages": "hello"},
    {"messages": [None, 3, "x", []]},
    {"messages": [{"role": "user"}]},
    {"messages": [{"role": "user", "content": None}]},
    {"messages": [{"role": "user", "content": ""}]},
    {"messages": [{"role": "user", "content": 42}]},
    {"messages": [{"role": "user", "content": [None, 1, {"type": "text"}, {"text": 5}, "plain", []]}]},
    {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": None}]}]},
    {"messages": [{"role": "system", "content": ["a", {"text": None}]}]},
    {"messages": [{"role": "assistant", "content": "only the assistant"}]},
    {"messages": [{"role": "tool", "content": {"a": 1}}]},
    {"messages": [{"role": "assistant", "tool_calls": "nope"}, {"role": "assistant", "tool_calls": [None, {}]}]},
    {"messages": [{"role": "assistant", "tool_calls": [{"function": {"arguments": {"a": 1}}}]}]},
    {"messages": [{"role": 7, "content": "x"}], "tools": "many", "functions": {"a": 1}},
    {"messages": [user("x")], "reasoning_effort": 3, "thinking": "on", "chat_template_kwargs": [],
     "max_tokens": "100", "max_completion_tokens": True, "reasoning": "high"},
    {"messages": [user("x")], "thinking": {"type": None}, "chat_template_kwargs": {"enable_thinking": "yes"}},
    {"messages": [user("x")] * 5000},
]


@pytest.mark.parametrize("payload", ODD)
def test_odd_payloads_never_raise(payload):
    c = classify(payload, S)
    assert c.label in (SIMPLE, COMPLEX) and 0 <= c.score <= 1 and c.reason


@pytest.mark.parametrize("payload", [None, [], "text", 3])
def test_a_payload_that_is_not_an_object_never_raises(payload):
    assert classify(payload, S).label in (SIMPLE, COMPLEX)  # type: ignore[arg-type]


@pytest.mark.parametrize("tokens", [True, "300", -5, 3.5, None])
def test_odd_prompt_tokens_never_raise(tokens):
    assert classify(BASE, S, prompt_tokens=tokens).label in (SIMPLE, COMPLEX)  # type: ignore[arg-type]


KEYS = st.sampled_from(["role", "content", "text", "type", "tool_calls", "function", "arguments", "messages",
                        "tools", "thinking", "reasoning_effort", "max_tokens", "image_url", "x"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=5),
    max_leaves=30,
)
messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "tool", "x"])},
                                          optional={"content": json_values, "tool_calls": json_values}), max_size=8)


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({"messages": messages}, optional={
    "tools": json_values, "reasoning_effort": json_values, "thinking": json_values, "max_tokens": json_values,
    "chat_template_kwargs": json_values}))
def test_hostile_payloads_never_raise_and_reasons_fit_a_header(payload):
    c = classify(payload, S)
    assert c.label in (SIMPLE, COMPLEX) and 0 <= c.score <= 1
    assert c.reason.isascii() and c.reason.isprintable() and len(c.reason) < 200


def test_reason_is_printable_ascii_whatever_the_keywords():
    custom = replace(S, keywords=("réfactor\x01",))
    c = classify(req(user("Please réfactor\x01 this")), custom)
    assert "keywords" in c.reason and c.reason.isascii() and c.reason.isprintable()


def test_the_payload_is_not_changed():
    payload = req({"role": "system", "content": CLINE_SYSTEM}, user(TASK), tools=TOOLS, max_tokens=100)
    before = json.dumps(payload, sort_keys=True)
    classify(payload, S)
    assert json.dumps(payload, sort_keys=True) == before


# --- the labelled set -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def examples():
    return dataset.load()


def test_the_labelled_set_has_the_shapes_asked_for(examples):
    assert len(examples) >= 200
    assert {e.client for e in examples} >= {"cline", "opencode", "aider"}
    assert {e.label for e in examples} == {SIMPLE, COMPLEX}
    assert {e.kind for e in examples} >= {"title", "commit", "summary", "loop", "question", "task"}
    assert all(e.rationale for e in examples)
    assert sum(e.split == "holdout" for e in examples) >= 0.25 * len(examples)


def test_the_classifier_meets_the_targets_on_both_splits(examples):
    reports = evaluate.evaluate(examples, S)
    for name in ("dev", "holdout", "all"):
        r = reports[name]
        assert r.recall(COMPLEX) >= evaluate.COMPLEX_TO_CLOUD, r.table()
        assert r.recall(SIMPLE) >= evaluate.SIMPLE_TO_LOCAL, r.table()


def test_the_committed_set_is_the_generators_output(examples):
    built = make_set.build()
    with open(dataset.SET) as f:
        committed = [json.loads(line) for line in f]
    assert built == committed
