"""The OpenAI chat-completions dialect, spoken by Cerebras, Synthetic, Z.ai and llama.cpp.

Pure parts (``build_request``, ``map_error``) are module functions tested without a network;
``OpenAICompatible`` only adds the HTTP calls, through the app's session (gateway/transport.py).
"""
from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp
import orjson
import structlog
from yarl import URL

from .. import __version__
from ..chat import ChatRequest
from ..config import ProviderConfig, Proxy, Timeouts
from ..logs import shorten
from ..ratelimits import parse_rate_limits, rate_limit_cooldown
from ..sse import EventTooLarge, SSESplitter
from ..transport import TRANSPORT_ERRORS, answer_chunks, call_timeouts, read_answer, upstream_error
from ..usage.stream import upstream_stream_options
from .base import Completion, Failure, Stream, UpstreamError

log = structlog.get_logger("gateway.providers")

USER_AGENT = f"glm-gateway/{__version__}"
ERROR_BODY_BYTES = 1024 * 1024  # the most of an error answer read (it is parsed, and may be relayed)
_CONTEXT_CODES = frozenset({"context_length_exceeded", "exceed_context_size_error", "context_window_exceeded"})
_CONTEXT_PHRASES = ("context length", "context window", "maximum context", "context size", "too many tokens in")


def build_request(cfg: ProviderConfig, req: ChatRequest) -> bytes:
    """The body this provider gets: model rewritten, completion tokens capped, a stream asked for
    its usage; else the raw bytes."""
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
    if req.stream:  # every stream is asked for its usage (the relay hides it from clients that did not)
        options = upstream_stream_options(payload)
        if options is not None:
            if not changes and not req.modified and "stream_options" not in payload:
                return _with_stream_options(req.raw)
            changes["stream_options"] = options
    if not changes:
        return req.body()
    return orjson.dumps({**payload, **changes})


_ASK_USAGE = b',"stream_options":{"include_usage":true}}'


def _with_stream_options(raw: bytes) -> bytes:
    """The client's bytes with ``stream_options`` added as the last member: a copy, not a
    re-encoding of a body that may be megabytes (written by hand: the body is a JSON object, so
    it ends in ``}`` and holds at least ``messages``, and it had no ``stream_options``)."""
    body = raw.rstrip()
    return body[:-1] + _ASK_USAGE


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
    common: dict[str, Any] = dict(status=status, body=body, content_type=content_type, rate_limits=limits)
    if status == 429:
        now = time.time() if now_epoch is None else now_epoch
        seconds, reason = rate_limit_cooldown(headers, message, code, default_cooldown, now)
        return UpstreamError(Failure.RATE_LIMITED, summary, cooldown=seconds, cooldown_reason=reason, **common)
    if status in (401, 403):
        return UpstreamError(Failure.AUTH, summary, **common)
    if status == 402:
        return UpstreamError(Failure.PAYMENT, summary, **common)
    if status == 407:  # a forward proxy (HTTP_PROXY) refused the gateway's credentials: not the client's fault
        return UpstreamError(Failure.CONNECTION, f"the proxy wants other credentials: {summary}", **common)
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
    """One OpenAI-compatible upstream, over the app's shared ``aiohttp.ClientSession``."""

    def __init__(
        self,
        cfg: ProviderConfig,
        session: aiohttp.ClientSession,
        timeouts: Timeouts,
        error_mapper: Callable[..., UpstreamError] = map_error,
        proxy: Proxy | None = None,
    ) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self._session = session
        self._url = URL(cfg.chat_url)  # parsed once, not per request
        self._map_error = error_mapper
        self._timeouts = timeouts
        self._call_timeouts = {stream: call_timeouts(timeouts, stream) for stream in (False, True)}
        self._proxy = URL(proxy.url) if proxy is not None else None
        self._proxy_auth = (
            aiohttp.BasicAuth(proxy.login, proxy.password.reveal()) if proxy is not None and proxy.login else None
        )
        self._headers: dict[tuple[str, bool], dict[str, str]] = {}

    def _headers_for(self, secret: str, stream: bool) -> dict[str, str]:
        try:
            return self._headers[(secret, stream)]
        except KeyError:
            pass
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if stream else "application/json",
            "User-Agent": USER_AGENT,
        }  # (and the session's Accept-Encoding: identity)
        if secret:
            headers["Authorization"] = f"Bearer {secret}"
        self._headers[(secret, stream)] = headers
        return headers

    async def _post(self, body: bytes, secret: str, stream: bool) -> aiohttp.ClientResponse:
        """The answer, once its head is in; a 3xx is a failure here (never followed, never relayed)."""
        try:
            resp = await self._session.post(
                self._url,
                data=body,
                headers=self._headers_for(secret, stream),
                timeout=self._call_timeouts[stream],
                allow_redirects=False,
                proxy=self._proxy,
                proxy_auth=self._proxy_auth,
            )
        except TRANSPORT_ERRORS as e:
            raise upstream_error(e, self._timeouts) from None
        if 300 <= resp.status < 400:
            resp.close()
            raise self._redirected(resp)
        return resp

    def _redirected(self, resp: aiohttp.ClientResponse) -> UpstreamError:
        """A redirect means the configured base URL is not the API's (a moved host, http for
        https, a missing path part): the provider fails, and the log says where it pointed."""
        var = f"{self.name.upper()}_BASE_URL"
        log.warning(
            "upstream_redirected",
            provider=self.name,
            status=resp.status,
            location=resp.headers.get("Location", "")[:300],
            hint=f"check {var}: the gateway does not follow redirects",
        )
        return UpstreamError(
            Failure.SERVER, f"answered {resp.status}, a redirect (is {var} right? see the log)", status=resp.status
        )

    def _error(self, resp: aiohttp.ClientResponse, body: bytes) -> UpstreamError:
        return self._map_error(
            resp.status,
            resp.headers,
            body,
            default_cooldown=self.cfg.cooldown,
            content_type=resp.headers.get("Content-Type"),
        )

    async def chat(self, req: ChatRequest, secret: str) -> Completion:
        resp = await self._post(build_request(self.cfg, req), secret, False)
        try:
            data = await read_answer(resp)
        except TRANSPORT_ERRORS as e:
            raise upstream_error(e, self._timeouts) from None
        finally:
            resp.release()  # (back to the pool if the answer was read whole, else closed)
        if resp.status >= 300:
            raise self._error(resp, data)
        return Completion(
            status=resp.status,
            body=data,
            content_type=resp.headers.get("Content-Type", "application/json"),
            rate_limits=parse_rate_limits(resp.headers),
        )

    async def chat_stream(self, req: ChatRequest, secret: str) -> Stream:
        resp = await self._post(build_request(self.cfg, req), secret, True)
        if resp.status >= 300:
            try:
                data = await read_answer(resp, ERROR_BODY_BYTES)
            except TRANSPORT_ERRORS:
                data = b""
            finally:
                resp.release()
            raise self._error(resp, data)
        return Stream(events=_relay_events(resp, self._timeouts), rate_limits=parse_rate_limits(resp.headers))


async def _relay_events(resp: aiohttp.ClientResponse, timeouts: Timeouts) -> AsyncIterator[bytes]:
    """Whole SSE events as they arrive, joined per network read. Closes the upstream when done."""
    splitter = SSESplitter()
    try:
        async for chunk in answer_chunks(resp):
            events = splitter.feed(chunk)
            if events:
                yield b"".join(events) if len(events) > 1 else events[0]
        tail = splitter.tail()
        if tail.strip():
            yield tail + b"\n\n"
    except TRANSPORT_ERRORS as e:
        raise upstream_error(e, timeouts, midstream=True) from None
    except EventTooLarge as e:
        raise UpstreamError(Failure.MIDSTREAM, str(e)) from None
    finally:
        resp.release()  # (back to the pool if the stream ended, else closed)
