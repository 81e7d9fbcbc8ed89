"""The request log end to end: a real gateway on a real port, fake upstreams over real HTTP, and
the records read back from the real file."""
from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from gateway.config import ConfigError
from gateway.repair import repair_messages
from tests import fakes
from tests.conftest import CHAT, UPSTREAM_KEYS, auth_header, eventually
from tests.test_repair_e2e import BROKEN

K1, K2, K3 = UPSTREAM_KEYS["k1"], UPSTREAM_KEYS["k2"], UPSTREAM_KEYS["k3"]
SYN_KEY = "syn-key-0001-secret"


@pytest.fixture
def req_dir(tmp_path) -> Path:
    return tmp_path / "requests"


@pytest.fixture
def logged(gateway, req_dir):
    """A gateway with LOG_REQUESTS=true writing to ``req_dir``."""

    async def start(env: dict[str, str] | None = None, **kwargs):
        return await gateway({"LOG_REQUESTS": "true", "REQUEST_LOG_DIR": str(req_dir), **(env or {})}, **kwargs)

    return start


def lines(req_dir: Path) -> list[dict]:
    path = req_dir / "requests.log"
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_text().splitlines()]


async def records(req_dir: Path, n: int) -> list[dict]:
    got = await eventually(lambda: (r := lines(req_dir)) and len(r) >= n and r)
    assert len(got) == n, got
    return got


def tool_stream() -> fakes.Reply:
    """A Cerebras-style stream: reasoning, content, two tool calls in pieces, usage on the finish chunk."""
    def call(index: int, **fields) -> dict:
        return {"tool_calls": [{"index": index, **fields}]}

    return fakes.sse(
        fakes.chunk("", delta={"role": "assistant", "reasoning_content": "I should read "}),
        fakes.chunk("", delta={"reasoning_content": "the file."}) + fakes.chunk("Reading"),
        fakes.chunk("", delta=call(0, id="call_a", type="function", function={"name": "read_file", "arguments": ""})),
        fakes.chunk("", delta=call(0, function={"arguments": '{"path": '})),
        fakes.chunk("", delta=call(1, id="call_b", type="function", function={"name": "grep", "arguments": '{"q"'})),
        fakes.chunk("", delta=call(0, function={"arguments": '"a.py"}'})),
        fakes.chunk("", delta=call(1, function={"arguments": ': "TODO"}'})),
        fakes.chunk("", delta={}, finish_reason="tool_calls", usage=fakes.usage(40, 12, reasoning=5)),
        b"data: [DONE]\n\n",
    )


async def test_a_whole_answer_is_recorded_with_the_body_the_provider_got(logged, fake, req_dir):
    fake.default = fakes.ok("pong", usage_=fakes.usage(100, 20))
    client = await logged()
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "ping"}], "temperature": 0.2}
    resp = await client.post("/v1/chat/completions", json=body,
                             headers={"X-Request-Id": "rec-1", "User-Agent": "pytest-sdk/1.0"})
    assert resp.status == 200
    (rec,) = await records(req_dir, 1)
    assert rec["request_id"] == "rec-1" and rec["status"] == 200 and rec["stream"] is False
    assert rec["route"] == "/v1/chat/completions" and rec["method"] == "POST"
    assert rec["provider"] == "cerebras" and rec["upstream_key"] in UPSTREAM_KEYS
    assert rec["model_asked"] == "gpt-4o" and rec["model_served"] == "zai-glm-4.7"
    # as forwarded: the model rewritten and the completion cap added, exactly what the fake got
    assert rec["request"]["body"] == fake.received[0].body
    assert rec["request"]["body"]["model"] == "zai-glm-4.7" and rec["request"]["body"]["max_completion_tokens"] == 16384
    assert rec["request"]["sent_to"] == "cerebras"
    assert rec["request"]["headers"]["user-agent"] == "pytest-sdk/1.0"
    assert rec["response"]["body"]["choices"][0]["message"]["content"] == "pong"
    assert rec["usage"]["prompt_tokens"] == 100 and rec["usage"]["completion_tokens"] == 20
    assert rec["cost_usd"] == pytest.approx((100 * 2.25 + 20 * 2.75) / 1e6)  # priced by the ledger first
    assert rec["latency_ms"] > 0 and rec["ttft_ms"] > 0 and rec["overhead_ms"] >= 0
    assert [a["outcome"] for a in rec["attempts"]] == ["ok"]
    assert "error" not in rec and rec["time"].endswith("Z")


async def test_a_stream_is_reassembled_with_its_tool_calls(logged, fake, req_dir):
    fake.default = tool_stream()
    client = await logged()
    resp = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert resp.status == 200
    sent = await resp.read()
    assert b'"usage"' not in sent  # the client did not ask for usage: it got none ...
    (rec,) = await records(req_dir, 1)
    answer = rec["response"]["body"]
    assert rec["stream"] is True and answer["object"] == "chat.completion"
    (choice,) = answer["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["reasoning_content"] == "I should read the file."
    assert choice["message"]["content"] == "Reading"
    assert choice["message"]["tool_calls"] == [
        {"index": 0, "id": "call_a", "type": "function",
         "function": {"name": "read_file", "arguments": '{"path": "a.py"}'}},
        {"index": 1, "id": "call_b", "type": "function", "function": {"name": "grep", "arguments": '{"q": "TODO"}'}},
    ]
    # ... but the record has what the provider billed
    assert answer["usage"]["prompt_tokens"] == 40 and answer["usage"]["completion_tokens"] == 12
    assert rec["usage"]["completion_tokens"] == 12 and rec["usage"]["reasoning_tokens"] == 5
    assert rec["request"]["body"]["stream_options"] == {"include_usage": True}  # as Cerebras got it
    assert rec["request"]["body"] == fake.received[0].body


async def test_a_stream_cut_midway_records_what_came_and_the_error(logged, fake, req_dir):
    fake.default = fakes.stream(["one ", "two ", "three"], die_after=2)
    client = await logged()
    resp = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    await resp.read()
    (rec,) = await records(req_dir, 1)
    assert rec["response"]["body"]["choices"][0]["message"]["content"] == "one two "
    assert rec["error"]["error"]["code"] == "upstream_stream_error"


async def test_the_repaired_transcript_is_recorded_as_forwarded(logged, fake, req_dir):
    client = await logged()
    resp = await client.post("/v1/chat/completions", json={"model": "zai-glm-4.7", "messages": BROKEN})
    assert resp.status == 200
    (rec,) = await records(req_dir, 1)
    assert rec["request"]["body"]["messages"] == repair_messages(BROKEN)[0] == fake.received[0].body["messages"]
    assert rec["repairs"]["orphan_tool_result"] == 1


async def test_after_a_fallback_the_body_is_the_serving_providers(logged, fake, make_fake, req_dir):
    synthetic = await make_fake()
    for key in (K1, K2, K3):
        fake.script(key, fakes.error(500))
    client = await logged({"SYNTHETIC_API_KEY": SYN_KEY, "SYNTHETIC_BASE_URL": synthetic.url})
    resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status == 200 and resp.headers["X-Gateway-Provider"] == "synthetic"
    (rec,) = await records(req_dir, 1)
    assert rec["provider"] == "synthetic" and rec["request"]["sent_to"] == "synthetic"
    assert rec["request"]["body"] == synthetic.received[0].body
    assert rec["request"]["body"]["model"] == "hf:zai-org/GLM-4.7"
    assert [a["outcome"] for a in rec["attempts"]] == ["server", "server", "ok"]
    assert rec["fallback_reason"].startswith("cerebras/")


async def test_errors_are_recorded_as_the_client_got_them(logged, fake, req_dir):
    fake.default = fakes.error(400, {"message": "bad tool schema", "type": "invalid_request_error", "code": "bad"})
    client = await logged()
    resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status == 400
    got = await resp.json()
    resp = await client.post("/v1/chat/completions", data=b'{"model": "x", "messages": [',
                             headers={"Content-Type": "application/json"})
    assert resp.status == 400
    upstream_4xx, invalid = await records(req_dir, 2)
    assert upstream_4xx["error"] == got and "bad tool schema" in upstream_4xx["error"]["error"]["message"]
    assert upstream_4xx["provider"] == "cerebras" and upstream_4xx["upstream_key"] in UPSTREAM_KEYS
    assert upstream_4xx["response"] is None
    assert invalid["error"]["error"]["code"] == "invalid_json"
    assert invalid["request"]["body"] == '{"model": "x", "messages": ['  # the client's bytes, as text
    assert invalid["request"]["sent_to"] is None and invalid["provider"] is None


async def test_a_client_can_opt_out(logged, fake, req_dir):
    client = await logged()
    for value in ("true", "YES", "1"):
        resp = await client.post("/v1/chat/completions", json={**CHAT, "user": f"secret-{value}"},
                                 headers={"X-Gateway-No-Log": value})
        assert resp.status == 200
    resp = await client.post("/v1/chat/completions", json=CHAT, headers={"X-Gateway-No-Log": "false",
                                                                         "X-Request-Id": "logged-1"})
    assert resp.status == 200
    (rec,) = await records(req_dir, 1)  # records are written in order: the opted-out ones are not there
    assert rec["request_id"] == "logged-1"
    assert "secret-" not in (req_dir / "requests.log").read_text()


async def test_no_key_or_authorization_anywhere_in_the_file(gateway, fake, client_key, req_dir):
    """Upstream keys and the client's key in the body, in headers and echoed back by the upstream:
    none of them reaches the file."""
    secrets = [K1, K2, K3, client_key]
    leak = " ".join(secrets)
    fake.default = fakes.ok(f"you said: {leak}")
    fake.script(K1, fakes.stream([f"echo {K1} ", f"and {client_key}"]))
    client = await gateway({"ENABLE_INCOMING_AUTH": "true", "LOG_REQUESTS": "true", "REQUEST_LOG_DIR": str(req_dir)})
    headers = {**auth_header(client_key), "X-Upstream-Token": K2, "Cookie": f"k={K3}", "x-api-key": client_key,
               "User-Agent": f"agent with {K3}"}
    body = {"model": "zai-glm-4.7", "messages": [
        {"role": "system", "content": f"the keys are {leak}"},
        {"role": "user", "content": "Authorization: Bearer my-personal-token-123 and \u00e9"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "login", "arguments": orjson.dumps({"key": K2}).decode()}}]},
        {"role": "tool", "tool_call_id": "c1", "content": f"ok {client_key}"},
    ]}
    for stream in (True, False):
        resp = await client.post("/v1/chat/completions", json={**body, "stream": stream}, headers=headers)
        assert resp.status == 200, await resp.text()
        await resp.read()
    recs = await records(req_dir, 2)
    text = "".join(p.read_text() for p in req_dir.iterdir())
    for secret in secrets:
        assert secret not in text
        assert secret[:12] not in text  # no part of one either
    assert "my-personal-token-123" not in text
    assert '"authorization":"****"' in text and '"x-upstream-token":"****"' in text and '"cookie":"****"' in text
    assert all(r["client"] == "tester" for r in recs)  # the client's name, never its key
    assert recs[0]["response"]["body"]["choices"][0]["message"]["content"].startswith("echo ****")
    assert recs[0]["request"]["body"]["messages"][1]["content"] == "Authorization: **** and \u00e9"


async def test_records_rotate_by_size(logged, fake, req_dir):
    client = await logged({"REQUEST_LOG_MAX_BYTES": "4096", "REQUEST_LOG_BACKUPS": "2"})
    for i in range(12):
        resp = await client.post("/v1/chat/completions", json={**CHAT, "user": f"u{i}" + "x" * 1000},
                                 headers={"X-Request-Id": f"r{i}"})
        assert resp.status == 200
    await eventually(lambda: (req_dir / "requests.log.2").exists()
                     and any(r["request_id"] == "r11" for r in lines(req_dir)))
    names = sorted(p.name for p in req_dir.iterdir())
    assert names == ["requests.log", "requests.log.1", "requests.log.2"]
    for p in req_dir.iterdir():
        assert p.stat().st_size <= 4096
        assert all(orjson.loads(line)["request_id"].startswith("r") for line in p.read_text().splitlines())


async def test_old_rotated_files_are_pruned_at_start(logged, fake, req_dir):
    import time

    req_dir.mkdir(parents=True)
    now = time.time()
    for name, days in (("requests.log.1", 1), ("requests.log.2", 10), ("requests.log.3", 40)):
        (req_dir / name).write_text('{"request_id": "old"}\n')
        os.utime(req_dir / name, (now - days * 86400, now - days * 86400))
    await logged({"REQUEST_LOG_RETENTION_DAYS": "7"})
    await eventually(lambda: sorted(p.name for p in req_dir.iterdir()) == ["requests.log", "requests.log.1"])


async def test_disabled_by_default_no_file_is_written(gateway, fake, tmp_path):
    log_dir = tmp_path / "logs"
    client = await gateway({"LOG_DIR": str(log_dir)})  # REQUEST_LOG_DIR would default to LOG_DIR/requests
    resp = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert resp.status == 200
    await resp.read()
    status = await (await client.get("/_status")).json()
    assert "request_log_records" not in status
    assert not (log_dir / "requests").exists()


async def test_a_failing_disk_does_not_fail_requests(logged, fake, req_dir):
    req_dir.mkdir(parents=True)
    os.symlink("/dev/full", req_dir / "requests.log")  # every write: ENOSPC
    fake.default = fakes.ok("still here")
    client = await logged()
    for stream in (False, True, False):
        resp = await client.post("/v1/chat/completions", json={**CHAT, "stream": stream})
        assert resp.status == 200
        assert b"still here" in await resp.read()
    status = await eventually(lambda: _status(client, 3))
    assert status["request_log_dropped"] == 0


async def _status(client, rendered: int):
    status = await (await client.get("/_status")).json()
    return status if status["request_log_records"] == rendered else None


async def test_an_unwritable_directory_stops_the_start_naming_the_variable(logged, tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ConfigError, match="REQUEST_LOG_DIR"):
        await logged({"REQUEST_LOG_DIR": str(tmp_path / "a-file" / "requests")})
