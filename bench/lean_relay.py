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


class Relay(asyncio.Protocol):
    def __init__(self, client: HTTPClient, endpoint: Endpoint) -> None:
        self.client, self.endpoint = client, endpoint
        self.parser = httptools.HttpRequestParser(self)
        self.body: list[bytes] = []
        self.queue: list[tuple[bytes, bool]] = []
        self.busy = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_body(self, data: bytes) -> None:
        self.body.append(data)

    def on_message_complete(self) -> None:
        self.queue.append((b"".join(self.body), self.parser.should_keep_alive()))
        self.body = []
        if not self.busy:
            self.busy = True
            asyncio.get_running_loop().create_task(self.serve())

    async def serve(self) -> None:
        while self.queue:
            body, keep_alive = self.queue.pop(0)
            up = await self.client.request(self.endpoint, HEAD, body, connect_timeout=10, read_timeout=120)
            data = await up.read()
            up.close()
            self.transport.write(b"HTTP/1.1 %d OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                                 % (up.status, len(data), data))
            if not keep_alive:
                self.transport.close()
                break
        self.busy = False


def main() -> None:
    a = relay_args()

    async def run() -> None:
        client, endpoint = HTTPClient(), Endpoint.parse(a.upstream)
        server = await asyncio.get_running_loop().create_server(lambda: Relay(client, endpoint), "127.0.0.1", a.port)
        await server.serve_forever()

    asyncio.run(run())


if __name__ == "__main__":
    main()
