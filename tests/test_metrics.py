"""GET /metrics end to end (the real app on a real port, fake upstreams over real HTTP), the
X-Gateway-Overhead-Ms header, and the pure parts of gateway/observability."""
from __future__ import annotations

import asyncio
import random
import string
import time

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from gateway.context import AttemptRecord, RequestContext, Usage
from gateway.observability.collectors import breaker_state
from gateway.observability.metrics import OTHER, Bounded, error_type
from gateway.state import LIVE, METRICS, RECORDERS
from tests import fakes
from tests.conftest import CHAT, UPSTREAM_KEYS, auth_header, eventually
from tests.test_repair_e2e import BROKEN, EXPECTED_COUNTS

K1, K2, K3 = UPSTREAM_KEYS["k1"], UPSTREAM_KEYS["k2"], UPSTREAM_KEYS["k3"]
CHAT_PATH = "/v1/chat/completions"


Series = dict[tuple[str, frozenset], float]


async def scrape(client, headers: dict[str, str] | None = None) -> Series:
    resp = await client.get("/metrics", headers=headers)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/plain")
    text = await resp.text()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(series: Series, name: str, **labels: str) -> float:
    """The sum of every series named ``name`` whose labels include ``labels`` (0 if none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in series.items() if n == name and want <= ls)


def ledger_stand_in(app: web.Application) -> None:
    """What the usage ledger's recorder does first: usage and cost on the context."""
    def price(ctx: RequestContext) -> None:
        if ctx.provider is not None:
            ctx.usage = Usage(prompt_tokens=5, completion_tokens=1)
            ctx.cost_usd = 0.25

    app[RECORDERS].insert(1, price)  # after the real ledger, which prices first


# ---- the counters move as requests are served -----------------------------------------------------

async def test_requests_attempts_durations_tokens_and_cost_move_as_requests_are_served(gateway, fake):
    client = await gateway()
    ledger_stand_in(client.server.app)
    before = await scrape(client)
    assert value(before, "glm_gateway_requests_total", route=CHAT_PATH) == 0

    assert (await client.post(CHAT_PATH, json=CHAT)).status == 200
    fake.default = fakes.stream(["a", "b"])
    resp = await client.post(CHAT_PATH, json={**CHAT, "stream": True})
    assert (await resp.read()).endswith(b"[DONE]\n\n")
    assert (await client.get("/no/such/route")).status == 404

    async def served_twice():
        series = await scrape(client)
        return series if value(series, "gen_ai_client_operation_duration_seconds_count") == 2 else None

    after = await eventually(served_twice)  # a stream's recorder runs after its last byte left
    assert value(after, "glm_gateway_requests_total", route=CHAT_PATH, status="200", provider="cerebras",
                 client="") == 2
    assert value(after, "glm_gateway_requests_total", route="unmatched", status="404", provider="") == 1
    assert value(after, "glm_gateway_upstream_attempts_total", provider="cerebras", outcome="ok") == 2
    gen = {"gen_ai_operation_name": "chat", "gen_ai_provider_name": "cerebras",
           "gen_ai_request_model": "zai-glm-4.7", "gen_ai_response_model": "zai-glm-4.7"}
    assert value(after, "gen_ai_client_operation_duration_seconds_count", **gen, error_type="") == 2
    assert value(after, "gen_ai_server_time_to_first_token_seconds_count", **gen) == 1  # the stream only
    assert value(after, "gen_ai_client_token_usage_sum", **gen, gen_ai_token_type="input") == 10
    assert value(after, "gen_ai_client_token_usage_sum", **gen, gen_ai_token_type="output") == 2
    assert value(after, "glm_gateway_cost_usd_total", provider="cerebras", client="") == 0.5
    assert value(after, "glm_gateway_overhead_seconds_count") == 2
    # the request that scraped the first time is counted too, under its route
    assert value(after, "glm_gateway_requests_total", route="/metrics", status="200") >= 1


async def test_fallbacks_attempt_outcomes_and_key_state(gateway, fake, make_fake):
    synthetic = await make_fake()
    client = await gateway({"SYNTHETIC_API_KEY": "syn-key-0001", "SYNTHETIC_BASE_URL": synthetic.url})
    for key in (K1, K2, K3):
        fake.script(key, fakes.rate_limited(reset_tokens_minute=30))
    resp = await client.post(CHAT_PATH, json=CHAT)
    assert resp.status == 200 and resp.headers["X-Gateway-Provider"] == "synthetic"

    series = await scrape(client)
    assert value(series, "glm_gateway_upstream_attempts_total", provider="cerebras", outcome="rate_limited") == 3
    assert value(series, "glm_gateway_upstream_attempts_total", provider="synthetic", key="key1", outcome="ok") == 1
    assert value(series, "glm_gateway_fallbacks_total", reason="rate_limited", from_provider="cerebras",
                 to_provider="synthetic") == 1
    for name in ("k1", "k2", "k3"):
        labels = {"provider": "cerebras", "key": name}
        assert value(series, "glm_gateway_key_available", **labels) == 0
        assert 25 < value(series, "glm_gateway_key_rest_seconds", **labels) <= 30
        assert value(series, "glm_gateway_key_remaining_tokens", **labels) == 0
        assert value(series, "glm_gateway_key_remaining_requests", **labels) == 14000
    assert value(series, "glm_gateway_key_available", provider="synthetic", key="key1") == 1
    assert value(series, "glm_gateway_requests_total", route=CHAT_PATH, status="200", provider="synthetic") == 1


async def test_repairs_are_counted_by_kind(gateway, fake):
    client = await gateway()
    resp = await client.post(CHAT_PATH, json={"model": "zai-glm-4.7", "messages": BROKEN})
    assert resp.status == 200
    series = await scrape(client)
    for kind, n in EXPECTED_COUNTS.items():
        assert value(series, "glm_gateway_repairs_total", kind=kind) == n


async def test_failed_chat_requests_carry_an_error_type(gateway, fake):
    for key in (K1, K2, K3):
        fake.script(key, fakes.error(500), fakes.error(500))
    client = await gateway()
    resp = await client.post(CHAT_PATH, json=CHAT)
    assert resp.status == 503
    assert "X-Gateway-Overhead-Ms" in resp.headers  # proxied, though it failed
    series = await scrape(client)
    assert value(series, "gen_ai_client_operation_duration_seconds_count", gen_ai_provider_name="",
                 error_type="503") == 1
    assert value(series, "glm_gateway_upstream_attempts_total", provider="cerebras", outcome="server") >= 2
    assert value(series, "glm_gateway_requests_total", route=CHAT_PATH, status="503", provider="") == 1


async def test_in_flight_requests_and_streams(gateway, fake):
    gate = asyncio.Event()
    fake.default = fakes.stream(["a", "b"], gate=gate)
    client = await gateway()
    resp = await client.post(CHAT_PATH, json={**CHAT, "stream": True})
    await resp.content.readuntil(b"\n\n")  # the stream is open, held by the upstream
    series = await scrape(client)
    assert value(series, "glm_gateway_streams_in_flight") == 1
    assert value(series, "glm_gateway_requests_in_flight") == 2  # the stream, and this scrape
    gate.set()
    await resp.read()

    async def drained():
        s = await scrape(client)
        return value(s, "glm_gateway_streams_in_flight") == 0 and value(s, "glm_gateway_requests_in_flight") == 1

    await eventually(drained)


async def test_hooks_for_budgets_ledger_and_local_model_are_read_at_scrape_time(gateway):
    client = await gateway()
    metrics = client.server.app[METRICS]

    class Budgets:
        remaining = 4.5

        def budget_remaining(self):
            return [("alice", "day", "usd", self.remaining), ("alice", "month", "tokens", 1_000_000)]

    class Ledger:
        rows_dropped = 7

        def queue_depth(self):
            return 3

    class Local:
        def model_state(self):
            return ("glm-local", "ready")

    metrics.budgets, metrics.ledger, metrics.local_model = Budgets(), Ledger(), Local()
    series = await scrape(client)
    assert value(series, "glm_gateway_budget_remaining_usd", client="alice", window="day") == 4.5
    assert value(series, "glm_gateway_budget_remaining_tokens", client="alice", window="month") == 1_000_000
    assert value(series, "glm_gateway_usage_rows_dropped_total") == 7
    assert value(series, "glm_gateway_usage_queue_depth") == 3
    # glm-local is not a configured model here: its label is bounded like every model label
    assert value(series, "glm_gateway_local_model_state", model=OTHER, state="ready") == 1
    assert value(series, "glm_gateway_local_model_state", state="failed") == 0
    metrics.budgets.remaining = 1.0  # a state, read fresh at each scrape
    assert value(await scrape(client), "glm_gateway_budget_remaining_usd", client="alice", window="day") == 1.0


async def test_a_failing_hook_leaves_the_rest_of_the_scrape_intact(gateway):
    client = await gateway()

    class Broken:
        def budget_remaining(self):
            raise RuntimeError("boom")

    client.server.app[METRICS].budgets = Broken()
    series = await scrape(client)
    assert value(series, "glm_gateway_key_available", provider="cerebras") == 3
    assert not any(name.startswith("glm_gateway_budget") for name, _ in series)


async def test_openmetrics_when_the_scraper_asks_for_it(gateway):
    client = await gateway()
    resp = await client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
    assert (await resp.text()).rstrip().endswith("# EOF")


async def test_no_secret_in_the_exposition(gateway, fake, client_key, admin_key):
    client = await gateway({"ENABLE_INCOMING_AUTH": "true"})
    assert (await client.post(CHAT_PATH, json=CHAT, headers=auth_header(client_key))).status == 200
    resp = await client.get("/metrics", headers=auth_header(admin_key))
    text = await resp.text()
    assert resp.status == 200 and 'client="tester"' in text
    for secret in (client_key, admin_key, *UPSTREAM_KEYS.values()):
        assert secret not in text


# ---- who may read it ------------------------------------------------------------------------------

async def test_auth_on_without_a_key_gets_401(gateway):
    client = await gateway({"ENABLE_INCOMING_AUTH": "true"})
    resp = await client.get("/metrics")
    assert resp.status == 401
    assert (await resp.json())["error"]["type"] == "authentication_error"


async def test_auth_on_a_client_key_that_is_not_admin_gets_403(gateway, client_key):
    client = await gateway({"ENABLE_INCOMING_AUTH": "true"})
    resp = await client.get("/metrics", headers=auth_header(client_key))
    assert resp.status == 403
    error = (await resp.json())["error"]
    assert error["type"] == "permission_error" and "admin" in error["message"]
    assert resp.headers["x-should-retry"] == "false"


async def test_auth_on_an_admin_key_reads_it(gateway, admin_key):
    client = await gateway({"ENABLE_INCOMING_AUTH": "true"})
    series = await scrape(client, auth_header(admin_key))
    assert value(series, "glm_gateway_key_available", provider="cerebras") == 3


async def test_metrics_public_needs_no_key_even_with_auth_on(gateway, client_key):
    client = await gateway({"ENABLE_INCOMING_AUTH": "true", "METRICS_PUBLIC": "true"})
    series = await scrape(client)
    assert value(series, "glm_gateway_key_available", provider="cerebras") == 3
    # the rest of the API still needs a key
    assert (await client.post(CHAT_PATH, json=CHAT)).status == 401


async def test_auth_off_and_public(gateway):
    client = await gateway({"METRICS_PUBLIC": "true"})
    assert value(await scrape(client), "glm_gateway_key_available") == 3


# ---- bounded cardinality --------------------------------------------------------------------------

def _junk(n: int) -> str:
    return "".join(random.choices(string.ascii_letters + string.digits, k=n))


async def test_a_thousand_random_paths_models_and_ids_add_no_series(gateway, fake):
    """Labels hold route templates, configured models and configured names: requests with random
    paths, models and request ids do not grow the exposition once each kind has been seen."""
    random.seed(15)
    client = await gateway()

    async def one(i: int) -> None:
        rid = {"X-Request-Id": f"rid-{_junk(20)}"}
        kind = i % 4
        if kind == 0:
            resp = await client.get(f"/{_junk(12)}/{_junk(5)}", headers=rid)
        elif kind == 1:
            resp = await client.get(f"/v1/models/{_junk(16)}", headers=rid)
        elif kind == 2:
            resp = await client.post(CHAT_PATH, json={**CHAT, "model": f"m-{_junk(10)}"}, headers=rid)
        else:
            resp = await client.post(CHAT_PATH, json={**CHAT, "model": _junk(8), "stream": True}, headers=rid)
        await resp.read()

    async def series_now() -> set[tuple[str, frozenset]]:
        await eventually(lambda: value_in_flight(client) <= 1)
        return set(await scrape(client))

    for i in range(8):  # every kind of request once (twice), so its series exist
        fake.default = fakes.stream(["x"]) if i % 4 == 3 else fakes.ok()
        await one(i)
    await scrape(client)  # the scrape's own series
    warm = await series_now()

    async def stream_or_json(request, body):
        if body.get("stream"):
            return await fakes.stream(["x"])(request, body)
        return await fakes.ok()(request, body)

    fake.default = stream_or_json
    for start in range(0, 1000, 50):
        await asyncio.gather(*(one(i) for i in range(start, start + 50)))
    after = await series_now()
    assert after == warm, sorted(after - warm)[:10]
    counts = await scrape(client)
    assert value(counts, "glm_gateway_requests_total", route="unmatched", status="404") == 252
    assert value(counts, "glm_gateway_requests_total", route="/v1/models/{model}", status="404") == 252
    assert value(counts, "gen_ai_client_operation_duration_seconds_count", gen_ai_request_model=OTHER,
                 error_type="") == 504
    assert len(after) < 600  # and the whole exposition stays small


def value_in_flight(client) -> int:
    return len(client.server.app[LIVE])


# ---- X-Gateway-Overhead-Ms ------------------------------------------------------------------------

async def test_overhead_header_excludes_the_upstream_time(gateway, fake):
    async def slow(request, body):
        await asyncio.sleep(0.3)
        return web.json_response(fakes.completion())

    fake.default = slow
    client = await gateway()
    began = time.perf_counter()
    resp = await client.post(CHAT_PATH, json=CHAT)
    elapsed_ms = (time.perf_counter() - began) * 1000
    assert resp.status == 200
    overhead = float(resp.headers["X-Gateway-Overhead-Ms"])
    assert elapsed_ms >= 300
    assert 0 <= overhead < 100  # the 300 ms the upstream took are not the gateway's


async def test_overhead_header_on_streams_and_not_on_local_answers(gateway, fake):
    fake.default = fakes.stream(["a"])
    client = await gateway()
    resp = await client.post(CHAT_PATH, json={**CHAT, "stream": True})
    assert float(resp.headers["X-Gateway-Overhead-Ms"]) >= 0  # until the headers were sent
    await resp.read()
    for path in ("/health", "/v1/models", "/_status"):
        assert "X-Gateway-Overhead-Ms" not in (await client.get(path)).headers, path


# ---- pure parts -----------------------------------------------------------------------------------

@pytest.mark.parametrize("limit, allowed, values, expected", [
    (2, None, ["a", "b", "c", "a"], ["a", "b", OTHER, "a"]),  # the first `limit` distinct values keep theirs
    (2, None, [None, "x"], ["", "x"]),  # None is "no value"
    (0, ["m1", "m2"], ["m1", "zz", "m2", None], ["m1", OTHER, "m2", ""]),  # a fixed set: nothing else joins
    (1000, None, [f"c{i}" for i in range(3)], ["c0", "c1", "c2"]),
])
def test_bounded(limit, allowed, values, expected):
    bound = Bounded(limit, allowed=allowed)
    assert [bound(v) for v in values] == expected


def test_bounded_never_grows_past_its_limit():
    bound = Bounded(10)
    labels = {bound(f"name-{i}") for i in range(10_000)}
    assert len(labels) == 11 and OTHER in labels


def _ctx(status: int = 200, stream_error: str | None = None, disconnected: bool = False) -> RequestContext:
    ctx = RequestContext("r", "POST", CHAT_PATH)
    ctx.status, ctx.stream_error, ctx.client_disconnected = status, stream_error, disconnected
    return ctx


@pytest.mark.parametrize("ctx, expected", [
    (_ctx(200), ""),
    (_ctx(200, stream_error="upstream cut"), "midstream"),
    (_ctx(499, disconnected=True), "cancelled"),
    (_ctx(429), "429"),
    (_ctx(502), "502"),
])
def test_error_type(ctx, expected):
    assert error_type(ctx) == expected


@pytest.mark.parametrize("row, expected", [
    ({"name": "k1"}, None),
    ({"breaker": {"state": "half_open", "seconds_left": 0}}, "half_open"),
    ({"breaker": "open"}, "open"),
    ({"state": "closed"}, "closed"),
    ({"breaker": {"state": "melted"}}, "other"),
    ({"breaker": {"state": 3}}, None),
])
def test_breaker_state(row, expected):
    assert breaker_state(row) == expected


def test_recorder_counts_a_routing_decision_and_a_skip():
    from gateway.observability import Metrics

    metrics = Metrics(["zai-glm-4.7"])
    ctx = RequestContext("r", "POST", CHAT_PATH)
    ctx.route, ctx.status, ctx.stream = CHAT_PATH, 200, False
    ctx.skipped = ["cerebras: skipped, prompt ~130000 tokens > 120000"]
    ctx.add_attempt(AttemptRecord("synthetic", "key1", "ok", 200, 1.0))
    ctx.served_by("synthetic", "key1", "hf:zai-org/GLM-4.7")
    ctx.routing = ("cheapest", "chose_fallback")
    metrics.record(ctx)
    reg = metrics.registry
    assert reg.get_sample_value("glm_gateway_routing_decisions_total",
                                {"strategy": "cheapest", "outcome": "chose_fallback"}) == 1
    assert reg.get_sample_value("glm_gateway_fallbacks_total",
                                {"reason": "skipped", "from_provider": "cerebras", "to_provider": "synthetic"}) == 1
    # a model outside the configured ones reads as "other"
    assert reg.get_sample_value("gen_ai_client_operation_duration_seconds_count", {
        "gen_ai_operation_name": "chat", "gen_ai_provider_name": "synthetic", "gen_ai_request_model": "",
        "gen_ai_response_model": OTHER, "error_type": ""}) == 1


async def test_gzip_when_the_scraper_accepts_it(gateway):
    client = await gateway()
    resp = await client.get("/metrics", headers={"Accept-Encoding": "gzip"})
    assert resp.status == 200 and resp.headers["Content-Encoding"] == "gzip"
    assert "glm_gateway_key_available" in await resp.text()  # (the client inflates it)
    resp = await client.get("/metrics", headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in resp.headers


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.floats(min_value=0, max_value=1e4, allow_nan=False)),
                max_size=40))
def test_a_family_renders_what_prometheus_clients_own_metrics_would(samples):
    """The plain-number families expose exactly what prometheus_client's locked Counter and
    Histogram expose for the same samples (bucket edges included: a value equal to a bound is in it)."""
    import prometheus_client
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from gateway.observability.metrics import Family, Recorded

    prometheus_client.disable_created_metrics()  # as Metrics does

    ours, theirs = CollectorRegistry(), CollectorRegistry()
    bounds = (0.5, 1.0, 10.0, 100.0)
    hist = Family("h_seconds", "doc", ("k",), bounds)
    count = Family("c", "doc", ("k",))
    ours.register(Recorded((hist, count)))
    ref_hist = Histogram("h_seconds", "doc", ("k",), registry=theirs, buckets=bounds)
    ref_count = Counter("c", "doc", ("k",), registry=theirs)
    for label, value in [*samples, ("a", 1.0), ("b", 100.0)]:
        hist.observe((label,), value)
        count.inc((label,), value)
        ref_hist.labels(label).observe(value)
        ref_count.labels(label).inc(value)
    assert generate_latest(ours) == generate_latest(theirs)
