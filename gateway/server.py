"""The HTTP server under the app: deadlines for slow clients, a cap on connections, and
OpenAI-shaped answers to what aiohttp's own server would answer in text or not at all.

aiohttp 3.13's server times nothing before a connection's first response (20 clients sending a
header byte a second stay forever), nor a body (a Content-Length body that stops early, a chunked
one with no last chunk), caps no connections, answers its parser's rejections in text/plain,
keeps a CONNECT's connection hanging, and sends ``100 Continue`` before any middleware has looked
at the key. Here, per connection:

- a deadline for the request head: REQUEST_HEAD_TIMEOUT from the connection's opening, or on a
  kept-alive connection from the first byte of the next request (an idle kept-alive connection is
  aiohttp's keepalive_timeout's business); and one for the body: REQUEST_BODY_TIMEOUT from the end
  of its head. Past either the client gets a 408 and the connection is closed. Both share one
  timer per connection, moved lazily as aiohttp moves its keep-alive timer: a request costs two
  clock reads, not a timer;
- MAX_CLIENT_CONNECTIONS open connections at most: one more gets a 503 at once and is closed;
- the parser's rejections, CONNECT, and the errors aiohttp answers itself are OpenAI JSON with
  ``Connection: close``, never quoting the client's bytes (they may hold a key);
- ``100 Continue`` is sent when the handler reads the body (``read_body``), after the middleware
  checked the key and the handler the size: a bad key gets its 401 before the body is sent.

How aiohttp is extended, and why this way: ``web.Server.__call__`` builds a ``RequestHandler``,
the protocol, and nothing lets an app choose another class. ``GatewayRunner`` is a
``web.AppRunner`` whose ``_make_server`` lets aiohttp start the app and build its own Server, then
serves the same request handler and factory through ``GatewayServer``, whose protocol is
``EdgeProtocol``. The other way, replacing ``app._make_handler`` on the instance, relies on as
much private API and hides it from types and readers. What EdgeProtocol relies on in
``RequestHandler`` (3.13.5): ``data_received`` appends each parsed ``(message, payload)`` to
``_messages`` and counts ``_request_count``, or an ``_ErrInfo`` for a parser error; ``start()``
awaits ``_waiter`` and answers an ``_ErrInfo`` through ``handle_error``; ``_close`` and
``_force_close`` stop parsing; ``log_access`` runs once each response is written. Each of these is
pinned by behaviour in tests/test_server_edge.py, which fails if aiohttp changes them.
"""
from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, cast

import orjson
import structlog
from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11
from aiohttp.http_exceptions import (
    BadHttpMethod,
    BadStatusLine,
    HttpProcessingError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
)
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import RequestHandler, _ErrInfo

from .config import Settings
from .errors import (
    ExpectationFailed,
    GatewayError,
    GatewayTimeout,
    MalformedRequest,
    MethodNotAllowed,
    RequestTimeout,
    ServiceUnavailable,
    error_body,
    error_response,
)

log = structlog.get_logger("gateway.server")

KEEPALIVE_TIMEOUT = 75.0  # an idle kept-alive connection is closed after this (aiohttp's run_app default)
RESERVED_FILES = 64  # files the gateway holds besides its connections: logs, key database, listeners
REFUSED_LINGER = 2.0  # seconds a refused connection has to read its 503 and hang up
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
ALLOWED_METHODS = "GET, HEAD, POST"


@dataclass(frozen=True)
class Limits:
    head_timeout: float
    body_timeout: float
    max_connections: int

    @classmethod
    def from_settings(cls, settings: Settings, open_files: int | None) -> Limits:
        cap = connection_cap(settings.max_client_connections, open_files)
        if cap < settings.max_client_connections:
            log.warning("client_connection_cap_lowered", configured=settings.max_client_connections, cap=cap,
                        open_files_limit=open_files)
        return cls(settings.request_head_timeout, settings.request_body_timeout, cap)


def connection_cap(configured: int, open_files: int | None) -> int:
    """At most ``configured`` connections, and no more than the open-files limit holds: each
    client connection may hold two files (its socket and its upstream's), besides the gateway's
    RESERVED_FILES. ``open_files`` None: no limit known."""
    if open_files is None:
        return configured
    return max(1, min(configured, (open_files - RESERVED_FILES) // 2))


def open_files_limit() -> int | None:
    """The process's soft limit of open files, or None where there is none (or no such API)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


# ---- what clients are told --------------------------------------------------------------------


class ConnectRefused(MethodNotAllowed):
    def headers(self) -> dict[str, str]:
        return {**super().headers(), "Allow": ALLOWED_METHODS, "x-should-retry": "false"}


def parser_error(exc: HttpProcessingError) -> MalformedRequest:
    """What a client is told about a request aiohttp's parser (llhttp) rejected: the status
    aiohttp chose (400 for every case in 3.13) and a reason that never repeats the client's bytes
    (aiohttp's own messages quote them, and they may hold a key)."""
    status = exc.code if 400 <= exc.code < 500 else 400
    if isinstance(exc, LineTooLong):
        reason = f"the request line or a header is longer than {exc.args[1]} bytes"
    elif isinstance(exc, BadHttpMethod):
        reason = "the method is not a valid HTTP method"
    elif isinstance(exc, BadStatusLine):
        reason = "the request line is not valid HTTP/1.1"
    elif isinstance(exc, InvalidURLError):
        reason = "the request target is not a valid URL"
    elif isinstance(exc, InvalidHeader):
        reason = "a header has a character that is not allowed"
    else:
        reason = _llhttp_reason(exc.message)
    return MalformedRequest(f"malformed HTTP request: {reason}", status=status)


def _llhttp_reason(message: str) -> str:
    """llhttp's reason ("Invalid character in chunk size") is what precedes the bytes aiohttp
    quotes after it (":\\n\\n  b'...'"); aiohttp's own messages ("Too many headers received")
    quote nothing. Anything that still looks like quoted bytes is replaced."""
    reason = message.split(":\n", 1)[0].strip().rstrip(".")
    if reason == "Pause on PRI/Upgrade":  # the preface of HTTP/2 with prior knowledge
        return "HTTP/2 is not served here, only HTTP/1.1"
    if not reason or len(reason) > 100 or not (reason.isascii() and reason.isprintable()) or "b'" in reason:
        return "the request is not valid HTTP/1.1"
    return reason[0].lower() + reason[1:]


def edge_error(status: int, exc: BaseException | None) -> GatewayError:
    """The error for a response aiohttp's server makes itself: a parser rejection (``exc`` an
    HttpProcessingError), one of ours (a GatewayError), or a handler failure (500, 504)."""
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, HttpProcessingError):
        return parser_error(exc)
    if status == HTTPStatus.GATEWAY_TIMEOUT:
        return GatewayTimeout("the request took too long to handle")
    if status >= 500:
        return GatewayError("internal gateway error; see the gateway log")
    return GatewayError(HTTPStatus(status).phrase, status=status, type="invalid_request_error")


def refusal(max_connections: int) -> bytes:
    """The whole answer of a connection over the cap, built once. Written by hand because such a
    connection never gets a request object, and so none of aiohttp's response machinery; the
    bytes are a constant HTTP/1.1 response."""
    err = ServiceUnavailable(
        f"the gateway is serving its limit of {max_connections} client connections; retry shortly",
        code="too_many_connections",
        retry_after=1,
    )
    body = orjson.dumps(error_body(err.message, err.type, err.code, err.param))
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body)), "Connection": "close",
               **err.headers()}
    head = "HTTP/1.1 503 Service Unavailable\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode("ascii") + b"\r\n" + body


# ---- Expect: 100-continue ---------------------------------------------------------------------


async def defer_continue(request: web.Request) -> None:
    """A route's ``expect_handler`` that sends nothing: aiohttp runs it before the middleware, so
    its default would invite the body before the key is checked. ``read_body`` sends the 100."""
    return None


async def read_body(request: web.Request) -> bytes:
    """The request's body; first, for a client that sent ``Expect: 100-continue`` and waits
    before sending it, the ``100 Continue``. A handler calls this once it wants the body."""
    expect = request.headers.get(hdrs.EXPECT)
    if expect is not None:
        if expect.lower() != "100-continue":
            raise ExpectationFailed("unsupported Expect header: only 100-continue is supported")
        body = request.content
        if request.version >= HttpVersion11 and body.total_bytes == 0 and not body.is_eof():
            writer = request.writer
            await writer.write(CONTINUE)
            writer.output_size = 0  # the response proper has not begun (as aiohttp's own handler does)
    return await request.read()


# ---- the protocol -----------------------------------------------------------------------------

_IDLE, _HEAD, _BODY, _DONE = 0, 1, 2, 3  # what a connection's timer is timing (_DONE: nothing more)


class EdgeProtocol(RequestHandler):
    """aiohttp's protocol, plus the head and body deadlines, the connection cap, and JSON errors."""

    __slots__ = ("_answered", "_body", "_body_timeout", "_deadline", "_edge", "_head_timeout", "_phase", "_timer",
                 "_timer_at")

    def __init__(self, manager: GatewayServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._edge = manager  # kept: aiohttp drops _manager when the connection is lost
        self._head_timeout = manager.limits.head_timeout
        self._body_timeout = manager.limits.body_timeout
        self._phase = _IDLE
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._body: StreamReader | None = None  # the body being received, while it is timed
        self._answered: object = None  # the body reader of the last request answered

    # -- connections --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        edge = self._edge
        if edge.open_connections >= edge.limits.max_connections:
            self._refuse(cast(asyncio.Transport, transport))
            return
        edge.open_connections += 1
        super().connection_made(transport)
        self._arm(_HEAD, self._loop.time() + self._head_timeout)

    def _refuse(self, transport: asyncio.Transport) -> None:
        """Over the cap: the canned 503 at once, before any request, with no task and no parsing.
        Then half-close and read (dropping) what the client sends until it hangs up, so that
        closing does not reset the connection under its answer; at most REFUSED_LINGER seconds.
        (Not accepting at all would leave clients hanging in the listen backlog, unanswered.)"""
        self._manager = None  # connection_lost: nothing to unregister
        self._force_close = True  # data_received: drop everything
        self._phase = _DONE
        self._edge.refused += 1
        transport.write(self._edge.refusal)
        if transport.can_write_eof():
            transport.write_eof()
            self._timer = self._loop.call_later(REFUSED_LINGER, transport.close)
        else:
            transport.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._phase = _DONE
        self._body = None
        if self._manager is not None:  # an admitted connection, lost for the first time
            self._edge.open_connections -= 1
        super().connection_lost(exc)

    # -- bytes in --

    def data_received(self, data: bytes) -> None:
        while True:  # once, but again for bytes an Upgrade held back (a loop: they can hold another)
            phase = self._phase
            if phase == _IDLE:  # the first bytes of the next request's head
                self._arm(_HEAD, self._loop.time() + self._head_timeout)
            elif phase == _DONE:
                return
            count = self._request_count
            RequestHandler.data_received(self, data)  # (not super(): this runs for every read)
            if self._request_count != count:
                data = self._heads_parsed()
                if data:
                    continue
            elif self._body is not None and self._body.is_eof():  # its last byte came
                self._body = None
                self._phase = _IDLE
            return

    def _heads_parsed(self) -> bytes:
        """The last bytes completed one or more heads, or the parser failed on them. Returns the
        bytes to parse next (held back by an Upgrade), if any."""
        message, payload = self._messages[-1]
        body = self._body
        if body is not None and not body.is_eof():  # llhttp starts nothing new inside a body: it failed there
            exc = message.exc if isinstance(message, _ErrInfo) else None
            self._fail_body(body, parser_error(exc) if isinstance(exc, HttpProcessingError)
                            else MalformedRequest("malformed HTTP request body"))
            return b""
        self._body = None
        if isinstance(message, _ErrInfo):
            self._phase = _DONE  # handle_error answers it, and the connection is closed
        elif message.method == "CONNECT":
            self._refuse_connect()
            return b""
        elif payload.is_eof():
            self._phase = _IDLE
        else:
            self._body = payload
            self._arm(_BODY, self._loop.time() + self._body_timeout)
        return self._decline_upgrade() if self._upgrade else b""

    def _decline_upgrade(self) -> bytes:
        """``Upgrade: websocket``: aiohttp holds back what follows the head as the new protocol's
        bytes, until the answer, then parses them but drops the requests it finds (a pipelined
        request is never answered) or fails on them unanswered. Nothing in the gateway upgrades,
        so the request is a plain one (a server may ignore Upgrade, RFC 9110 7.8), and what
        follows it is parsed now, as the next request (returned)."""
        assert self._request_parser is not None
        self._upgrade = False
        self._request_parser.set_upgraded(False)
        tail, self._message_tail = self._message_tail, b""
        return tail

    def _refuse_connect(self) -> None:
        """CONNECT asks for a tunnel: llhttp treats what follows its head as tunnelled bytes, and
        aiohttp would answer, then wait for a body that never comes. The gateway is no proxy:
        the request is replaced by a 405, and nothing more is read."""
        err = ConnectRefused("CONNECT is not supported: the gateway is not a proxy")
        self._messages[-1] = (_ErrInfo(status=err.status, exc=err, message=err.message), EMPTY_PAYLOAD)
        self._upgrade = False
        self._message_tail = b""
        self._phase = _DONE

    # -- the one timer --

    def _arm(self, phase: int, deadline: float) -> None:
        """Time ``phase`` until ``deadline``. The timer is moved only when it would fire too late;
        one that fires too early sees the later deadline and waits again."""
        self._phase = phase
        self._deadline = deadline
        timer = self._timer
        if timer is None or deadline < self._timer_at:
            if timer is not None:
                timer.cancel()
            self._timer = self._loop.call_at(deadline, self._on_timer)
            self._timer_at = deadline

    def _on_timer(self) -> None:
        self._timer = None
        phase = self._phase
        if phase == _IDLE or phase == _DONE or self.transport is None:
            return
        if self._loop.time() < self._deadline - 0.001:  # moved on since: wait for the new deadline
            self._timer = self._loop.call_at(self._deadline, self._on_timer)
            self._timer_at = self._deadline
            return
        if phase == _HEAD:
            self._head_late()
        else:
            assert self._body is not None
            limit = self._body_timeout
            self._fail_body(self._body, RequestTimeout(f"the request body was not complete within {limit:g} "
                                                       "seconds of its head"))

    def _head_late(self) -> None:
        """Queue a 408 (behind any request still being answered) and read nothing more."""
        self._phase = _DONE
        limit = self._head_timeout
        err = RequestTimeout(f"the request head was not complete within {limit:g} seconds")
        self._messages.append((_ErrInfo(status=err.status, exc=err, message=err.message), EMPTY_PAYLOAD))
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail_body(self, body: StreamReader, err: GatewayError) -> None:
        """The body will not be complete: the handler reading it gets ``err`` (the middleware
        answers it, with ``Connection: close``), or, if its answer went out already, the
        connection is closed."""
        self._phase = _DONE
        self._body = None
        if body is self._answered:  # answered; aiohttp is reading the rest only to drop it
            self.force_close()
            return
        self._close = True  # no request after this one
        body.set_exception(err)
        body.feed_eof()  # and, after the answer, no wait for the rest

    # -- answers --

    def log_access(self, request: Any, response: Any, time: float | None) -> None:
        body = request.content
        self._answered = body
        if not body.is_eof() and body.total_bytes == 0 and hdrs.EXPECT in request.headers:
            # answered (a 401, a 413) before inviting the body: the client will not send it now,
            # so aiohttp's wait to read and drop it would only hold the connection
            self.force_close()
        super().log_access(request, response, time)

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's answer to a parser rejection, to our 408 and 405, and to a handler that
        failed outside the middleware, as OpenAI JSON; the connection is then closed."""
        if request.writer.output_size > 0:
            raise ConnectionError("Response is sent already, cannot send another response with the error message")
        err = edge_error(status, exc)
        if err.status >= 500:
            log.error("server_error", status=err.status, exc_info=exc)
        else:
            log.info("request_refused", status=err.status, reason=err.message, peer=request.remote)
        response = error_response(err, {hdrs.CONNECTION: "close"})
        response.force_close()
        return response


class GatewayServer(web.Server):
    """aiohttp's Server, serving each connection with EdgeProtocol and counting them."""

    def __init__(self, handler: Any, *, limits: Limits, request_factory: Any, handler_cancellation: bool,
                 **protocol_kwargs: Any) -> None:
        loop = asyncio.get_running_loop()
        super().__init__(handler, request_factory=request_factory, handler_cancellation=handler_cancellation,
                         loop=loop, **protocol_kwargs)
        self.limits = limits
        self.refusal = refusal(limits.max_connections)
        self.open_connections = 0  # admitted and not yet lost
        self.refused = 0  # since start, over the cap
        self._protocol_loop = loop
        self._protocol_kwargs = protocol_kwargs

    def __call__(self) -> EdgeProtocol:
        return EdgeProtocol(self, loop=self._protocol_loop, **self._protocol_kwargs)


class GatewayRunner(web.AppRunner):
    """web.AppRunner serving through GatewayServer (see the module's docstring for why here)."""

    def __init__(self, app: web.Application, limits: Limits, *, handle_signals: bool = False,
                 keepalive_timeout: float = KEEPALIVE_TIMEOUT) -> None:
        self.limits = limits
        # access_log None: the middleware writes one structured line per request itself
        self._protocol_kwargs: dict[str, Any] = {"keepalive_timeout": keepalive_timeout, "access_log": None}
        super().__init__(app, handle_signals=handle_signals, handler_cancellation=True, **self._protocol_kwargs)

    async def _make_server(self) -> web.Server:
        base = await super()._make_server()  # the app's start-up, then aiohttp's own Server
        return GatewayServer(
            base.request_handler,
            limits=self.limits,
            request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation,  # a client that hangs up cancels its upstream call
            **self._protocol_kwargs,
        )

    @property
    def edge(self) -> GatewayServer:
        return cast(GatewayServer, self.server)


async def start(app: web.Application, settings: Settings, *, host: str, port: int,
                handle_signals: bool = False) -> GatewayRunner:
    """Start ``app`` and serve it on ``host``:``port`` (0: any free port; see ``runner.addresses``).
    The caller ends it with ``await runner.cleanup()``. The entrypoint and the tests both use this."""
    runner = GatewayRunner(app, Limits.from_settings(settings, open_files_limit()), handle_signals=handle_signals)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def run(app: web.Application, settings: Settings) -> None:
    """Serve until SIGINT or SIGTERM, then shut down gracefully: what ``web.run_app`` does, which
    cannot be given a runner."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    main = loop.create_task(_serve(app, settings))
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        try:
            main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(main)
        finally:
            _cancel_remaining(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


async def _serve(app: web.Application, settings: Settings) -> None:
    runner = await start(app, settings, host=settings.host, port=settings.port, handle_signals=True)
    try:
        await asyncio.Event().wait()  # until a signal raises GracefulExit
    finally:
        await runner.cleanup()


def _cancel_remaining(loop: asyncio.AbstractEventLoop) -> None:
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
