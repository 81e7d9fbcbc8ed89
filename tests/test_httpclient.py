"""The upstream HTTP client against raw TCP servers that write exact bytes: framing, pooling,
stale connections, timeouts, backpressure, cancellation, TLS."""
from __future__ import annotations

import asyncio
import gc
import gzip
import ssl
import weakref
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import pytest
import trustme

from gateway import httpclient
from gateway.httpclient import (
    ConnectError,
    Disconnected,
    Endpoint,
    HTTPClient,
    ProtocolError,
    Timeout,
    encode_headers,
)
from tests.conftest import eventually
from tests.tls import server_context, trusting

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


@dataclass
class RawServer:
    """Counts connections; ``handler(reader, writer, n)`` serves the n-th request of a connection."""

    handler: Handler
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    closed: int = 0
    port: int = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        n = 0
        try:
            while True:
                request = await read_request(reader)
                if request is None:
                    break
                self.requests.append(request)
                n += 1
                await self.handler(reader, writer, n)
                if writer.is_closing():
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.closed += 1
            writer.close()


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + await reader.readexactly(length)


@pytest.fixture
async def raw_server():
    servers = []

    async def start(handler: Handler, ssl_context: ssl.SSLContext | None = None) -> RawServer:
        raw = RawServer(handler)
        server = await asyncio.start_server(raw.serve, "127.0.0.1", 0, ssl=ssl_context)
        raw.port = server.sockets[0].getsockname()[1]
        servers.append(server)
        return raw

    yield start
    for server in servers:
        server.close()


@pytest.fixture
async def client():
    c = HTTPClient()
    yield c
    await c.close()


def reply(raw: bytes) -> Handler:
    closes = b"Connection: close" in raw or raw.startswith(b"HTTP/1.0")

    async def handler(reader, writer, n):
        writer.write(raw)
        await writer.drain()
        if closes:  # the body runs to the close
            writer.close()

    return handler


def held_until(gate: asyncio.Event) -> Handler:
    """Every answer waits for the gate: that many requests are in flight at once."""

    async def handler(reader, writer, n):
        await gate.wait()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    return handler


async def answers_once_then_stalls(reader, writer, n):
    """The first request on a connection is answered; later ones wait until the client hangs up."""
    if n == 1:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
    else:
        await reader.read(1)


def ep(server: RawServer, path: str = "/v1/chat/completions") -> Endpoint:
    return Endpoint.parse(f"http://127.0.0.1:{server.port}{path}")


async def post(client: HTTPClient, server: RawServer, body: bytes = b"{}", **kw) -> tuple[int, dict, bytes]:
    kw = {"connect_timeout": 2.0, "read_timeout": 2.0, **kw}
    resp = await client.request(ep(server), b"Content-Type: application/json\r\n", body, **kw)
    try:
        return resp.status, resp.headers, await resp.read()
    finally:
        resp.close()


GZIPPED = gzip.compress(b'{"ok":true}')

FRAMING = [
    ("content-length", b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"ok\":true}", 200, b'{"ok":true}', True),
    ("chunked, extensions and trailers",
     b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"4;ext=1\r\n{\"ok\r\n7\r\n\":true}\r\n0\r\nX-Trailer: t\r\n\r\n", 200, b'{"ok":true}', True),
    ("until close", b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"ok\":true}", 200, b'{"ok":true}', False),
    ("http/1.0 until close", b"HTTP/1.0 200 OK\r\n\r\nold", 200, b"old", False),
    ("gzip", b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(GZIPPED), GZIPPED),
     200, b'{"ok":true}', True),
    ("204 no body", b"HTTP/1.1 204 No Content\r\n\r\n", 204, b"", True),
    ("interim 100 first", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
     201, b"ok", True),
    ("error status", b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 4\r\nRetry-After: 7\r\n\r\nslow",
     429, b"slow", True),
]


@pytest.mark.parametrize("raw,status,body,reused", [c[1:] for c in FRAMING], ids=[c[0] for c in FRAMING])
async def test_framing(raw_server, client, raw, status, body, reused):
    server = await raw_server(reply(raw))
    got_status, _, got_body = await post(client, server)
    assert (got_status, got_body) == (status, body)
    got_status, _, got_body = await post(client, server)  # a second request: same connection?
    assert (got_status, got_body) == (status, body)
    assert server.connections == (1 if reused else 2)


async def test_bytes_arriving_one_at_a_time(raw_server, client):
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"

    async def trickle(reader, writer, n):
        for i in range(len(raw)):
            writer.write(raw[i:i + 1])
            await writer.drain()
            await asyncio.sleep(0)

    server = await raw_server(trickle)
    status, headers, body = await post(client, server)
    assert (status, headers["x-a"], body) == (200, "1", b"hello world")


async def test_header_names_are_lower_cased_and_repeats_join(raw_server, client):
    server = await raw_server(reply(
        b"HTTP/1.1 200 OK\r\nX-RateLimit-Remaining-Tokens-Minute: 9\r\nVia: a\r\nvia: b\r\nContent-Length: 0\r\n\r\n"
    ))
    _, headers, _ = await post(client, server)
    assert headers == {"x-ratelimit-remaining-tokens-minute": "9", "via": "a, b", "content-length": "0"}


async def test_request_head_and_body_are_sent_as_given(raw_server, client):
    server = await raw_server(reply(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
    big = b'{"x":"' + b"a" * 200_000 + b'"}'  # over the split-write size
    await post(client, server, body=big)
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/chat/completions HTTP/1.1"
    assert f"Host: 127.0.0.1:{server.port}".encode() in lines
    assert b"Content-Length: %d" % len(big) in lines
    assert body == big


async def test_many_requests_share_one_connection(raw_server, client):
    server = await raw_server(reply(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    for _ in range(20):
        assert (await post(client, server))[2] == b"ok"
    assert server.connections == 1
    assert client.opened == 1


async def test_concurrent_requests_open_their_own_connections_then_pool_them(raw_server, client):
    gate = asyncio.Event()
    server = await raw_server(held_until(gate))
    tasks = [asyncio.create_task(post(client, server)) for _ in range(5)]
    await eventually(lambda: len(server.requests) == 5)
    gate.set()
    assert [r[2] for r in await asyncio.gather(*tasks)] == [b"ok"] * 5
    assert server.connections == 5
    assert client.idle_count(ep(server)) == 5
    await asyncio.gather(*(post(client, server) for _ in range(5)))
    assert server.connections == 5


async def test_idle_connections_beyond_the_cap_are_closed(raw_server):
    gate = asyncio.Event()
    server = await raw_server(held_until(gate))
    client = HTTPClient(max_idle_per_host=2)
    conns = []

    async def request_and_keep_a_weakref():
        resp = await client.request(ep(server), b"", b"{}", connect_timeout=2, read_timeout=60)
        conns.append(weakref.ref(resp._conn))
        assert await resp.read() == b"ok"

    try:
        tasks = [asyncio.create_task(request_and_keep_a_weakref()) for _ in range(4)]
        await eventually(lambda: len(server.requests) == 4)
        gate.set()
        await asyncio.gather(*tasks)
        assert client.idle_count(ep(server)) == 2
        await eventually(lambda: server.closed == 2)
        # the closed ones are freed now, not when their read-timeout timer would have lapsed (60 s)
        await eventually(lambda: gc.collect() is not None and sum(ref() is None for ref in conns) == 2)
    finally:
        await client.close()


async def test_expired_idle_connections_are_not_reused(raw_server):
    server = await raw_server(reply(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    client = HTTPClient(keepalive_timeout=0)
    try:
        await post(client, server)
        await post(client, server)
        assert server.connections == 2
    finally:
        await client.close()


async def test_a_connection_the_upstream_closed_while_idle_is_retried_on_a_fresh_one(raw_server, client):
    async def second_request_finds_it_closed(reader, writer, n):
        if n == 2:  # as if the server's keep-alive timer fired just as the request went out
            writer.transport.abort()
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    server = await raw_server(second_request_finds_it_closed)
    assert (await post(client, server))[2] == b"ok"
    assert (await post(client, server))[2] == b"ok"
    assert server.connections == 2
    assert len(server.requests) == 3  # the lost one, then its retry


async def test_a_fresh_connection_closed_before_answering_is_not_retried(raw_server, client):
    async def close(reader, writer, n):
        writer.transport.abort()

    server = await raw_server(close)
    with pytest.raises(Disconnected, match="before answering|broke"):
        await post(client, server)
    assert len(server.requests) == 1


async def test_a_reused_connection_that_dies_after_answering_in_part_is_not_retried(raw_server, client):
    async def partial_second(reader, writer, n):
        if n == 2:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Len")
            await writer.drain()
            writer.transport.abort()
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    server = await raw_server(partial_second)
    await post(client, server)
    with pytest.raises(Disconnected):
        await post(client, server)
    assert len(server.requests) == 2  # the upstream may have acted on it: no second try


async def test_a_body_cut_short_is_an_error_not_a_short_answer(raw_server, client):
    async def short(reader, writer, n):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"partial\":")
        await writer.drain()
        writer.close()

    server = await raw_server(short)
    with pytest.raises(Disconnected, match="in the body"):
        await post(client, server)


async def test_chunks_that_arrived_before_a_break_are_delivered_first(raw_server, client):
    async def breaks(reader, writer, n):
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()

    server = await raw_server(breaks)
    resp = await client.request(ep(server), b"", b"{}", connect_timeout=2, read_timeout=2)
    got = []
    with pytest.raises(Disconnected):
        async for chunk in resp:
            got.append(chunk)
    assert b"".join(got) == b"first"
    assert client.idle_count(ep(server)) == 0


@pytest.mark.parametrize("raw,match", [
    (b"SSH-2.0-OpenSSH_9.6\r\n", "malformed"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n", "malformed"),
    (b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 1\r\n\r\nx", "content-encoding: br"),
    (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 5\r\n\r\nnotgz", "decode"),
])
async def test_answers_that_are_not_http_are_protocol_errors(raw_server, client, raw, match):
    server = await raw_server(reply(raw))
    with pytest.raises(ProtocolError, match=match):
        await post(client, server)
    assert client.idle_count(ep(server)) == 0


async def test_an_endless_head_is_refused(raw_server, client):
    async def endless(reader, writer, n):
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for i in range(100_000):  # ~2.5 MB of headers, if nobody stopped it
            writer.write(b"X-Filler-%06d: %s\r\n" % (i, b"y" * 8))
            if i % 1000 == 0:
                await writer.drain()

    server = await raw_server(endless)
    with pytest.raises(ProtocolError, match="headers are over"):
        await post(client, server)


async def test_an_answer_over_the_read_limit_is_refused(raw_server, client):
    server = await raw_server(reply(b"HTTP/1.1 200 OK\r\nContent-Length: 5000000\r\n\r\n" + b"x" * 5_000_000))
    resp = await client.request(ep(server), b"", b"{}", connect_timeout=2, read_timeout=2)
    with pytest.raises(ProtocolError, match="over 1000000 bytes"):
        await resp.read(limit=1_000_000)
    assert client.idle_count(ep(server)) == 0
    assert (await post(client, server))[2] == b"x" * 5_000_000  # under the default limit: fine


async def test_bytes_after_the_answer_make_the_connection_unusable(raw_server, client):
    server = await raw_server(reply(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n"))
    assert (await post(client, server))[2] == b"ok"
    assert (await post(client, server))[2] == b"ok"
    assert server.connections == 2


async def test_silence_before_the_head_is_a_read_timeout(raw_server, client):
    async def silent(reader, writer, n):
        await reader.read(1)  # until the client hangs up

    server = await raw_server(silent)
    with pytest.raises(Timeout):
        await post(client, server, read_timeout=0.2)
    assert client.idle_count(ep(server)) == 0


async def test_silence_in_the_body_is_a_read_timeout(raw_server, client):
    async def stalls(reader, writer, n):
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await reader.read(1)  # until the client hangs up

    server = await raw_server(stalls)
    resp = await client.request(ep(server), b"", b"{}", connect_timeout=2, read_timeout=0.2)
    assert await resp.__anext__() == b"first"
    with pytest.raises(Timeout):
        await resp.__anext__()
    await eventually(lambda: server.closed == 1)  # the stalled connection is dropped, not pooled


async def test_steady_chunks_outlast_the_read_timeout_in_total(raw_server, client):
    async def steady(reader, writer, n):
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(8):  # 0.8 s in all, never more than 0.1 s of silence
            await asyncio.sleep(0.1)
            writer.write(b"1\r\nx\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")

    server = await raw_server(steady)
    status, _, body = await post(client, server, read_timeout=0.3)
    assert (status, body) == (200, b"x" * 8)


async def test_a_reused_connection_still_times_out(raw_server, client):
    server = await raw_server(answers_once_then_stalls)
    await post(client, server, read_timeout=0.2)
    with pytest.raises(Timeout):
        await post(client, server, read_timeout=0.2)
    assert server.connections == 1


async def test_a_trickle_cannot_outlast_the_total_timeout(raw_server, client):
    async def trickle(reader, writer, n):
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        while True:
            writer.write(b"1\r\nx\r\n")
            await writer.drain()
            await asyncio.sleep(0.02)

    server = await raw_server(trickle)
    with pytest.raises(Timeout):
        await post(client, server, read_timeout=1.0, total_timeout=0.3)


async def test_connection_refused_is_a_connect_error(client):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening
        with pytest.raises(ConnectError, match=f"127.0.0.1:{port}"):
            await client.request(Endpoint.parse(f"http://127.0.0.1:{port}/"), b"", b"", connect_timeout=2,
                                 read_timeout=2)


async def test_a_slow_reader_pauses_the_socket_instead_of_buffering_everything(raw_server, client):
    total = 64 * 1024 * 1024  # far more than the kernel's socket buffers hold
    sent = 0
    stuck = []

    async def firehose(reader, writer, n):
        nonlocal sent
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        block = b"x" * 65536
        for _ in range(total // len(block)):
            writer.write(block)
            sent += len(block)
            stuck.append(writer.transport.get_write_buffer_size() > 0)  # the kernel took less than all
            await writer.drain()

    server = await raw_server(firehose)
    resp = await client.request(ep(server), b"", b"{}", connect_timeout=2, read_timeout=5)
    await eventually(lambda: resp._conn.paused)
    await eventually(lambda: stuck and stuck[-1])  # nobody reads the socket: the sender waits
    assert resp._conn.buffered <= httpclient.HIGH_WATER + 1024 * 1024  # at most a read beyond the mark
    assert sent < total
    received = 0
    async for chunk in resp:
        received += len(chunk)
    assert received == total
    assert client.idle_count(ep(server)) == 1


async def test_cancelling_a_request_closes_its_connection(raw_server, client):
    async def silent(reader, writer, n):
        await reader.read(1)  # until the client hangs up

    server = await raw_server(silent)
    task = asyncio.create_task(post(client, server))
    await eventually(lambda: server.requests)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await eventually(lambda: server.closed == 1)
    assert client.idle_count(ep(server)) == 0


async def test_closing_an_unread_answer_drops_the_connection_and_a_read_one_keeps_it(raw_server, client):
    server = await raw_server(reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n"))
    resp = await client.request(ep(server), b"", b"{}", connect_timeout=2, read_timeout=2)
    resp.close()  # the chunked body never ended: the connection cannot be reused
    await eventually(lambda: server.closed == 1)
    assert client.idle_count(ep(server)) == 0


async def test_closing_the_client_closes_idle_and_busy_connections(raw_server):
    idle_server = await raw_server(answers_once_then_stalls)
    busy_server = await raw_server(lambda r, w, n: r.read(1))
    client = HTTPClient()
    await post(client, idle_server)
    task = asyncio.create_task(post(client, busy_server))
    await eventually(lambda: busy_server.requests)
    await client.close()
    await eventually(lambda: idle_server.closed == 1 and busy_server.closed == 1)
    with pytest.raises(Disconnected):
        await task
    with pytest.raises(ConnectError, match="closed"):
        await post(client, idle_server)


async def test_closing_the_client_under_a_reused_connection_does_not_retry(raw_server):
    server = await raw_server(answers_once_then_stalls)
    client = HTTPClient()
    await post(client, server)
    task = asyncio.create_task(post(client, server))  # reuses the connection, gets no answer
    await eventually(lambda: len(server.requests) == 2)
    await client.close()
    with pytest.raises(Disconnected):
        await task
    assert server.connections == 1  # no fresh connection for a retry


# ---- TLS ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def test_tls_with_a_trusted_certificate_pools_too(raw_server, ca):
    server = await raw_server(reply(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), server_context(ca, "localhost"))
    client = HTTPClient(ssl_context=trusting(ca))
    try:
        url = Endpoint.parse(f"https://localhost:{server.port}/v1")
        for _ in range(3):
            resp = await client.request(url, b"", b"{}", connect_timeout=2, read_timeout=2)
            assert await resp.read() == b"ok"
            resp.close()
        assert server.connections == 1
    finally:
        await client.close()


@pytest.mark.parametrize("cert_host,trusted", [("other.example", True), ("localhost", False)],
                         ids=["wrong hostname", "unknown CA"])
async def test_tls_refuses_what_it_cannot_verify(raw_server, ca, cert_host, trusted):
    server = await raw_server(reply(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), server_context(ca, cert_host))
    client = HTTPClient(ssl_context=trusting(ca if trusted else trustme.CA()))
    try:
        with pytest.raises(ConnectError, match="TLS"):
            await client.request(Endpoint.parse(f"https://localhost:{server.port}/"), b"", b"{}",
                                 connect_timeout=2, read_timeout=2)
        assert server.requests == []
    finally:
        await client.close()


# ---- pure parts -----------------------------------------------------------------------------------

@pytest.mark.parametrize("url,host,port,tls,head", [
    ("http://127.0.0.1:8080/v1/chat/completions", "127.0.0.1", 8080, False,
     b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"),
    ("https://api.cerebras.ai/v1/chat/completions", "api.cerebras.ai", 443, True,
     b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.cerebras.ai\r\n"),
    ("http://example.com", "example.com", 80, False, b"POST / HTTP/1.1\r\nHost: example.com\r\n"),
    ("https://h.example:8443/p?a=1", "h.example", 8443, True, b"POST /p?a=1 HTTP/1.1\r\nHost: h.example:8443\r\n"),
    ("http://[::1]:9000/x", "::1", 9000, False, b"POST /x HTTP/1.1\r\nHost: [::1]:9000\r\n"),
])
def test_endpoint_parse(url, host, port, tls, head):
    e = Endpoint.parse(url)
    assert (e.host, e.port, e.tls, e.head) == (host, port, tls, head)


@pytest.mark.parametrize("url,match", [
    ("ftp://example.com/", "only http"),
    ("http:///path", "no host"),
    ("https://user:pw@example.com/", "credentials"),
])
def test_endpoint_parse_refuses(url, match):
    with pytest.raises(ValueError, match=match):
        Endpoint.parse(url)


@pytest.mark.parametrize("headers,ok", [
    ({"Authorization": "Bearer csk-abc"}, True),
    ({"Authorization": "Bearer csk\r\nX-Injected: 1"}, False),
    ({"X-A": "b\nc"}, False),
    ({"Bad:Name": "v"}, False),
    ({"X-A": "nul\0"}, False),
])
def test_encode_headers(headers, ok):
    if ok:
        assert encode_headers(headers) == b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items())
    else:
        with pytest.raises(ValueError):
            encode_headers(headers)
