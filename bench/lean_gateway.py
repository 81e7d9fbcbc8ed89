#!/usr/bin/env python3
"""What-if: the gateway's own per-request work on a server with no web framework.

Not a gateway part, and not a server to run: it answers one question for ``bench/run.py
--ceiling``, namely how much of the through/direct ratio the gateway would gain by leaving
aiohttp's server for a hand-written one. It serves non-streamed chat completions only, on the
httptools server of ``bench/lean_relay.py``, and does per request what the gateway does: the
client's key checked against the key store's cache, the request id, parsing and checking the
request, the transcript check, routing over the configured upstreams and keys (the gateway's
Router, KeyPools and provider), the rate-limit headers read, and the JSON log line.

Configured from the same environment as ``proxy_server.py``.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lean_relay import LeanServer  # noqa: E402  (bench/, beside this file)
from gateway.app import build_router  # noqa: E402
from gateway.chat import parse_chat_request  # noqa: E402
from gateway.config import Settings  # noqa: E402
from gateway.errors import GatewayError, Unauthorized, error_body  # noqa: E402
from gateway.httpclient import HTTPClient  # noqa: E402
from gateway.keystore import KeyStore  # noqa: E402
from gateway.logs import access, configure  # noqa: E402
from gateway.repair import repair_messages  # noqa: E402
from gateway.routing import Router  # noqa: E402

CHAT = b"/v1/chat/completions"
RID_PREFIX = os.urandom(8).hex()  # request ids as the gateway makes them: a prefix and a counter
RID_COUNTER = itertools.count(1)


class Gateway:
    def __init__(self, settings: Settings, store: KeyStore, router: Router) -> None:
        self.settings, self.store, self.router = settings, store, router

    async def serve(self, url: bytes, headers: dict[bytes, bytes], body: bytes) -> tuple[int, bytes, bytes]:
        """(status, extra header lines, body) for one request."""
        rid = f"{RID_PREFIX}{next(RID_COUNTER):016x}"
        fields: dict = {"request_id": rid}
        start = time.perf_counter_ns()
        status, extra, out = 500, b"", b""
        try:
            if url != CHAT:
                raise GatewayError("not found", status=404, type="invalid_request_error")
            scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
            key = await self.store.authenticate(token.strip()) if scheme.lower() == "bearer" else None
            if key is None:
                raise Unauthorized("invalid or revoked API key")
            self.store.record_use(key.id)
            fields["client"] = key.name
            req = parse_chat_request(body)
            fields["stream"], fields["model"] = req.stream, req.model
            fixed, _ = repair_messages(req.payload["messages"])
            if fixed is not None:
                req.replace_messages(fixed)
            served = await self.router.complete(req)
            fields.update(provider=served.upstream.name, upstream_key=served.key.name,
                          attempts=len(served.attempts) + 1)
            done = served.result
            status, out = done.status, done.body  # type: ignore[attr-defined]
            extra = b"X-Gateway-Provider: %s\r\n" % served.upstream.name.encode()
        except GatewayError as e:
            status, out = e.status, orjson.dumps(error_body(e.message, e.type, e.code, e.param))
        fields.update(method="POST", path=url.decode("latin-1"), status=status,
                      latency_ms=(time.perf_counter_ns() - start) // 1000 / 1000)
        access("request", "info", fields)
        return status, extra + b"X-Request-Id: %s\r\n" % rid.encode(), out


class Connection(LeanServer):
    def __init__(self, gateway: Gateway) -> None:
        super().__init__()
        self.gateway = gateway

    async def answer(self, url: bytes, headers: dict[bytes, bytes], body: bytes) -> bytes:
        status, extra, out = await self.gateway.serve(url, headers, body)
        return b"HTTP/1.1 %d OK\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s" % (
            status, extra, len(out), out)


async def main(port: int) -> None:
    settings = Settings.from_env(os.environ)
    writer = configure(settings.log_level, settings.log_dir or Path(tempfile.mkdtemp()), settings.secrets(),
                       stdout=False)
    store = await KeyStore.open(settings.incoming_key_db)
    router = build_router(settings, HTTPClient())
    gateway = Gateway(settings, store, router)
    server = await asyncio.get_running_loop().create_server(lambda: Connection(gateway), "127.0.0.1", port)
    try:
        await server.serve_forever()
    finally:
        writer.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    a = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(a.port))
