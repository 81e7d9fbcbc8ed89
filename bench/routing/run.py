#!/usr/bin/env python3
"""Routing strategies on a labelled set: what each one saves, and what it costs in latency.

Runs the real gateway app in this process for each strategy, in front of a fake Cerebras and a
fake local llama.cpp server (both real HTTP servers on loopback). The fakes answer per request
from a script drawn once per example (seeded by its id), so every strategy sees the same
world:

- the answer's length: simple requests 40-120 completion tokens, complex 300-900;
- the local draft (``MAX_DRAFT_TOKENS`` 512): ``finish_reason=length`` when the answer is longer;
  else its tokens' log-probability: simple requests mostly confident (88%: -0.25..-0.03 per
  token), complex ones mostly not (85%: -3..-0.5), the rest the other way round (a complex
  request with a confident draft is the costly mistake: the "complex local" column counts them);
  parallel drafts of a complex request (other seeds) say different things, of a simple one the same;
- time (real units; the run sleeps ``--time-scale`` of it): Cerebras 0.3 s + tokens / 1500/s;
  the local server 0.15 s + tokens / 40/s, with 4 parallel slots.

Per strategy: the share served locally, USD saved against always_cerebras (Cerebras zai-glm-4.7:
$2.25 in / $2.75 out per million tokens; local: $0), the escalation rate (drafts sent on to the
cloud, of those drafted), complex requests served locally, and the latency each request gained
over always_cerebras (p50/p99, real units). Writes JSON to bench/results/.

The labelled set is the classifier's (bench/routing/dataset.py, labelled.jsonl) when present,
else bench/routing/small_set.py; the classifier is gateway/classify.py when present, else the
stand-in (gateway/strategy/stand_in.py). The run says which.

    python bench/routing/run.py                      # every strategy, the whole set
    python bench/routing/run.py --limit 60 --time-scale 0.01
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import importlib.util
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

from gateway import logs  # noqa: E402
from gateway.app import create_app  # noqa: E402
from gateway.config import Settings  # noqa: E402
from gateway.state import RECORDERS  # noqa: E402
from gateway.strategy import stand_in  # noqa: E402
from gateway.strategy.settings import STRATEGIES  # noqa: E402

PRICE_IN, PRICE_OUT = 2.25 / 1e6, 2.75 / 1e6  # Cerebras zai-glm-4.7, USD per token
DRAFT_CAP = 512
CLOUD_FIRST, CLOUD_RATE = 0.3, 1500.0
LOCAL_FIRST, LOCAL_RATE = 0.15, 40.0


@dataclass(frozen=True)
class Script:
    label: str
    prompt_tokens: int
    completion: int
    logprob: float


def script_for(ex_id: str, label: str, tokens: int) -> Script:
    rng = random.Random(hashlib.sha256(ex_id.encode()).digest())
    if label == "simple":
        completion = rng.randint(40, 120)
        good = rng.random() < 0.88
    else:
        completion = rng.randint(300, 900)
        good = rng.random() >= 0.85
    logprob = rng.uniform(-0.25, -0.03) if good else rng.uniform(-3.0, -0.5)
    return Script(label, tokens, completion, logprob)


def key_of(messages: Any) -> str:
    return hashlib.sha256(orjson.dumps(messages)).hexdigest()


class World:
    """The fakes' script: each request is looked up by its messages."""

    def __init__(self, examples: list[Any], scale: float) -> None:
        self.scripts = {key_of(ex.payload["messages"]): script_for(ex.id, ex.label, ex.tokens) for ex in examples}
        self.scale = scale

    def script(self, body: dict[str, Any]) -> Script:
        return self.scripts[key_of(body["messages"])]

    async def cloud(self, request: web.Request) -> web.Response:
        body = await request.json()
        s = self.script(body)
        await asyncio.sleep((CLOUD_FIRST + s.completion / CLOUD_RATE) * self.scale)
        return web.json_response(answer("cloud", s, s.completion, None, "stop"))

    async def local(self, request: web.Request) -> web.Response:
        body = await request.json()
        s = self.script(body)
        drafting = body.get("logprobs") is True
        tokens = min(s.completion, int(body.get("max_tokens") or DRAFT_CAP)) if drafting else s.completion
        finish = "length" if tokens < s.completion else "stop"
        await asyncio.sleep((LOCAL_FIRST + tokens / LOCAL_RATE) * self.scale)
        # self-consistency: samples of a complex request (other seeds) say other things
        word = f"word{body.get('seed', 0) % 3}" if s.label == "complex" else "word"
        return web.json_response(answer("local", s, tokens, s.logprob if drafting else None, finish, word))

    async def props(self, request: web.Request) -> web.Response:
        return web.json_response({"total_slots": 4})


def answer(who: str, s: Script, tokens: int, logprob: float | None, finish: str, word: str = "word") -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": " ".join([word] * tokens)},
                              "finish_reason": finish}
    if logprob is not None:
        choice["logprobs"] = {"content": [{"token": word, "logprob": logprob}] * tokens}
    return {"id": f"chatcmpl-{who}", "object": "chat.completion", "created": 1, "model": who, "choices": [choice],
            "usage": {"prompt_tokens": s.prompt_tokens, "completion_tokens": tokens,
                      "total_tokens": s.prompt_tokens + tokens}}


def load_set() -> tuple[list[Any], str]:
    here = Path(__file__).resolve().parent
    if (here / "dataset.py").exists() and (here / "labelled.jsonl").exists():
        sys.path.insert(0, str(here))
        import dataset  # type: ignore[import-not-found]

        return dataset.load(), "bench/routing/labelled.jsonl (the classifier's set)"
    from bench.routing import small_set

    return small_set.load(), "bench/routing/small_set.py"


def load_classifier(settings: Settings) -> tuple[Any, float, str]:
    if importlib.util.find_spec("gateway.classify") is not None:
        from gateway import classify as c

        cs = getattr(settings, "classifier", None) or c.ClassifierSettings()
        return (lambda payload, tokens: c.classify(payload, cs, tokens)), cs.simple_threshold, "gateway/classify.py"
    return stand_in.classify, stand_in.THRESHOLD, "the stand-in (gateway/strategy/stand_in.py)"


@dataclass
class Row:
    id: str
    label: str
    provider: str | None
    draft: str | None
    latency: float  # seconds, real units
    usd: float


async def run_strategy(strategy: str, examples: list[Any], cloud_url: str, local_url: str, scale: float,
                       concurrency: int) -> list[Row]:
    env = {"CEREBRAS_API_KEYS": "csk-bench-0001", "CEREBRAS_BASE_URL": cloud_url, "LOCAL_BASE_URL": local_url,
           "ROUTING_STRATEGY": strategy, "ENABLE_INCOMING_AUTH": "false", "LOG_DIR": "",
           "REPAIR_TOOL_CALLS": "false",  # (the fakes look requests up by their messages)
           "DRAFT_TIMEOUT": str(max(1.0, 60 * scale))}
    settings = Settings.from_env(env)
    classifier, threshold, _ = load_classifier(settings)
    app = create_app(settings, classifier=classifier, simple_threshold=threshold)
    seen: dict[str, Any] = {}
    app[RECORDERS].append(lambda ctx: seen.__setitem__(ctx.request_id, ctx))
    client = TestClient(TestServer(app))
    await client.start_server()
    gate = asyncio.Semaphore(concurrency)
    rows: list[Row] = []
    # each upstream's first answer, not counted: a key never heard from takes one request at a
    # time (gateway/breaker.py), which would send a concurrent start elsewhere
    for header in ("always_cerebras", "always_local"):
        warm = await client.post("/v1/chat/completions", json={**examples[0].payload, "stream": False},
                                 headers={"X-Gateway-Strategy": header})
        await warm.read()

    async def one(ex: Any) -> None:
        async with gate:
            rid = f"bench-{strategy}-{ex.id}"[:120]
            began = time.perf_counter()
            resp = await client.post("/v1/chat/completions", json={**ex.payload, "stream": False},
                                     headers={"X-Request-Id": rid})
            body = await resp.read()
            took = (time.perf_counter() - began) / scale
            if resp.status != 200:
                raise RuntimeError(f"{strategy} {ex.id}: {resp.status} {body[:200]!r}")
            ctx = seen[rid]
            usd = 0.0
            if ctx.provider == "cerebras" and ctx.usage is not None:
                usd = ctx.usage.prompt_tokens * PRICE_IN + ctx.usage.completion_tokens * PRICE_OUT
            elif ctx.provider == "cerebras":
                data = orjson.loads(body)["usage"]
                usd = data["prompt_tokens"] * PRICE_IN + data["completion_tokens"] * PRICE_OUT
            rows.append(Row(ex.id, ex.label, ctx.provider, ctx.draft_outcome, took, usd))

    try:
        await asyncio.gather(*(one(ex) for ex in examples))
    finally:
        await client.close()
    return rows


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summarise(results: dict[str, list[Row]]) -> list[dict[str, Any]]:
    base = {r.id: r for r in results["always_cerebras"]}
    base_usd = sum(r.usd for r in base.values())
    table = []
    for strategy, rows in results.items():
        n = len(rows)
        drafted = [r for r in rows if r.draft is not None]
        escalated = [r for r in drafted if r.draft == "escalated"]
        added = [r.latency - base[r.id].latency for r in rows]
        usd = sum(r.usd for r in rows)
        table.append({
            "strategy": strategy,
            "requests": n,
            "share_local": sum(r.provider == "local" for r in rows) / n,
            "usd": round(usd, 4),
            "usd_saved": round(base_usd - usd, 4),
            "saved_share": (base_usd - usd) / base_usd if base_usd else 0.0,
            "drafted": len(drafted),
            "escalation_rate": len(escalated) / len(drafted) if drafted else None,
            "complex_local": sum(r.provider == "local" and r.label == "complex" for r in rows),
            "simple_local": sum(r.provider == "local" and r.label == "simple" for r in rows),
            "added_p50_s": round(pct(added, 0.5), 3),
            "added_p99_s": round(pct(added, 0.99), 3),
            "latency_p50_s": round(statistics.median(r.latency for r in rows), 3),
        })
    return table


def markdown(table: list[dict[str, Any]], simple: int, complex_: int) -> str:
    lines = ["| strategy | share local | USD saved vs always_cerebras | escalation rate | complex served local "
             "| added latency p50 / p99 |",
             "|---|---|---|---|---|---|"]
    for t in table:
        esc = "-" if t["escalation_rate"] is None else f"{t['escalation_rate']:.0%} of {t['drafted']}"
        lines.append(f"| {t['strategy']} | {t['share_local']:.0%} | ${t['usd_saved']:.4f} ({t['saved_share']:.0%}) "
                     f"| {esc} | {t['complex_local']} of {complex_} | {t['added_p50_s']:+.2f} s / "
                     f"{t['added_p99_s']:+.2f} s |")
    return "\n".join(lines)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--time-scale", type=float, default=0.02, help="share of the modelled time actually slept")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--limit", type=int, default=0, help="only the first N examples (0: all)")
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    a = ap.parse_args()
    logs.configure("ERROR", None, stdout=False)
    examples, source = load_set()
    if a.limit:
        examples = examples[: a.limit]
    _, _, which = load_classifier(Settings.from_env({"CEREBRAS_API_KEYS": "x"}))
    world = World(examples, a.time_scale)
    cloud_app, local_app = web.Application(), web.Application()
    cloud_app.router.add_post("/v1/chat/completions", world.cloud)
    local_app.router.add_post("/v1/chat/completions", world.local)
    local_app.router.add_get("/props", world.props)
    cloud, local = TestServer(cloud_app), TestServer(local_app)
    await cloud.start_server()
    await local.start_server()
    strategies = ["always_cerebras", *[s for s in a.strategies.split(",") if s and s != "always_cerebras"]]
    results: dict[str, list[Row]] = {}
    try:
        for s in strategies:
            began = time.perf_counter()
            results[s] = await run_strategy(s, examples, str(cloud.make_url("/v1")), str(local.make_url("/v1")),
                                            a.time_scale, a.concurrency)
            print(f"{s}: {len(results[s])} requests in {time.perf_counter() - began:.1f}s", file=sys.stderr)
    finally:
        await cloud.close()
        await local.close()
    table = summarise(results)
    simple = sum(ex.label == "simple" for ex in examples)
    print(f"set: {source} ({len(examples)} requests: {simple} simple, {len(examples) - simple} complex); "
          f"classifier: {which}")
    print(markdown(table, simple, len(examples) - simple))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"routing-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps({"set": source, "classifier": which, "time_scale": a.time_scale, "table": table},
                               indent=2))
    print(f"wrote {path.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())
