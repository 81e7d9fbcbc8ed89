"""The OpenAI chat-completions dialect, spoken by Cerebras, Synthetic, Z.ai and llama.cpp.

Pure parts (``build_request``, ``map_error``) are module functions tested without a network;
``OpenAICompatible`` only adds the HTTP calls.
"""
from __future__ import annotations

import time
from typing import Any, AsyncIterator, Callable, Mapping

import orjson

from .. import __version__
from ..chat import ChatRequest
from ..config import ProviderConfig, Timeouts
from ..httpclient import Endpoint, HTTPClient, HTTPError, Response, Timeout, encode_headers
from ..logs import shorten
from ..ratelimits import parse_rate_limits, rate_limit_cooldown
from ..sse import EventTooLarge, SSESplitter
from .base import Completion, Failure, Stream, UpstreamError

USER_AGENT = f"glm-gateway/{__version__}"
_CONTEXT_CODES = frozenset({"context_length_exceeded", "exceed_context_size_error", "context_window_exceeded"})
_CONTEXT_PHRASES = ("context length", "context window", "maximum context", "context size", "too many tokens in")


def build_request(cfg: ProviderConfig, req: ChatRequest) -> bytes:
    """The body this provider gets: model rewritten, completion tokens capped; else the raw bytes."""
    payload = req.payload
    changes: dict[str, Any] = {}
    model = cfg.model_for(payload.get("model"))
    if payload.get("model") != model:
        changes["model"] = model
    cap = cfg.max_completion_tokens
    if cap is not None:
        asked = [payload.get(f) for f in ("max_completion_tokens", "max_tokens") if payload.get(f) is not None]
        if not asked:
            changes["max_completion_tokens"] = cap
        for field in ("max_completion_tokens", "max_tokens"):
            value = payload.get(field)
            if isinstance(value, int) and value > cap:
                changes[field] = cap
    if req.prediction is not None and cfg.accepts_prediction and "prediction" not in payload:
        changes["prediction"] = {"type": "content", "content": req.prediction}  # (an escalated draft)
    if not changes:
        return req.body()
    return orjson.dumps({**payload, **changes})


def error_fields(body: bytes) -> tuple[str, str | None, str | None]:
    """(message, type, code) from an error body: OpenAI's nested shape or Cerebras's top-level one."""
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        inner = data.get("error", data)
        if isinstance(inner, str):
            return inner, None, None
        if isinstance(inner, dict):
            message = inner.get("message") or inner.get("msg") or ""
            code = inner.get("code")
            typ = inner.get("type")
            return str(message), str(typ) if typ is not None else None, str(code) if code is not None else None
    # scrubbed before the cut, so an echoed key is never half kept; 4 KiB bounds the decoding
    text = shorten(body[:4096].decode("utf-8", "replace").strip(), 200)
    return text, None, None


def is_context_length(message: str, typ: str | None, code: str | None) -> bool:
    if code in _CONTEXT_CODES or typ in _CONTEXT_CODES:
        return True
    low = message.lower()
    return any(p in low for p in _CONTEXT_PHRASES)


def map_error(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    default_cooldown: float,
    now_epoch: float | None = None,
    content_type: str | None = None,
) -> UpstreamError:
    """Classify an upstream error answer in the terms routing acts on."""
    message, typ, code = error_fields(body)
    limits = parse_rate_limits(headers)
    summary = f"{status} {shorten(message, 160)}".strip()
    common = dict(status=status, body=body, content_type=content_type, rate_limits=limits)
    if status == 429:
        now = time.time() if now_epoch is None else now_epoch
        seconds, reason = rate_limit_cooldown(headers, message, code, default_cooldown, now)
        return UpstreamError(Failure.RATE_LIMITED, summary, cooldown=seconds, cooldown_reason=reason, **common)
    if status in (401, 403):
        return UpstreamError(Failure.AUTH, summary, **common)
    if status == 402:
        return UpstreamError(Failure.PAYMENT, summary, **common)
    if status == 408:
        return UpstreamError(Failure.TIMEOUT, summary, **common)
    if status in (400, 413, 422) and is_context_length(message, typ, code):
        return UpstreamError(Failure.CONTEXT_LENGTH, summary, **common)
    if status == 503:
        return UpstreamError(Failure.OVERLOADED, summary, **common)
    if status >= 500:
        return UpstreamError(Failure.SERVER, summary, **common)
    return UpstreamError(Failure.CLIENT, summary, **common)


class OpenAICompatible:
    """One OpenAI-compatible upstream, over the app's shared HTTP client."""

    def __init__(
        self,
        cfg: ProviderConfig,
        client: HTTPClient,
        timeouts: Timeouts,
        error_mapper: Callable[..., UpstreamError] = map_error,
    ) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self._client = client
        self._endpoint = Endpoint.parse(cfg.chat_url)  # parsed once, not per request
        self._map_error = error_mapper
        self._timeouts = timeouts
        self._head_cache: dict[tuple[str, bool], bytes] = {}

    def _head(self, secret: str, stream: bool) -> bytes:
        try:
            return self._head_cache[(secret, stream)]
        except KeyError:
            pass
        headers = {
            "Content-Type": "application/json",
            # compression would make the upstream buffer events, and costs CPU on a loopback/LAN hop
            "Accept-Encoding": "identity",
            "Accept": "text/event-stream" if stream else "application/json",
            "User-Agent": USER_AGENT,
        }
        if secret:
            headers["Authorization"] = f"Bearer {secret}"
        head = self._head_cache[(secret, stream)] = encode_headers(headers)
        return head

    async def _post(self, body: bytes, secret: str, stream: bool) -> Response:
        t = self._timeouts
        try:
            return await self._client.request(
                self._endpoint,
                self._head(secret, stream),
                body,
                connect_timeout=t.connect,
                read_timeout=t.read,
                total_timeout=None if stream else t.total,
            )
        except Timeout as e:
            raise UpstreamError(Failure.TIMEOUT, f"timed out: {e}") from None
        except HTTPError as e:
            raise UpstreamError(Failure.CONNECTION, f"connection failed: {e}") from None

    def _error(self, resp: Response, body: bytes) -> UpstreamError:
        return self._map_error(
            resp.status,
            resp.headers,
            body,
            default_cooldown=self.cfg.cooldown,
            content_type=resp.headers.get("content-type"),
        )

    async def chat(self, req: ChatRequest, secret: str) -> Completion:
        resp = await self._post(build_request(self.cfg, req), secret, False)
        try:
            data = await resp.read()
        except Timeout as e:
            raise UpstreamError(Failure.TIMEOUT, f"timed out: {e}") from None
        except HTTPError as e:
            raise UpstreamError(Failure.CONNECTION, f"connection failed: {e}") from None
        finally:
            resp.close()
        if resp.status >= 300:
            raise self._error(resp, data)
        return Completion(
            status=resp.status,
            body=data,
            content_type=resp.headers.get("content-type", "application/json"),
            rate_limits=parse_rate_limits(resp.headers),
        )

    async def chat_stream(self, req: ChatRequest, secret: str) -> Stream:
        resp = await self._post(build_request(self.cfg, req), secret, True)
        if resp.status >= 300:
            try:
                data = await resp.read()
            except HTTPError:
                data = b""
            finally:
                resp.close()
            raise self._error(resp, data)
        return Stream(events=_relay_events(resp), rate_limits=parse_rate_limits(resp.headers))


async def _relay_events(resp: Response) -> AsyncIterator[bytes]:
    """Whole SSE events as they arrive, joined per network read. Closes the upstream when done."""
    splitter = SSESplitter()
    try:
        async for chunk in resp:
            events = splitter.feed(chunk)
            if events:
                yield b"".join(events) if len(events) > 1 else events[0]
        tail = splitter.tail()
        if tail.strip():
            yield tail + b"\n\n"
    except Timeout:
        raise UpstreamError(Failure.MIDSTREAM, "upstream stream stalled (read timeout)") from None
    except HTTPError as e:
        raise UpstreamError(Failure.MIDSTREAM, f"upstream stream broke: {e}") from None
    except EventTooLarge as e:
        raise UpstreamError(Failure.MIDSTREAM, str(e)) from None
    finally:
        resp.close()
