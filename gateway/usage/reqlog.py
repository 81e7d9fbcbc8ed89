"""Request and response logs (``LOG_REQUESTS``): one JSON record per chat request, with its bodies.

Opt-in. When on, every chat request that passed auth (``POST /v1/chat/completions``) leaves one
line in ``REQUEST_LOG_DIR/requests.log``, unless the client sent ``X-Gateway-No-Log: true`` (or
``1``, ``yes``): then no record at all (the access log line and the ledger row stay).

On the event loop, almost nothing happens: the handler keeps references (the client's headers and
bytes, the parsed request, the answer's bytes; a stream's events, collected by ``LoggedTap`` only
for a request that is logged), and the recorder (``RequestLog.record``, after the ledger's, which
priced the request) queues the finished ``RequestContext`` itself, which nothing writes after the
recorders ran. Everything else happens in the writer thread (``logs.LineWriter`` with a renderer):

- the request body **as the provider got it**: ``build_request`` (the providers' own pure
  function) re-run for the provider that served it, or for a request that failed, the last one
  tried; the repaired payload before any provider's rewrite when none was tried (a budget
  refusal), and the client's bytes when they could not be parsed (a 400);
- the answer: a whole one parsed, a stream reassembled from its deltas (``usage.reassemble``);
  or the error the client got;
- each body up to ``REQUEST_LOG_MAX_BODY_BYTES`` (a longer one becomes a string cut at that size,
  with ``body_bytes`` giving its size); a stream's events are kept up to ``EVENTS_PER_BODY`` times
  that (events carry ~5-30x their text in JSON framing), and each reassembled text up to it;
- the record rendered with orjson (valid bodies embedded as they are, ``orjson.Fragment``), then
  the whole line scrubbed by the process redactor plus the app's upstream secrets (``redact``'s
  patterns: client keys ``sk-glm-...``, ``Bearer ...``), so a key in any body never lands in
  the file. A cut body is scrubbed before it is cut.

Headers: an allow-list. A deny-list names the secrets someone thought of (Authorization,
x-api-key, Cookie); any other header a client or its proxy adds (``X-Upstream-Token``,
``api-key``, ``X-Amz-Security-Token``) would be written out. So only the headers below are kept
with their values; every other one appears with its value replaced by ``****``.

The file is rotated at ``REQUEST_LOG_MAX_BYTES`` keeping ``REQUEST_LOG_BACKUPS`` files
(``logs.RotatingFile``); at start and every hour the writer deletes rotated files last written
more than ``REQUEST_LOG_RETENTION_DAYS`` ago (and rotates the current file out when it is that
old). Queued records hold at most ``QUEUE_MAX_BYTES`` of bodies: beyond that (a stalled disk)
records are dropped and counted, and a failing disk never fails a request.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from ..context import RequestContext, Usage
from ..logs import LineWriter, Redactor, RotatingFile, json_redactor
from ..providers.openai import build_request
from ..secrets import REDACTED
from .reassemble import reassemble
from .stream import StreamTap

if TYPE_CHECKING:
    from ..config import ProviderConfig, RequestLogSettings

log = structlog.get_logger("gateway.reqlog")

NO_LOG_HEADER = "X-Gateway-No-Log"
FILE_NAME = "requests.log"
PRUNE_EVERY = 3600.0  # seconds
QUEUE_MAX_BYTES = 64 * 1024 * 1024  # bodies held by queued records, at most (one record always fits)
EVENTS_PER_BODY = 16
DROP_LOG_EVERY = 10.0  # seconds between two lines about dropped records
_YES = frozenset({"true", "1", "yes"})
# kept with their values: what says which client and SDK sent what, never a credential
KEPT_HEADERS = frozenset({
    "accept", "accept-encoding", "accept-language", "content-encoding", "content-length", "content-type",
    "host", "origin", "user-agent", "x-request-id",
})
KEPT_PREFIXES = ("x-stainless-",)  # the OpenAI SDKs' own: language, version, OS, retry count
_ESCAPES = (b"\\u", b"\\/", b"\n", b"\r")  # bodies with these are re-encoded (normalised, one line)


def opted_out(value: str | None) -> bool:
    """Whether ``X-Gateway-No-Log`` asks for no record: ``true``, ``1`` or ``yes``, any case."""
    return value is not None and value.strip().lower() in _YES


def start(ctx: RequestContext, headers: Mapping[str, str]) -> None:
    """The handler's part, with the request log on: is this request logged, and its headers."""
    if not opted_out(headers.get(NO_LOG_HEADER)):
        ctx.log_body = True
        ctx.request_headers = headers


class LoggedTap(StreamTap):
    """The ledger's tap, also keeping the stream's events (up to ``budget`` bytes) for the log."""

    __slots__ = ("budget", "ctx", "events", "events_kept", "events_seen")

    def __init__(self, ctx: RequestContext, budget: int, payload: dict[str, Any], *, strip: bool,
                 prompt_tokens: int | None = None, prompt_bytes: int = 0) -> None:
        super().__init__(payload, strip=strip, prompt_tokens=prompt_tokens, prompt_bytes=prompt_bytes)
        self.ctx = ctx
        self.budget = budget
        self.events: list[bytes] = []
        self.events_kept = self.events_seen = 0

    def feed(self, chunk: bytes) -> bytes:
        size = len(chunk)
        self.events_seen += size
        if self.events_kept + size <= self.budget:
            self.events.append(chunk)
            self.events_kept += size
        return super().feed(chunk)

    def finish(self) -> Usage:
        ctx = self.ctx
        ctx.response_events = self.events
        ctx.events_kept_bytes, ctx.events_seen_bytes = self.events_kept, self.events_seen
        return super().finish()


def tap_type(ctx: RequestContext, settings: RequestLogSettings) -> Callable[..., StreamTap]:
    """What the relay's tap is made with: ``StreamTap``, or for a logged request a ``LoggedTap``."""
    if not ctx.log_body:
        return StreamTap
    return partial(LoggedTap, ctx, settings.max_body_bytes * EVENTS_PER_BODY)


def clean_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """The allow-listed headers with their values; any other with ``****`` (lowercased names,
    repeated ones joined by ``, ``)."""
    out: dict[str, str] = {}
    if headers is None:
        return out
    for name, value in headers.items():
        low = name.lower()
        kept = low in KEPT_HEADERS or low.startswith(KEPT_PREFIXES)
        shown = value if kept else REDACTED
        out[low] = f"{out[low]}, {shown}" if low in out and kept else shown
    return out


def _cut(data: bytes, cap: int, redactor: Redactor) -> str:
    """The first ``cap`` bytes as text, scrubbed before the cut (with room for a whole key past it)."""
    text = redactor.scrub(data[: cap + 512].decode("utf-8", "replace"))
    return text[:cap]


def body_field(data: bytes, cap: int, redactor: Redactor, *, valid: bool = False) -> tuple[Any, int | None]:
    """A body as the record holds it, and its size in bytes when it was cut (else None): JSON
    embedded as it is (``valid``: known to be JSON, not checked again), else as text; JSON with
    escapes or line breaks re-encoded (one line, and a key spelt with ``\\u`` escapes is found)."""
    if len(data) > cap:
        return _cut(data, cap, redactor), len(data)
    if not any(e in data for e in _ESCAPES):
        if valid:
            return orjson.Fragment(data), None
        try:
            orjson.loads(data)
            return orjson.Fragment(data), None
        except orjson.JSONDecodeError:
            return data.decode("utf-8", "replace"), None
    try:
        return orjson.Fragment(orjson.dumps(orjson.loads(data))), None
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):  # not JSON, or nested past orjson's depth
        return data.decode("utf-8", "replace"), None


def forwarded(ctx: RequestContext, providers: Mapping[str, ProviderConfig]) -> tuple[bytes | None, str | None, bool]:
    """(the request body, the provider it was built for or None, whether it is known JSON)."""
    target = ctx.provider or (ctx.attempts[-1].provider if ctx.attempts else None)
    chat = ctx.chat
    if chat is None:
        return ctx.request_body, None, False
    cfg = providers.get(target) if target is not None else None
    if cfg is None:
        return chat.body(), None, True
    return build_request(cfg, chat), target, True


def _iso(epoch: float) -> str:
    second = int(epoch)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)) + f".{int((epoch - second) * 1000):03d}Z"


def record_of(ctx: RequestContext, providers: Mapping[str, ProviderConfig], cap: int,
              redactor: Redactor) -> dict[str, Any]:
    """The record of one finished request (before it is rendered and scrubbed)."""
    key = ctx.upstream_key
    if key is None and ctx.provider is not None and ctx.attempts:  # an upstream 4xx: its last attempt's key
        key = ctx.attempts[-1].key
    usage = ctx.usage
    rec: dict[str, Any] = {
        "time": _iso(ctx.started_at),
        "request_id": ctx.request_id,
        "client": ctx.client_name,
        "method": ctx.method,
        "route": ctx.route or ctx.path,
        "status": ctx.status,
        "stream": ctx.stream,
        "model_asked": ctx.model_asked,
        "model_served": ctx.model_served,
        "provider": ctx.provider,
        "upstream_key": key,
        "attempts": [a.as_dict() for a in ctx.attempts] if ctx.attempts else [],
        "fallback_reason": ctx.fallback_reason,
        "repairs": ctx.repairs,
        "latency_ms": ctx.latency_ms,
        "ttft_ms": ctx.ttft_ms,
        "overhead_ms": ctx.overhead_ms,
        "usage": usage.as_dict() if usage is not None else None,
        "cost_usd": ctx.cost_usd,
    }
    body, sent_to, valid = forwarded(ctx, providers)
    request: dict[str, Any] = {"headers": clean_headers(ctx.request_headers), "sent_to": sent_to}
    if body is not None:
        request["body"], cut = body_field(body, cap, redactor, valid=valid)
        if cut is not None:
            request["body_bytes"] = cut
    rec["request"] = request
    response: dict[str, Any] | None = None
    if ctx.response_body is not None:
        response = {}
        response["body"], cut = body_field(ctx.response_body, cap, redactor)
        if cut is not None:
            response["body_bytes"] = cut
    elif ctx.response_events is not None:
        response = {"body": reassemble(ctx.response_events, max_chars=cap)}
        if ctx.events_seen_bytes > ctx.events_kept_bytes:  # only the first part of a long stream
            response["events_bytes"] = ctx.events_seen_bytes
            response["events_kept_bytes"] = ctx.events_kept_bytes
    rec["response"] = response
    if ctx.error_body is not None:
        rec["error"] = body_field(ctx.error_body, cap, redactor)[0]
    elif ctx.stream_error is not None:
        rec["error"] = {"error": {"message": f"upstream stream failed: {ctx.stream_error}", "type": "api_error",
                                  "param": None, "code": "upstream_stream_error"}}
    if ctx.client_disconnected:
        rec["client_disconnected"] = True
    return rec


def _held(data: bytes | None) -> int:
    return len(data) if data is not None else 0


class RequestLog:
    """The recorder (on the loop) and the writer thread's renderer and pruner."""

    def __init__(
        self,
        settings: RequestLogSettings,
        providers: Sequence[ProviderConfig],
        secrets: Sequence[str] = (),
        *,
        clock: Callable[[], float] = time.time,
        prune_every: float = PRUNE_EVERY,
        queue_max_bytes: int = QUEUE_MAX_BYTES,
    ) -> None:
        assert settings.directory is not None, "config refuses LOG_REQUESTS without a directory"
        self.directory: Path = settings.directory
        self.path = self.directory / FILE_NAME
        self.settings = settings
        self.providers = {p.name: p for p in providers}
        self.secrets = list(secrets)
        self.clock = clock
        self.prune_every = prune_every
        self.queue_max_bytes = queue_max_bytes
        self.redactor = Redactor()
        self.queued_bytes = 0  # written by the loop only ...
        self.done_bytes = 0  # ... and this by the writer only: no lock, their difference is what is held
        self.records_queued = self.records_rendered = self.records_dropped = self.render_failures = 0
        self._last_drop_log = 0.0
        self._file: RotatingFile | None = None
        self._writer: LineWriter | None = None

    # ---- lifetime (at start and at exit, in a worker thread) --------------------------------------

    def open(self) -> None:
        """Create the directory and open the file (OSError when it cannot be written); start the writer."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.redactor = json_redactor(self.secrets)  # after logging was configured: its secrets too
        self._file = RotatingFile(self.path, self.settings.max_bytes, self.settings.backups)
        self._writer = LineWriter([self._file], render=self.render, tick=self.prune, tick_every=self.prune_every,
                                  name="request-log-writer")

    def close(self) -> None:
        """Write what is queued, then stop the writer."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.stop()

    # ---- on the request's path --------------------------------------------------------------------

    def record(self, ctx: RequestContext) -> None:
        """The recorder: queue the finished request's context, if it is logged and there is room."""
        writer = self._writer
        if not ctx.log_body or writer is None:
            return
        size = _held(ctx.request_body) + _held(ctx.response_body) + _held(ctx.error_body) + ctx.events_kept_bytes
        held = self.queued_bytes - self.done_bytes
        if held and held + size > self.queue_max_bytes:
            self._dropped()
            return
        self.queued_bytes += size
        self.records_queued += 1
        writer.write((ctx, size))

    def _dropped(self) -> None:
        self.records_dropped += 1
        now = time.monotonic()
        if now - self._last_drop_log >= DROP_LOG_EVERY:
            self._last_drop_log = now
            log.warning("request_log_dropped", total=self.records_dropped, queue_max_bytes=self.queue_max_bytes,
                        detail="the request log writes slower than requests end; records are dropped")

    def status(self) -> dict[str, int]:
        """For ``/_status``."""
        done = self.records_rendered + self.render_failures
        return {"request_log_records": self.records_rendered, "request_log_dropped": self.records_dropped,
                "request_log_queued": self.records_queued - done}

    # ---- in the writer thread -----------------------------------------------------------------------

    def render(self, entry: tuple[RequestContext, int]) -> str | None:
        ctx, size = entry
        try:
            rec = record_of(ctx, self.providers, self.settings.max_body_bytes, self.redactor)
            line = orjson.dumps(rec, default=str).decode()
        except Exception:  # a bug here loses one record, never the writer
            self.render_failures += 1
            log.exception("request_log_render_failed", request_id=ctx.request_id)
            return None
        finally:
            self.done_bytes += size
        self.records_rendered += 1
        return self.redactor.scrub(line)

    def prune(self) -> None:
        """Delete rotated files last written before the retention; rotate the current one out
        when it is that old (an idle gateway's)."""
        cutoff = self.clock() - self.settings.retention_days * 86400
        try:
            if self._file is not None and self.path.exists():
                current = self.path.stat()
                if current.st_size and current.st_mtime < cutoff:
                    self._file.rotate()
            removed = 0
            for path in self.directory.glob(FILE_NAME + ".*"):
                if path.name[len(FILE_NAME) + 1:].isdigit() and path.stat().st_mtime < cutoff:
                    path.unlink(missing_ok=True)
                    removed += 1
        except OSError as e:
            log.warning("request_log_prune_failed", error=repr(e))
            return
        if removed:
            log.info("request_log_pruned", files=removed, retention_days=self.settings.retention_days)
