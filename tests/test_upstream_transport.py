"""Upstream calls over the app's aiohttp session, against raw TCP servers that write exact bytes:
no replay of a written POST, framing, bounded (and bounded-decoded) answers, the connection cap,
timeouts, redirects, TLS. Provider-level tests call ``OpenAICompatible`` on the session the app
builds; end-to-end ones go through the real gateway."""
from __future__ import annotations

import asyncio
import functools
import gzip
import json
import resource
import ssl
import subprocess
import sys
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
import trustme
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.chat import parse_chat_request
from gateway.config import Settings
from gateway.providers.base import Completion, Failure, UpstreamError
from gateway.providers.openai import OpenAICompatible, map_error
from gateway.transport import (
    DECODE_STEP,
    MAX_ANSWER_BYTES,
    BoundedDecoder,
    UnreadableAnswer,
    new_session,
)
from tests import fakes
from tests.conftest import CHAT, _free_port, eventually
from tests.tls import Pinned, server_context, trusting

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}"


@dataclass
class RawServer:
    """Counts connections and requests; ``handler(reader, writer, n)`` answers a connection's n-th."""

    handler: Handler
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    closed: int = 0
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

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


def reply(raw: bytes) -> Handler:
    closes = b"Connection: close" in raw or raw.startswith(b"HTTP/1.0")

    async def handler(reader, writer, n):
        writer.write(raw)
        await writer.drain()
        if closes:  # the body runs to the close
            writer.close()

    return handler


async def silent(reader, writer, n):
    await reader.read(1)  # until the client hangs up


REQ = parse_chat_request(orjson.dumps(CHAT))


@pytest.fixture
async def provider():
    """``await provider(url, **env)``: the Cerebras provider of those settings, on the session the
    app would build (closed at the end)."""
    sessions = []

    async def make(url: str, tls: ssl.SSLContext | None = None, resolver: Pinned | None = None,
                   **env: str) -> OpenAICompatible:
        s = Settings.from_env({"CEREBRAS_API_KEYS": "csk-transport-test", "CEREBRAS_BASE_URL": url, **env})
        session = new_session(s, tls=tls, resolver=resolver)
        sessions.append(session)
        return OpenAICompatible(s.providers[0], session, s.timeouts, map_error)

    yield make
    for session in sessions:
        await session.close()


async def chat(p: OpenAICompatible) -> Completion:
    return await p.chat(REQ, "csk-transport-test")


# ---- no replay -----------------------------------------------------------------------------------

async def closes_after_reading_the_second(reader, writer, n):
    """Answers a connection's first request; reads the second whole, then drops the connection
    (as an upstream that restarts, or whose keep-alive timer fires, just as a request comes in)."""
    if n == 2:
        writer.transport.abort()
        return
    writer.write(OK)
    await writer.drain()


async def test_a_written_post_is_never_sent_again(raw_server, provider):
    """The hand-written client sent it once more on a fresh connection: 3 requests for 2 calls."""
    server = await raw_server(closes_after_reading_the_second)
    p = await provider(server.url)
    assert (await chat(p)).body == b'{"ok":true}'
    with pytest.raises(UpstreamError) as e:
        await chat(p)
    assert e.value.kind is Failure.CONNECTION and "closed the connection" in e.value.message
    await asyncio.sleep(0.2)  # (time for a replay to arrive, if one were sent: there must be none)
    assert len(server.requests) == 2 and server.connections == 1


async def test_after_a_dropped_post_the_call_fails_over_once(gateway, make_fake, raw_server):
    """End to end: the dropped request goes to the next provider, and Cerebras sees it once."""
    server = await raw_server(closes_after_reading_the_second)
    synthetic = await make_fake()
    client = await gateway({"CEREBRAS_BASE_URL": server.url, "SYNTHETIC_API_KEY": "syn-1",
                            "SYNTHETIC_BASE_URL": synthetic.url})
    first = await client.post("/v1/chat/completions", json=CHAT)
    assert first.status == 200 and first.headers["X-Gateway-Provider"] == "cerebras"
    second = await client.post("/v1/chat/completions", json=CHAT)
    assert second.status == 200 and second.headers["X-Gateway-Provider"] == "synthetic"
    assert len(server.requests) == 2 and len(synthetic.received) == 1


async def test_a_dropped_post_with_nowhere_to_go_is_a_clean_503(gateway, raw_server):
    async def always_drops(reader, writer, n):
        writer.transport.abort()

    server = await raw_server(always_drops)
    client = await gateway({"CEREBRAS_BASE_URL": server.url})
    resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status == 503  # upstreams failing
    error = (await resp.json())["error"]
    assert set(error) == {"message", "type", "param", "code"} and "closed the connection" in error["message"]
    assert len(server.requests) == 2  # one per key tried (KEYS_TRIED_ON_ERROR), never one more


# ---- framing -------------------------------------------------------------------------------------

GZIPPED = gzip.compress(b'{"ok":true}')
DEFLATED = zlib.compress(b'{"ok":true}')
RAW_DEFLATED = zlib.compress(b'{"ok":true}', wbits=-15)  # what some servers send as "deflate"

FRAMING = [
    ("content-length", OK, 200, b'{"ok":true}', True),
    ("chunked, extensions and trailers",
     b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"4;ext=1\r\n{\"ok\r\n7\r\n\":true}\r\n0\r\nX-Trailer: t\r\n\r\n", 200, b'{"ok":true}', True),
    ("until close", b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"ok\":true}", 200, b'{"ok":true}', False),
    ("http/1.0 until close", b"HTTP/1.0 200 OK\r\n\r\nold", 200, b"old", False),
    ("gzip anyway", b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
     % (len(GZIPPED), GZIPPED), 200, b'{"ok":true}', True),
    ("deflate anyway", b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nContent-Length: %d\r\n\r\n%s"
     % (len(DEFLATED), DEFLATED), 200, b'{"ok":true}', True),
    ("raw deflate", b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nContent-Length: %d\r\n\r\n%s"
     % (len(RAW_DEFLATED), RAW_DEFLATED), 200, b'{"ok":true}', True),
    ("interim 100 first", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
     200, b"ok", True),
]


@pytest.mark.parametrize("raw,status,body,reused", [c[1:] for c in FRAMING], ids=[c[0] for c in FRAMING])
async def test_framing(raw_server, provider, raw, status, body, reused):
    server = await raw_server(reply(raw))
    p = await provider(server.url)
    for _ in range(2):  # a second call: on the same connection?
        done = await chat(p)
        assert (done.status, done.body) == (status, body)
    assert server.connections == (1 if reused else 2)


async def test_the_request_is_sent_as_built(raw_server, provider):
    server = await raw_server(reply(OK))
    p = await provider(server.url)
    await chat(p)
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/chat/completions HTTP/1.1"
    headers = {k.lower(): v for k, _, v in (line.partition(b": ") for line in lines[1:])}
    assert headers[b"host"] == f"127.0.0.1:{server.port}".encode()
    assert headers[b"authorization"] == b"Bearer csk-transport-test"
    assert headers[b"accept-encoding"] == b"identity"  # no compression asked for
    assert headers[b"content-type"] == b"application/json" and int(headers[b"content-length"]) == len(body)
    assert b"cookie" not in headers
    assert json.loads(body)["messages"] == CHAT["messages"]


async def test_cookies_set_by_an_upstream_are_not_sent_back(raw_server, provider):
    server = await raw_server(reply(b"HTTP/1.1 200 OK\r\nSet-Cookie: session=abc; Path=/\r\n"
                                    b"Content-Length: 2\r\n\r\nok"))
    p = await provider(server.url)
    await chat(p)
    await chat(p)
    assert b"abc" not in server.requests[1]


@pytest.mark.parametrize("raw,match", [
    (b"SSH-2.0-OpenSSH_9.6\r\n", "not valid HTTP"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n", "not valid HTTP"),
    (b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 1\r\n\r\nx", "content-encoding: br"),
    (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 5\r\n\r\nnotgz", "could not decode"),
    (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (10, GZIPPED[:10]), "cut short"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{\"partial\":", "cut short"),
    (b"HTTP/1.1 200 OK\r\nX-Big: " + b"y" * 70_000 + b"\r\nContent-Length: 2\r\n\r\nok", "not valid HTTP"),
])
async def test_answers_that_cannot_be_read_are_connection_failures(raw_server, provider, raw, match):
    server = await raw_server(reply(raw))
    with pytest.raises(UpstreamError) as e:
        await chat(await provider(server.url))
    assert e.value.kind is Failure.CONNECTION and match in e.value.message


# ---- bounded answers -----------------------------------------------------------------------------

@functools.cache
def gzip_bomb(decoded: int, pattern: bytes) -> bytes:
    """A gzip body of ``decoded`` bytes of ``pattern`` over and over (about 1 KB per MB)."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = pattern * (1024 * 1024 // len(pattern))
    return b"".join([*(z.compress(block) for _ in range(decoded // len(block))), z.flush()])


async def drain(p: OpenAICompatible) -> int:
    """Read a stream to its end, keeping nothing; the number of bytes of events."""
    stream = await p.chat_stream(REQ, "csk-transport-test")
    try:
        return sum([len(e) async for e in stream.events])
    finally:
        await stream.aclose()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_compressed_bomb_is_refused_in_bounded_memory(raw_server, provider, stream):
    """About 1 MiB of gzip expanding to 1 GiB: the hand-written client took the process to 1 GB."""
    bomb = gzip_bomb(1024 * 1024 * 1024, b"data: {}\n\n" if stream else b"\0")
    content_type = b"text/event-stream" if stream else b"application/json"

    async def sends_it(reader, writer, n):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Encoding: gzip\r\n" % content_type)
        writer.write(b"Content-Length: %d\r\n\r\n" % len(bomb))
        writer.write(bomb)
        await writer.drain()

    server = await raw_server(sends_it)
    p = await provider(server.url)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    with pytest.raises(UpstreamError) as e:
        await (drain(p) if stream else chat(p))
    grew_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert e.value.kind is (Failure.MIDSTREAM if stream else Failure.CONNECTION)
    assert f"over {MAX_ANSWER_BYTES} bytes" in e.value.message
    assert grew_mib < 1.5 * MAX_ANSWER_BYTES / 2**20  # at most the capped answer, never the gigabyte


async def test_an_answer_over_the_cap_is_refused_before_it_is_read(raw_server, provider):
    async def announces_too_much(reader, writer, n):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (MAX_ANSWER_BYTES + 1))
        writer.write(b"x" * 1024)
        await writer.drain()
        await reader.read(1)

    server = await raw_server(announces_too_much)
    with pytest.raises(UpstreamError, match="over"):
        await chat(await provider(server.url))
    await eventually(lambda: server.closed == 1)  # the connection is dropped, not left half-read


async def test_a_big_answer_under_the_cap_is_read_whole(raw_server, provider):
    body = b"x" * (8 * 1024 * 1024)
    server = await raw_server(reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
                                    % (len(body), body)))
    assert (await chat(await provider(server.url))).body == body


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=600_000) | st.just(bytes(3 * DECODE_STEP + 17)),
       cuts=st.lists(st.integers(min_value=1, max_value=50_000), max_size=20),
       coding=st.sampled_from(["gzip", "deflate", "raw-deflate"]))
def test_bounded_decoder_gives_back_the_bytes_in_bounded_steps(data, cuts, coding):
    wbits = {"gzip": 31, "deflate": 15, "raw-deflate": -15}[coding]
    z = zlib.compressobj(6, zlib.DEFLATED, wbits)
    packed = z.compress(data) + z.flush()
    decoder = BoundedDecoder("gzip" if coding == "gzip" else "deflate")
    out, at = [], 0
    for cut in [*cuts, len(packed)]:
        piece, at = packed[at:at + cut], at + cut
        if piece:
            out.extend(decoder.feed(piece))
    decoder.finish()
    assert b"".join(out) == data
    assert all(0 < len(step) <= DECODE_STEP for step in out)


@settings(max_examples=60, deadline=None)
@given(junk=st.binary(min_size=1, max_size=2000))
def test_bounded_decoder_refuses_junk_with_its_own_error(junk):
    decoder = BoundedDecoder("gzip")
    try:
        for _ in decoder.feed(junk):
            pass
        decoder.finish()
    except UnreadableAnswer:
        return
    raise AssertionError("junk decoded as a whole gzip body")  # (2 KB of random bytes never is one)


async def test_a_stream_nobody_reads_stops_the_upstream_instead_of_filling_memory(raw_server, provider):
    total = 64 * 1024 * 1024  # far more than the kernel's socket buffers hold
    event = fakes.chunk("x" * 1000)
    sent, stuck = 0, []

    async def firehose(reader, writer, n):
        nonlocal sent
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n"
                     % (total // len(event) * len(event)))
        block = event * (65536 // len(event))
        while sent + len(block) <= total:
            writer.write(block)
            sent += len(block)
            stuck.append(writer.transport.get_write_buffer_size() > 0)  # the kernel took less than all
            await writer.drain()

    server = await raw_server(firehose)
    stream = await (await provider(server.url)).chat_stream(REQ, "csk-transport-test")
    try:
        assert (await stream.events.__anext__()).startswith(b"data: ")  # then nobody reads on
        await eventually(lambda: stuck and stuck[-1])  # the upstream's writes wait ...
        await asyncio.sleep(0.2)
        before = sent
        await asyncio.sleep(0.2)
        assert sent == before and sent < total // 4  # ... and stay stopped, not buffered here
    finally:
        await stream.aclose()


# ---- the connection cap --------------------------------------------------------------------------

async def test_concurrent_calls_share_at_most_the_per_host_cap_of_connections(gateway, raw_server):
    gate = asyncio.Event()

    async def held(reader, writer, n):
        await gate.wait()
        writer.write(OK)
        await writer.drain()

    server = await raw_server(held)
    client = await gateway({"CEREBRAS_BASE_URL": server.url, "UPSTREAM_MAX_CONNECTIONS_PER_HOST": "3"})
    calls = [asyncio.create_task(client.post("/v1/chat/completions", json=CHAT)) for _ in range(12)]
    await eventually(lambda: len(server.requests) == 3)
    await asyncio.sleep(0.2)  # (time for more connections, were any allowed: there must be none)
    assert server.connections == 3 and len(server.requests) == 3
    gate.set()
    answers = await asyncio.gather(*calls)
    assert [r.status for r in answers] == [200] * 12
    assert server.connections == 3 and len(server.requests) == 12


async def test_concurrent_calls_to_one_host_share_one_dns_lookup(raw_server, provider):
    gate = asyncio.Event()

    async def held(reader, writer, n):
        await gate.wait()
        writer.write(OK)
        await writer.drain()

    server = await raw_server(held)
    resolver = Pinned("upstream.test", 80, server.port)
    p = await provider("http://upstream.test/v1", resolver=resolver)
    calls = [asyncio.create_task(chat(p)) for _ in range(20)]
    await eventually(lambda: len(server.requests) == 20)
    gate.set()
    await asyncio.gather(*calls)
    await chat(p)
    assert resolver.lookups == 1  # (cached for DNS_CACHE_SECONDS)


# ---- timeouts ------------------------------------------------------------------------------------

async def test_silence_before_the_answer_is_a_read_timeout(raw_server, provider):
    server = await raw_server(silent)
    with pytest.raises(UpstreamError) as e:
        await chat(await provider(server.url, UPSTREAM_READ_TIMEOUT="0.2"))
    assert e.value.kind is Failure.TIMEOUT and "read timeout" in e.value.message


async def test_silence_in_a_stream_ends_it_as_a_midstream_failure(raw_server, provider):
    async def stalls(reader, writer, n):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"%x\r\n%s\r\n" % (len(fakes.chunk("a")), fakes.chunk("a")))
        await writer.drain()
        await reader.read(1)

    server = await raw_server(stalls)
    p = await provider(server.url, UPSTREAM_READ_TIMEOUT="0.2")
    stream = await p.chat_stream(REQ, "csk-transport-test")
    assert b'"content":"a"' in await stream.events.__anext__()
    with pytest.raises(UpstreamError) as e:
        await stream.events.__anext__()
    assert e.value.kind is Failure.MIDSTREAM and "read timeout" in e.value.message
    await eventually(lambda: server.closed == 1)  # the stalled connection is dropped, not pooled


async def test_steady_bytes_outlast_the_read_timeout_but_not_the_total(raw_server, provider):
    async def trickle(reader, writer, n):
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(16):  # 0.8 s in all, never more than 0.05 s of silence
            await asyncio.sleep(0.05)
            writer.write(b"1\r\nx\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")

    server = await raw_server(trickle)
    assert (await chat(await provider(server.url, UPSTREAM_READ_TIMEOUT="0.3"))).body == b"x" * 16
    with pytest.raises(UpstreamError) as e:
        await chat(await provider(server.url, UPSTREAM_READ_TIMEOUT="0.3", UPSTREAM_TIMEOUT="0.4"))
    assert e.value.kind is Failure.TIMEOUT and "whole call" in e.value.message


async def test_a_hung_upstream_fails_over_on_its_read_timeout(gateway, make_fake, raw_server):
    server = await raw_server(silent)
    synthetic = await make_fake()
    client = await gateway({"CEREBRAS_BASE_URL": server.url, "UPSTREAM_READ_TIMEOUT": "0.3",
                            "SYNTHETIC_API_KEY": "syn-1", "SYNTHETIC_BASE_URL": synthetic.url})
    resp = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert resp.status == 200 and resp.headers["X-Gateway-Provider"] == "synthetic"
    assert len(server.requests) == 1


async def test_cancelling_a_call_closes_its_connection(raw_server, provider):
    server = await raw_server(silent)
    task = asyncio.create_task(chat(await provider(server.url)))
    await eventually(lambda: server.requests)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await eventually(lambda: server.closed == 1)


# ---- redirects -----------------------------------------------------------------------------------

@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_an_upstream_redirect_is_a_503_and_the_log_names_its_location(gateway, fake, log_dir, stream):
    where = f"https://moved.example/v2/chat/completions?stream={stream}"

    async def moved(request, body):
        from aiohttp import web

        return web.Response(status=308, headers={"Location": where})

    fake.default = moved
    client = await gateway()
    resp = await client.post("/v1/chat/completions", json={**CHAT, "stream": stream})
    assert resp.status == 503 and "Location" not in resp.headers
    error = (await resp.json())["error"]
    assert error["code"] == "upstream_unavailable" and "redirect" in error["message"]
    assert "CEREBRAS_BASE_URL" in error["message"] and "moved.example" not in error["message"]

    def logged():
        lines = [json.loads(line) for line in (log_dir / "gateway.log").read_text().splitlines()]
        found = [line for line in lines if line.get("event") == "upstream_redirected" and line["location"] == where]
        return found if len(found) == len(fake.received) else None

    lines = await eventually(logged)  # one line per attempt (each key tried is a call that was redirected)
    assert {(line["status"], line["provider"]) for line in lines} == {(308, "cerebras")}


# ---- TLS -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def test_tls_with_a_trusted_certificate_reuses_its_connection(raw_server, provider, ca):
    server = await raw_server(reply(OK), server_context(ca, "localhost"))
    p = await provider(f"https://localhost:{server.port}/v1", tls=trusting(ca))
    for _ in range(3):
        assert (await chat(p)).body == b'{"ok":true}'
    assert server.connections == 1


@pytest.mark.parametrize("cert_host,trusted", [("other.example", True), ("localhost", False)],
                         ids=["wrong hostname", "unknown CA"])
async def test_tls_refuses_what_it_cannot_verify(raw_server, provider, ca, cert_host, trusted):
    server = await raw_server(reply(OK), server_context(ca, cert_host))
    p = await provider(f"https://localhost:{server.port}/v1", tls=trusting(ca if trusted else trustme.CA()))
    with pytest.raises(UpstreamError) as e:
        await chat(p)
    assert e.value.kind is Failure.CONNECTION and e.value.message.startswith("TLS")
    assert f"localhost:{server.port}" in e.value.message
    assert server.requests == []


def test_ssl_cert_file_names_the_ca_the_gateway_trusts(tmp_path, ca):
    """A corporate CA by SSL_CERT_FILE: the real entrypoint, in its own process, calls a TLS
    upstream whose certificate only that CA signed."""
    ca_file = tmp_path / "corporate-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert = tmp_path / "upstream.pem"
    ca.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(str(cert))
    script = tmp_path / "run.py"
    script.write_text(SSL_CERT_FILE_SCRIPT)
    root = str(Path(__file__).resolve().parent.parent)
    out = subprocess.run(
        [sys.executable, str(script), str(cert), root, str(_free_port()), str(tmp_path)],
        env={"PATH": "/usr/bin:/bin", "SSL_CERT_FILE": str(ca_file), "HOME": str(tmp_path)},
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["200", "upstream-saw-it", "503"]


SSL_CERT_FILE_SCRIPT = '''
import asyncio, json, os, ssl, subprocess, sys, time, urllib.request
from aiohttp import web
cert, root, port, tmp = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

async def chat(request):
    await request.read()
    return web.json_response({"choices": [], "note": "upstream-saw-it"})

async def main():
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    up = site._server.sockets[0].getsockname()[1]
    results = []
    for env_ca in (os.environ["SSL_CERT_FILE"], os.path.join(tmp, "nothing.pem")):
        env = {**os.environ, "SSL_CERT_FILE": env_ca, "PORT": str(port), "CEREBRAS_API_KEYS": "csk-ca-test",
               "CEREBRAS_BASE_URL": "https://localhost:%d/v1" % up, "ENABLE_INCOMING_AUTH": "false",
               "LOG_DIR": "", "ENV_FILE": os.path.join(tmp, "none.env")}
        gw = subprocess.Popen([sys.executable, os.path.join(root, "proxy_server.py")], env=env, cwd=tmp,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            body = json.dumps({"model": "zai-glm-4.7", "messages": [{"role": "user", "content": "hi"}]}).encode()
            deadline = time.monotonic() + 30
            while True:
                try:
                    req = urllib.request.Request("http://127.0.0.1:%d/v1/chat/completions" % port, data=body)
                    resp = await asyncio.to_thread(urllib.request.urlopen, req, timeout=10)
                    results += [str(resp.status), json.loads(resp.read())["note"]]
                    break
                except urllib.error.HTTPError as e:
                    results.append(str(e.code))
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.1)
        finally:
            gw.terminate()
            gw.wait(10)
    print(" ".join(results))

asyncio.run(main())
'''
