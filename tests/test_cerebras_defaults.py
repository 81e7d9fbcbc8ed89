"""The real Cerebras endpoint is off this machine: aioresponses stands in for it (and only it),
to prove the default configuration calls the right URL with the right credentials."""
from __future__ import annotations

from aioresponses import aioresponses

from gateway.app import create_app
from gateway.config import Settings
from tests.conftest import CHAT


async def test_default_base_url_and_auth(aiohttp_client, tmp_path, log_dir):
    settings = Settings.from_env({"CEREBRAS_API_KEYS": '{"main": "csk-default-test"}',
                                  "ENABLE_INCOMING_AUTH": "false", "LOG_DIR": str(log_dir)})
    client = await aiohttp_client(create_app(settings))
    with aioresponses(passthrough=[str(client.make_url(""))]) as mocked:
        mocked.post("https://api.cerebras.ai/v1/chat/completions",
                    payload={"id": "x", "object": "chat.completion", "choices": []},
                    headers={"x-ratelimit-remaining-tokens-minute": "12345"})
        resp = await client.post("/v1/chat/completions", json=CHAT)
        assert resp.status == 200
        ((method, url), calls), = mocked.requests.items()
        assert (method, str(url)) == ("POST", "https://api.cerebras.ai/v1/chat/completions")
        sent = calls[0].kwargs
        assert sent["headers"]["Authorization"] == "Bearer csk-default-test"
        status = await (await client.get("/_status")).json()
        assert status["keys"][0]["remaining_tokens_minute"] == 12345
