"""A small labelled set in coding agents' shapes, for bench/routing/run.py when the classifier's
set (bench/routing/dataset.py + labelled.jsonl) is not there. Each example: an id, a label
("simple" or "complex"), the chat request, and its prompt's rough token count."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TOOLS = [
    {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": {arg: {"type": "string"} for arg in args}, "required": list(args)}}}
    for name, description, args in (
        ("read", "Read a file", ("path",)), ("edit", "Replace text in a file", ("path", "old", "new")),
        ("bash", "Run a shell command", ("command",)), ("grep", "Search files", ("pattern", "path")),
    )
]
AGENT = "You are an interactive CLI agent that helps with software engineering tasks. Use the tools. " * 20

SIMPLE_ASKS = [
    "How do I list all git branches, including remote ones?", "What does `set -e` do in bash?",
    "how do i exit vim", "What is the difference between a list and a tuple in Python?",
    "Convert this to snake_case: getUserAccountId", "What port does PostgreSQL use by default?",
    "Give me the regex for a US zip code.", "What does HTTP 418 mean?", "How do I undo the last git commit?",
    "Rename the variable `x` to `count` in: for x in range(3): print(x)",
    "Write a one-line Python expression that reverses a string s.", "What is `chmod 644`?",
]
TITLES = ["fix login redirect loop", "add dark mode toggle", "why is my docker build slow",
          "parse csv with pandas", "rust borrow checker error", "set up github actions cache"]
DIFFS = ["- timeout = 30\n+ timeout = 60", "- import os\n+ import os, sys", "+ def health(): return 'ok'",
         "- retries = 1\n+ retries = 3", "- print(x)\n+ log.info(x)", "+ README: usage section"]
COMPLEX_TASKS = [
    "Refactor the payment module to use the repository pattern across the codebase and keep the tests green.",
    "Investigate the race condition in the job scheduler: two workers sometimes take the same job.",
    "Implement OAuth2 PKCE login end-to-end: backend routes, token storage, refresh, and the React screens.",
    "Our p99 latency doubled after the last release. Find the bottleneck and fix it.",
    "Migrate the ORM models from SQLAlchemy 1.3 to 2.0 style, including the async sessions.",
    "Design a rate limiter for our distributed API gateway that works across 12 replicas.",
    "Debug this segfault in the C extension; the stack trace points to the buffer release.",
    "Rewrite the parser to be incremental so it can handle 2 GB files without loading them in memory.",
]
CODE = "```python\n" + "\n".join(f"def f{i}(x):\n    return x * {i}\n" for i in range(60)) + "```"


@dataclass(frozen=True)
class Example:
    id: str
    label: str
    payload: dict[str, Any]
    tokens: int


def _ex(id: str, label: str, messages: list[dict[str, Any]], tools: list | None = None) -> Example:
    payload: dict[str, Any] = {"model": "glm-4.7", "messages": messages}
    if tools:
        payload["tools"] = tools
    chars = sum(len(m.get("content") or "") for m in messages) + (len(str(tools)) if tools else 0)
    return Example(id, label, payload, max(1, chars // 4))


def load() -> list[Example]:
    out: list[Example] = []
    for i, q in enumerate(SIMPLE_ASKS):
        out.append(_ex(f"ask-{i}", "simple", [{"role": "user", "content": q}]))
    for i, t in enumerate(TITLES):
        out.append(_ex(f"title-{i}", "simple", [
            {"role": "system", "content": "You are a title generator. You output ONLY a thread title."},
            {"role": "user", "content": f"Generate a title for this conversation:\n{t}"}]))
    for i, d in enumerate(DIFFS):
        out.append(_ex(f"commit-{i}", "simple", [
            {"role": "system", "content": "You write concise, one-line Git commit messages."},
            {"role": "user", "content": f"Write the commit message for:\n{d}"}]))
    for i, task in enumerate(COMPLEX_TASKS):
        out.append(_ex(f"task-{i}", "complex", [{"role": "system", "content": AGENT},
                                                {"role": "user", "content": task}], TOOLS))
        out.append(_ex(f"loop-{i}", "complex", [
            {"role": "system", "content": AGENT}, {"role": "user", "content": task},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": f"c{i}", "type": "function",
                 "function": {"name": "grep", "arguments": '{"pattern":"x","path":"."}'}}]},
            {"role": "tool", "tool_call_id": f"c{i}", "content": CODE}], TOOLS))
        out.append(_ex(f"review-{i}", "complex", [{"role": "user", "content": f"{task}\n\n{CODE}"}]))
    return out
