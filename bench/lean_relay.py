#!/usr/bin/env python3
"""A relay with no web framework: a minimal HTTP/1.1 server on httptools and the gateway's upstream
client, relaying non-streamed JSON and nothing else (no streams, no errors handled, no limits).

Not a gateway part: ``bench/run.py --ceiling`` runs it beside the others to measure how much of
the through/direct ratio any relay process can reach on this machine, framework or not.
"""
from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httptools

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from relay_cli import relay_args  # noqa: E402  (bench/, beside this file)
from gateway.httpclient import Endpoint, HTTPClient  # noqa: E402

HEAD = b"Content-Type: application/json\r\n"


class LeanServer(asyncio.Protocol):
    """A minimal HTTP/1.1 server connection: requests answered in order, one at a time, each by
    ``answer()`` (the whole response's bytes). No streams, no limits, no timeouts."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.body: list[bytes] = []
        self.queue: list[tuple[bytes, dict[bytes, bytes], bytes, bool]] = []
        self.busy = False

    async def answer(self, url: bytes, headers: dict[bytes, bytes], body: bytes) -> bytes:
        raise NotImplementedError

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, data: bytes) -> None:
        self.body.append(data)

    def on_message_complete(self) -> None:
        self.queue.append((self.url, self.headers, b"".join(self.body), self.parser.should_keep_alive()))
        self.url, self.headers, self.body = b"", {}, []
        if not self.busy:
            self.busy = True
            asyncio.get_running_loop().create_task(self.run())

    async def run(self) -> None:
        while self.queue:
            url, headers, body, keep_alive = self.queue.pop(0)
            self.transport.write(await self.answer(url, headers, body))
            if not keep_alive:
                self.transport.close()
                break
        self.busy = False


class Relay(LeanServer):
    def __init__(self, client: HTTPClient, endpoint: Endpoint) -> None:
        super().__init__()
        self.client, self.endpoint = client, endpoint

    async def answer(self, url: bytes, headers: dict[bytes, bytes], body: bytes) -> bytes:
        up = await self.client.request(self.endpoint, HEAD, body, connect_timeout=10, read_timeout=120)
        data = await up.read()
        up.close()
        return b"HTTP/1.1 %d OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
            up.status, len(data), data)


def main() -> None:
    a = relay_args()

    async def run() -> None:
        client, endpoint = HTTPClient(), Endpoint.parse(a.upstream)
        server = await asyncio.get_running_loop().create_server(lambda: Relay(client, endpoint), "127.0.0.1", a.port)
        await server.serve_forever()

    asyncio.run(run())


if __name__ == "__main__":
    main()
