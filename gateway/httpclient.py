"""The gateway's upstream HTTP/1.1 client: pooled keep-alive connections, TLS, bodies framed by
Content-Length, chunked encoding or the connection's close, read timeouts and read backpressure.

Why not aiohttp's client: in the relay's hot path it cost half the gateway's CPU per request
(bench/). Upstream calls need a narrow part of HTTP: one POST at a time per connection, its body
known up front, the answer read whole or streamed. That part is here, with llhttp (through
httptools, the parser uvicorn uses) doing the parsing, so framing is not hand-written.

Failures are ``HTTPError`` subclasses: ``ConnectError``, ``Timeout`` (connect or read),
``Disconnected`` (the peer closed or reset) and ``ProtocolError`` (an answer that is not HTTP).
"""
from __future__ import annotations

import asyncio
import collections
import functools
import ssl
import zlib
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

import httptools

HIGH_WATER = 256 * 1024  # unread body bytes at which the socket stops being read
MAX_HEAD_BYTES = 64 * 1024  # a response head (or trailer) larger than this is refused
MAX_BODY_BYTES = 64 * 1024 * 1024  # the most read() collects: a whole answer held in memory
_SPLIT_WRITE = 64 * 1024  # bodies above this are written after the head, not copied onto it
_DECODED = {"gzip": 47, "x-gzip": 47, "deflate": 47}  # zlib wbits 32+15: gzip or zlib header


class HTTPError(Exception):
    """An upstream call failed below HTTP's status codes."""


class ConnectError(HTTPError):
    pass


class Timeout(HTTPError):
    pass


class Disconnected(HTTPError):
    pass


class ProtocolError(HTTPError):
    pass


@dataclass(frozen=True)
class Endpoint:
    """A URL parsed once: where to connect, and the request line and Host header to send."""

    host: str
    port: int
    tls: bool
    head: bytes  # b"POST <path?query> HTTP/1.1\r\nHost: <host>\r\n"

    @classmethod
    def parse(cls, url: str, method: str = "POST") -> "Endpoint":
        parts = urlsplit(url)
        if parts.username or parts.password:  # (the URL is not echoed: it holds a secret)
            raise ValueError("credentials in the URL are not supported; use the API key settings")
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"{url!r}: only http and https URLs are supported")
        if not parts.hostname:
            raise ValueError(f"{url!r}: no host")
        try:
            explicit_port = parts.port
        except ValueError:
            raise ValueError(f"{url!r}: the port is not a number from 0 to 65535") from None
        tls = parts.scheme == "https"
        port = explicit_port or (443 if tls else 80)
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        if port != (443 if tls else 80):
            shown = f"{shown}:{port}"
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        head = f"{method} {target} HTTP/1.1\r\nHost: {shown}\r\n".encode("ascii")
        return cls(host=host, port=port, tls=tls, head=head)

    @property
    def key(self) -> tuple[str, int, bool]:
        return (self.host, self.port, self.tls)


@functools.cache
def default_tls_context() -> ssl.SSLContext:
    """The system's CAs (or SSL_CERT_FILE / SSL_CERT_DIR), loaded once a process: loading takes
    tens of milliseconds, so the app calls this at start, not on a request."""
    return ssl.create_default_context()


def encode_headers(headers: dict[str, str]) -> bytes:
    """Header lines for a request head; a value with CR, LF or NUL is refused (header injection)."""
    lines = []
    for name, value in headers.items():
        if any(c in name or c in value for c in "\r\n\0") or not name or ":" in name:
            raise ValueError(f"header {name!r} has a character that cannot be sent")
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines).encode("latin-1")


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection, and the state of the response it is reading."""

    __slots__ = (
        "loop", "key", "transport", "parser", "lost", "idle_since", "fields", "status", "headers",
        "headers_ready", "complete", "until_close", "got_bytes", "chunks", "buffered", "paused",
        "error", "waiter", "decoder", "informational", "reusable", "deadline", "timer", "head_bytes", "__weakref__",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, key: tuple[str, int, bool]) -> None:
        self.loop = loop
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.parser = None
        self.lost = False
        self.idle_since = 0.0
        self.deadline = 0.0  # when the current wait times out
        self.timer: asyncio.TimerHandle | None = None

    def begin(self) -> None:
        """Ready to read the answer to a new request. The parser lives as long as the connection:
        llhttp reads one answer after another on a kept-alive connection."""
        if self.parser is None:
            self.parser = httptools.HttpResponseParser(self)
        self.fields: list[tuple[bytes, bytes]] = []
        self.head_bytes = 0
        self.status = 0
        self.headers: dict[str, str] | None = None
        self.headers_ready = False
        self.complete = False
        self.until_close = False
        self.got_bytes = False
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.paused = False
        self.error: HTTPError | None = None
        self.waiter: asyncio.Future | None = None
        self.decoder = None
        self.informational = False
        self.reusable = True

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        if parser is None or self.complete:  # bytes nobody asked for: this connection is unusable
            self.reusable = False
            self.transport.close()  # type: ignore[union-attr]
            return
        self.got_bytes = True
        try:
            parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            self._fail(ProtocolError("could not decode the upstream's response body"))
        except httptools.HttpParserError as e:
            self._fail(ProtocolError(f"malformed HTTP response: {e}"))
        except httptools.HttpParserUpgrade:
            self._fail(ProtocolError("the upstream switched protocols"))

    def eof_received(self) -> bool:
        self._ended(None)
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._ended(exc)
        self.stop_timer()

    def _ended(self, exc: Exception | None) -> None:
        if self.parser is None or self.complete or self.error is not None:
            return
        if self.headers_ready and self.until_close and exc is None:
            self._finish_body()  # the body ran to the connection's close, as framed
            return
        if isinstance(exc, ssl.SSLError):
            self._fail(Disconnected(f"TLS failure: {exc.reason or exc}"))
        elif exc is not None:
            self._fail(Disconnected(f"the upstream connection broke: {type(exc).__name__}"))
        else:
            where = "in the body" if self.headers_ready else "before answering"
            self._fail(Disconnected(f"the upstream closed the connection {where}"))

    # -- httptools callbacks
    def on_message_begin(self) -> None:
        if self.complete:  # a second answer to one request: nothing can be trusted on this connection
            self.reusable = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.error is not None:
            return
        self.head_bytes += len(name) + len(value)
        if self.head_bytes > MAX_HEAD_BYTES:
            self._fail(ProtocolError(f"the upstream's response headers are over {MAX_HEAD_BYTES} bytes"))
            return
        self.fields.append((name, value))

    def on_headers_complete(self) -> None:
        if self.complete:
            return
        status = self.parser.get_status_code()  # type: ignore[union-attr]
        if status < 200:  # 1xx: an interim answer; the real one follows
            self.informational = True
            self.fields = []
            return
        fields = self.fields
        headers = {n.decode("latin-1").lower(): v.decode("latin-1") for n, v in fields}
        if len(headers) != len(fields):  # a repeated name: join its values, in order
            headers = {}
            for raw_name, raw_value in fields:
                name = raw_name.decode("latin-1").lower()
                value = raw_value.decode("latin-1")
                old = headers.get(name)
                headers[name] = value if old is None else f"{old}, {value}"
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding in _DECODED:
            self.decoder = zlib.decompressobj(_DECODED[encoding])
        elif encoding not in ("identity", ""):
            self._fail(ProtocolError(f"the upstream sent an unsupported content-encoding: {encoding}"))
            return
        self.status = status
        self.headers = headers
        self.headers_ready = True
        self.until_close = (
            "transfer-encoding" not in headers and "content-length" not in headers and status not in (204, 304)
        )
        self._wake()

    def on_body(self, data: bytes) -> None:
        if self.error is not None or self.complete:
            return
        if self.decoder is not None:
            try:
                data = self.decoder.decompress(data)
            except zlib.error:
                raise ValueError("bad compressed body") from None  # surfaces as HttpParserCallbackError
            if not data:
                return
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > HIGH_WATER and not self.paused:
            self.paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]
        self._wake()

    def on_message_complete(self) -> None:
        if self.informational:
            self.informational = False
            return
        if self.complete:
            return
        if not self.parser.should_keep_alive():  # type: ignore[union-attr]  # (reads False once reset)
            self.reusable = False
        self._finish_body()

    # -- helpers
    def _finish_body(self) -> None:
        if self.decoder is not None:
            try:
                tail = self.decoder.flush()
            except zlib.error:
                self._fail(ProtocolError("could not decode the upstream's response body"))
                return
            if tail:
                self.chunks.append(tail)
                self.buffered += len(tail)
        self.complete = True
        self._wake()

    def _fail(self, error: HTTPError) -> None:
        if self.error is None:
            self.error = error
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, deadline: float) -> None:
        """Until the connection has news (bytes, end, error), or raise Timeout at ``deadline``.

        One timer per connection, not one per wait: it is armed when none is, and when it fires
        early (the deadline moved on since) it re-arms itself for the current deadline."""
        waiter = self.waiter = self.loop.create_future()
        self.deadline = deadline
        if self.timer is None or deadline < self.timer.when():
            if self.timer is not None:
                self.timer.cancel()
            self.timer = self.loop.call_at(deadline, self._check_deadline)
        try:
            await waiter
        finally:
            self.waiter = None

    def _check_deadline(self) -> None:
        self.timer = None
        waiter = self.waiter
        if waiter is None or waiter.done():
            return  # nobody waits; the next wait arms a timer again
        if self.loop.time() >= self.deadline:
            waiter.set_exception(Timeout("the upstream did not answer in time"))
        else:
            self.timer = self.loop.call_at(self.deadline, self._check_deadline)

    def stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def take(self) -> bytes:
        chunks = self.chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.buffered = 0
        if self.paused:
            self.paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]
        return data

    def keep_alive(self) -> bool:
        return (
            self.complete
            and self.reusable
            and not self.lost
            and self.error is None
            and not self.until_close
            and not self.transport.is_closing()  # type: ignore[union-attr]
        )

    def close(self) -> None:
        """Close an idle connection. Its timer goes too: a lapsing timer would keep the closed
        connection and its buffers alive until it fired."""
        self.stop_timer()
        self.transport.close()  # type: ignore[union-attr]

    def abort(self) -> None:
        self.reusable = False
        self.stop_timer()
        if self.transport is not None:
            self.transport.abort()


class Response:
    """An answer whose head has arrived. Iterate it for body bytes as they come, or ``read()`` it
    whole; ``close()`` it when done (a finished body returns the connection to the pool)."""

    __slots__ = ("status", "headers", "_client", "_conn", "_read_timeout", "_deadline", "_open")

    def __init__(self, client: "HTTPClient", conn: _Connection, read_timeout: float, deadline: float | None) -> None:
        self.status: int = conn.status
        self.headers: dict[str, str] = conn.headers  # type: ignore[assignment]  # lower-case names
        self._client = client
        self._conn = conn
        self._read_timeout = read_timeout
        self._deadline = deadline
        self._open = True

    def __aiter__(self) -> "Response":
        return self

    async def __anext__(self) -> bytes:
        conn = self._conn
        while True:
            if conn.chunks:
                return conn.take()
            if conn.error is not None:
                self.close()
                raise conn.error
            if conn.complete or not self._open:
                self.close()
                raise StopAsyncIteration
            deadline = conn.loop.time() + self._read_timeout
            if self._deadline is not None and self._deadline < deadline:
                deadline = self._deadline
            try:
                await conn.wait(deadline)
            except BaseException:
                self.close()
                raise

    async def read(self, limit: int = MAX_BODY_BYTES) -> bytes:
        """The whole body; ProtocolError (and the connection dropped) past ``limit`` bytes."""
        conn = self._conn
        if conn.complete and conn.error is None and self._open:  # the body came with the head
            data = conn.take() if conn.chunks else b""
            self.close()
            return data
        parts, size = [], 0
        async for chunk in self:
            size += len(chunk)
            if size > limit:
                self.close()
                raise ProtocolError(f"the upstream's answer is over {limit} bytes")
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        if self._open:
            self._open = False
            self._client._release(self._conn)


class HTTPClient:
    """Pooled keep-alive connections per (host, port, tls), most recently used first.

    ``resolve`` maps (host, port) to the address to dial, keeping the URL's host for SNI,
    certificate checks and the Host header: a seam for tests and for pinning an upstream.
    """

    def __init__(
        self,
        *,
        keepalive_timeout: float = 30.0,
        max_idle_per_host: int = 512,
        ssl_context: ssl.SSLContext | None = None,
        resolve: Callable[[str, int], tuple[str, int]] | None = None,
    ) -> None:
        self.keepalive_timeout = keepalive_timeout
        self.max_idle_per_host = max_idle_per_host
        self._ssl = ssl_context
        self._resolve = resolve
        self._idle: dict[tuple[str, int, bool], collections.deque[_Connection]] = {}
        self._busy: set[_Connection] = set()
        self._closed = False
        self.opened = 0  # connections ever opened: pooling shows as few

    async def request(
        self,
        endpoint: Endpoint,
        header_lines: bytes,
        body: bytes,
        *,
        connect_timeout: float,
        read_timeout: float,
        total_timeout: float | None = None,
    ) -> Response:
        """Send ``endpoint.head + header_lines`` and ``body``; return once the answer's head is in.

        A pooled connection that turns out closed before any byte of the answer is retried once on
        a fresh one: the upstream closed it while idle, so it never saw the request.
        """
        if self._closed:
            raise ConnectError("the HTTP client is closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + total_timeout if total_timeout is not None else None
        length = str(len(body)).encode()
        for attempt in (1, 2):
            conn = self._pooled(endpoint.key, loop.time())
            reused = conn is not None
            if conn is None:
                conn = await self._connect(loop, endpoint, connect_timeout)
                if self._closed:  # closed while this connection was being made
                    conn.abort()
                    raise ConnectError("the HTTP client is closed")
            conn.begin()
            self._busy.add(conn)
            try:
                parts = (endpoint.head, header_lines, b"Content-Length: ", length, b"\r\n\r\n", body)
                if len(body) <= _SPLIT_WRITE:
                    conn.transport.write(b"".join(parts))  # type: ignore[union-attr]
                else:  # no copy of a big body
                    conn.transport.writelines(parts)  # type: ignore[union-attr]
                while not conn.headers_ready:
                    if conn.error is not None:
                        raise conn.error
                    wait_until = loop.time() + read_timeout
                    if deadline is not None and deadline < wait_until:
                        wait_until = deadline
                    await conn.wait(wait_until)
            except Disconnected:
                self._drop(conn)
                if reused and not conn.got_bytes and attempt == 1 and not self._closed:
                    continue
                raise
            except BaseException:
                self._drop(conn)
                raise
            return Response(self, conn, read_timeout, deadline)
        raise AssertionError("unreachable")

    async def _connect(self, loop: asyncio.AbstractEventLoop, endpoint: Endpoint, timeout: float) -> _Connection:
        host, port = (endpoint.host, endpoint.port) if self._resolve is None else self._resolve(endpoint.host, endpoint.port)
        tls = None
        if endpoint.tls:
            tls = self._ssl if self._ssl is not None else default_tls_context()
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop, endpoint.key),
                    host,
                    port,
                    ssl=tls,
                    server_hostname=endpoint.host if tls else None,
                )
        except TimeoutError:
            raise Timeout(f"could not connect to {endpoint.host}:{endpoint.port} within {timeout:g}s") from None
        except ssl.SSLError as e:  # certificate and handshake failures (before OSError: a subclass)
            raise ConnectError(f"TLS with {endpoint.host}:{endpoint.port} failed: {e.reason or e}") from None
        except OSError as e:
            raise ConnectError(f"could not connect to {endpoint.host}:{endpoint.port}: {e.strerror or e}") from None
        self.opened += 1
        return conn

    def _pooled(self, key: tuple[str, int, bool], now: float) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if conn.lost or conn.transport.is_closing():  # type: ignore[union-attr]
                continue
            if now - conn.idle_since >= self.keepalive_timeout:
                conn.close()
                continue
            return conn
        return None

    def _release(self, conn: _Connection) -> None:
        self._busy.discard(conn)  # (its timer, if armed, finds no waiter and lapses)
        if self._closed or not conn.keep_alive():
            self._drop(conn)
            return
        now = conn.loop.time()
        conn.idle_since = now
        idle = self._idle.get(conn.key)
        if idle is None:
            idle = self._idle[conn.key] = collections.deque()
        while idle and (now - idle[0].idle_since >= self.keepalive_timeout or len(idle) >= self.max_idle_per_host):
            idle.popleft().close()
        idle.append(conn)

    def _drop(self, conn: _Connection) -> None:
        self._busy.discard(conn)
        conn.abort()

    def idle_count(self, endpoint: Endpoint) -> int:
        return sum(1 for c in self._idle.get(endpoint.key, ()) if not c.lost)

    async def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
        for conn in list(self._busy):
            conn.abort()
        self._busy.clear()
        await asyncio.sleep(0)  # let the transports' connection_lost run
