"""The real Cerebras endpoint is off this machine. A local TLS server holding a certificate for
api.cerebras.ai (from a test CA) stands in for it; the gateway's client dials it in place of the
real address. So the default configuration is proven end to end: the https URL, SNI, certificate
checking, the path, the bearer credential and the rate-limit headers read back."""
from __future__ import annotations

import ssl

import trustme

from gateway.app import create_app
from gateway.config import Settings
from gateway.transport import new_session
from tests.conftest import CHAT
from tests.fakes import FakeUpstream, ok
from tests.tls import Pinned, server_context, trusting


def _tls_pair(host: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A new CA's server context for ``host``, and a client context trusting that CA."""
    ca = trustme.CA()
    return server_context(ca, host), trusting(ca)


def _session(client_ctx: ssl.SSLContext, port: int):
    """The gateway's own session, trusting the test CA, with api.cerebras.ai:443 aimed at ``port``."""
    return lambda settings: new_session(settings, tls=client_ctx, resolver=Pinned("api.cerebras.ai", 443, port))


async def test_default_base_url_and_auth(aiohttp_client, aiohttp_server, log_dir, key_db):
    server_ctx, client_ctx = _tls_pair("api.cerebras.ai")
    fake = FakeUpstream()
    fake.default = ok(headers={"x-ratelimit-remaining-tokens-minute": "12345"})
    server = await aiohttp_server(fake.app(), ssl=server_ctx)
    settings = Settings.from_env({"CEREBRAS_API_KEYS": '{"main": "csk-default-test"}',
                                  "ENABLE_INCOMING_AUTH": "false", "LOG_DIR": str(log_dir),
                                  "INCOMING_KEY_DB": str(key_db)})  # the usage ledger's file, not ./data
    client = await aiohttp_client(create_app(settings, session_factory=_session(client_ctx, server.port)))

    resp = await client.post("/v1/chat/completions", json=CHAT)

    assert resp.status == 200, await resp.text()
    (got,) = fake.received
    assert got.path == "/v1/chat/completions"
    assert got.headers["Host"] == "api.cerebras.ai"
    assert got.headers["Authorization"] == "Bearer csk-default-test"
    status = await (await client.get("/_status")).json()
    assert status["keys"][0]["remaining_tokens_minute"] == 12345


async def test_an_untrusted_certificate_is_refused(aiohttp_client, aiohttp_server, log_dir, key_db):
    server_ctx, _ = _tls_pair("api.cerebras.ai")
    _, other_trust = _tls_pair("api.cerebras.ai")  # trusts a different CA
    fake = FakeUpstream()
    server = await aiohttp_server(fake.app(), ssl=server_ctx)
    settings = Settings.from_env({"CEREBRAS_API_KEYS": '{"main": "csk-default-test"}',
                                  "ENABLE_INCOMING_AUTH": "false", "LOG_DIR": str(log_dir),
                                  "INCOMING_KEY_DB": str(key_db)})  # the usage ledger's file, not ./data
    client = await aiohttp_client(create_app(settings, session_factory=_session(other_trust, server.port)))

    resp = await client.post("/v1/chat/completions", json=CHAT)

    assert resp.status == 503  # an upstream failing (a connection error), not a rate limit
    body = await resp.json()
    assert "TLS" in body["error"]["message"] and "csk-default-test" not in await resp.text()
    assert fake.received == []
