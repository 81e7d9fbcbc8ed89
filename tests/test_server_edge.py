"""The HTTP server edge over real sockets: the real app, served by gateway.server.start (what the
entrypoint serves with), driven byte by byte by raw TCP clients; responses are parsed with
httptools (llhttp), not by hand."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from unittest import mock

import httptools
import orjson
import pytest
from aiohttp import http_parser
from aiohttp.http_exceptions import BadHttpMessage, BadHttpMethod, BadStatusLine, HttpProcessingError, LineTooLong
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from gateway import server
from gateway.app import create_app
from gateway.config import ConfigError, Settings
from gateway.errors import RequestTimeout
from tests.conftest import CHAT, eventually, gateway_env

SECRET = "sk-glm-markermarkermarker"  # put in hostile requests; must never come back or be logged


# ---- a raw client ---------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def error(self) -> dict:
        assert self.headers.get("content-type", "").startswith("application/json"), self.headers
        err = orjson.loads(self.body)["error"]
        assert set(err) == {"message", "type", "param", "code"}
        return err


@dataclass
class _Parsed:
    done: list[Response] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    parser: httptools.HttpResponseParser | None = None

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        assert self.parser is not None
        self.done.append(Response(self.parser.get_status_code(), self.headers, self.body))
        self.headers, self.body = {}, b""


class Client:
    """One TCP connection to the gateway, written to as raw bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.parsed = _Parsed()
        self.parsed.parser = httptools.HttpResponseParser(self.parsed)
        self.eof = False

    @classmethod
    async def open(cls, port: int) -> Client:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def _read(self, within: float) -> bool:
        """Read what comes within ``within`` seconds; False if nothing did."""
        try:
            data = await asyncio.wait_for(self.reader.read(65536), within)
        except TimeoutError:
            return False
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return True
        self.parsed.parser.feed_data(data)
        return True

    async def response(self, within: float = 5.0) -> Response:
        deadline = time.monotonic() + within
        while not self.parsed.done:
            left = deadline - time.monotonic()
            if left <= 0 or self.eof:
                raise AssertionError(f"no response within {within}s (closed: {self.eof})")
            await self._read(left)
        return self.parsed.done.pop(0)

    async def closed(self, within: float = 5.0) -> bool:
        """Whether the gateway closes the connection within ``within`` seconds (reading what comes)."""
        deadline = time.monotonic() + within
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await self._read(left)
        return True

    async def silent_for(self, seconds: float) -> bool:
        """No byte and no close during ``seconds``: proving an absence takes waiting it out."""
        return not await self._read(seconds)

    def close(self) -> None:
        self.writer.close()


def request(method: str = "GET", path: str = "/health", headers: dict[str, str] | None = None,
            body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: gateway"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


CHAT_BODY = orjson.dumps(CHAT)


def chat_request(body: bytes = CHAT_BODY, **headers: str) -> bytes:
    return request("POST", "/v1/chat/completions",
                   {"Content-Type": "application/json", "Content-Length": str(len(body)), **headers}, body)


# ---- the served gateway ---------------------------------------------------------------------------


@dataclass
class Served:
    runner: server.GatewayRunner
    port: int

    async def client(self) -> Client:
        return await Client.open(self.port)


@pytest.fixture
async def edge(fake, key_db, log_dir):
    """``await edge(env)``: the real app served by gateway.server.start on a free port."""
    runners: list[server.GatewayRunner] = []

    async def start(env: dict[str, str] | None = None) -> Served:
        base = {**gateway_env(fake, key_db, log_dir), "REQUEST_HEAD_TIMEOUT": "5", "REQUEST_BODY_TIMEOUT": "5"}
        settings = Settings.from_env({**base, **(env or {})})
        runner = await server.start(create_app(settings), settings, host="127.0.0.1", port=0)
        runners.append(runner)
        return Served(runner, runner.addresses[0][1])

    yield start
    for runner in runners:
        await runner.cleanup()


def assert_closing_error(resp: Response, status: int, code: str) -> dict:
    assert resp.status == status
    assert resp.headers.get("connection") == "close"
    err = resp.error()
    assert err["code"] == code
    return err


# ---- plain service is unchanged ---------------------------------------------------------------


async def test_requests_on_a_kept_alive_connection_are_served(edge):
    served = await edge()
    c = await served.client()
    await c.send(request())
    assert (await c.response()).status == 200
    await c.send(chat_request())
    resp = await c.response()
    assert resp.status == 200 and orjson.loads(resp.body)["choices"][0]["message"]["content"] == "hello"
    await c.send(request("GET", "/v1/models"))
    assert (await c.response()).status == 200
    assert not c.eof
    # what serves the connection is the gateway's protocol (pins GatewayRunner._make_server)
    assert isinstance(served.runner.server, server.GatewayServer)
    assert [type(p) for p in served.runner.server.connections] == [server.EdgeProtocol]
    assert http_parser.HttpRequestParser.__module__ == "aiohttp._http_parser"  # llhttp: what the README describes
    c.close()


# ---- the head deadline ------------------------------------------------------------------------


async def test_twenty_slow_header_senders_all_get_408_and_are_closed_in_time(edge):
    served = await edge({"REQUEST_HEAD_TIMEOUT": "0.5"})
    clients = [await served.client() for _ in range(20)]
    started = time.monotonic()

    async def dribble(c: Client) -> None:  # one header byte every 0.1 s, for as long as it is let
        try:
            await c.send(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            while True:
                await c.send(b"X")
                await asyncio.sleep(0.1)
        except (ConnectionError, RuntimeError):
            return

    senders = [asyncio.create_task(dribble(c)) for c in clients]
    try:
        for c in clients:
            resp = await c.response(within=3)
            err = assert_closing_error(resp, 408, "request_timeout")
            assert err["type"] == "invalid_request_error" and "head" in err["message"]
            assert await c.closed(within=2)
        elapsed = time.monotonic() - started
        assert 0.45 <= elapsed < 0.5 + 2.0
    finally:
        for t in senders:
            t.cancel()
        for c in clients:
            c.close()
    await eventually(lambda: served.runner.edge.open_connections == 0)


async def test_a_new_connection_that_sends_nothing_gets_408(edge):
    served = await edge({"REQUEST_HEAD_TIMEOUT": "0.3"})
    c = await served.client()
    started = time.monotonic()
    assert_closing_error(await c.response(within=3), 408, "request_timeout")
    assert await c.closed()
    assert time.monotonic() - started >= 0.25


async def test_an_idle_kept_alive_connection_is_left_to_keepalive_timeout(edge):
    served = await edge({"REQUEST_HEAD_TIMEOUT": "0.3"})
    c = await served.client()
    await c.send(request())
    assert (await c.response()).status == 200
    assert await c.silent_for(1.0)  # three head timeouts with no byte: no 408, not closed
    await c.send(request())
    assert (await c.response()).status == 200
    c.close()


async def test_a_slow_second_head_is_timed_from_its_first_byte(edge):
    served = await edge({"REQUEST_HEAD_TIMEOUT": "0.5"})
    c = await served.client()
    await c.send(request())
    assert (await c.response()).status == 200
    assert await c.silent_for(0.6)  # idle longer than the head timeout: not counted
    first_byte = time.monotonic()
    await c.send(b"GET /health HTTP/1.1\r\nHo")
    assert_closing_error(await c.response(within=3), 408, "request_timeout")
    assert time.monotonic() - first_byte >= 0.45
    assert await c.closed()


# ---- the body deadline ------------------------------------------------------------------------


@pytest.mark.parametrize("dribble", [False, True], ids=["stops", "dribbles"])
async def test_a_body_short_of_its_content_length_gets_408(edge, dribble):
    served = await edge({"REQUEST_BODY_TIMEOUT": "0.5"})
    c = await served.client()
    await c.send(request("POST", "/v1/chat/completions",
                         {"Content-Type": "application/json", "Content-Length": "1000"}, b"0123456789"))
    started = time.monotonic()

    async def more() -> None:  # a byte every 0.05 s: never idle, and never done in time
        try:
            while dribble:
                await asyncio.sleep(0.05)
                await c.send(b" ")
        except (ConnectionError, RuntimeError):
            return

    sender = asyncio.create_task(more())
    try:
        err = assert_closing_error(await c.response(within=3), 408, "request_timeout")
        assert "body" in err["message"]
        assert 0.45 <= time.monotonic() - started < 2.5
        assert await c.closed()
    finally:
        sender.cancel()
        c.close()


async def test_a_chunked_body_without_its_last_chunk_gets_408(edge):
    served = await edge({"REQUEST_BODY_TIMEOUT": "0.5"})
    c = await served.client()
    await c.send(request("POST", "/v1/chat/completions", {"Transfer-Encoding": "chunked"}, b"5\r\n{\"mod\r\n"))
    assert_closing_error(await c.response(within=3), 408, "request_timeout")
    assert await c.closed()


async def test_a_chunked_body_that_ends_is_served(edge):
    served = await edge({"REQUEST_BODY_TIMEOUT": "2"})
    c = await served.client()
    half = len(CHAT_BODY) // 2
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (CHAT_BODY[:half], CHAT_BODY[half:])) + b"0\r\n\r\n"
    await c.send(request("POST", "/v1/chat/completions", {"Transfer-Encoding": "chunked"}, chunks))
    assert (await c.response()).status == 200
    assert await c.silent_for(0.3)  # kept alive
    c.close()


async def test_a_bad_chunk_size_midway_gets_400_at_once(edge):
    served = await edge({"REQUEST_BODY_TIMEOUT": "30"})
    c = await served.client()
    await c.send(request("POST", "/v1/chat/completions", {"Transfer-Encoding": "chunked"}, b"2\r\n{\"\r\n"))
    (conn,) = served.runner.server.connections
    await eventually(lambda: conn._body is not None)  # the handler is waiting for the rest of the body
    started = time.monotonic()
    await c.send(b"zz\r\n")
    err = assert_closing_error(await c.response(within=3), 400, "malformed_request")
    assert "chunk size" in err["message"]
    assert time.monotonic() - started < 2  # not the body timeout
    assert await c.closed()


# ---- what the parser refuses ------------------------------------------------------------------


LONG = "a" * 9000

PARSER_CASES = {
    "bad method": f"G@T /{SECRET} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
    "NUL in a header": f"GET /health HTTP/1.1\r\nHost: x\r\nX-Key: {SECRET}\0\r\n\r\n".encode(),
    "duplicate Content-Length": chat_request(**{"Content-Length": "2", "X-Key": SECRET}).replace(
        b"\r\n\r\n", b"\r\nContent-Length: 2\r\n\r\n", 1),
    "header over 8 KB": f"GET /health HTTP/1.1\r\nHost: x\r\nX-Key: {SECRET}{LONG}\r\n\r\n".encode(),
    "request line over 8 KB": f"GET /{SECRET}{LONG} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
    "bad chunk size": f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                      f"z{SECRET}\r\n".encode(),
    "bad version": f"GET /{SECRET} HTTP/7.1\r\nHost: x\r\n\r\n".encode(),
    "Content-Length and chunked": f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                                  f"Transfer-Encoding: chunked\r\nX-Key: {SECRET}\r\n\r\n".encode(),
    "too many headers": ("GET /health HTTP/1.1\r\nHost: x\r\n" + "".join(f"X-{i}: {SECRET}\r\n" for i in range(200))
                         + "\r\n").encode(),
    "HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
}


@pytest.mark.parametrize("case", PARSER_CASES)
async def test_what_the_parser_rejects_gets_openai_json_and_a_close(edge, case, log_dir):
    served = await edge()
    c = await served.client()
    await c.send(PARSER_CASES[case])
    resp = await c.response(within=3)
    err = assert_closing_error(resp, 400, "malformed_request")
    assert err["type"] == "invalid_request_error" and err["message"].startswith("malformed HTTP request: ")
    assert resp.headers.get("x-should-retry") == "false"
    assert SECRET.encode() not in resp.body
    assert await c.closed(within=2)
    assert SECRET not in (log_dir / "gateway.log").read_text()


async def test_connect_gets_405_and_a_close_at_once(edge):
    served = await edge()
    c = await served.client()
    await c.send(b"CONNECT api.cerebras.ai:443 HTTP/1.1\r\nHost: api.cerebras.ai:443\r\n\r\n\x16\x03\x01tls-bytes")
    err = assert_closing_error(await c.response(within=2), 405, "method_not_allowed")
    assert "CONNECT" in err["message"]
    assert await c.closed(within=2)  # not after aiohttp's 10 s wait for a body


UPGRADE = request(headers={"Upgrade": "websocket", "Connection": "Upgrade"})


async def test_an_upgrade_request_is_served_plainly_and_what_follows_it_too(edge):
    served = await edge()
    c = await served.client()
    await c.send(UPGRADE + request("GET", "/v1/models"))  # aiohttp alone answers the first, drops the second
    assert (await c.response()).status == 200
    assert orjson.loads((await c.response()).body)["object"] == "list"
    tiny = b"GET /health HTTP/1.1\r\nUpgrade:websocket\r\nConnection:upgrade\r\n\r\n"
    await c.send(tiny * 3000)  # in one write: each is parsed after the one before (no recursion)
    for _ in range(3000):
        assert (await c.response()).status == 200
    await c.send(UPGRADE + b"\x16\x03\x01 not http")  # aiohttp alone: no answer at all, a traceback
    assert (await c.response()).status == 200
    assert_closing_error(await c.response(), 400, "malformed_request")
    assert await c.closed()


# ---- Expect: 100-continue ---------------------------------------------------------------------


async def test_expect_100_continue_with_a_good_key(edge, client_key):
    served = await edge({"ENABLE_INCOMING_AUTH": "true"})
    c = await served.client()
    await c.send(chat_request(b"", **{"Content-Length": str(len(CHAT_BODY)), "Expect": "100-continue",
                                      "Authorization": f"Bearer {client_key}"}))
    assert (await c.response()).status == 100  # asked for, before the body is sent
    await c.send(CHAT_BODY)
    resp = await c.response()
    assert resp.status == 200 and orjson.loads(resp.body)["object"] == "chat.completion"


@pytest.mark.parametrize("auth", [{}, {"Authorization": "Bearer sk-glm-not-a-key"}], ids=["none", "bad"])
async def test_expect_100_continue_with_a_bad_key_gets_401_without_sending_the_body(edge, client_key, auth):
    served = await edge({"ENABLE_INCOMING_AUTH": "true"})
    c = await served.client()
    await c.send(chat_request(b"", **{"Content-Length": str(len(CHAT_BODY)), "Expect": "100-continue"}, **auth))
    resp = await c.response()
    assert resp.status == 401 and resp.error()["code"] == "invalid_api_key"
    assert await c.closed(within=2)  # it will not send the body now: no wait for it


async def test_expect_100_continue_for_a_body_over_the_limit_gets_413_without_sending_it(edge):
    served = await edge({"MAX_REQUEST_BYTES": "1024"})
    c = await served.client()
    await c.send(chat_request(b"", **{"Content-Length": "5000", "Expect": "100-continue"}))
    resp = await c.response()
    assert resp.status == 413 and resp.error()["code"] == "request_too_large"
    assert await c.closed(within=2)


async def test_an_unknown_expectation_gets_417(edge):
    served = await edge()
    c = await served.client()
    await c.send(chat_request(b"", **{"Content-Length": str(len(CHAT_BODY)), "Expect": "something-else"}))
    resp = await c.response()
    assert resp.status == 417 and resp.error()["code"] == "expectation_failed"


# ---- the connection cap -----------------------------------------------------------------------


async def test_a_connection_over_the_cap_gets_503_and_is_closed(edge):
    served = await edge({"MAX_CLIENT_CONNECTIONS": "2"})
    admitted = [await served.client() for _ in range(2)]
    for c in admitted:
        await c.send(request())
        assert (await c.response()).status == 200
    extra = await served.client()
    resp = await extra.response(within=3)  # answered before it sends anything
    assert resp.status == 503 and resp.headers["retry-after"] == "1"
    assert resp.error()["code"] == "too_many_connections"
    await extra.send(request())  # read and dropped, then the gateway hangs up
    assert await extra.closed(within=3)
    assert served.runner.edge.refused == 1
    for c in admitted:  # the admitted ones are unaffected
        await c.send(request())
        assert (await c.response()).status == 200
    admitted[0].close()
    await eventually(lambda: served.runner.edge.open_connections == 1)
    again = await served.client()
    await again.send(request())
    assert (await again.response()).status == 200


# ---- settings and pure parts ------------------------------------------------------------------


def test_settings_defaults_and_validation():
    base = {"CEREBRAS_API_KEYS": "csk-aaaaaaaa"}
    s = Settings.from_env(base)
    assert (s.request_head_timeout, s.request_body_timeout, s.max_client_connections) == (10.0, 60.0, 4096)
    for var, value in [("REQUEST_HEAD_TIMEOUT", "0"), ("REQUEST_BODY_TIMEOUT", "-1"), ("REQUEST_HEAD_TIMEOUT", "x"),
                       ("MAX_CLIENT_CONNECTIONS", "0"), ("MAX_CLIENT_CONNECTIONS", "1.5")]:
        with pytest.raises(ConfigError, match=var):
            Settings.from_env({**base, var: value})


@pytest.mark.parametrize(
    "configured, open_files, cap",
    [
        (4096, 65536, 4096),
        (4096, 4096, (4096 - server.RESERVED_FILES) // 2),
        (4096, 1024, 480),
        (10, 1024, 10),
        (4096, None, 4096),
        (4096, 10, 1),
    ],
)
def test_connection_cap(configured, open_files, cap):
    assert server.connection_cap(configured, open_files) == cap


@pytest.mark.parametrize(
    "exc, message",
    [
        (LineTooLong(b"x" * 100, 8190),
         "malformed HTTP request: the request line or a header is longer than 8190 bytes"),
        (BadHttpMethod(error=f"Invalid method encountered:\n\n  b'{SECRET}'\n  ^"),
         "malformed HTTP request: the method is not a valid HTTP method"),
        (BadStatusLine(error="Invalid HTTP version:\n\n  b'x'"),
         "malformed HTTP request: the request line is not valid HTTP/1.1"),
        (BadHttpMessage(f"Invalid character in chunk size:\n\n  b'{SECRET}'\n  ^"),
         "malformed HTTP request: invalid character in chunk size"),
        (BadHttpMessage("Duplicate 'Content-Length' header found."),
         "malformed HTTP request: duplicate 'Content-Length' header found"),
        (BadHttpMessage(f"b'{SECRET}'"), "malformed HTTP request: the request is not valid HTTP/1.1"),
        (BadHttpMessage("Pause on PRI/Upgrade:\n\n  b''"),
         "malformed HTTP request: HTTP/2 is not served here, only HTTP/1.1"),
    ],
)
def test_parser_error_messages(exc, message):
    err = server.parser_error(exc)
    assert (err.status, err.message, err.code) == (400, message, "malformed_request")


def test_edge_errors_for_what_aiohttp_answers_itself():
    own = RequestTimeout("late")
    assert server.edge_error(408, own) is own
    assert server.edge_error(500, ValueError("x")).status == 500
    assert server.edge_error(504, None).status == 504
    assert server.edge_error(413, None).status == 413


@given(junk=st.binary(max_size=64), where=st.sampled_from(["method", "target", "header", "value"]))
@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_no_rejection_of_hostile_bytes_repeats_them(junk, where):
    """Whatever llhttp rejects, the message the client gets is ours: it quotes none of its bytes."""
    marked = junk + SECRET.encode()
    head = {
        "method": b"%s / HTTP/1.1\r\n\r\n" % marked,
        "target": b"GET /%s HTTP/1.1\r\n\r\n" % marked,
        "header": b"GET / HTTP/1.1\r\n%s: v\r\n\r\n" % marked,
        "value": b"GET / HTTP/1.1\r\nX: %s\r\n\r\n" % marked,
    }[where]
    loop = asyncio.new_event_loop()
    try:
        parser = http_parser.HttpRequestParser(mock.Mock(), loop, 2**16)
        try:
            parser.feed_data(head)
        except HttpProcessingError as e:
            err = server.edge_error(400, e)
            assert err.status == 400 and SECRET not in err.message
    finally:
        loop.close()
