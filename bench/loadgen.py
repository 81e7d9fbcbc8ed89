#!/usr/bin/env python3
"""Load generator (its own process): N requests at concurrency C; prints one JSON result.

Latency is per request, send to last byte. For streams it also reports time to first event and
each event's delivery delay (arrival time minus the ``"t"`` send stamp the fake upstream put in
it; both clocks are this machine's wall clock).
"""
from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time

import aiohttp
import orjson

STAMP = re.compile(rb'"t":(\d+)')


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


def request_body(stream: bool) -> bytes:
    messages = [{"role": "system", "content": "You are a careful coding agent. " * 20}]
    for i in range(6):
        messages.append({"role": "user", "content": f"step {i}: look at the failing test and fix it " * 5})
        messages.append({"role": "assistant", "content": f"done with step {i}, the test passes now " * 5})
    return orjson.dumps({"model": "zai-glm-4.7", "messages": messages, "stream": stream, "max_tokens": 1024})


async def run(url: str, key: str, concurrency: int, total: int, stream: bool, warmup: int) -> dict:
    body = request_body(stream)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    latencies: list[float] = []
    ttfb: list[float] = []
    chunk_delays: list[float] = []
    errors: dict[str, int] = {}
    counter = 0
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    timeout = aiohttp.ClientTimeout(total=120)

    async def one(session: aiohttp.ClientSession, record: bool) -> None:
        start = time.perf_counter()
        try:
            async with session.post(url, data=body, headers=headers) as resp:
                if resp.status != 200:
                    await resp.read()
                    errors[str(resp.status)] = errors.get(str(resp.status), 0) + 1
                    return
                if stream:
                    first = None
                    async for chunk in resp.content.iter_any():
                        now_ns = time.time_ns()
                        if first is None:
                            first = time.perf_counter() - start
                        if record:
                            chunk_delays.extend((now_ns - int(t)) / 1e6 for t in STAMP.findall(chunk))
                    if record and first is not None:
                        ttfb.append(first * 1000)
                else:
                    await resp.read()
        except (TimeoutError, aiohttp.ClientError) as e:
            errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
            return
        if record:
            latencies.append((time.perf_counter() - start) * 1000)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal counter
        while counter < total:
            counter += 1
            await one(session, True)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        for _ in range(warmup):
            await asyncio.gather(*(one(session, False) for _ in range(min(concurrency, 50))))
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    result = {
        "requests": total,
        "ok": len(latencies),
        "errors": errors,
        "elapsed_s": round(elapsed, 3),
        "rps": round(len(latencies) / elapsed, 1) if elapsed else None,
        "p50_ms": percentile(latencies, 50),
        "p90_ms": percentile(latencies, 90),
        "p99_ms": percentile(latencies, 99),
    }
    if stream:
        result.update(
            ttfb_p50_ms=percentile(ttfb, 50),
            ttfb_p99_ms=percentile(ttfb, 99),
            chunk_delay_p50_ms=percentile(chunk_delays, 50),
            chunk_delay_p99_ms=percentile(chunk_delays, 99),
            chunks=len(chunk_delays),
        )
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--key", default="")
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("--warmup", type=int, default=2, help="rounds of warm-up requests, not recorded")
    a = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(run(a.url, a.key, a.concurrency, a.requests, a.stream, a.warmup))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
