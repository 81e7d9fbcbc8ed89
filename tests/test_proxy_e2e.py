"""End to end: a real gateway app on a real port, a real fake upstream speaking Cerebras's format."""
from __future__ import annotations

import asyncio
import json
import sys

import orjson
from aiohttp import web

from tests import fakes
from tests.conftest import CHAT, UPSTREAM_KEYS, auth_header, eventually


async def test_non_stream_relays_body_and_marks_provider(gateway, fake):
    fake.default = fakes.ok("pong")
    client = await gateway()
    resp = await client.post("/v1/chat/completions", json=CHAT, headers={"X-Request-Id": "req-123"})
    assert resp.status == 200
    body = await resp.json()
    assert body["choices"][0]["message"]["content"] == "pong"
    assert resp.headers["X-Gateway-Provider"] == "cerebras"
    assert resp.headers["X-Request-Id"] == "req-123"
    sent = fake.received[0]
    assert sent.key in UPSTREAM_KEYS.values()
    assert sent.body["messages"] == CHAT["messages"]
    assert sent.body["model"] == "zai-glm-4.7"


async def test_both_paths_serve_and_request_id_is_generated(gateway, fake):
    client = await gateway()
    ids = set()
    for path in ("/v1/chat/completions", "/chat/completions"):
        resp = await client.post(path, json=CHAT)
        assert resp.status == 200, path
        ids.add(resp.headers["X-Request-Id"])
    assert len(ids) == 2 and all(len(i) == 32 for i in ids)


async def test_client_authorization_is_not_forwarded(gateway, fake, client_key):
    client = await gateway({"ENABLE_INCOMING_AUTH": "true"})
    resp = await client.post("/v1/chat/completions", json=CHAT, headers=auth_header(client_key))
    assert resp.status == 200
    sent = fake.received[0]
    assert client_key not in json.dumps(sent.headers)
    assert sent.headers["Authorization"].removeprefix("Bearer ") in UPSTREAM_KEYS.values()


async def test_stream_arrives_chunk_by_chunk(gateway, fake):
    """The first chunk reaches the client while the upstream still holds back the rest."""
    gate = asyncio.Event()
    fake.default = fakes.stream(["a", "b", "c"], gate=gate)
    client = await gateway()
    resp = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert resp.headers["X-Gateway-Provider"] == "cerebras"
    first = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), timeout=5)
    assert b'"content":"a"' in first
    assert not gate.is_set()  # the upstream has not sent "b" yet
    gate.set()
    rest = await asyncio.wait_for(resp.content.read(), timeout=5)
    assert b'"content":"b"' in rest and b'"content":"c"' in rest
    assert rest.endswith(b"data: [DONE]\n\n")
    assert rest.count(b"[DONE]") == 1


async def test_stream_without_done_gets_one(gateway, fake):
    fake.default = fakes.stream(["x"], done=False)
    client = await gateway()
    resp = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    text = await resp.read()
    assert text.endswith(b"data: [DONE]\n\n") and b'"content":"x"' in text


async def test_client_disconnect_cancels_upstream(gateway, fake):
    gate = asyncio.Event()  # never set: the upstream would wait forever
    fake.default = fakes.stream(["a", "b"], gate=gate)
    client = await gateway()
    resp = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    await asyncio.wait_for(resp.content.readuntil(b"\n\n"), timeout=5)
    resp.close()  # the client goes away mid-stream
    await eventually(fake.cancelled.is_set)


async def test_upstream_4xx_keeps_its_status_and_meaning_in_openais_envelope(gateway, fake):
    payload = {"message": "model does not support tools", "type": "invalid_request_error", "param": "tools", "code": "bad_tools"}
    fake.default = fakes.error(422, payload)  # Cerebras's flat shape
    client = await gateway()
    resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status == 422
    assert await resp.json() == {"error": payload}
    assert resp.headers["X-Gateway-Provider"] == "cerebras"
    assert resp.headers["x-should-retry"] == "false"
    assert len(fake.received) == 1  # the client's own mistake is not retried on other keys


async def test_upstream_4xx_with_a_text_body_is_wrapped(gateway, fake):
    async def text_400(request, body):
        return web.Response(status=400, text="Bad Request: temperature out of range")

    fake.default = text_400
    client = await gateway()
    resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status == 400
    assert await resp.json() == {"error": {"message": "Bad Request: temperature out of range",
                                           "type": "invalid_request_error", "param": None, "code": None}}


async def test_model_retrieve(gateway):
    client = await gateway({"CEREBRAS_MODELS": "hf:zai-org/GLM-4.7"})
    resp = await client.get("/v1/models/zai-glm-4.7")
    assert resp.status == 200
    assert (await resp.json())["id"] == "zai-glm-4.7"
    resp = await client.get("/v1/models/hf:zai-org/GLM-4.7")  # an id with a slash
    assert resp.status == 200 and (await resp.json())["object"] == "model"
    resp = await client.get("/models/nope")
    assert resp.status == 404
    body = await resp.json()
    assert body["error"]["code"] == "model_not_found" and body["error"]["param"] == "model"
    assert set(body["error"]) == {"message", "type", "param", "code"}


async def test_upstream_4xx_on_stream_is_passed_through(gateway, fake):
    payload = {"message": "bad param", "type": "invalid_request_error", "param": "x", "code": "bad"}
    fake.default = fakes.error(400, payload)
    client = await gateway()
    resp = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert resp.status == 400
    assert await resp.json() == {"error": payload}


def _assert_openai_error(body: dict, type_: str) -> None:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == type_
    assert body["error"]["message"]


BAD_BODIES = [
    (b"{not json", "invalid_json"),
    (b"", "invalid_json"),
    (b"[1, 2]", "invalid_request"),
    (b'{"model": "x"}', "invalid_messages"),
    (b'{"messages": []}', "invalid_messages"),
    (b'{"messages": ["hi"]}', "invalid_messages"),
    (b'{"messages": [{"role": "wizard", "content": "x"}]}', "invalid_messages"),
    (b'{"messages": [{"role": "user", "content": "x"}], "stream": "yes"}', "invalid_stream"),
    (b'{"messages": [{"role": "user", "content": "x"}], "model": 5}', "invalid_model"),
    (b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}', "invalid_max_tokens"),
]


async def test_bad_bodies_get_400_and_never_reach_upstream(gateway, fake):
    client = await gateway()
    for raw, code in BAD_BODIES:
        resp = await client.post("/v1/chat/completions", data=raw, headers={"Content-Type": "application/json"})
        assert resp.status == 400, raw
        body = await resp.json()
        _assert_openai_error(body, "invalid_request_error")
        assert body["error"]["code"] == code, raw
    assert fake.received == []


async def test_oversized_body_gets_413(gateway, fake):
    client = await gateway({"MAX_REQUEST_BYTES": "2048"})
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}
    resp = await client.post("/v1/chat/completions", json=big)
    assert resp.status == 413
    body = await resp.json()
    _assert_openai_error(body, "invalid_request_error")
    assert body["error"]["code"] == "request_too_large"
    # chunked upload with no Content-Length: caught while reading
    async def gen():
        yield orjson.dumps(big)

    resp = await client.post("/v1/chat/completions", data=gen())
    assert resp.status == 413
    assert fake.received == []


async def test_unknown_route_404_and_wrong_method_405(gateway, fake, client_key):
    client = await gateway({"ENABLE_INCOMING_AUTH": "true"})
    resp = await client.get("/v1/nope")
    assert resp.status == 404
    _assert_openai_error(await resp.json(), "invalid_request_error")
    resp = await client.get("/v1/chat/completions", headers=auth_header(client_key))
    assert resp.status == 405
    _assert_openai_error(await resp.json(), "invalid_request_error")


async def test_auth_required_by_default(gateway, fake, client_key):
    client = await gateway({"ENABLE_INCOMING_AUTH": "true"})
    for headers in ({}, auth_header("sk-glm-not-a-real-key"), {"Authorization": "Basic abc"}):
        resp = await client.post("/v1/chat/completions", json=CHAT, headers=headers)
        assert resp.status == 401, headers
        body = await resp.json()
        _assert_openai_error(body, "authentication_error")
    resp = await client.post("/v1/chat/completions", json=CHAT, headers=auth_header(client_key))
    assert resp.status == 200
    assert len(fake.received) == 1
    assert (await client.get("/health")).status == 200  # liveness needs no key
    assert (await client.get("/v1/models")).status == 401
    assert (await client.get("/_status")).status == 401


async def test_auth_off_serves_without_key(gateway, fake):
    client = await gateway({"ENABLE_INCOMING_AUTH": "false"})
    resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status == 200


async def test_revoked_key_stops_working_while_running(gateway, fake, client_key, key_db):
    """Revocation by the CLI, a separate process, takes effect within a second."""
    client = await gateway({"ENABLE_INCOMING_AUTH": "true", "KEY_CACHE_REFRESH": "0.25"})
    headers = auth_header(client_key)
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=headers)).status == 200
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "manage_keys.py", "--db", str(key_db), "revoke", "tester",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err
    loop = asyncio.get_running_loop()
    revoked_at = loop.time()

    async def rejected() -> bool:
        return (await client.post("/v1/chat/completions", json=CHAT, headers=headers)).status == 401

    await eventually(rejected, timeout=1.0)
    assert loop.time() - revoked_at <= 1.0


async def test_usage_is_counted_without_per_request_writes(gateway, fake, client_key, key_db):
    from gateway.keystore import KeyStore

    client = await gateway({"ENABLE_INCOMING_AUTH": "true", "USAGE_FLUSH_INTERVAL": "0.1"})
    for _ in range(5):
        assert (await client.post("/v1/chat/completions", json=CHAT, headers=auth_header(client_key))).status == 200

    async def counted() -> bool:
        store = await KeyStore.open(key_db)
        try:
            (key,) = await store.list()
        finally:
            await store.close()
        return key.request_count == 5 and key.last_used_at is not None

    await eventually(counted)


async def test_models_lists_configured_models(gateway):
    client = await gateway({"CEREBRAS_MODELS": "gpt-oss-120b"})
    for path in ("/v1/models", "/models"):
        body = await (await client.get(path)).json()
        assert body["object"] == "list"
        ids = [m["id"] for m in body["data"]]
        assert ids[0] == "zai-glm-4.7" and "gpt-oss-120b" in ids
        assert all(m["object"] == "model" for m in body["data"])


async def test_model_is_rewritten_unless_served_by_the_provider(gateway, fake):
    client = await gateway({"CEREBRAS_MODELS": "gpt-oss-120b"})
    await client.post("/v1/chat/completions", json={**CHAT, "model": "gpt-4o"})
    await client.post("/v1/chat/completions", json={**CHAT, "model": "gpt-oss-120b"})
    assert [r.body["model"] for r in fake.received] == ["zai-glm-4.7", "gpt-oss-120b"]


async def test_status_shows_keys_and_no_secret(gateway, fake, client_key, admin_key):
    client = await gateway({"ENABLE_INCOMING_AUTH": "true"})
    await client.post("/v1/chat/completions", json=CHAT, headers=auth_header(client_key))
    resp = await client.get("/_status", headers=auth_header(admin_key))  # /_status: admin keys only
    assert resp.status == 200
    text = await resp.text()
    body = json.loads(text)
    assert [k["name"] for k in body["keys"]] == list(UPSTREAM_KEYS)
    for k in body["keys"]:
        assert {"name", "available", "rate_limited_for", "error_count"} <= set(k)
        assert k["available"] is True
    assert body["current_key"] in UPSTREAM_KEYS
    for secret in [*UPSTREAM_KEYS.values(), client_key, admin_key]:
        assert secret not in text


async def test_no_secret_in_logs(gateway, fake, client_key, log_dir):
    fake.script(UPSTREAM_KEYS["k1"], fakes.error(401, {"message": "Wrong API Key", "type": "invalid_request_error",
                                                       "param": "api_key", "code": "wrong_api_key"}))
    client = await gateway({"ENABLE_INCOMING_AUTH": "true"})
    headers = {**auth_header(client_key), "X-Request-Id": "secret-check-1"}
    await client.post("/v1/chat/completions", json=CHAT, headers=headers)
    await client.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=headers)
    await client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer sk-glm-wrongwrongwrong", "X-Request-Id": "secret-check-2"})
    log_file = log_dir / "gateway.log"

    def logged():
        text = log_file.read_text()
        return text if "secret-check-2" in text and text.count("secret-check-1") >= 2 else None

    text = await eventually(logged)
    assert '"event":"upstream_failed"' in text  # the 401 was logged ...
    for secret in [*UPSTREAM_KEYS.values(), client_key, "sk-glm-wrongwrongwrong"]:
        assert secret not in text  # ... without any secret
    lines = [json.loads(line) for line in text.splitlines() if "secret-check-1" in line and '"event":"request"' in line]
    assert {line["client"] for line in lines} == {"tester"}
    assert all({"status", "provider", "upstream_key", "latency_ms"} <= set(line) for line in lines)
