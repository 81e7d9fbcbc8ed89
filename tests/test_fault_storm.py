"""A fault storm through the real app: every backend failing ~30% of the time.

Cerebras (three keys), Synthetic and a local llama.cpp stand-in are fake upstreams on real ports.
Each fails a request with a 500, a connection cut or a hang past the read timeout, drawn from a
seeded generator per (backend, request): so whether *some* backend could serve a request is known
before it is sent. Breakers open and close throughout; still every request that some backend
could serve is served, the others get a 503/504 naming what failed, and none is answered without
an upstream attempt, nor with a 429 (nothing is rate limited).
"""
from __future__ import annotations

import asyncio
import random
import time

import orjson
from aiohttp import web

from tests import fakes

SEED = 11
REQUESTS = 300
CONCURRENCY = 20
FAULT_RATE = 0.3
BACKENDS = ("cerebras", "synthetic", "local")
READ_TIMEOUT = 0.25


def fault(backend: str, rid: int) -> str | None:
    """The fault ``backend`` answers request ``rid`` with (on every key), or None: it serves."""
    draw = random.Random(f"{SEED}/{backend}/{rid}").random()
    if draw >= FAULT_RATE:
        return None
    return ("500", "cut", "hang")[int(draw / FAULT_RATE * 3)]


def rid_of(body: dict) -> int:
    return int(body["messages"][0]["content"].removeprefix("storm "))


def storm_reply(backend: str):
    server_error = fakes.error(500, {"message": "internal error", "type": "server_error", "code": None})

    async def reply(request: web.Request, body: dict) -> web.StreamResponse:
        kind = fault(backend, rid_of(body))
        if kind == "500":
            return await server_error(request, body)
        if kind == "cut":
            request.transport.close()  # the connection drops before any answer
            return web.Response()
        if kind == "hang":
            await asyncio.sleep(READ_TIMEOUT * 4)  # past the gateway's read timeout
        if body.get("stream"):
            return await fakes.stream([f"from {backend}"])(request, body)
        return await fakes.ok(f"from {backend}")(request, body)

    return reply


async def test_fault_storm_serves_what_any_backend_can(gateway, fake, make_fake):
    synthetic, local = await make_fake(), await make_fake()
    upstreams = {"cerebras": fake, "synthetic": synthetic, "local": local}
    for name, upstream in upstreams.items():
        upstream.default = storm_reply(name)
    client = await gateway({
        "SYNTHETIC_API_KEY": "syn-key-0001",
        "SYNTHETIC_BASE_URL": synthetic.url,
        "LOCAL_BASE_URL": local.url,
        "UPSTREAM_READ_TIMEOUT": str(READ_TIMEOUT),
        "LOCAL_READ_TIMEOUT": str(READ_TIMEOUT),
        "MAX_KEY_WAIT": "10",
    })

    results: dict[int, tuple[int, dict[str, str], bytes]] = {}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for rid in range(REQUESTS):
        queue.put_nowait(rid)

    async def worker() -> None:
        while not queue.empty():
            rid = queue.get_nowait()
            body = {"model": "zai-glm-4.7", "messages": [{"role": "user", "content": f"storm {rid}"}],
                    "stream": rid % 3 == 0}
            resp = await client.post("/v1/chat/completions", json=body)
            results[rid] = (resp.status, dict(resp.headers), await resp.read())

    breaker_states: set[str] = set()

    async def watch() -> None:  # what /_status shows while the storm runs
        while True:
            status = await (await client.get("/_status")).json()
            breaker_states.update(k["breaker"]["state"] for p in status["providers"] for k in p["keys"])
            await asyncio.sleep(0.05)

    watcher = asyncio.ensure_future(watch())
    started = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(CONCURRENCY))), timeout=60)
    elapsed = time.monotonic() - started
    watcher.cancel()

    attempts = {rid: 0 for rid in range(REQUESTS)}
    for upstream in upstreams.values():
        for received in upstream.received:
            attempts[rid_of(received.body)] += 1

    unserved = []
    for rid, (status, headers, raw) in sorted(results.items()):
        servable = any(fault(b, rid) is None for b in BACKENDS)
        assert attempts[rid] >= 1, f"request {rid} answered {status} with no upstream attempt"
        assert status != 429, f"request {rid}: 429 with nothing rate limited: {raw[:300]!r}"
        if servable:
            assert status == 200, f"request {rid} could be served but got {status}: {raw[:400]!r}"
            assert b"from " in raw
            if rid % 3 == 0:
                assert raw.endswith(b"data: [DONE]\n\n")
        else:
            unserved.append(rid)
            error = orjson.loads(raw)["error"]
            assert (status, error["code"]) in ((503, "upstream_unavailable"), (504, "upstream_timeout")), raw
            assert status == 504 or "Retry-After" in headers
            for backend in BACKENDS:
                assert f"{backend}/" in error["message"]  # names what failed, per provider
    assert len(results) == REQUESTS
    assert 0 < len(unserved) < REQUESTS * 0.06  # ~0.3^3 of them: every backend failed those
    assert {"open", "closed"} <= breaker_states  # breakers did open (and close) during the storm
    assert elapsed < 15
