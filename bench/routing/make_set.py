#!/usr/bin/env python3
"""Generate the classifier's labelled set: coding-agent requests as Cline, OpenCode and Aider send them.

    python bench/routing/make_set.py        # writes bench/routing/labelled.jsonl and prompts.json

Seeded, so the output is the same on every run (the committed files are this script's output).
Each line of labelled.jsonl is one request: ``id``, ``client``, ``kind``, ``label`` (simple or
complex), ``rationale`` (one line), ``split`` (dev: used to tune the classifier; holdout: only to
report), ``system`` and ``tools`` (names in prompts.json, or null) and ``request`` (the chat request
without its system message and tool definitions, which the loader, dataset.py, puts back).

How requests are labelled (the task's nature, not the classifier's signals):
- simple: the background jobs of coding agents (conversation titles, commit messages, summaries
  and compaction) on prompts under 32K tokens; short factual questions; explaining a small
  snippet; a tiny self-contained function; a trivial one-line edit, first turn or mid-task;
  an acknowledgement after finished work.
- complex: multi-step or open-ended coding work (features, refactors, debugging, migrations,
  performance, security), first turn or mid-task; design and reasoning questions; a "go ahead"
  that continues complex work; any prompt over 32K tokens (beyond what a small local model reads
  reliably); image inputs (the local model reads text only); requests for high reasoning effort.

The split: every pool of instructions and background phrasings in content.py is cut at 70%; items
past the cut only appear in held-out requests, so no instruction is in both splits.
"""
from __future__ import annotations

import difflib
import json
import random
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))
from bench.routing import content as C  # noqa: E402
from bench.routing.dataset import assemble  # noqa: E402
from bench.routing.prompts import SYSTEMS, TOOLSETS  # noqa: E402
from gateway.tokens import estimate_prompt_tokens  # noqa: E402

SEED = 13
HOLDOUT_FROM = 0.7
LONG = 32_000  # tokens: a prompt beyond this is labelled complex
MODEL = "glm-4.7"

Msg = dict[str, Any]


class Pool:
    """A list of instructions, each with its split (the last 30% are held out)."""

    def __init__(self, items: list[str]) -> None:
        self.items = items
        self.cut = round(len(items) * HOLDOUT_FROM)

    def pick(self, rng: random.Random, split: str) -> str:
        part = self.items[: self.cut] if split == "dev" else self.items[self.cut:]
        return rng.choice(part)


P = {name: Pool(getattr(C, name)) for name in (
    "QUESTIONS", "TRIVIAL_EDITS", "EXPLAIN", "SMALL_FUNCS", "ACKS", "COMPLEX_KW", "COMPLEX_PLAIN",
    "HARD_QUESTIONS", "CONTINUES", "TITLE_LEADS", "COMMIT_LEADS", "SUMMARY_ASKS")}


def fill(rng: random.Random, text: str) -> tuple[str, str]:
    """Put a real file (and one of its functions) into an instruction; returns (text, file)."""
    path = rng.choice(sorted(C.FILES))
    return text.replace("{file}", path).replace("{func}", C.FUNCS[path]), path


# --- client shapes ----------------------------------------------------------------------------------

def cline_env(rng: random.Random, first: bool, path: str | None = None) -> str:
    visible = path or rng.choice(sorted(C.FILES))
    parts = ["<environment_details>", "# VSCode Visible Files", visible, "", "# VSCode Open Tabs",
             ", ".join(rng.sample(sorted(C.FILES), 3)), "", "# Current Time",
             f"3/3/2026, {rng.randint(8, 19)}:{rng.randint(10, 59)}:00 (Europe/Berlin, UTC+1:00)", ""]
    if first:
        parts += ["# Current Working Directory (/home/dev/project) Files", C.PROJECT_TREE, ""]
    parts += ["# Context Window Usage", f"{rng.randint(9, 90) * 1000:,} / 200K tokens used", "",
              "# Current Mode", "ACT MODE", "</environment_details>"]
    return "\n".join(parts)


def cline_step(rng: random.Random) -> tuple[str, str, str]:
    """One tool use in Cline's XML format and its result: (assistant text, tool label, result)."""
    kind = rng.choice(["read", "read", "search", "command", "list"])
    if kind == "read":
        path = rng.choice(sorted(C.FILES))
        return (f"<thinking>I need to see {path} first.</thinking>\n<read_file>\n<path>{path}</path>\n</read_file>",
                f"read_file for '{path}'", C.FILES[path])
    if kind == "search":
        return ("<search_files>\n<path>app</path>\n<regex>capture|Timeout</regex>\n"
                "<file_pattern>*.py</file_pattern>\n</search_files>",
                "search_files for 'capture|Timeout' in '*.py'", "Found 5 results.\n\n" + C.GREP_RESULT)
    if kind == "command":
        cmd, out = rng.choice([("pytest -q", C.TEST_FAILURE), ("npx tsc --noEmit", C.TSC_ERRORS),
                               ("git status", C.GIT_STATUS), ("npm run build", C.COMMAND_OK)])
        return (f"<execute_command>\n<command>{cmd}</command>\n<requires_approval>false</requires_approval>\n"
                "</execute_command>", f"execute_command for '{cmd}'", "Command executed.\nOutput:\n" + out)
    return ("<list_files>\n<path>.</path>\n<recursive>true</recursive>\n</list_files>", "list_files for '.'",
            C.PROJECT_TREE)


def cline(rng: random.Random, task: str, steps: int, path: str | None = None) -> list[Msg]:
    msgs: list[Msg] = [{"role": "user", "content": [
        {"type": "text", "text": f"<task>\n{task}\n</task>"}, {"type": "text", "text": cline_env(rng, True, path)}]}]
    for _ in range(steps):
        msgs += cline_turn(rng, path)
    return msgs


def cline_turn(rng: random.Random, path: str | None = None) -> list[Msg]:
    call, label, result = cline_step(rng)
    return [{"role": "assistant", "content": call}, {"role": "user", "content": [
        {"type": "text", "text": f"[{label}] Result:"}, {"type": "text", "text": result},
        {"type": "text", "text": cline_env(rng, False, path)}]}]


def opencode_step(rng: random.Random, i: int) -> list[Msg]:
    kind = rng.choice(["read", "read", "grep", "bash", "glob", "todo"])
    args: dict[str, Any]
    if kind == "read":
        path = rng.choice(sorted(C.FILES))
        name, args = "read", {"filePath": f"/home/dev/project/{path}"}
        out = "\n".join(f"{n:05d}| {line}" for n, line in enumerate(C.FILES[path].splitlines(), 1))
    elif kind == "grep":
        name, args, out = "grep", {"pattern": "capture|Timeout", "include": "*.py"}, C.GREP_RESULT
    elif kind == "bash":
        cmd, out = rng.choice([("pytest -q", C.TEST_FAILURE), ("npx tsc --noEmit", C.TSC_ERRORS),
                               ("git status", C.GIT_STATUS)])
        name, args = "bash", {"command": cmd, "description": "Run the checks"}
    elif kind == "glob":
        name, args, out = "glob", {"pattern": "**/*.py"}, "\n".join(
            "/home/dev/project/" + p for p in C.PROJECT_TREE.splitlines() if p.endswith(".py"))
    else:
        name, args = "todowrite", {"todos": [
            {"id": "1", "content": "Read the code involved", "status": "completed", "priority": "high"},
            {"id": "2", "content": "Make the change", "status": "in_progress", "priority": "high"},
            {"id": "3", "content": "Run the tests", "status": "pending", "priority": "medium"}]}
        out = json.dumps(args["todos"], indent=2)
    call_id = f"call_{i:02d}_{rng.randrange(16**8):08x}"
    return [
        {"role": "assistant", "content": rng.choice(["", "Let me look at the code.", None]),
         "tool_calls": [{"id": call_id, "type": "function",
                         "function": {"name": name, "arguments": json.dumps(args)}}]},
        {"role": "tool", "tool_call_id": call_id, "content": out},
    ]


def opencode(rng: random.Random, task: str, steps: int) -> list[Msg]:
    msgs: list[Msg] = [{"role": "user", "content": task}]
    for i in range(steps):
        msgs += opencode_step(rng, i)
    return msgs


def aider_files(paths: list[str]) -> list[Msg]:
    files = "\n\n".join(f"{p}\n```\n{C.FILES[p]}```" for p in paths)
    return [
        {"role": "user", "content": "I have *added these files to the chat* so you can go ahead and edit them.\n\n"
                                    "*Trust this message as the true contents of these files!*\nAny other messages in "
                                    "the chat may contain outdated versions of the files' contents.\n\n" + files},
        {"role": "assistant", "content": "Ok, any changes I propose will be to those files."},
    ]


def aider_repo_map() -> list[Msg]:
    lines = [f"{p}:\n│..." for p in C.PROJECT_TREE.splitlines() if "." in p]
    return [
        {"role": "user", "content": "Here are summaries of some files present in my git repository.\nDo not propose "
                                    "changes to these files, treat them as *read-only*.\n\n" + "\n".join(lines)},
        {"role": "assistant", "content": "Ok, I won't try and edit those files without asking first."},
    ]


def history(rng: random.Random, turns: int) -> list[Msg]:
    """Earlier, finished exchanges of a chat."""
    out: list[Msg] = []
    for _ in range(turns):
        q = P["QUESTIONS"].pick(rng, "dev")
        out += [{"role": "user", "content": q},
                {"role": "assistant", "content": "Here is how:\n\n```bash\n# ...\n```\n\nThat should do it."}]
    return out


def transcript(msgs: list[Msg]) -> str:
    """A conversation as Aider's summarizer receives it: ``# USER`` / ``# ASSISTANT`` blocks."""
    out = []
    for m in msgs:
        c = m.get("content")
        text = c if isinstance(c, str) else " ".join(p.get("text", "") for p in c or [] if isinstance(p, dict))
        out.append(f"# {m['role'].upper()}\n{text}")
    return "\n".join(out)


COMMENT = {".py": "#", ".go": "//", ".ts": "//", ".tsx": "//", ".js": "//"}


def diff(rng: random.Random, files: int) -> str:
    """A unified diff of a few plausible edits (a comment, a dropped line, a changed number) to real files."""
    out = []
    for path in rng.sample(sorted(C.FILES), files):
        old = C.FILES[path].splitlines(keepends=True)
        new = list(old)
        mark = COMMENT[Path(path).suffix]
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(1, len(new))
            choice = rng.random()
            if choice < 0.4:
                indent = new[i][: len(new[i]) - len(new[i].lstrip())]
                note = rng.choice(["keep in sync with the API", "see #142", "cheap check first"])
                new.insert(i, f"{indent}{mark} {note}\n")
            elif choice < 0.6:
                del new[i]
            else:
                new[i] = re.sub(r"\d+", lambda m: str(int(m.group()) * 2), new[i], count=1)
        body = "".join(difflib.unified_diff(old, new, f"a/{path}", f"b/{path}"))
        if body:
            out.append(f"diff --git a/{path} b/{path}\n{body}")
    return "".join(out) or diff(rng, files)


def aider_chat(rng: random.Random, task: str, exchanges: int) -> list[Msg]:
    """An Aider chat: the task, answers with SEARCH/REPLACE blocks, follow-ups."""
    msgs: list[Msg] = []
    asks = [task] + [rng.choice(["Now add a test for it.", "That broke the import in main.py, fix it.",
                                 "Also handle the empty case.", "Use the existing helper instead."])
                     for _ in range(exchanges - 1)]
    for ask in asks:
        path = rng.choice(sorted(C.FILES))
        lines = C.FILES[path].splitlines()
        i = rng.randrange(len(lines) - 3)
        chunk = "\n".join(lines[i:i + 3])
        msgs.append({"role": "user", "content": ask})
        msgs.append({"role": "assistant", "content": f"To do this we need to change `{path}`:\n\n{path}\n```\n"
                                                     f"<<<<<<< SEARCH\n{chunk}\n=======\n{chunk}\n"
                                                     f"{COMMENT[Path(path).suffix]} updated\n>>>>>>> REPLACE\n```"})
    return msgs


# --- the set -------------------------------------------------------------------------------------------

Record = dict[str, Any]


def record(kind: str, client: str, label: str, rationale: str, split: str, messages: list[Msg],
           system: str | None, tools: str | None = None, **extra: Any) -> Record:
    request: dict[str, Any] = {"model": MODEL, "messages": messages, **extra}
    r: Record = {"kind": kind, "client": client, "label": label, "rationale": rationale, "split": split,
         "system": system, "tools": tools, "request": request}
    r["tokens"] = tokens(r)
    if (r["tokens"] > LONG) != (kind == "long" or "long context" in rationale):
        raise AssertionError(f"{kind}: {r['tokens']} tokens contradicts its label's rationale")
    return r


def tokens(r: Record) -> int:
    """The whole prompt's tokens (cl100k), system prompt and tool definitions included."""
    return estimate_prompt_tokens(assemble(r, {"systems": SYSTEMS, "tools": TOOLSETS}))


def grow(rng: random.Random, msgs: list[Msg], step: Callable[[int], list[Msg]], tail: list[Msg],
         system: str | None, tools: str | None) -> list[Msg]:
    """Add agent steps until the prompt is comfortably over LONG tokens."""
    i = 0
    while tokens({"system": system, "tools": tools, "request": {"messages": msgs + tail}}) < LONG * 1.1:
        msgs += step(i)
        i += 1
    return msgs + tail


def stream_opts(client: str) -> dict[str, Any]:
    opts: dict[str, dict[str, Any]] = {
        "cline": {"stream": True, "temperature": 0}, "opencode": {"stream": True, "max_tokens": 32000},
        "aider": {"stream": True, "temperature": 0}, "generic": {"stream": False}}
    return opts[client]


def first_turn(rng: random.Random, client: str, text: str, path: str | None = None) -> tuple[list[Msg], str | None,
                                                                                               str | None]:
    """An instruction as the first turn of a client's session: (messages, system, tools)."""
    if client == "cline":
        return cline(rng, text, 0, path), "cline", None
    if client == "opencode":
        return opencode(rng, text, 0), "opencode", "opencode"
    if client == "aider":
        files = [path] if path else []
        return aider_repo_map() + (aider_files(files) if files else []) + [{"role": "user", "content": text}], \
            "aider_edit", None
    return [{"role": "user", "content": text}], "generic", None


def gen_questions(rng: random.Random, split: str, n: int, pool: str, kind: str, rationale: str) -> list[Record]:
    out = []
    for _ in range(n):
        text, path = fill(rng, P[pool].pick(rng, split))
        client = rng.choice(["generic", "generic", "aider_ask", "opencode", "cline"])
        if client == "aider_ask":
            msgs = (aider_files([path]) if rng.random() < 0.5 else []) + [{"role": "user", "content": text}]
            out.append(record(kind, "aider", "simple", rationale, split, msgs, "aider_ask",
                              **stream_opts("aider")))
            continue
        msgs, system, tools = first_turn(rng, client, text)
        extra = stream_opts(client)
        if client == "generic" and rng.random() < 0.3:
            extra = {**extra, **rng.choice([{"reasoning_effort": "low"}, {"max_tokens": 512},
                                            {"chat_template_kwargs": {"enable_thinking": False}}])}
        out.append(record(kind, client, "simple", rationale, split, msgs, system, tools, **extra))
    return out


def gen_trivial(rng: random.Random, split: str, n: int, mid_task: bool) -> list[Record]:
    out = []
    for _ in range(n):
        text, path = fill(rng, P["TRIVIAL_EDITS"].pick(rng, split))
        client = rng.choice(["cline", "opencode", "aider", "aider"] if not mid_task else ["cline", "opencode"])
        if mid_task:
            if client == "cline":
                msgs = cline(rng, text, 0, path) + [
                    {"role": "assistant", "content": f"<read_file>\n<path>{path}</path>\n</read_file>"},
                    {"role": "user", "content": [{"type": "text", "text": f"[read_file for '{path}'] Result:"},
                                                 {"type": "text", "text": C.FILES[path]}]}]
                system: str | None = "cline"
                tools: str | None = None
            else:
                msgs = opencode(rng, text, 1)
                system, tools = "opencode", "opencode"
            out.append(record("trivial-edit-loop", client, "simple",
                              "trivial edit mid-task: the next step is one small replace", split, msgs, system, tools,
                              **stream_opts(client)))
            continue
        msgs, sys_name, tool_name = first_turn(rng, client, text, path)
        out.append(record("trivial-edit", client, "simple", "a one-line edit with the file at hand", split, msgs,
                          sys_name, tool_name, **stream_opts(client)))
    return out


def gen_acks(rng: random.Random, split: str, n: int) -> list[Record]:
    out = []
    for _ in range(n):
        client = rng.choice(["generic", "aider", "opencode"])
        msgs = history(rng, rng.randint(1, 2)) + [{"role": "user", "content": P["ACKS"].pick(rng, split)}]
        system, tools = {"generic": ("generic", None), "aider": ("aider_ask", None),
                         "opencode": ("opencode", "opencode")}[client]
        out.append(record("ack", client, "simple", "an acknowledgement after finished work", split, msgs, system,
                          tools, **stream_opts(client)))
    return out


def gen_titles(rng: random.Random, split: str, n: int) -> list[Record]:
    out = []
    pools = ["QUESTIONS", "COMPLEX_KW", "COMPLEX_PLAIN", "TRIVIAL_EDITS", "HARD_QUESTIONS"]
    for _ in range(n):
        first, _path = fill(rng, P[rng.choice(pools)].pick(rng, split))
        lead = P["TITLE_LEADS"].pick(rng, split)
        extra: dict[str, Any] = rng.choice([{}, {"max_tokens": 80}, {"max_tokens": 1500}, {"temperature": 0.5}])
        out.append(record("title", "opencode", "simple", "title generation: a few words from one message", split,
                          [{"role": "user", "content": lead + first}], "opencode_title", stream=False, **extra))
    return out


def gen_commits(rng: random.Random, split: str, n: int) -> list[Record]:
    out = []
    for _ in range(n):
        d = diff(rng, rng.choice([1, 1, 2, 3]))
        lead = P["COMMIT_LEADS"].pick(rng, split)
        if rng.random() < 0.8:
            out.append(record("commit", "aider", "simple", "commit message: one line from a diff", split,
                              [{"role": "user", "content": lead + d}], "aider_commit", stream=False))
        else:
            ask = "Write a commit message for this diff:" if split == "dev" else "Commit message for these changes?"
            out.append(record("commit", "generic", "simple", "commit message: one line from a diff", split,
                              [{"role": "user", "content": f"{ask}\n\n```diff\n{d}```"}], "generic", stream=False))
    return out


def gen_summaries(rng: random.Random, split: str, n: int, long: bool = False) -> list[Record]:
    out = []
    for _ in range(n):
        task, _ = fill(rng, P[rng.choice(["COMPLEX_KW", "COMPLEX_PLAIN"])].pick(rng, split))
        steps = rng.randint(2, 8)
        label, why = ("complex", "summary of a conversation over 32K tokens: long context") if long else \
            ("simple", "summary of a short conversation")
        client = rng.choice(["opencode", "cline"] if long else ["aider", "opencode", "cline"])
        if client == "aider":
            conv = aider_chat(rng, task, steps)
            out.append(record("summary", "aider", label, why, split, [{"role": "user", "content": transcript(conv)}],
                              "aider_summary", stream=False))
        elif client == "opencode":
            tail: list[Msg] = [{"role": "assistant", "content": "Done: the tests pass."},
                    {"role": "user", "content": P["SUMMARY_ASKS"].pick(rng, split)}]
            msgs = grow(rng, opencode(rng, task, 0), lambda i: opencode_step(rng, i), tail, "opencode", "opencode") \
                if long else opencode(rng, task, steps) + tail
            out.append(record("summary", "opencode", label, why, split, msgs, "opencode", "opencode",
                              **stream_opts("opencode")))
        else:
            tail = [{"role": "assistant", "content": "<thinking>Continuing.</thinking>"},
                    {"role": "user", "content": [{"type": "text", "text": C.CLINE_CONDENSE}]}]
            msgs = grow(rng, cline(rng, task, 0), lambda i: cline_turn(rng), tail, "cline", None) if long \
                else cline(rng, task, steps) + tail
            out.append(record("summary", "cline", label, why, split, msgs, "cline", **stream_opts("cline")))
    return out


def gen_complex_first(rng: random.Random, split: str, n: int, pool: str) -> list[Record]:
    out = []
    for _ in range(n):
        text, path = fill(rng, P[pool].pick(rng, split))
        client = rng.choice(["cline", "opencode", "aider", "generic"])
        msgs, system, tools = first_turn(rng, client, text, path if client == "aider" else None)
        extra = stream_opts(client)
        if rng.random() < 0.15:
            extra = {**extra, "chat_template_kwargs": {"enable_thinking": True}}
        out.append(record("task", client, "complex", "multi-step coding work", split, msgs, system, tools, **extra))
    return out


def gen_loops(rng: random.Random, split: str, n: int) -> list[Record]:
    out = []
    for _ in range(n):
        text, _ = fill(rng, P[rng.choice(["COMPLEX_KW", "COMPLEX_PLAIN"])].pick(rng, split))
        steps = rng.randint(1, 7)
        if rng.random() < 0.5:
            out.append(record("loop", "cline", "complex", "agent loop mid-task on multi-step work", split,
                              cline(rng, text, steps), "cline", **stream_opts("cline")))
        else:
            out.append(record("loop", "opencode", "complex", "agent loop mid-task on multi-step work", split,
                              opencode(rng, text, steps), "opencode", "opencode", **stream_opts("opencode")))
    return out


def gen_continues(rng: random.Random, split: str, n: int) -> list[Record]:
    out = []
    for _ in range(n):
        text, _ = fill(rng, P[rng.choice(["COMPLEX_KW", "COMPLEX_PLAIN"])].pick(rng, split))
        plan = ("Here's the plan:\n1. Add the new module and its tests.\n2. Move the callers over one by one.\n"
                "3. Remove the old code path.\n\nShall I start?")
        go = P["CONTINUES"].pick(rng, split)
        client = rng.choice(["opencode", "aider", "generic"])
        system, tools = {"opencode": ("opencode", "opencode"), "aider": ("aider_edit", None),
                         "generic": ("generic", None)}[client]
        msgs = [{"role": "user", "content": text}, {"role": "assistant", "content": plan},
                {"role": "user", "content": go}]
        out.append(record("continue", client, "complex", "a go-ahead that continues multi-step work", split, msgs,
                          system, tools, **stream_opts(client)))
    return out


def gen_aider_edits(rng: random.Random, split: str, n: int) -> list[Record]:
    out = []
    for _ in range(n):
        text, path = fill(rng, P[rng.choice(["COMPLEX_KW", "COMPLEX_PLAIN"])].pick(rng, split))
        paths = sorted({path, *rng.sample(sorted(C.FILES), rng.randint(0, 2))})
        msgs = aider_repo_map() + aider_files(paths) + history(rng, rng.randint(0, 2)) + [
            {"role": "user", "content": text}]
        out.append(record("aider-edit", "aider", "complex", "multi-step change across the files in the chat", split,
                          msgs, "aider_edit", **stream_opts("aider")))
    return out


def gen_hard(rng: random.Random, split: str, n: int) -> list[Record]:
    out = []
    for _ in range(n):
        text = P["HARD_QUESTIONS"].pick(rng, split)
        extra: dict[str, Any] = rng.choice([{}, {}, {"reasoning_effort": "high"}, {"thinking": {"type": "enabled"}}])
        client = rng.choice(["generic", "generic", "opencode", "aider_ask"])
        if client == "aider_ask":
            out.append(record("hard-question", "aider", "complex", "design or reasoning question", split,
                              [{"role": "user", "content": text}], "aider_ask", **stream_opts("aider"), **extra))
            continue
        msgs, system, tools = first_turn(rng, client, text)
        out.append(record("hard-question", client, "complex", "design or reasoning question", split, msgs, system,
                          tools, **stream_opts(client), **extra))
    return out


def gen_effort(rng: random.Random, split: str, n: int) -> list[Record]:
    """Short asks sent with high reasoning effort: the client wants the strong model."""
    out = []
    for _ in range(n):
        text, _ = fill(rng, P[rng.choice(["QUESTIONS", "EXPLAIN"])].pick(rng, split))
        out.append(record("effort", "generic", "complex", "the client asked for high reasoning effort", split,
                          [{"role": "user", "content": text}], "generic", reasoning_effort="high"))
    return out


def gen_images(rng: random.Random, split: str, n: int) -> list[Record]:
    out = []
    asks = ["Here's a screenshot of the broken layout. Fix the CSS.", "What's wrong in this screenshot?",
            "Make the page look like this mockup.", "Why is this chart empty?"]
    for _ in range(n):
        ask = rng.choice(asks[:3]) if split == "dev" else asks[3]
        parts = [{"type": "text", "text": ask},
                 {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUg=="}}]
        client = rng.choice(["cline", "generic"])
        if client == "cline":
            msgs: list[Msg] = [{"role": "user", "content": [{"type": "text", "text": f"<task>\n{ask}\n</task>"},
                                                            parts[1], {"type": "text", "text": cline_env(rng, True)}]}]
            out.append(record("image", "cline", "complex", "image input: the local model reads text only", split,
                              msgs, "cline", **stream_opts("cline")))
        else:
            out.append(record("image", "generic", "complex", "image input: the local model reads text only", split,
                              [{"role": "user", "content": parts}], "generic"))
    return out


def gen_long(rng: random.Random, split: str, n: int) -> list[Record]:
    """A simple-sounding ask on a prompt far beyond 32K tokens."""
    out = []
    for _ in range(n):
        text, _ = fill(rng, P["EXPLAIN"].pick(rng, split))
        tail = [{"role": "assistant", "content": "Done."}, {"role": "user", "content": text}]
        msgs = grow(rng, opencode(rng, P["COMPLEX_PLAIN"].pick(rng, split), 0), lambda i: opencode_step(rng, i), tail,
                    "opencode", "opencode")
        out.append(record("long", "opencode", "complex", "prompt over 32K tokens: long context", split, msgs,
                          "opencode", "opencode", **stream_opts("opencode")))
    return out


def gen_adversarial(rng: random.Random, split: str, n: int) -> list[Record]:
    """Hard cases written after tuning, held out only (n is ignored: each appears once)."""
    if split != "holdout":
        return []
    out = []
    for client, label, text, why in C.ADVERSARIAL:
        path = "app/services/orders.py"
        msgs, system, tools = first_turn(rng, client, text, path if client == "aider" else None)
        out.append(record("adversarial", client, label, why, split, msgs, system, tools, **stream_opts(client)))
    return out


# (generator, count in dev, count in holdout)
PLAN: list[tuple[Callable[..., list[Record]], tuple[Any, ...], int, int]] = [
    (gen_questions, ("QUESTIONS", "question", "a short factual question"), 30, 14),
    (gen_questions, ("EXPLAIN", "explain", "explaining a small snippet"), 12, 6),
    (gen_questions, ("SMALL_FUNCS", "small-function", "a tiny self-contained function"), 12, 6),
    (gen_trivial, (False,), 14, 6),
    (gen_trivial, (True,), 4, 2),
    (gen_acks, (), 7, 3),
    (gen_titles, (), 26, 12),
    (gen_commits, (), 24, 11),
    (gen_summaries, (), 18, 8),
    (gen_summaries, (True,), 2, 1),
    (gen_complex_first, ("COMPLEX_KW",), 28, 12),
    (gen_complex_first, ("COMPLEX_PLAIN",), 22, 10),
    (gen_loops, (), 36, 16),
    (gen_continues, (), 7, 3),
    (gen_aider_edits, (), 14, 6),
    (gen_hard, (), 9, 4),
    (gen_effort, (), 3, 2),
    (gen_images, (), 4, 2),
    (gen_long, (), 2, 1),
    (gen_adversarial, (), 0, 1),
]


def build(seed: int = SEED) -> list[Record]:
    rng = random.Random(seed)
    records: list[Record] = []
    for gen, args, dev, holdout in PLAN:
        for split, n in (("dev", dev), ("holdout", holdout)):
            records += gen(rng, split, n, *args)
    counts: dict[str, int] = {}
    for r in records:
        counts[r["kind"]] = counts.get(r["kind"], 0) + 1
        r["id"] = f"{r['kind']}-{counts[r['kind']]:03d}"
    return [{"id": r.pop("id"), **r} for r in records]


def main() -> None:
    records = build()
    with open(HERE / "labelled.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n")
    (HERE / "prompts.json").write_text(json.dumps({"systems": SYSTEMS, "tools": TOOLSETS}, indent=1) + "\n")
    simple = sum(r["label"] == "simple" for r in records)
    holdout = sum(r["split"] == "holdout" for r in records)
    print(f"{len(records)} requests ({simple} simple, {len(records) - simple} complex; {holdout} held out)")


if __name__ == "__main__":
    main()
