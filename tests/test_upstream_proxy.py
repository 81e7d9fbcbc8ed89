"""HTTP_PROXY / HTTPS_PROXY / NO_PROXY for upstream calls, through a real forward proxy (proxy.py,
its own process): plain HTTP forwarded, HTTPS tunnelled with CONNECT to a TLS upstream, NO_PROXY
bypassing it, and a proxy that wants credentials.

proxy.py writes one access-log line per client connection when that connection closes (so the
gateway is stopped, closing its pooled connections, before its log is read)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trustme

from gateway.transport import new_session
from tests.conftest import CHAT, eventually
from tests.fakes import FakeUpstream
from tests.tls import server_context, trusting

PROXY_LOGIN, PROXY_PASSWORD = "gw", "proxy-pass-7f3a9c"


class ForwardProxy:
    """proxy.py on 127.0.0.1, on a port it picks; ``saw(text)`` reads its access log."""

    def __init__(self, workdir: Path, *extra: str) -> None:
        self.log = workdir / "proxy.log"
        port_file = workdir / "proxy.port"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy", "--hostname", "127.0.0.1", "--port", "0", "--port-file", str(port_file),
             "--num-workers", "1", "--num-acceptors", "1", "--log-file", str(self.log), "--log-level", "INFO",
             *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"proxy.py did not start (exit code {self.proc.poll()})")
            time.sleep(0.05)
        self.port = int(port_file.read_text())
        self.url = f"http://127.0.0.1:{self.port}"

    def access_lines(self) -> list[str]:
        text = self.log.read_text() if self.log.exists() else ""
        return [line for line in text.splitlines() if "access_log" in line]

    def saw(self, text: str) -> bool:
        return any(text in line for line in self.access_lines())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    p = ForwardProxy(tmp_path_factory.mktemp("proxy"))
    yield p
    p.stop()


@pytest.fixture(scope="module")
def locked_proxy(tmp_path_factory):
    p = ForwardProxy(tmp_path_factory.mktemp("locked-proxy"), "--basic-auth", f"{PROXY_LOGIN}:{PROXY_PASSWORD}")
    yield p
    p.stop()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_fake(aiohttp_server, ca) -> FakeUpstream:
    """A fake upstream over TLS, its certificate for ``localhost`` from the test CA."""
    upstream = FakeUpstream()
    server = await aiohttp_server(upstream.app(), ssl=server_context(ca, "localhost"))
    upstream.url = f"https://localhost:{server.port}/v1"
    return upstream


def trusting_session(ca: trustme.CA):
    return lambda settings: new_session(settings, tls=trusting(ca))


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


async def test_http_proxy_forwards_calls_to_a_plain_http_upstream(gateway, fake, proxy):
    client = await gateway({"HTTP_PROXY": proxy.url})
    resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status == 200 and len(fake.received) == 1
    await client.close()  # (proxy.py logs a connection when it closes)
    await eventually(lambda: proxy.saw(f"POST 127.0.0.1:{port_of(fake.url)}/v1/chat/completions"))


async def test_https_proxy_tunnels_to_a_tls_upstream_with_connect(gateway, tls_fake, proxy, ca):
    client = await gateway({"CEREBRAS_BASE_URL": tls_fake.url, "https_proxy": proxy.url},
                           session_factory=trusting_session(ca))
    resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status == 200, await resp.text()
    (got,) = tls_fake.received
    assert got.headers["Authorization"] == "Bearer csk-one-1111111111"  # inside the tunnel, not to the proxy
    await client.close()
    await eventually(lambda: proxy.saw(f"CONNECT localhost:{port_of(tls_fake.url)}"))


async def test_no_proxy_bypasses_the_proxy(gateway, make_fake, proxy):
    direct, proxied = await make_fake(), await make_fake()
    bypassing = await gateway({"CEREBRAS_BASE_URL": direct.url.replace("127.0.0.1", "localhost"),
                               "HTTP_PROXY": proxy.url, "NO_PROXY": "example.com, .localhost,localhost"})
    assert (await bypassing.post("/v1/chat/completions", json=CHAT)).status == 200
    await bypassing.close()
    through = await gateway({"CEREBRAS_BASE_URL": proxied.url, "HTTP_PROXY": proxy.url, "NO_PROXY": "example.com"})
    assert (await through.post("/v1/chat/completions", json=CHAT)).status == 200
    await through.close()
    await eventually(lambda: proxy.saw(f"127.0.0.1:{port_of(proxied.url)}/"))  # the later call is logged ...
    assert len(direct.received) == 1
    assert not proxy.saw(f":{port_of(direct.url)}/")  # ... the bypassing one, before it, never was


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_a_proxy_that_wants_credentials_gets_them_from_the_url(gateway, fake, tls_fake, locked_proxy, ca,
                                                                     log_dir, scheme):
    upstream = fake if scheme == "http" else tls_fake
    with_password = locked_proxy.url.replace("://", f"://{PROXY_LOGIN}:{PROXY_PASSWORD}@")
    client = await gateway({"CEREBRAS_BASE_URL": upstream.url, f"{scheme.upper()}_PROXY": with_password},
                           session_factory=trusting_session(ca))
    resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status == 200, await resp.text()
    assert len(upstream.received) == 1
    assert "Proxy-Authorization" not in upstream.received[0].headers  # for the proxy only
    status = await (await client.get("/_status")).text()
    assert PROXY_PASSWORD not in status


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_wrong_proxy_credentials_are_a_provider_failure_not_a_407_for_the_client(
        gateway, fake, tls_fake, locked_proxy, ca, scheme):
    upstream = fake if scheme == "http" else tls_fake
    wrong = locked_proxy.url.replace("://", f"://{PROXY_LOGIN}:not-the-password@")
    client = await gateway({"CEREBRAS_BASE_URL": upstream.url, f"{scheme.upper()}_PROXY": wrong},
                           session_factory=trusting_session(ca))
    resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status == 503  # upstreams failing
    error = (await resp.json())["error"]
    assert "407" in error["message"] and "not-the-password" not in json.dumps(error)
    assert upstream.received == []
