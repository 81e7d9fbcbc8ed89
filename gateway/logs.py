"""structlog -> JSON lines on stdout and in a size-rotated file, written off the event loop.

Records go through a ``QueueHandler``; a ``QueueListener`` thread does the (blocking) writes.
A redaction processor removes upstream secrets, client keys and bearer tokens from every value.
"""
from __future__ import annotations

import logging
import logging.handlers
import queue
import re
import sys
from pathlib import Path
from typing import Any, Iterable

import orjson
import structlog

from .secrets import REDACTED

_PATTERNS = re.compile(r"(sk-glm-[A-Za-z0-9_\-]{6,}|Bearer\s+[^\s\"',]+|csk-[A-Za-z0-9]{6,})", re.IGNORECASE)


class Redactor:
    """A structlog processor that replaces known secrets and key-shaped strings with ``****``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def scrub(self, value: str) -> str:
        for s in self.secrets:
            if s in value:
                value = value.replace(s, REDACTED)
        if "sk-" in value or "earer" in value or "csk-" in value:
            value = _PATTERNS.sub(REDACTED, value)
        return value

    def __call__(self, logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        for k, v in event.items():
            if isinstance(v, str):
                event[k] = self.scrub(v)
        return event


def _dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


def configure(level: str = "INFO", log_dir: Path | None = None, secrets: Iterable[str] = (),
              max_bytes: int = 10 * 1024 * 1024, backups: int = 5,
              cache: bool = True) -> logging.handlers.QueueListener:
    """Set up logging once per process; returns the listener (stop it at exit to flush)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(
            logging.handlers.RotatingFileHandler(
                log_dir / "gateway.log", maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
            )
        )
    for h in handlers:
        h.setFormatter(logging.Formatter("%(message)s"))
    q: queue.SimpleQueue = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(q, *handlers, respect_handler_level=False)
    root = logging.getLogger("gateway")
    root.handlers[:] = [logging.handlers.QueueHandler(q)]
    root.setLevel(level)
    root.propagate = False
    listener.start()
    structlog.configure(
        processors=processors(secrets),
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        cache_logger_on_first_use=cache,
    )
    return listener


def processors(secrets: Iterable[str] = ()) -> list:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        Redactor(secrets),
        structlog.processors.JSONRenderer(serializer=_dumps),
    ]
