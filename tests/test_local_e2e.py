"""The managed local backend end to end: the real gateway on a real port runs the real llama.cpp
server (xllamacpp) on two generated GGUF models in a folder. Listing, chatting with the OpenAI
SDK, bad files, switching under load with no failed request, auto-switch, warm-up then time to
first token, kill -9 with and without a cloud backend to fall back on, and the CLI.

The gateways are shared by the module's tests (a model start costs about a second), so the tests
run in order and each leaves ``a.gguf`` loaded."""
from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import time
from pathlib import Path

import openai
import orjson
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner

import local_models
from gateway.app import create_app
from gateway.config import Settings
from gateway.local.models import available_memory
from gateway.state import LOCAL_BACKEND
from tests.conftest import eventually
from tests.fakes import FakeUpstream

pytestmark = pytest.mark.asyncio(loop_scope="module")

WORDS = ("the of and to in is it you that he was for on are with as his they be at one have this from "
         "or had by hot word but what some we can out other were all there when up use your how said").split()


def prose(seed: int, words: int) -> str:
    r = random.Random(seed)
    return " ".join(r.choice(WORDS) for _ in range(words))


async def start(env: dict[str, str]) -> TestClient:
    client = TestClient(TestServer(create_app(Settings.from_env(env))))
    await client.start_server()
    return client


def backend(client: TestClient):
    return client.app[LOCAL_BACKEND]


@pytest.fixture(scope="module")
def folder(tmp_path_factory, gguf_models) -> Path:
    root = tmp_path_factory.mktemp("models")
    shutil.copy(gguf_models["a"], root / "a.gguf")
    shutil.copy(gguf_models["b"], root / "b.gguf")
    (root / "notes.gguf").write_text("these are notes, not a model")
    (root / "truncated.gguf").write_bytes(gguf_models["a"].read_bytes()[:300_000])
    huge = root / "huge.gguf"  # a real header, and a (sparse) size no machine has memory for
    huge.write_bytes(gguf_models["a"].read_bytes()[:40_000])
    os.truncate(huge, max(2 * (available_memory() or 0), 1 << 40))
    return root


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gw(folder, tmp_path_factory, log_dir):
    """Local only: the folder, a.gguf loaded, two slots, auto-switch on."""
    client = await start({
        "LOCAL_MODELS_DIR": str(folder), "LOCAL_MODEL": "a.gguf", "LOCAL_CTX_SIZE": "2048",
        "LOCAL_PARALLEL": "2", "LOCAL_AUTO_SWITCH": "true",
        "LOCAL_SLOT_DIR": str(tmp_path_factory.mktemp("slots")), "ENABLE_INCOMING_AUTH": "false",
        "LOG_DIR": str(log_dir), "MAX_KEY_WAIT": "0",
    })
    await eventually(backend(client).supervisor.serving, timeout=30)
    yield client
    await client.close()


async def chat(client: TestClient, content: str = "hi", stream: bool = False, **extra):
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": 8, "stream": stream, **extra}
    async with client.post("/v1/chat/completions", json=body) as r:
        return r.status, r.headers, await r.read()


def served_model(raw: bytes, stream: bool) -> str | None:
    """The model name llama.cpp answered with (each server's alias is its file name)."""
    if not stream:
        return orjson.loads(raw).get("model")
    for line in raw.split(b"\n"):
        if line.startswith(b"data: {"):
            return orjson.loads(line[6:]).get("model")
    return None


async def loaded(client: TestClient, name: str) -> None:
    async def check():
        async with client.get("/admin/local/models") as r:
            data = await r.json()
        last = data["last_switch"] or {}
        assert last.get("state") != "failed", last
        return data["loaded"]["model"] == name and data["loaded"]["state"] == "ready"

    await eventually(check, timeout=30)


# ---- listing and chatting ---------------------------------------------------------------------------


async def test_lists_the_folder_and_what_each_model_is(gw, folder):
    async with gw.get("/admin/local/models") as r:
        assert r.status == 200
        data = await r.json()
    rows = {m["model"]: m for m in data["data"]}
    assert sorted(rows) == ["a.gguf", "b.gguf", "huge.gguf", "notes.gguf", "truncated.gguf"]
    a, b = rows["a.gguf"], rows["b.gguf"]
    assert (a["loaded"], a["state"], a["architecture"], a["quantization"], a["context_length"],
            a["chat_template"]) == (True, "ready", "llama", "F32", 2048, True)
    assert a["size_bytes"] == (folder / "a.gguf").stat().st_size
    assert (b["loaded"], b["quantization"], b["context_length"], b["name"]) == (False, "F16", 4096, "tiny-b")
    assert "not a GGUF" in rows["notes.gguf"]["error"]
    assert data["loaded"]["model"] == "a.gguf" and data["loaded"]["ctx_size"] == 2048
    assert data["loaded"]["parallel"] == 2 and isinstance(data["loaded"]["pid"], int)

    async with gw.get("/v1/models") as r:
        ids = [m["id"] for m in (await r.json())["data"]]
    assert {"a.gguf", "b.gguf", "huge.gguf", "truncated.gguf"} <= set(ids)  # headers that read as models
    assert "notes.gguf" not in ids
    async with gw.get("/v1/models/b.gguf") as r:
        assert r.status == 200 and (await r.json())["id"] == "b.gguf"
    async with gw.get("/health/ready") as r:
        assert r.status == 200
        assert await r.json() == {"status": "ready", "backends": {"local": "ready"}}


async def test_the_openai_sdk_chats_with_a_gguf_and_no_cloud_key(gw):
    sdk = openai.AsyncOpenAI(base_url=str(gw.make_url("/v1")), api_key="unused", max_retries=0)
    raw = await sdk.chat.completions.with_raw_response.create(
        model="glm-4.7", messages=[{"role": "user", "content": "hello world"}], max_tokens=8, temperature=0)
    done = raw.parse()
    assert raw.headers["x-gateway-provider"] == "local"
    assert done.model == "a.gguf" and done.choices[0].message.content
    assert done.usage is not None and done.usage.completion_tokens > 0
    parts, usage = [], None
    stream = await sdk.chat.completions.create(
        model="a.gguf", messages=[{"role": "user", "content": "hello world"}], max_tokens=8, temperature=0,
        stream=True, stream_options={"include_usage": True})
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(parts) == done.choices[0].message.content  # temperature 0: the same answer
    assert usage is not None and usage.completion_tokens == done.usage.completion_tokens
    await sdk.close()


async def test_streams_and_plain_requests_at_concurrency_8_none_fails(gw):
    """llama-server closes a connection after each streamed answer (its headers say keep-alive):
    a reused connection would sometimes be one it is closing, and the request would fail. The
    local servers' session never reuses one (force_close)."""
    session = backend(gw).http
    assert session is not None and session.connector is not None and session.connector.force_close
    stop, results = asyncio.Event(), []
    workers = [asyncio.create_task(run_load(gw, stop, results, w)) for w in range(8)]
    try:
        await eventually(lambda: len(results) >= 2500, timeout=40)
    finally:
        stop.set()
        await asyncio.gather(*workers)
    assert_all_served(results)


# ---- bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, status, param, words",
    [
        ({"model": "nope.gguf"}, 404, "model", "no model 'nope.gguf'"),
        ({"model": "notes.gguf"}, 400, "model", "not a usable GGUF"),
        ({"model": "huge.gguf"}, 400, "model", "of memory is available"),
        ({"model": "a.gguf", "ctx_size": 9000}, 400, "ctx_size", "trained context of 2048"),
        ({"model": "a.gguf", "ctx_size": "big"}, 400, "ctx_size", "must be an integer"),
        ({"model": "a.gguf", "ctx_size": True}, 400, "ctx_size", "must be an integer"),
        ({"model": ""}, 400, "model", "name of a GGUF file"),
        ({"model": "a.gguf", "ctx": 4096}, 400, "ctx", "unknown field 'ctx'"),
        ({"model": "../a.gguf"}, 404, "model", "no model"),
        ([1, 2], 400, None, "must be a JSON object"),
    ],
)
async def test_switches_that_cannot_work_are_4xx_naming_the_field(gw, body, status, param, words):
    async with gw.post("/admin/local/model", json=body) as r:
        assert r.status == status
        error = (await r.json())["error"]
    assert error["param"] == param and words in error["message"], error
    assert r.headers["x-should-retry"] == "false"
    assert backend(gw).loaded == "a.gguf"


async def test_a_model_llama_cpp_cannot_load_fails_and_the_loaded_one_keeps_serving(gw):
    async with gw.post("/admin/local/model", json={"model": "truncated.gguf"}) as r:
        assert r.status == 202

    async def failed():
        async with gw.get("/admin/local/models") as r:
            return (await r.json())["last_switch"]["state"] == "failed"

    await eventually(failed, timeout=30)
    async with gw.get("/admin/local/models") as r:
        data = await r.json()
    assert "corrupted or incomplete" in data["last_switch"]["reason"]
    assert data["loaded"]["model"] == "a.gguf" and data["loaded"]["state"] == "ready"
    status, headers, raw = await chat(gw)
    assert status == 200 and served_model(raw, False) == "a.gguf"


async def test_a_body_that_is_not_json(gw):
    async with gw.post("/admin/local/model", data=b"{nope") as r:
        assert r.status == 400 and (await r.json())["error"]["code"] == "invalid_json"


# ---- switching ----------------------------------------------------------------------------------------


async def run_load(client: TestClient, stop: asyncio.Event, results: list, worker: int) -> None:
    i = 0
    while not stop.is_set():
        i += 1
        stream = (i + worker) % 2 == 0
        status, headers, raw = await chat(client, f"hello {worker} {i}", stream=stream)
        results.append((status, stream, served_model(raw, stream) if status == 200 else None, raw,
                        headers.get("X-Gateway-Provider")))


def assert_all_served(results: list) -> None:
    bad = [(s, raw[:300]) for s, stream, _, raw, _ in results
           if s != 200 or (stream and (not raw.rstrip().endswith(b"data: [DONE]") or b"upstream_stream_error" in raw))]
    assert not bad, f"{len(bad)} of {len(results)} requests failed: {bad[:3]}"


async def test_switch_under_load_fails_no_request(gw):
    stop, results = asyncio.Event(), []
    workers = [asyncio.create_task(run_load(gw, stop, results, w)) for w in range(4)]
    try:
        for target in ("b.gguf", "a.gguf"):
            await eventually(lambda: len(results) >= 20, timeout=20)
            async with gw.post("/admin/local/model", json={"model": target}) as r:
                assert r.status == 202
            await loaded(gw, target)
            seen = len(results)
            await eventually(lambda t=target, n=seen: sum(1 for r in results[n:] if r[2] == t) >= 10, timeout=20)
    finally:
        stop.set()
        await asyncio.gather(*workers)
    assert_all_served(results)
    models = [r[2] for r in results]
    assert models.count("b.gguf") >= 10 and models.count("a.gguf") >= 20
    first_b, last_b = models.index("b.gguf"), len(models) - 1 - models[::-1].index("b.gguf")
    assert "a.gguf" in models[last_b:]  # and back to a
    print(f"\nswitch a -> b -> a under load at concurrency 4: {len(results)} requests, none failed "
          f"(b served from request {first_b} to {last_b})")


async def test_one_switch_at_a_time(gw):
    async with gw.post("/admin/local/model", json={"model": "b.gguf"}) as r:
        assert r.status == 202
    async with gw.post("/admin/local/model", json={"model": "a.gguf"}) as r:
        assert r.status == 409
        assert (await r.json())["error"]["code"] == "switch_in_progress"
    await loaded(gw, "b.gguf")
    async with gw.post("/admin/local/model", json={"model": "a.gguf", "ctx_size": 0}) as r:
        assert r.status == 202 and (await r.json())["ctx_size"] == 0  # 0: the model's own context
    await loaded(gw, "a.gguf")


async def test_a_request_naming_another_gguf_switches_to_it(gw):
    sup = backend(gw).supervisor
    gate = asyncio.Event()

    async def held(child):  # b.gguf's server is up, but is not taking requests until the gate opens
        if child.launch.model == "b.gguf":
            await gate.wait()

    sup.on_ready.insert(0, held)
    try:
        status, headers, raw = await chat(gw, model="b.gguf")
        assert status == 503 and headers["Retry-After"] == "2"
        assert orjson.loads(raw)["error"]["code"] == "local_model_loading"
        await eventually(lambda: sup.pending is not None and sup.pending.ready_at is not None, timeout=30)
        # requests for the loaded model (or for no model in particular) keep flowing meanwhile
        for model in ("a.gguf", "glm-4.7", "a.gguf"):
            status, _, raw = await chat(gw, model=model)
            assert status == 200 and served_model(raw, False) == "a.gguf"
        status, _, raw = await chat(gw, model="b.gguf")  # b: still loading, the switch is not doubled
        assert status == 503 and sup.pending is not None and sup.pending.launch.model == "b.gguf"
        gate.set()
        await loaded(gw, "b.gguf")
    finally:
        sup.on_ready.remove(held)
    status, _, raw = await chat(gw, model="b.gguf")
    assert status == 200 and served_model(raw, False) == "b.gguf"
    # the OpenAI SDK waits out the Retry-After of a switch by itself
    sdk = openai.AsyncOpenAI(base_url=str(gw.make_url("/v1")), api_key="unused", max_retries=4)
    done = await sdk.chat.completions.create(model="a.gguf", messages=[{"role": "user", "content": "hi"}],
                                             max_tokens=4)
    assert done.model == "a.gguf"
    await sdk.close()


async def test_an_unknown_gguf_name_is_a_404(gw):
    status, _, raw = await chat(gw, model="missing.gguf")
    assert status == 404 and orjson.loads(raw)["error"]["param"] == "model"


# ---- warm-up ------------------------------------------------------------------------------------------


async def ttft(client: TestClient, system: str, user: str) -> tuple[float, dict]:
    """Seconds to the first streamed event, and llama.cpp's timings of the answer."""
    body = {"messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
            "max_tokens": 2, "stream": True, "temperature": 0,
            # llama.cpp puts its timings on the usage chunk, which reaches clients that ask for usage
            "stream_options": {"include_usage": True}}
    began = time.perf_counter()
    first = None
    timings: dict = {}
    async with client.post("/v1/chat/completions", json=body) as r:
        assert r.status == 200
        async for line in r.content:
            if first is None and line.startswith(b"data: {"):
                first = time.perf_counter() - began
            if line.startswith(b"data: {") and b'"timings"' in line:
                timings = orjson.loads(line[6:])["timings"]
    assert first is not None
    return first, timings


async def test_warm_then_measure_time_to_first_token(gw):
    """On b.gguf, the wider of the two tiny models (its prompt reading takes measurable time)."""
    async with gw.post("/admin/local/model", json={"model": "b.gguf"}) as r:
        assert r.status == 202
    await loaded(gw, "b.gguf")
    words = 700  # ~750 tokens: a long system prompt, within a slot's 1,024
    await chat(gw, "warm-up of the process itself")
    cold = []
    for seed in range(3):
        seconds, timings = await ttft(gw, prose(seed, words), "question")
        assert timings["cache_n"] < 50  # nothing of it was cached
        cold.append(seconds)
    warm = []
    for seed in range(100, 103):
        system = prose(seed, words)
        async with gw.post("/admin/local/warm", json={"messages": [{"role": "system", "content": system}],
                                                      "tools": [{"type": "function", "function": {"name": "f"}}]}) as r:
            assert r.status == 200
            done = await r.json()
        assert done["model"] == "b.gguf" and done["prompt_tokens"] > 600
        assert done["slots_warmed"] == 2 and done["saved"] is True  # slot 0 read it, slot 1 restored it
        seconds, timings = await ttft(gw, system, "question")
        assert timings["cache_n"] >= done["prompt_tokens"] - 10, timings  # the prefix came from the cache
        warm.append(seconds)
    ratio = statistics.median(cold) / statistics.median(warm)
    print(f"\nTTFT, ~{done['prompt_tokens']}-token system prompt on the tiny model: cold "
          f"{statistics.median(cold) * 1000:.1f} ms, warmed {statistics.median(warm) * 1000:.1f} ms, "
          f"ratio {ratio:.1f}x")
    assert statistics.median(warm) < statistics.median(cold)


async def test_a_warmed_prefix_survives_a_restart(gw):
    system = prose(100 + 2, 700)  # the last prefix warmed above: saved in LOCAL_SLOT_DIR
    child = backend(gw).supervisor.serving()
    os.kill(child.pid, signal.SIGKILL)
    await eventually(lambda: (s := backend(gw).supervisor.serving()) is not None and s is not child, timeout=30)
    _, timings = await ttft(gw, system, "another question")
    assert timings["cache_n"] > 600, timings  # restored from disk into the new server's slots
    async with gw.post("/admin/local/model", json={"model": "a.gguf"}) as r:
        assert r.status == 202
    await loaded(gw, "a.gguf")


@pytest.mark.parametrize(
    "body, param",
    [({}, "messages"), ({"messages": []}, "messages"), ({"messages": [{"role": "robot", "content": "x"}]},
                                                        "messages[0].role"),
     ({"messages": [{"role": "system", "content": "x"}], "tools": {"a": 1}}, "tools"),
     ({"messages": [{"role": "system", "content": "x"}], "prompt": "x"}, "prompt")],
)
async def test_warm_refuses_bad_input(gw, body, param):
    async with gw.post("/admin/local/warm", json=body) as r:
        assert r.status == 400
        assert (await r.json())["error"]["param"] == param


# ---- crash, local only ------------------------------------------------------------------------------


async def test_kill_9_with_no_cloud_is_a_503_then_local_serves_again(gw):
    child = backend(gw).supervisor.serving()
    os.kill(child.pid, signal.SIGKILL)
    began = time.monotonic()
    await eventually(lambda: child.phase.value != "ready")
    status, headers, raw = await chat(gw)
    assert status == 503 and int(headers["Retry-After"]) >= 1, raw
    assert orjson.loads(raw)["error"]["code"] in ("local_model_restarting", "local_model_loading")
    async with gw.get("/health/ready") as r:
        assert r.status in (200, 503)
        if r.status == 503:
            assert r.headers["Retry-After"] and (await r.json())["backends"]["local"] != "ready"

    async def serves():
        return (await chat(gw))[0] == 200

    await eventually(serves, timeout=10)
    print(f"\nlocal only, kill -9: serving again {time.monotonic() - began:.2f}s later")
    async with gw.get("/admin/local/models") as r:
        assert (await r.json())["restarts"] >= 2


# ---- the CLI ------------------------------------------------------------------------------------------


async def cli(gw, *args: str):
    result = await asyncio.to_thread(CliRunner().invoke, local_models.cli, ["--url", str(gw.make_url("")), *args])
    return result


async def test_cli_lists_switches_and_warms(gw, tmp_path):
    listed = await cli(gw, "list")
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert lines[0].split() == ["MODEL", "SIZE", "ARCH", "QUANT", "TRAINED_CTX", "TEMPLATE", "STATE"]
    (a_line,) = [line for line in lines if "a.gguf" in line]
    assert a_line.startswith("* a.gguf") and "F32" in a_line and "2048" in a_line and "ready" in a_line
    assert any("notes.gguf" in line and "not a GGUF" in line for line in lines)

    switched = await cli(gw, "switch", "b.gguf", "--ctx-size", "1024")
    assert switched.exit_code == 0 and "b.gguf is loaded and serving" in switched.output, switched.output
    assert backend(gw).supervisor.serving().launch.ctx_size == 1024

    prefix = tmp_path / "prefix.json"
    prefix.write_text(json.dumps({"messages": [{"role": "system", "content": prose(7, 100)}]}))
    warmed = await cli(gw, "warm", str(prefix))
    assert warmed.exit_code == 0 and "warmed b.gguf" in warmed.output and "saved for restarts" in warmed.output

    failed = await cli(gw, "switch", "truncated.gguf")
    assert failed.exit_code == 1 and "did not load" in failed.output and "corrupted" in failed.output
    refused = await cli(gw, "switch", "huge.gguf")
    assert refused.exit_code == 1 and "400: huge.gguf is" in refused.output
    back = await cli(gw, "switch", "a.gguf")
    assert back.exit_code == 0


async def test_cli_says_when_the_gateway_is_not_there():
    result = await asyncio.to_thread(CliRunner().invoke, local_models.cli, ["--url", "http://127.0.0.1:9", "list"])
    assert result.exit_code == 1 and "cannot reach the gateway" in result.output


# ---- crash with a cloud backend to fall back on ----------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def with_cloud(gguf_models, log_dir, tmp_path_factory):
    """Local first, a (fake) Cerebras behind it."""
    cloud = FakeUpstream()
    server = TestServer(cloud.app())
    await server.start_server()
    cloud.url = str(server.make_url("/v1"))
    client = await start({
        "LOCAL_MODEL_PATH": str(gguf_models["a"]), "LOCAL_FIRST": "true", "LOCAL_PARALLEL": "2",
        "LOCAL_CTX_SIZE": "1024", "LOCAL_SLOT_DIR": "",
        "CEREBRAS_API_KEYS": '{"k1": "csk-one-1111111111"}', "CEREBRAS_BASE_URL": cloud.url,
        "ENABLE_INCOMING_AUTH": "false", "LOG_DIR": str(log_dir), "MAX_KEY_WAIT": "0",
    })
    await eventually(backend(client).supervisor.serving, timeout=30)
    yield client, cloud
    await client.close()
    await server.close()


async def test_kill_9_under_load_with_a_cloud_backend_fails_no_request(with_cloud):
    client, cloud = with_cloud
    stop, results = asyncio.Event(), []

    async def worker(w: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            status, headers, raw = await chat(client, f"load {w} {i}")
            results.append((status, headers.get("X-Gateway-Provider"), raw))

    workers = [asyncio.create_task(worker(w)) for w in range(6)]
    try:
        await eventually(lambda: sum(1 for r in results if r[1] == "local") >= 30, timeout=20)
        killed_at = len(results)
        child = backend(client).supervisor.serving()
        os.kill(child.pid, signal.SIGKILL)
        began = time.monotonic()
        await eventually(lambda: any(r[1] == "cerebras" for r in results[killed_at:]), timeout=10)

        def local_again():
            after = [r for r in results[killed_at:] if r[1] == "cerebras"]
            return after and any(r[1] == "local" for r in results[killed_at + len(after):])

        await eventually(local_again, timeout=10)
        recovered = time.monotonic() - began
    finally:
        stop.set()
        await asyncio.gather(*workers)
    bad = [(s, raw[:200]) for s, _, raw in results if s != 200]
    assert not bad, f"{len(bad)} of {len(results)} failed: {bad[:3]}"
    fell_back = sum(1 for r in results[killed_at:] if r[1] == "cerebras")
    print(f"\nkill -9 under load (6 workers, local first): {len(results)} requests, none failed; "
          f"{fell_back} served by the cloud meanwhile; local served again after {recovered:.2f}s")
    assert recovered < 5
    async with client.get("/health/ready") as r:
        assert (await r.json())["backends"] == {"local": "ready", "cerebras": "ready"}


async def test_a_local_model_that_cannot_start_leaves_the_cloud_serving(folder, log_dir):
    cloud = FakeUpstream()
    server = TestServer(cloud.app())
    await server.start_server()
    client = await start({
        "LOCAL_MODELS_DIR": str(folder), "LOCAL_MODEL": "huge.gguf", "LOCAL_SLOT_DIR": "",
        "CEREBRAS_API_KEYS": '{"k1": "csk-one-1111111111"}', "CEREBRAS_BASE_URL": str(server.make_url("/v1")),
        "ENABLE_INCOMING_AUTH": "false", "LOG_DIR": str(log_dir), "MAX_KEY_WAIT": "0",
    })
    try:
        async with client.get("/admin/local/models") as r:
            loaded_row = (await r.json())["loaded"]
        assert loaded_row["state"] == "failed" and loaded_row["reason"].startswith("LOCAL_MODEL: huge.gguf is")
        status, headers, _ = await chat(client)
        assert status == 200 and headers["X-Gateway-Provider"] == "cerebras"
        status, headers, raw = await chat(client, model="huge.gguf")  # asked for by name: only local may serve
        assert status == 503 and orjson.loads(raw)["error"]["code"] == "local_model_failed"
        assert "of memory is available" in orjson.loads(raw)["error"]["message"]
        assert headers["x-should-retry"] == "false" and headers["Retry-After"]  # an admin has to act
        async with client.get("/health/ready") as r:
            assert r.status == 200 and (await r.json())["backends"] == {"cerebras": "ready", "local": "failed"}
    finally:
        await client.close()
        await server.close()
