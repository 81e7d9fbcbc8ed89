"""structlog -> JSON lines on stdout and in a size-rotated file, written off the event loop.

Lines are rendered on the loop and queued; one writer thread writes them in batches. One process
redactor (``configure()``'s secrets) removes upstream secrets, client keys and bearer tokens from
every value, nested ones too; ``redact()`` and ``shorten()`` give it to text bound elsewhere (an
error a client sees), and a message is scrubbed before it is cut, so a cut never keeps part of a key.
"""
from __future__ import annotations

import contextvars
import logging
import os
import queue
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
import structlog

from .secrets import REDACTED

_PATTERNS = re.compile(r"(sk-glm-[A-Za-z0-9_\-]{6,}|Bearer\s+[^\s\"',]+|csk-[A-Za-z0-9]{6,})", re.IGNORECASE)


_NEEDLES = ("sk-glm-", "csk-", "bearer")  # how every match of ``_PATTERNS`` begins (lowercased)
_LONG = 4096  # characters; longer text is matched only where a needle is (``_scrub_patterns``)


def _key_shaped(value: str) -> bool:
    """Whether ``_PATTERNS`` (which ignore case) could match: the cheap test before the regex."""
    low = value.lower()
    return "sk-" in low or "bearer" in low


def _scrub_patterns(value: str) -> str:
    """``_PATTERNS.sub(REDACTED, value)``. For long text (a request log's bodies) the regex is
    tried only where one of ``_NEEDLES`` begins: every match starts at one, and scanning a
    megabyte with the regex takes ~20 ms holding the GIL (the event loop's too), finding the
    needles ~1 ms. Text whose lowercasing changes its length falls back to the plain regex.
    Matches exactly what the regex matches (a property test checks it)."""
    if len(value) < _LONG:
        return _PATTERNS.sub(REDACTED, value)
    low = value.lower()
    if len(low) != len(value):
        return _PATTERNS.sub(REDACTED, value)
    if "\u017f" in low:  # the long s, which the regex ignoring case takes for an s (lower() does not)
        low = low.replace("\u017f", "s")
    starts: list[int] = []
    for needle in _NEEDLES:
        at = low.find(needle)
        while at >= 0:
            starts.append(at)
            at = low.find(needle, at + 1)
    if not starts:
        return value
    starts.sort()
    out: list[str] = []
    pos = 0
    for at in starts:
        if at < pos:  # inside the previous match
            continue
        m = _PATTERNS.match(value, at)
        if m is not None:
            out.append(value[pos:at])
            out.append(REDACTED)
            pos = m.end()
    if not out:
        return value
    out.append(value[pos:])
    return "".join(out)


_SCALARS = frozenset({int, float, bool, type(None)})
MAX_DEPTH = 8  # levels of nesting scrubbed item by item; deeper, as the text the renderer prints


class Redactor:
    """A structlog processor that replaces known secrets and key-shaped strings with ``****``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def suspects(self, value: str) -> bool:
        """Whether ``scrub`` could change ``value`` (cheaper than scrubbing; a plain loop: half
        the time of ``any()`` over a generator, and a regex of the secrets is ten times slower)."""
        if _key_shaped(value):
            return True
        for s in self.secrets:
            if s in value:
                return True
        return False

    def scrub(self, value: str) -> str:
        for s in self.secrets:
            if s in value:
                value = value.replace(s, REDACTED)
        if _key_shaped(value):
            value = _scrub_patterns(value)
        return value

    def scrub_value(self, value: Any, depth: int = 0) -> Any:
        """``value`` with every string in it scrubbed. Dicts, lists, tuples and sets are copied
        (the caller's objects stay as they were) down to ``MAX_DEPTH`` levels; bytes are decoded;
        anything else, or deeper, becomes the text the log renderer would print, scrubbed."""
        cls = value.__class__
        if cls is str:
            return self.scrub(value)
        if cls in _SCALARS:
            return value
        if depth < MAX_DEPTH:
            depth += 1
            if isinstance(value, dict):
                return {self.scrub(str(k)): self.scrub_value(v, depth) for k, v in value.items()}
            if isinstance(value, (list, tuple, set, frozenset)):
                return [self.scrub_value(v, depth) for v in value]
        if isinstance(value, (bytes, bytearray, memoryview)):
            return self.scrub(bytes(value).decode("utf-8", "replace"))
        return self.scrub(str(value))

    def __call__(self, logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        for k, v in event.items():
            cls = v.__class__
            if cls is str:
                event[k] = self.scrub(v)
            elif cls not in _SCALARS:
                event[k] = self.scrub_value(v)
        return event


def _dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


class RotatingFile:
    """Appends to ``path``; at ``max_bytes`` renames it to ``.1`` (``.1`` to ``.2``, ...). Size is
    counted as it writes, with no seek or stat per line. A failed rotation (the directory gone,
    say) leaves the file to be opened again at the next write, not closed for good."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path, self.max_bytes, self.backups = path, max_bytes, backups
        self._file = open(path, "a", encoding="utf-8")
        self._size = self._file.tell()

    def write(self, data: str) -> None:
        if self._file.closed:
            self._open()
        size = len(data.encode()) if not data.isascii() else len(data)
        if self._size + size > self.max_bytes:
            lines = data.split("\n")
            if len(lines) > 2 or (len(lines) == 2 and lines[1]):  # a batch: rotate between its lines
                last = lines.pop()
                for line in lines:
                    self.write(line + "\n")
                if last:
                    self.write(last)
                return
            if self._size:
                self.rotate()
        self._file.write(data)
        self._file.flush()
        self._size += size

    def _open(self) -> None:
        self._file = open(self.path, "a", encoding="utf-8")
        self._size = self._file.tell()

    def rotate(self) -> None:
        """The current file becomes ``.1`` now (the oldest backup beyond ``backups`` is gone)."""
        self._file.close()
        if self.backups > 0:
            for i in range(self.backups - 1, 0, -1):
                src = self.path.with_name(f"{self.path.name}.{i}")
                if src.exists():
                    os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self._open()

    def close(self) -> None:
        self._file.close()


class Stdout:
    def write(self, data: str) -> None:
        sys.stdout.write(data)
        sys.stdout.flush()

    def close(self) -> None:
        pass


class LineWriter:
    """Rendered lines from the event loop go into a queue; one thread writes them out in
    batches, so no handler blocks on I/O and a burst of lines costs one write per sink.

    ``render``, when given, turns each queued item into its line in the writer thread (None:
    nothing to write), for items too big to render on the loop (the request log's records);
    ``tick`` runs in the writer thread at start and every ``tick_every`` seconds (pruning)."""

    _STOP = object()

    def __init__(self, sinks: list, gather: float = 0.05, *, render: Callable[[Any], str | None] | None = None,
                 tick: Callable[[], None] | None = None, tick_every: float = 3600.0, name: str = "log-writer") -> None:
        self.sinks = sinks
        self.gather = gather
        self.render = render
        self.tick = tick
        self.tick_every = tick_every
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def write(self, line: Any) -> None:
        self._queue.put(line)

    def _next(self, due: float) -> tuple[Any, float]:
        """The next queued item, running ``tick`` whenever it is due while waiting for one."""
        if self.tick is None:
            return self._queue.get(), due
        while True:
            wait = due - time.monotonic()
            if wait <= 0:
                try:
                    self.tick()
                except Exception as e:  # a failed prune must not stop the writer
                    sys.stderr.write(f"log writer tick failed: {e!r}\n")
                due = time.monotonic() + self.tick_every
                continue
            try:
                return self._queue.get(timeout=wait), due
            except queue.Empty:
                pass

    def _line(self, item: Any) -> str | None:
        if self.render is None:
            return item
        try:
            return self.render(item)
        except Exception as e:  # a renderer's bug loses its item, never the writer
            sys.stderr.write(f"log render failed: {e!r}\n")
            return None

    def _run(self) -> None:
        q = self._queue
        due = time.monotonic()
        while True:
            item, due = self._next(due)
            time.sleep(self.gather)  # let lines gather: few wakeups, few GIL handoffs, big writes
            batch = []
            stop = False
            while True:
                if item is self._STOP:
                    stop = True
                else:
                    line = self._line(item)
                    if line is not None:
                        batch.append(line)
                if len(batch) >= 10000:
                    break
                try:
                    item = q.get_nowait()
                except queue.Empty:
                    break
            if batch:
                data = "\n".join(batch) + "\n"
                for sink in self.sinks:
                    try:
                        sink.write(data)
                    except Exception as e:  # a full disk must not take the gateway down
                        sys.stderr.write(f"log write failed: {e!r}\n")
            if stop:
                return

    def stop(self) -> None:
        """Write what is queued, then stop (call at exit)."""
        self._queue.put(self._STOP)
        self._thread.join(timeout=5)
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as e:  # what a full disk left buffered cannot be written now either
                sys.stderr.write(f"log close failed: {e!r}\n")


class WriterLogger:
    """The structlog logger: hands each rendered line to the LineWriter."""

    def __init__(self, writer: LineWriter) -> None:
        self._write = writer.write

    def msg(self, line: str) -> None:
        self._write(line)

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def add_request_id(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    """Every line logged while a request is handled carries its id (set by the middleware)."""
    rid = REQUEST_ID.get()
    if rid is not None:
        event.setdefault("request_id", rid)
    return event


class _Access:
    """What ``access()`` writes to, and the process redactor; set by ``configure()``."""

    writer: LineWriter | None = None
    redactor = Redactor()
    min_level = logging.INFO


def redact(text: str) -> str:
    """``text`` without the process's secrets (those ``configure()`` was given) or key-shaped
    strings: for text that leaves the gateway by another way than a log line (an error's message)."""
    return _Access.redactor.scrub(text)


def json_redactor(secrets: Iterable[str] = ()) -> Redactor:
    """A redactor of the process's secrets and ``secrets``, each also in the form a JSON string
    holds it (a ``"`` or ``\\`` in a key is escaped there): for text scrubbed after it was
    rendered as JSON, such as the request log's records."""
    given = [*_Access.redactor.secrets, *secrets]
    escaped = [orjson.dumps(s).decode()[1:-1] for s in given]
    return Redactor([*given, *escaped])


def shorten(text: str, limit: int) -> str:
    """``text`` scrubbed, then cut to ``limit`` characters: a cut never keeps part of a secret,
    which the redactor, matching whole secrets, would let through."""
    text = _Access.redactor.scrub(text)
    return text if len(text) <= limit else text[:limit]


def redact_event(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    """The structlog processor: the process redactor over every value of the line."""
    return _Access.redactor(logger, method, event)


_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_stamp_second = -1
_stamp_prefix = ""


def _timestamp() -> str:
    """Now as ISO 8601 UTC with microseconds, as structlog's TimeStamper writes it; the date and
    time of day are formatted once a second."""
    global _stamp_second, _stamp_prefix
    now = time.time()
    second = int(now)
    if second != _stamp_second:
        _stamp_second = second
        _stamp_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{_stamp_prefix}.{int((now - second) * 1_000_000):06d}Z"


def access(event: str, level: str, fields: dict[str, Any]) -> None:
    """One line per request, in the same JSON shape as every other line, but rendered without
    structlog's processor chain: this runs for every request, the others rarely. String values
    pass through the same redactor. ``fields`` is consumed."""
    writer = _Access.writer
    if writer is None:  # logging not configured (a library user): fall back to structlog
        getattr(structlog.get_logger("gateway.http"), level)(event, **fields)
        return
    if _LEVELS[level] < _Access.min_level:
        return
    redactor = _Access.redactor
    texts = []
    nested = False
    for v in fields.values():
        cls = v.__class__
        if cls is str:
            texts.append(v)
        elif cls not in _SCALARS:
            nested = True
    if nested:  # rare: a list, a dict, an object; look inside
        for k, v in fields.items():
            fields[k] = redactor.scrub_value(v)
    elif texts and redactor.suspects("\0".join(texts)):  # one look at all values; scrub only then
        for k, v in fields.items():
            if v.__class__ is str:
                fields[k] = redactor.scrub(v)
    fields["event"] = event
    fields["level"] = level
    fields["timestamp"] = _timestamp()
    writer.write(orjson.dumps(fields, default=str).decode())


def configure(level: str = "INFO", log_dir: Path | None = None, secrets: Iterable[str] = (),
              max_bytes: int = 10 * 1024 * 1024, backups: int = 5, cache: bool = True,
              stdout: bool = True) -> LineWriter:
    """Set up logging once per process; returns the writer (``stop()`` it at exit to flush)."""
    sinks: list = [Stdout()] if stdout else []
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        sinks.append(RotatingFile(log_dir / "gateway.log", max_bytes, backups))
    writer = LineWriter(sinks)
    logger = WriterLogger(writer)
    _Access.writer = writer
    _Access.redactor = Redactor(secrets)
    _Access.min_level = logging.getLevelName(level)
    structlog.configure(
        processors=processors(),
        logger_factory=lambda *args: logger,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        cache_logger_on_first_use=cache,
    )
    return writer


def processors() -> list:
    return [
        add_request_id,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_event,
        structlog.processors.JSONRenderer(serializer=_dumps),
    ]
