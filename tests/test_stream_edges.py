"""Streams at their edges: empty 200 streams, keep-alives before the first data, an event past the
splitter's cap. Mostly end to end (a real gateway on a real port, fake upstreams over real HTTP);
the router alone where the network would make the cut between reads a matter of timing."""
from __future__ import annotations

import asyncio
import json

import pytest

from gateway.chat import parse_chat_request
from gateway.config import UpstreamKey
from gateway.keypool import KeyPool
from gateway.providers.base import Stream
from gateway.routing import Router, Upstream
from gateway.secrets import Secret
from gateway.sse import MAX_EVENT_BYTES
from tests import fakes
from tests.conftest import CHAT, UPSTREAM_KEYS, eventually

K1, K2, K3 = UPSTREAM_KEYS["k1"], UPSTREAM_KEYS["k2"], UPSTREAM_KEYS["k3"]
STREAM = {**CHAT, "stream": True}
KEEP_ALIVE = b": keep-alive\n\n"


def sse_events(text: bytes) -> list[bytes]:
    return [e for e in text.split(b"\n\n") if e]


@pytest.mark.parametrize(
    "empty",
    [
        fakes.sse(),  # 200, then the connection ends with nothing
        fakes.sse(KEEP_ALIVE, b": still thinking\n\n"),  # only comments
        fakes.sse(b"data: [DONE]\n\n"),  # only the end marker
        fakes.sse(KEEP_ALIVE, b"event: ping\n\n", b"data: [DONE]\n\n"),
        fakes.sse(b"data:\n\n", b"data: [DONE]\r\n\r\n"),  # an empty data line is no answer
    ],
)
async def test_an_empty_stream_moves_on_to_the_next_key(gateway, fake, log_dir, empty):
    fake.script(K1, empty)
    fake.default = fakes.stream(["answer"])
    client = await gateway()
    resp = await client.post("/v1/chat/completions", json=STREAM)
    assert resp.status == 200
    events = sse_events(await resp.read())
    assert b'"content":"answer"' in events[0]  # the first thing the client sees is the answer
    assert events[-1] == b"data: [DONE]" and events.count(b"data: [DONE]") == 1
    assert fake.keys_used() == [K1, K2]
    lines = await eventually(lambda: [
        json.loads(x) for x in (log_dir / "gateway.log").read_text().splitlines()
        if '"upstream_failed"' in x and "empty stream" in x
    ])
    assert lines[-1]["kind"] == "server" and lines[-1]["upstream_key"] == "k1"


async def test_only_empty_streams_give_an_error_not_an_empty_answer(gateway, fake):
    fake.default = fakes.sse(b"data: [DONE]\n\n")
    client = await gateway()
    resp = await client.post("/v1/chat/completions", json=STREAM)
    assert resp.status == 503  # upstreams failing (the breaker branch)
    assert resp.headers["Content-Type"].startswith("application/json")
    error = (await resp.json())["error"]
    assert error["type"] and "upstream sent an empty stream" in error["message"]
    assert fake.keys_used() == [K1, K2]  # a server fault: one more key, then give up


async def test_an_empty_stream_falls_back_to_the_next_provider(gateway, fake, make_fake):
    fake.default = fakes.sse(KEEP_ALIVE)
    synthetic = await make_fake()
    synthetic.default = fakes.stream(["from synthetic"])
    client = await gateway({"SYNTHETIC_API_KEY": "syn-key-0001", "SYNTHETIC_BASE_URL": synthetic.url})
    resp = await client.post("/v1/chat/completions", json=STREAM)
    assert resp.status == 200 and resp.headers["X-Gateway-Provider"] == "synthetic"
    assert b'"content":"from synthetic"' in await resp.read()


async def test_keep_alives_later_in_a_stream_pass(gateway, fake):
    fake.default = fakes.sse(KEEP_ALIVE, fakes.chunk("a"), KEEP_ALIVE, fakes.chunk("b"), b"data: [DONE]\n\n")
    client = await gateway()
    resp = await client.post("/v1/chat/completions", json=STREAM)
    events = sse_events(await resp.read())
    first = events.index(fakes.chunk("a").strip())
    assert events[first + 1 :] == [KEEP_ALIVE.strip(), fakes.chunk("b").strip(), b"data: [DONE]"]
    assert fake.keys_used() == [K1]


class Scripted:
    """A provider whose streams are scripted lists of reads; it records which streams were closed."""

    name = "scripted"

    def __init__(self, *streams: list[bytes]) -> None:
        self.streams = list(streams)
        self.opened = 0
        self.closed: list[int] = []

    async def chat(self, req, secret):
        raise AssertionError("not used")

    async def chat_stream(self, req, secret) -> Stream:
        self.opened += 1
        number, reads = self.opened, self.streams.pop(0)

        async def events():
            try:
                for read in reads:
                    yield read
            finally:
                self.closed.append(number)

        return Stream(events=events())


def router_over(provider: Scripted) -> Router:
    keys = [UpstreamKey(name, Secret(secret)) for name, secret in UPSTREAM_KEYS.items()]
    return Router([Upstream("cerebras", provider, KeyPool("cerebras", keys))], max_key_wait=0)


async def test_reads_before_the_first_data_are_dropped():
    provider = Scripted([KEEP_ALIVE, b"data: [DONE]\n\n"],
                        [KEEP_ALIVE, b"event: ping\n\n", fakes.chunk("a"), KEEP_ALIVE, fakes.chunk("b")])
    served = await router_over(provider).open_stream(parse_chat_request(json.dumps(STREAM).encode()))
    stream, first = served.result
    assert first == fakes.chunk("a")  # the client's first bytes are the answer
    assert served.key.name == "k2" and [a.key for a in served.attempts] == ["k1"]
    assert provider.closed == [1]  # the empty stream was closed, not left open
    assert [read async for read in stream.events] == [KEEP_ALIVE, fakes.chunk("b")]


def too_large_event() -> bytes:
    return b"data: " + b"x" * MAX_EVENT_BYTES + b"\n\n"


async def test_an_event_over_the_cap_midstream_ends_with_an_error_event(gateway, fake):
    fake.default = fakes.sse(fakes.chunk("one"), too_large_event(), fakes.chunk("never"))
    client = await gateway()
    resp = await client.post("/v1/chat/completions", json=STREAM)
    assert resp.status == 200
    text = await asyncio.wait_for(resp.read(), timeout=20)
    assert len(text) < 4096  # the big event was not relayed
    events = sse_events(text)
    assert b'"content":"one"' in events[0]
    error = json.loads(events[-2].removeprefix(b"data: "))["error"]
    assert error["code"] == "upstream_stream_error" and "larger than" in error["message"]
    assert events[-1] == b"data: [DONE]" and b"never" not in text


async def test_an_event_over_the_cap_before_any_data_moves_on(gateway, fake):
    fake.script(K1, fakes.sse(too_large_event()))
    fake.default = fakes.stream(["fine"])
    client = await gateway()
    resp = await client.post("/v1/chat/completions", json=STREAM)
    assert resp.status == 200
    text = await resp.read()
    assert b'"content":"fine"' in text and b"error" not in text
    assert fake.keys_used() == [K1, K2]
