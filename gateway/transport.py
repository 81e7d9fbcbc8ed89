"""Upstream HTTP: the app's one ``aiohttp.ClientSession``, how answers are read, and what a
transport failure means in routing's terms.

- ``new_session(settings)``: one pooled session for every upstream call (bench/bare_relay.py builds
  the floor's with it too). Its connector caps connections (in all and per host:port), caches DNS
  answers (and aiohttp makes concurrent look-ups of one host share one), keeps idle connections
  for reuse, races IPv6/IPv4 (happy eyeballs) and checks certificates with one TLS context loaded
  at start. No cookie jar (a shared one would carry one upstream answer's Set-Cookie into other
  clients' requests); no ``trust_env`` (proxies come from Settings: see ``config.Proxies``).
- No replay: aiohttp sends a request again on a kept-alive connection that turns out dropped only
  for idempotent methods (``IDEMPOTENT_METHODS`` in aiohttp/client.py, 3.13), so a POST, once
  written, is never sent twice; the upstream may have acted on it (a paid call billed twice). The
  failure goes to routing instead, which tries the next key or provider.
- Bounded answers: ``read_answer`` / ``answer_chunks`` stop past ``MAX_ANSWER_BYTES`` decoded bytes.
  Calls ask for ``Accept-Encoding: identity``; an upstream that compresses anyway (gzip, deflate)
  is decoded here in steps of at most ``DECODE_STEP`` bytes of output, not by aiohttp
  (``auto_decompress=False``), whose decoder bounds only each network read's output, at 32 MiB
  and not settable from a ClientSession: a few bombs at once would hold gigabytes.
- ``upstream_error``: aiohttp's exceptions -> ``UpstreamError`` kinds, with messages that name
  the host and never a URL's credentials.
"""
from __future__ import annotations

import asyncio
import functools
import ssl
import zlib
from collections.abc import AsyncIterator, Iterator, Mapping

import aiohttp
from aiohttp.abc import AbstractResolver

from .config import Settings, Timeouts
from .providers.base import Failure, UpstreamError

MAX_ANSWER_BYTES = 64 * 1024 * 1024  # the most of one answer read, decoded (a whole one is held in memory)
DECODE_STEP = 256 * 1024  # the most one decoding step produces
DNS_CACHE_SECONDS = 60
KEEPALIVE_SECONDS = 30.0  # an idle connection older than this is closed, not reused
HAPPY_EYEBALLS_DELAY = 0.25  # seconds before the next address family is tried beside the first


@functools.cache
def default_tls_context() -> ssl.SSLContext:
    """The system's CAs (or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``), loaded once a process: loading
    takes tens of milliseconds, so the app makes it at start, not on a request."""
    return ssl.create_default_context()


def new_session(
    settings: Settings,
    *,
    tls: ssl.SSLContext | None = None,
    resolver: AbstractResolver | None = None,
    force_close: bool = False,
) -> aiohttp.ClientSession:
    """The session every upstream call goes through; make it with a running loop, close it at
    the end. ``tls`` and ``resolver`` are seams for tests (a test CA; a name aimed at 127.0.0.1);
    ``force_close``: a fresh connection per call (for a server that closes kept-alive ones)."""
    connector = aiohttp.TCPConnector(
        force_close=force_close,
        limit=settings.upstream_max_connections,
        limit_per_host=settings.upstream_max_connections_per_host,
        ttl_dns_cache=DNS_CACHE_SECONDS,
        keepalive_timeout=None if force_close else KEEPALIVE_SECONDS,
        ssl=tls if tls is not None else default_tls_context(),
        happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY,
        resolver=resolver,
    )
    t = settings.timeouts
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        auto_decompress=False,
        # every call asks for no compression (it would make an upstream buffer events, and costs
        # CPU on a loopback/LAN hop); callers name their own Accept and User-Agent
        headers={"Accept-Encoding": "identity"},
        skip_auto_headers=("Accept", "User-Agent"),
        # each call passes its own timeouts; these are for one that does not
        timeout=aiohttp.ClientTimeout(total=None, connect=t.connect, sock_connect=t.connect, sock_read=t.read),
    )


def call_timeouts(t: Timeouts, stream: bool) -> aiohttp.ClientTimeout:
    """``connect`` covers waiting for a free pooled connection (at the per-host cap) and making
    one; ``sock_read`` is the longest silence; a stream has no total."""
    return aiohttp.ClientTimeout(
        total=None if stream else t.total, connect=t.connect, sock_connect=t.connect, sock_read=t.read
    )


class UnreadableAnswer(Exception):
    """An answer the gateway will not read whole: too large, or in a coding it cannot decode."""


class BoundedDecoder:
    """gzip or deflate, decoded in steps of at most ``DECODE_STEP`` bytes of output each."""

    __slots__ = ("_coding", "_z")

    def __init__(self, coding: str) -> None:
        self._coding = coding
        self._z: zlib._Decompress | None = None  # made at the first byte: deflate may be raw

    def feed(self, data: bytes) -> Iterator[bytes]:
        z = self._z
        if z is None:
            if self._coding != "deflate":
                wbits = 32 + zlib.MAX_WBITS  # gzip (or zlib) header
            else:  # "deflate" is zlib-wrapped by the RFC, raw from some servers (as aiohttp reads it)
                wbits = zlib.MAX_WBITS if data[0] & 0x0F == 8 else -zlib.MAX_WBITS
            z = self._z = zlib.decompressobj(wbits)
        try:
            out = z.decompress(data, DECODE_STEP)
            while True:
                if out:
                    yield out
                # more to come: input not yet read, or a full step that may have left output pending
                if not z.unconsumed_tail and (len(out) < DECODE_STEP or z.eof):
                    return
                out = z.decompress(z.unconsumed_tail, DECODE_STEP)
        except zlib.error:
            raise UnreadableAnswer(f"could not decode the upstream's {self._coding} answer") from None

    def finish(self) -> None:
        if self._z is not None and not self._z.eof:
            raise UnreadableAnswer(f"the upstream's {self._coding} answer was cut short")


def _decoder(headers: Mapping[str, str]) -> BoundedDecoder | None:
    coding = headers.get("Content-Encoding", "").strip().lower()
    if coding in ("", "identity"):
        return None
    if coding in ("gzip", "x-gzip", "deflate"):
        return BoundedDecoder(coding)
    raise UnreadableAnswer(f"the upstream sent an unsupported content-encoding: {coding[:40]}")


def _too_large(limit: int) -> UnreadableAnswer:
    return UnreadableAnswer(f"the upstream's answer is over {limit} bytes")


async def answer_chunks(resp: aiohttp.ClientResponse, limit: int = MAX_ANSWER_BYTES) -> AsyncIterator[bytes]:
    """The answer's bytes, decoded, as they arrive (each network read, or one decoding step)."""
    decoder = _decoder(resp.headers)
    size = 0
    async for data in resp.content.iter_any():
        for chunk in (data,) if decoder is None else decoder.feed(data):
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            yield chunk
    if decoder is not None:
        decoder.finish()


async def read_answer(resp: aiohttp.ClientResponse, limit: int = MAX_ANSWER_BYTES) -> bytes:
    """The whole answer, decoded; ``UnreadableAnswer`` past ``limit`` bytes."""
    length = resp.content_length
    if length is not None and "Content-Encoding" not in resp.headers:  # the usual answer
        if length > limit:
            raise _too_large(limit)
        return await resp.read()  # (aiohttp reads exactly Content-Length bytes)
    parts = [chunk async for chunk in answer_chunks(resp, limit)]
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _where(e: aiohttp.ClientConnectorError) -> str:
    host = f"[{e.host}]" if ":" in e.host else e.host
    return f"{host}:{e.port}"


def describe(exc: BaseException, t: Timeouts) -> tuple[Failure, str]:
    """What a transport failure was, in routing's terms and in words."""
    if isinstance(exc, asyncio.TimeoutError):  # (every aiohttp timeout is one)
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return Failure.TIMEOUT, f"timed out: no connection within {t.connect:g}s"
        if isinstance(exc, aiohttp.SocketTimeoutError):
            return Failure.TIMEOUT, f"timed out: the upstream was silent for {t.read:g}s (read timeout)"
        return Failure.TIMEOUT, f"timed out: the whole call took over {t.total:g}s"
    if isinstance(exc, UnreadableAnswer):
        return Failure.CONNECTION, str(exc)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cert = exc.certificate_error
        reason = getattr(cert, "verify_message", None) or getattr(cert, "reason", None) or type(cert).__name__
        return Failure.CONNECTION, f"TLS: the certificate of {_where(exc)} was refused: {reason}"
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        return Failure.CONNECTION, f"TLS with {_where(exc)} failed: {getattr(exc, 'reason', None) or exc.strerror}"
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        return Failure.CONNECTION, f"could not connect to the proxy {_where(exc)}: {exc.strerror or exc.os_error}"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return Failure.CONNECTION, f"could not resolve {exc.host}: {exc.strerror or exc.os_error}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return Failure.CONNECTION, f"could not connect to {_where(exc)}: {exc.strerror or exc.os_error}"
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        return Failure.CONNECTION, f"the proxy refused the tunnel: {exc.status} {exc.message}"[:200]
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return Failure.CONNECTION, "the upstream closed the connection"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return Failure.CONNECTION, "the upstream's answer was cut short or badly framed"
    if isinstance(exc, aiohttp.ClientResponseError):  # a head that is not HTTP, or too large
        return Failure.CONNECTION, f"the upstream's answer is not valid HTTP: {exc.message}"[:200]
    if isinstance(exc, OSError):  # (ClientOSError too)
        return Failure.CONNECTION, f"the upstream connection broke: {exc.strerror or type(exc).__name__}"
    return Failure.CONNECTION, f"the upstream call failed: {type(exc).__name__}"


def upstream_error(exc: BaseException, t: Timeouts, *, midstream: bool = False) -> UpstreamError:
    kind, message = describe(exc, t)
    if midstream:
        return UpstreamError(Failure.MIDSTREAM, f"upstream stream broke: {message}")
    return UpstreamError(kind, message)


# what a call can raise that ``upstream_error`` describes (CancelledError is not one of them)
TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, UnreadableAnswer, OSError)
