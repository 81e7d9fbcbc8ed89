"""CORS: the CORS_ORIGINS setting (pure, table and property tests) and real browser-style requests
against the real app: allowed, disallowed, preflights, errors and streams."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import ConfigError, Settings
from gateway.cors import ANY, parse_origins, preflight_headers
from tests import fakes
from tests.conftest import CHAT, auth_header

APP = "https://app.example.com"
EVIL = "https://evil.example.net"
CHAT_PATH = "/v1/chat/completions"
ACAO = "Access-Control-Allow-Origin"
CORS_HEADERS = (ACAO, "Access-Control-Allow-Methods", "Access-Control-Allow-Headers",
                "Access-Control-Expose-Headers", "Access-Control-Max-Age", "Access-Control-Allow-Credentials")


# ---- the setting ----------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    ("", ()),
    ("  ", ()),
    ("*", (ANY,)),
    (" * ", (ANY,)),
    ("https://app.example.com", (APP,)),
    ("https://App.Example.COM/", (APP,)),  # lowercased, trailing slash dropped
    ("https://app.example.com:443", (APP,)),  # the default port is not part of a browser's Origin
    ("http://localhost:5173, http://127.0.0.1:8080", ("http://localhost:5173", "http://127.0.0.1:8080")),
    ("http://localhost:80", ("http://localhost",)),
    ("https://a.example,https://a.example", ("https://a.example",)),  # duplicates kept once
    ("http://[::1]:3000", ("http://[::1]:3000",)),
])
def test_parse_origins(raw, expected):
    assert parse_origins(raw) == expected


@pytest.mark.parametrize("raw, says", [
    ("*, https://app.example.com", "cannot be combined"),
    ("app.example.com", "not an origin"),
    ("ftp://app.example.com", "not an origin"),
    ("https://app.example.com/path", "no path"),
    ("https://app.example.com?x=1", "no path"),
    ("https://user@app.example.com", "no path, query or user"),
    ("https://app.example.com:99999", "not an origin"),
    ("null", "not an origin"),
])
def test_bad_origins_are_refused_with_the_reason(raw, says):
    with pytest.raises(ValueError, match=says):
        parse_origins(raw)


def test_a_bad_setting_stops_the_start_naming_the_variable():
    with pytest.raises(ConfigError, match="CORS_ORIGINS: 'app.example.com' is not an origin"):
        Settings.from_env({"CEREBRAS_API_KEYS": "csk-a", "CORS_ORIGINS": "app.example.com"})
    assert Settings.from_env({"CEREBRAS_API_KEYS": "csk-a"}).cors_origins == ()


@given(st.text(max_size=80))
def test_parse_origins_refuses_or_normalises_any_text(raw):
    try:
        origins = parse_origins(raw)
    except ValueError:
        return
    # what it accepts is already normal: parsing its own output gives it back
    assert parse_origins(",".join(origins)) == origins
    assert all(o == ANY or o.startswith(("http://", "https://")) for o in origins)


@given(st.text(max_size=300))
def test_preflight_headers_of_any_request_list_only_header_names(requested):
    names = preflight_headers(["POST"], requested)["Access-Control-Allow-Headers"].split(", ")
    assert all(n and n.isascii() and not any(c.isspace() or c in ",:;\"" for c in n) for n in names)


@pytest.mark.parametrize("requested, has, lacks", [
    (None, ["Authorization", "Content-Type", "X-Request-Id", "x-api-key"], []),
    ("authorization, content-type, x-stainless-os, x-stainless-retry-count",
     ["x-stainless-os", "x-stainless-retry-count"], []),
    ("x-ok, bad header, x\r\ny, ", ["x-ok"], ["bad header", "x\r\ny"]),  # not header names: left out
])
def test_preflight_headers_echo_requested_header_names(requested, has, lacks):
    allowed = [h.strip() for h in preflight_headers(["POST"], requested)["Access-Control-Allow-Headers"].split(",")]
    assert all(h in allowed for h in has)
    assert not any(h in allowed for h in lacks)
    assert len({h.lower() for h in allowed}) == len(allowed)  # no name twice


# ---- real requests --------------------------------------------------------------------------------

def preflight(origin: str, method: str = "POST", headers: str = "authorization, content-type") -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers}


async def test_preflight_from_an_allowed_origin_is_answered_without_a_key(gateway):
    client = await gateway({"ENABLE_INCOMING_AUTH": "true", "CORS_ORIGINS": f"{APP},http://localhost:5173"})
    resp = await client.options(CHAT_PATH, headers=preflight(APP, headers="authorization, content-type, "
                                                              "x-stainless-os, x-stainless-package-version"))
    assert resp.status == 204
    assert resp.headers[ACAO] == APP
    assert "POST" in resp.headers["Access-Control-Allow-Methods"]
    allowed = resp.headers["Access-Control-Allow-Headers"].lower()
    for name in ("authorization", "content-type", "x-request-id", "x-api-key", "x-stainless-os",
                 "x-stainless-package-version"):
        assert name in allowed
    assert int(resp.headers["Access-Control-Max-Age"]) > 0
    assert "Origin" in resp.headers["Vary"]
    assert "Access-Control-Allow-Credentials" not in resp.headers  # keys are headers, never cookies
    # a GET route's preflight names GET
    resp = await client.options("/v1/models", headers=preflight("http://localhost:5173", method="GET"))
    assert resp.status == 204 and "GET" in resp.headers["Access-Control-Allow-Methods"]


async def test_allowed_origin_gets_cors_headers_on_answers_errors_and_streams(gateway, fake, client_key):
    client = await gateway({"ENABLE_INCOMING_AUTH": "true", "CORS_ORIGINS": APP})
    resp = await client.post(CHAT_PATH, json=CHAT, headers={"Origin": APP, **auth_header(client_key)})
    assert resp.status == 200
    assert resp.headers[ACAO] == APP and resp.headers["Vary"] == "Origin"
    exposed = resp.headers["Access-Control-Expose-Headers"]
    for name in ("X-Request-Id", "X-Gateway-Provider", "X-Gateway-Overhead-Ms", "Retry-After"):
        assert name in exposed
    # an error must be readable by the page too, or it sees only "network error"
    resp = await client.post(CHAT_PATH, json=CHAT, headers={"Origin": APP})
    assert resp.status == 401 and resp.headers[ACAO] == APP
    fake.default = fakes.stream(["a"])
    resp = await client.post(CHAT_PATH, json={**CHAT, "stream": True},
                             headers={"Origin": APP, **auth_header(client_key)})
    assert resp.headers[ACAO] == APP
    assert (await resp.read()).endswith(b"[DONE]\n\n")


async def test_a_disallowed_origin_gets_no_cors_headers(gateway, client_key):
    client = await gateway({"ENABLE_INCOMING_AUTH": "true", "CORS_ORIGINS": APP})
    resp = await client.options(CHAT_PATH, headers=preflight(EVIL))
    assert resp.status == 405  # not answered as a preflight: the usual path (OPTIONS is no route)
    assert not any(h in resp.headers for h in CORS_HEADERS)
    resp = await client.post(CHAT_PATH, json=CHAT, headers={"Origin": EVIL, **auth_header(client_key)})
    assert resp.status == 200
    assert not any(h in resp.headers for h in CORS_HEADERS)
    resp = await client.post(CHAT_PATH, json=CHAT, headers={"Origin": APP + ".evil.net", **auth_header(client_key)})
    assert ACAO not in resp.headers  # no prefix matching


async def test_without_cors_origins_no_cors_headers_at_all(gateway):
    client = await gateway()
    resp = await client.options(CHAT_PATH, headers=preflight(APP))
    assert resp.status == 405
    assert not any(h in resp.headers for h in CORS_HEADERS)
    resp = await client.post(CHAT_PATH, json=CHAT, headers={"Origin": APP})
    assert resp.status == 200 and ACAO not in resp.headers


async def test_any_origin_with_star(gateway):
    client = await gateway({"CORS_ORIGINS": "*"})
    resp = await client.options(CHAT_PATH, headers=preflight(EVIL))
    assert resp.status == 204 and resp.headers[ACAO] == "*"
    resp = await client.get("/v1/models", headers={"Origin": "http://localhost:3000"})
    assert resp.status == 200 and resp.headers[ACAO] == "*"


async def test_preflight_for_an_unknown_path_is_a_plain_404(gateway):
    client = await gateway({"CORS_ORIGINS": APP})
    resp = await client.options("/v2/nothing", headers=preflight(APP))
    assert resp.status == 404
    assert "Access-Control-Allow-Methods" not in resp.headers


async def test_an_options_request_that_is_not_a_preflight_is_not_answered_as_one(gateway):
    client = await gateway({"CORS_ORIGINS": APP})
    resp = await client.options(CHAT_PATH, headers={"Origin": APP})  # no Access-Control-Request-Method
    assert resp.status == 405
    assert "Access-Control-Allow-Methods" not in resp.headers
