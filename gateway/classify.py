"""How complex a chat request is: the signal smart routing uses to send simple work to the local model.

``classify(payload, settings, prompt_tokens)`` is a pure function of the parsed request. It adds up
signals in log-odds (a weight per signal, below), squashes the sum to a score in 0..1 (higher =
more complex) and labels the request "simple" when the score is under ``SIMPLE_TASK_THRESHOLD``.
Sending a complex task to the small model is the costly mistake, so the bias and the default
threshold lean towards "complex": a request is simple only when something says so.

Signals (the weights and their reasons are beside each constant):
- size: the conversation's characters (the system prompt aside), and a decisive push when the whole
  prompt (``prompt_tokens``, or characters / 3) is beyond what a small model reads reliably;
- tools offered (``tools``/``functions``) and their count, a system prompt that teaches an XML tool
  protocol (Cline) or an edit format (Aider's SEARCH/REPLACE blocks);
- the last message is a tool result (an agent loop mid-task), native or in Cline's
  ``[tool for 'x'] Result:`` shape;
- the instruction (the latest user message that is not a tool result; a short reply to the
  assistant's question is read with the instruction before it): complexity keywords
  (``COMPLEXITY_KEYWORDS``), code blocks, its length in words and clauses, whether it asks for a
  change ("Add ...", "Port ...") or is a short question;
- conversation depth; ``reasoning_effort``, ``thinking``, ``chat_template_kwargs.enable_thinking``;
  ``max_tokens``; image inputs (the local model reads text only);
- the shapes of coding agents' background work, which are simple: conversation titles
  (OpenCode), commit messages (Aider), summaries and compaction (all three).

Cost: only bounded heads of texts are read (the system prompt's first characters, the
instruction's first few thousand) and at most ``MAX_WALK`` messages are visited, stopping once the
size is settled; nothing is tokenized. Measured (timeit, one core of the 2-core dev machine): 24 us
for the bench's 3.6 KB request (bench/loadgen.py), 40 us for a 500 KB agent transcript of 2,700
messages, 73 us for a 500 KB single message; 19 us median over the labelled set.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

SIMPLE = "simple"
COMPLEX = "complex"

# Chosen on the labelled set's dev split (bench/routing/evaluate.py --sweep): the highest threshold
# that keeps every dev complex request in the cloud, less a margin of 0.05.
DEFAULT_THRESHOLD = 0.45

# matched at the start of a word, so "optimi" finds optimize, optimise and optimization
DEFAULT_KEYWORDS: tuple[str, ...] = (
    "refactor", "architect", "debug", "race condition", "deadlock", "security", "vulnerab", "exploit",
    "migrat", "optimi", "performance", "concurren", "thread safe", "thread-safe", "memory leak", "segfault",
    "stack trace", "traceback", "root cause", "investigat", "redesign", "rewrite", "implement",
    "from scratch", "end-to-end", "scalab", "distributed", "algorithm", "benchmark", "bottleneck",
    "regression", "flaky", "crash", "bug", "codebase", "production", "design", "trade-off", "tradeoff",
    "prove", "shard", "consistency", "exactly-once", "failure mode", "latency", "throughput", "transaction",
    "downtime", "p99",
)

CHARS_PER_TOKEN = 3  # gateway/tokens.py's fallback ratio: errs high for code and JSON
TOOL_TOKENS = 150  # a typical tool definition (name, description, JSON schema)
LONG_CONTEXT_TOKENS = 32_000  # beyond this a small local model loses track: cloud
LONG_CONTEXT_CHARS = LONG_CONTEXT_TOKENS * CHARS_PER_TOKEN
MAX_WALK = 120  # messages visited from the end; deeper conversations are complex anyway
MAX_PARTS = 64  # content parts read in one message
SYSTEM_HEAD = 1500  # characters of the system prompt read for background work
SYSTEM_PROTOCOL_HEAD = 16_000  # ... and for an XML tool protocol
DEDICATED_SYSTEM = 6000  # a system prompt shorter than this is dedicated to one job
TASK_HEAD = 3000  # characters of the task / latest user message read for keywords and code
USER_LEAD = 200  # characters of the latest user message read for background work
ASK_TAIL = 200  # characters at the end of an assistant message read for a question to the user
XML_TOOL_TAGS = 8  # closing tags in the system head that make an XML tool protocol

# log-odds contributions; the sum goes through a logistic. The bias puts a request with no signal
# at all on the complex side: only a reason to think it simple (a background job, a short question,
# a short conversation without tools) brings it under the threshold.
BIAS = 0.6
W_BACKGROUND = {"title generation": -6.0, "commit message": -6.0, "summary": -6.0}  # decisive, but not over 32K
W_LONG_CONTEXT = 8.0  # decisive over everything: a small model's context
W_IMAGE = 4.0  # decisive: the local model reads text only
W_TOOL_RESULT = 2.5
W_KEYWORD = (0.0, 1.4, 2.0, 2.4)  # by distinct keywords found: 0, 1, 2, 3+
W_CODE = (0.0, 0.5, 0.8)  # by code blocks in the instruction: 0, 1, 2+
W_SCOPE = 0.3  # per clause or sentence of the instruction beyond the first, up to 4
W_CHANGE = 0.7  # the instruction asks to change code ("Add ...", "Port ..."), not a question
W_QUESTION = -0.5  # a short question ("How do I ...?")
W_EFFORT = {"high": 4.0, "xhigh": 4.0, "max": 4.0, "medium": 0.3, "low": -0.6, "minimal": -0.8, "none": -0.8}
W_THINKING_ON, W_THINKING_OFF = 0.8, -0.4
SHORT_WORDS = 8  # a latest message this short is read with the instruction before it


# first words of an instruction that asks for a change to code
CHANGE_VERBS = frozenset((
    "add", "implement", "build", "create", "make", "support", "port", "replace", "integrate", "wire",
    "migrate", "refactor", "rewrite", "split", "move", "extend", "enable", "turn", "let", "allow",
    "change", "update", "convert", "fix", "remove", "rename", "redesign", "design", "set", "setup",
    "upgrade", "switch", "introduce", "restructure", "generate",
))


def _tools_weight(n: int) -> float:
    return -0.4 if n == 0 else 0.6 if n < 4 else 1.0 if n < 10 else 1.6


def _size_weight(conv_tokens: int) -> float:
    """Grows with the log of the conversation's size: 1,500 tokens 0, 24,000 +2.4; a short prompt
    is only a weak sign of a simple task (-0.5 at most)."""
    return max(-0.5, min(2.4, 0.6 * math.log2(max(conv_tokens, 1) / 1500)))


def _depth_weight(messages: int) -> float:
    return 0.0 if messages <= 2 else 0.4 if messages <= 6 else 0.8 if messages <= 14 else 1.2


def _words_weight(words: int) -> float:
    return -1.0 if words < SHORT_WORDS else -0.5 if words < 13 else 0.0 if words < 30 else 0.4 if words < 60 else 0.8


def _max_tokens_weight(cap: int) -> float:
    return -0.9 if cap <= 300 else -0.3 if cap <= 1024 else 0.0


# Background jobs, found in the lead of the latest user message or in a short (dedicated) system
# prompt. Each is (name, words that must all be present, as alternatives): a word is matched at a
# word's start; a phrase ending in a space must end a word.
_OBJECTS = ("conversation ", "chat ", "thread ", "session ", "discussion ", "message ", "messages ")
BACKGROUND: tuple[tuple[str, tuple[tuple[str, ...], ...]], ...] = (
    ("commit message", (("commit message", "commit msg"),)),
    ("title generation", (("title ", "titles "), _OBJECTS,
                          ("generat", "creat", "writ", "give", "suggest", "output", "produc", "come up"))),
    ("summary", (("summar", "condense", "recap", "compact"), (
        "this conversation ", "the conversation ", "our conversation ", "conversation above", "so far",
        "partial conversation", "this chat ", "our chat ", "the chat ", "this thread ", "this session ",
        "the session "))),
)


class Reader(Protocol):
    """What ``from_env`` needs of gateway.config's environment reader."""

    def text(self, var: str, default: str) -> str: ...

    def number(self, var: str, default: float, minimum: float | None = None,
               maximum: float | None = None) -> float: ...


def parse_keywords(raw: str) -> tuple[str, ...]:
    """``COMPLEXITY_KEYWORDS``: comma-separated, case-insensitive; empty means the default list."""
    seen: dict[str, None] = {}
    for word in raw.split(","):
        word = " ".join(word.lower().split())
        if word:
            seen[word] = None
    return tuple(seen) or DEFAULT_KEYWORDS


@dataclass(frozen=True)
class ClassifierSettings:
    simple_threshold: float = DEFAULT_THRESHOLD  # SIMPLE_TASK_THRESHOLD: scores below are simple
    keywords: tuple[str, ...] = DEFAULT_KEYWORDS  # COMPLEXITY_KEYWORDS, lower case

    @classmethod
    def from_env(cls, r: Reader) -> ClassifierSettings:
        return cls(
            simple_threshold=r.number("SIMPLE_TASK_THRESHOLD", DEFAULT_THRESHOLD, minimum=0.0, maximum=1.0),
            keywords=parse_keywords(r.text("COMPLEXITY_KEYWORDS", "")),
        )


@dataclass(frozen=True)
class Classification:
    label: str  # SIMPLE or COMPLEX
    score: float  # 0..1, higher = more complex
    reason: str  # short, ASCII: for X-Gateway-Route-Reason
    signals: tuple[tuple[str, float], ...] = ()  # (description, log-odds contribution), strongest first


def _head(content: object, limit: int) -> str:
    """Up to ``limit`` characters of a message's text: a string or an array of text parts."""
    if isinstance(content, str):
        return content[:limit]
    if not isinstance(content, list):
        return ""
    out: list[str] = []
    n = 0
    for part in content[:MAX_PARTS]:
        text = part.get("text") if isinstance(part, dict) else part
        if isinstance(text, str):
            out.append(text[: limit - n])
            n += len(out[-1]) + 1
            if n >= limit:
                break
    return "\n".join(out)


def _measure(content: object) -> tuple[int, bool]:
    """A message content's characters and whether it holds an image."""
    if isinstance(content, str):
        return len(content), False
    chars, image = 0, False
    if isinstance(content, list):
        for part in content[:MAX_PARTS]:
            if isinstance(part, dict):
                text = part.get("text")
                if isinstance(text, str):
                    chars += len(text)
                elif part.get("type") in ("image_url", "image", "input_image"):
                    image = True
            elif isinstance(part, str):
                chars += len(part)
    return chars, image


def _call_chars(calls: object) -> int:
    if not isinstance(calls, list):
        return 0
    n = 0
    for call in calls[:MAX_PARTS]:
        fn = call.get("function") if isinstance(call, dict) else None
        args = fn.get("arguments") if isinstance(fn, dict) else None
        n += len(args) if isinstance(args, str) else 16
    return n


def _is_tool_result(message: dict[str, Any]) -> bool:
    """A native tool result, or Cline's ``[read_file for 'a.py'] Result:`` user message."""
    role = message.get("role")
    if role in ("tool", "function"):
        return True
    if role != "user":
        return False
    lead = _head(message.get("content"), USER_LEAD).lstrip()
    return (lead.startswith("[") and "] Result:" in lead) or lead.startswith("<tool_result")


def _task_text(message: dict[str, Any] | None) -> str:
    """The instruction in a user message, without Cline's appended environment details."""
    if message is None:
        return ""
    text = _head(message.get("content"), TASK_HEAD)
    cut = text.find("<environment_details>")
    return (text if cut < 0 else text[:cut]).lower()


def _has(text: str, word: str) -> bool:
    """Whether ``word`` starts a word of ``text`` (and, if it ends in a space, also ends one)."""
    whole = word.endswith(" ")
    word = word.rstrip()
    if word not in text:  # the common case, without the loop below
        return False
    i = text.find(word)
    while i >= 0:
        end = i + len(word)
        if (i == 0 or not text[i - 1].isalnum()) and (not whole or end == len(text) or not text[end].isalnum()):
            return True
        i = text.find(word, i + 1)
    return False


def _background(texts: tuple[str, ...]) -> str | None:
    """Which background job (commit message, title, summary) a request is, if any."""
    for kind, groups in BACKGROUND:
        for text in texts:
            if all(any(_has(text, w) for w in group) for group in groups):
                return kind
    return None


def _reasoning(payload: dict[str, Any]) -> tuple[str, float] | None:
    effort = payload.get("reasoning_effort")
    if not isinstance(effort, str):
        reasoning = payload.get("reasoning")
        effort = reasoning.get("effort") if isinstance(reasoning, dict) else None
    if isinstance(effort, str) and effort.lower() in W_EFFORT:
        return f"reasoning_effort={effort.lower()}", W_EFFORT[effort.lower()]
    thinking = payload.get("thinking")
    on: object = thinking.get("type") if isinstance(thinking, dict) else None
    if on not in ("enabled", "disabled"):
        kwargs = payload.get("chat_template_kwargs")
        flag = kwargs.get("enable_thinking") if isinstance(kwargs, dict) else None
        on = {True: "enabled", False: "disabled"}.get(flag) if isinstance(flag, bool) else None
    if on == "enabled":
        return "thinking on", W_THINKING_ON
    if on == "disabled":
        return "thinking off", W_THINKING_OFF
    return None


def _max_tokens(payload: dict[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        value = payload.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _asks(message: object) -> bool:
    """Whether an assistant message ends by asking the user something ("Shall I start?")."""
    if not isinstance(message, dict) or message.get("role") != "assistant":
        return False
    content = message.get("content")
    tail = content[-ASK_TAIL:] if isinstance(content, str) else _head(content, ASK_TAIL)
    return "?" in tail


def _scope(text: str) -> int:
    """Clauses and sentences of an instruction's prose beyond the first (0 for a one-liner)."""
    return (text.count(" and ") + text.count(", ") + text.count("; ") + text.count(". ") + text.count("? ")
            + text.count(".\n") + text.count("\n- "))


def _words(text: str) -> int:
    return text.count(" ") + text.count("\n") + 1 if text.strip() else 0


def classify(payload: dict[str, Any], settings: ClassifierSettings, prompt_tokens: int | None = None) -> Classification:
    """Label a chat request simple or complex, with a score (0..1) and a short reason.

    ``prompt_tokens`` is the router's estimate when it has one; otherwise the size is estimated
    from the characters of the messages visited. Never raises, whatever the payload holds.
    """
    if not isinstance(payload, dict):
        payload = {}
    messages = payload.get("messages")
    if not isinstance(messages, list):
        messages = []
    system = next((m for m in messages[:4] if isinstance(m, dict) and m.get("role") in ("system", "developer")), None)
    system_content = system.get("content") if system else None
    system_len = _measure(system_content)[0]
    system_head = _head(system_content, SYSTEM_PROTOCOL_HEAD)

    # the conversation from its end: its size, and the latest two instructions (user messages
    # that are not tool results)
    conv_chars, latest, previous, asked = 0, None, None, False
    stop = max(len(messages) - MAX_WALK, 0)
    for i in range(len(messages) - 1, stop - 1, -1):
        m = messages[i]
        if not isinstance(m, dict) or m is system:
            continue
        conv_chars += _measure(m.get("content"))[0] + _call_chars(m.get("tool_calls"))
        if conv_chars > LONG_CONTEXT_CHARS and previous is not None:
            stop = i  # long enough to settle the size: the rest need not be read
            break
        if previous is None and m.get("role") == "user" and not _is_tool_result(m):
            if latest is None:
                latest = m
                asked = i > 0 and _asks(messages[i - 1])
            else:
                previous = m
    if stop > 0:  # not all read: the rest is assumed alike
        conv_chars = conv_chars * len(messages) // (len(messages) - stop)
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    mid_task = _is_tool_result(last)
    n_tools = sum(len(v) for key in ("tools", "functions") if isinstance(v := payload.get(key), list))
    if not isinstance(prompt_tokens, int) or isinstance(prompt_tokens, bool):
        prompt_tokens = (system_len + conv_chars) // CHARS_PER_TOKEN + TOOL_TOKENS * n_tools

    text = _task_text(latest)
    prose = text.split("```", 1)[0]
    if not mid_task and asked and previous is not None and _words(prose) < SHORT_WORDS:
        before = _task_text(previous)  # "go ahead": read with the instruction it answers
        text, prose = text + "\n" + before, prose + "\n" + before.split("```", 1)[0]
    system_lower = system_head[:SYSTEM_HEAD].lower()
    leads = (text[:USER_LEAD], system_lower) if system_len < DEDICATED_SYSTEM else (text[:USER_LEAD],)
    background = None if mid_task else _background(leads)

    signals: list[tuple[str, float]] = []
    add = signals.append
    add((f"{prompt_tokens} tokens", _size_weight(conv_chars // CHARS_PER_TOKEN)))
    if prompt_tokens > LONG_CONTEXT_TOKENS:
        add(("long context", W_LONG_CONTEXT))
    if n_tools:
        add((f"{n_tools} tools", _tools_weight(n_tools)))
    elif system_head.count("</") >= XML_TOOL_TAGS:
        add(("XML tools", _tools_weight(10)))
    elif "<<<<<<< SEARCH" in system_head:
        add(("edit format", _tools_weight(1)))
    else:
        add(("no tools", _tools_weight(0)))
    if mid_task:
        add(("agent loop mid-task", W_TOOL_RESULT))
    if background:
        add((background, W_BACKGROUND[background]))
    elif text:
        found = [kw for kw in settings.keywords if kw in text and _has(text, kw)]
        if found:
            add(("keywords: " + ", ".join(found[:3]), W_KEYWORD[min(len(found), 3)]))
        fences = text.count("```") // 2
        if fences:
            add((f"{fences} code blocks", W_CODE[min(fences, 2)]))
        if not mid_task:
            words = _words(prose)
            add(("short message" if words < SHORT_WORDS else f"{words} words", _words_weight(words)))
            first = prose.removeprefix("<task>").split(None, 1)[:1]
            if first and first[0].strip("*_`'\"") in CHANGE_VERBS:
                add(("change request", W_CHANGE))
            elif prose.rstrip().endswith("?") and words < 30:
                add(("question", W_QUESTION))
        scope = min(_scope(prose), 4)
        if scope:
            add((f"{scope + 1} clauses", W_SCOPE * scope))
    depth = len(messages) - (system is not None)
    if depth > 2:
        add((f"{depth} messages", _depth_weight(depth)))
    if latest is not None and _measure(latest.get("content"))[1]:
        add(("image input", W_IMAGE))
    reasoning = _reasoning(payload)
    if reasoning:
        add(reasoning)
    cap = _max_tokens(payload)
    if cap is not None and _max_tokens_weight(cap):
        add((f"max_tokens={cap}", _max_tokens_weight(cap)))

    score = round(1.0 / (1.0 + math.exp(-(BIAS + sum(w for _, w in signals)))), 3)
    label = SIMPLE if score < settings.simple_threshold else COMPLEX
    signals.sort(key=lambda sig: -abs(sig[1]))
    return Classification(label, score, _reason(label, signals), tuple(signals))


def _reason(label: str, signals: list[tuple[str, float]]) -> str:
    """``simple: 310 tokens, no tools``: the label and the strongest signals that pushed it there."""
    sign = -1 if label == SIMPLE else 1
    parts = [name for name, w in signals if w * sign > 0][:3] or [signals[0][0]]
    reason = f"{label}: {', '.join(parts)}"
    return "".join(c if " " <= c <= "~" else "?" for c in reason)  # a header value: printable ASCII
