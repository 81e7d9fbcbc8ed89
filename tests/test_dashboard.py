"""GET /dashboard and /dashboard/data over HTTP: the real app on a real port, fake upstreams over
real HTTP. What the page does in a browser is tests/test_dashboard_browser.py."""
from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from gateway.api import dashboard
from tests import fakes
from tests.conftest import CHAT, UPSTREAM_KEYS, auth_header, eventually

CHAT_PATH = "/v1/chat/completions"
FILES = Path(dashboard.__file__).resolve().parent


# ---- the page: open, strict CSP, nothing inline ---------------------------------------------------

@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/dashboard", "text/html"),
        ("/dashboard/dashboard.js", "text/javascript"),
        ("/dashboard/dashboard.css", "text/css"),
        ("/dashboard/favicon.svg", "image/svg+xml"),
    ],
)
async def test_the_page_and_its_files_need_no_key_and_carry_a_strict_csp(gateway, path, content_type):
    client = await gateway({"ENABLE_INCOMING_AUTH": "true"})
    resp = await client.get(path)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith(content_type)
    csp = {d.split()[0]: d.split()[1:] for d in resp.headers["Content-Security-Policy"].split("; ")}
    assert csp["default-src"] == ["'none'"] and csp["script-src"] == ["'self'"] and csp["style-src"] == ["'self'"]
    assert csp["connect-src"] == ["'self'"] and csp["form-action"] == ["'none'"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert await resp.read() == (FILES / dashboard.FILES[path]).read_bytes()


async def test_a_path_under_the_dashboard_that_is_not_a_file_is_a_404(gateway):
    client = await gateway({"ENABLE_INCOMING_AUTH": "true"})
    resp = await client.get("/dashboard/../keys.db")
    assert resp.status in (401, 404)  # never a file from outside the package
    resp = await client.get("/dashboard/index.html")
    assert resp.status == 404
    assert (await resp.json())["error"]["type"] == "invalid_request_error"


class _Inline(HTMLParser):
    """Anything in the page that CSP would have to allow inline."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        names = {name for name, _ in attrs}
        if tag == "script" and "src" not in names:
            self.found.append("inline <script>")
        self._in_script = tag == "script"
        if tag == "style":
            self.found.append("<style>")
        self.found += [f"{tag} {name}=" for name in names if name == "style" or name.startswith("on")]
        if tag == "form" and "action" in names:
            self.found.append("form action")
        if tag == "input" and "name" in names:
            self.found.append("named input (would be submitted)")

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.found.append("script text")

    def handle_endtag(self, tag):
        self._in_script = False


def test_the_page_has_nothing_inline_and_the_script_never_writes_html():
    parser = _Inline()
    parser.feed((FILES / "index.html").read_text())
    assert parser.found == []
    script = (FILES / "dashboard.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                 "setAttribute(\"style\"", "localStorage.setItem(KEY"):
        assert sink not in script
    assert re.search(r"sessionStorage", script) and "Authorization" in script


# ---- /dashboard/data: who may read it ------------------------------------------------------------

async def test_data_with_auth_on_needs_an_admin_key(gateway, client_key, admin_key):
    client = await gateway({"ENABLE_INCOMING_AUTH": "true"})
    resp = await client.get("/dashboard/data")
    assert resp.status == 401
    assert (await resp.json())["error"]["type"] == "authentication_error"
    resp = await client.get("/dashboard/data", headers=auth_header("sk-glm-wrongwrongwrongwrong"))
    assert resp.status == 401
    resp = await client.get("/dashboard/data", headers=auth_header(client_key))
    assert resp.status == 403
    error = (await resp.json())["error"]
    assert error["type"] == "permission_error" and "admin" in error["message"]
    assert resp.headers["x-should-retry"] == "false"
    resp = await client.get("/dashboard/data", headers=auth_header(admin_key))
    assert resp.status == 200
    body = await resp.json()
    assert body["object"] == "gateway.dashboard" and body["auth_enabled"] is True
    assert resp.headers["Cache-Control"] == "no-store"


async def test_data_with_auth_off_is_open(gateway):
    client = await gateway()
    resp = await client.get("/dashboard/data")
    assert resp.status == 200
    assert (await resp.json())["auth_enabled"] is False


# ---- /dashboard/data: what it holds ---------------------------------------------------------------

async def data(client) -> dict:
    resp = await client.get("/dashboard/data")
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_data_counts_requests_errors_and_fallbacks_with_the_failed_request_ids(gateway, fake):
    client = await gateway()
    fake.script(UPSTREAM_KEYS["k1"], fakes.rate_limited())  # the first request falls back to k2
    served = await client.post(CHAT_PATH, json=CHAT)
    assert served.status == 200
    fake.default = fakes.error(500)
    failed = await client.post(CHAT_PATH, json=CHAT, headers={"X-Request-Id": "dash-failed-1"})
    assert failed.status >= 500
    missing = await client.get("/v1/nothing-here", headers={"X-Request-Id": "dash-missing-2"})
    assert missing.status == 404
    for path in ("/_status", "/stats", "/metrics", "/health", "/dashboard", "/dashboard/dashboard.js"):
        assert (await client.get(path)).status == 200  # watching the gateway: not its traffic
    body = await data(client)
    assert body["totals"] == {"requests": 3, "errors": 2, "fallbacks": 1}
    assert body["requests_per_s"] > 0 and body["in_flight"] == 0
    assert len(body["series"]) == body["window_s"] // body["bucket_s"] == 90
    assert sum(r["requests"] for r in body["series"]) == 3
    newest, older = body["last_errors"]
    assert newest["request_id"] == "dash-missing-2" and newest["status"] == 404 and newest["route"] == "unmatched"
    assert older["request_id"] == "dash-failed-1" and older["status"] == failed.status
    assert older["route"] == CHAT_PATH and older["code"]
    assert any(a.startswith("cerebras/k") and a.endswith("(500)") for a in older["attempts"])
    text = await (await client.get("/dashboard/data")).text()
    for secret in UPSTREAM_KEYS.values():
        assert secret not in text


async def test_a_stream_that_breaks_midway_is_an_error_of_its_own(gateway, fake):
    client = await gateway()
    fake.default = fakes.stream(["a", "b", "c"], die_after=1)
    resp = await client.post(CHAT_PATH, json={**CHAT, "stream": True}, headers={"X-Request-Id": "dash-cut-3"})
    assert resp.status == 200
    await resp.read()

    async def listed():
        body = await data(client)
        return body["last_errors"] and body["last_errors"][0]

    entry = await eventually(listed)
    assert entry["request_id"] == "dash-cut-3" and entry["code"] == "midstream" and entry["provider"] == "cerebras"
