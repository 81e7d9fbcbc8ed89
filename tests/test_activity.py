"""The dashboard's recent-activity ring (gateway/observability/activity.py): pure parts as tables,
the ring with an injected clock, and a property test against a plain list of what was recorded."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.context import AttemptRecord, RequestContext
from gateway.observability.activity import Activity, error_entry, failed, fell_back

T0 = 1_800_000_000.0  # a bucket boundary (divisible by 10)


def ctx(status: int = 200, path: str = "/v1/chat/completions", **fields) -> RequestContext:
    c = RequestContext(fields.pop("request_id", "rid-1"), "POST", path)
    c.status = status
    c.route = fields.pop("route", path)
    for name, value in fields.items():
        setattr(c, name, value)
    return c


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        (ctx(200), False),
        (ctx(399), False),
        (ctx(400), True),
        (ctx(429), True),
        (ctx(499, client_disconnected=True), True),
        (ctx(503), True),
        (ctx(200, stream_error="upstream stream failed"), True),  # broke after its first byte
    ],
)
def test_failed(context, expected):
    assert failed(context) is expected


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        (ctx(200, provider="cerebras"), False),
        (ctx(200, provider="zai", fallback_reason="cerebras/k1: rate_limited"), True),
        (ctx(200, provider="zai", skipped=["cerebras: skipped, prompt ~9000 tokens > 8000"]), True),
        (ctx(503, skipped=["cerebras: skipped"]), False),  # skipped, then nobody served: not a fallback
    ],
)
def test_fell_back(context, expected):
    assert fell_back(context) is expected


@pytest.mark.parametrize(
    ("context", "fields"),
    [
        (ctx(401, error_type="authentication_error", error_code="invalid_api_key"),
         {"status": 401, "code": "invalid_api_key", "route": "/v1/chat/completions", "attempts": []}),
        (ctx(400, error_type="invalid_request_error"), {"code": "invalid_request_error"}),
        (ctx(404, path="/nope/sk-glm-secretsecretsecret", route=None), {"route": "unmatched", "code": "not_found"}),
        (ctx(499, client_disconnected=True), {"code": "client_disconnected"}),
        (ctx(200, stream_error="cut", provider="cerebras"), {"code": "midstream", "provider": "cerebras"}),
        (ctx(429, error_code="rate_limit_exceeded", attempts=[
            AttemptRecord("cerebras", "k1", "rate_limited", 429, 3.0, "detail with csk-one-1111111111"),
            AttemptRecord("zai", "main", "timeout", None, 30000.0)]),
         {"attempts": ["cerebras/k1: rate_limited (429)", "zai/main: timeout"]}),
        (ctx(400, model_asked="m" * 500, client_name="alice"), {"client": "alice", "model": "m" * 80}),
    ],
)
def test_error_entry_keeps_names_and_codes(context, fields):
    entry = error_entry(context, T0)
    assert entry["request_id"] == "rid-1" and entry["at"] == T0 and entry["method"] == "POST"
    assert {name: entry[name] for name in fields} == fields
    text = repr(entry)
    assert "csk-" not in text and "sk-glm-" not in text  # no upstream message, no raw path


def test_requests_errors_and_fallbacks_land_in_their_bucket():
    clock = Clock()
    activity = Activity(bucket_s=10, window_s=60, clock=clock)
    activity.record(ctx(200))
    activity.record(ctx(502, request_id="bad-1"))
    clock.now += 10
    activity.record(ctx(200, provider="zai", fallback_reason="cerebras/k1: server"))
    clock.now += 5
    rows = activity.series()
    assert len(rows) == 6 and rows[-1]["t"] == T0 + 10 and rows[0]["t"] == T0 - 40
    assert [(r["requests"], r["errors"], r["fallbacks"]) for r in rows[-2:]] == [(2, 1, 0), (1, 0, 1)]
    assert all(r["requests"] == 0 for r in rows[:-2])
    snap = activity.snapshot()
    assert snap["totals"] == {"requests": 3, "errors": 1, "fallbacks": 1}
    assert [e["request_id"] for e in snap["last_errors"]] == ["bad-1"]
    assert snap["now"] == T0 + 15 and snap["bucket_s"] == 10 and snap["window_s"] == 60


def test_a_slot_is_reused_once_its_time_has_passed():
    clock = Clock()
    activity = Activity(bucket_s=10, window_s=30, clock=clock)
    for _ in range(5):
        activity.record(ctx(500))
    clock.now += 30  # the same slot of the ring, one lap later
    assert sum(r["requests"] for r in activity.series()) == 0  # the old counts are out of the window
    activity.record(ctx(200))
    assert [r["requests"] for r in activity.series()] == [0, 0, 1]
    assert [r["errors"] for r in activity.series()] == [0, 0, 0]


def test_quiet_paths_are_not_counted():
    activity = Activity(quiet={"/_status", "/dashboard/data"}, clock=Clock())
    activity.record(ctx(200, path="/_status"))
    activity.record(ctx(401, path="/dashboard/data"))
    activity.record(ctx(200, path="/v1/models"))
    snap = activity.snapshot()
    assert snap["totals"]["requests"] == 1 and snap["last_errors"] == []


def test_last_errors_are_bounded_and_newest_first():
    clock = Clock()
    activity = Activity(last_errors=3, clock=clock)
    for i in range(10):
        clock.now += 1
        activity.record(ctx(500, request_id=f"r{i}"))
    assert [e["request_id"] for e in activity.snapshot()["last_errors"]] == ["r9", "r8", "r7"]


@pytest.mark.parametrize(
    ("offsets", "now", "rate"),
    [
        ([], 5.0, 0.0),
        ([0.0] * 59, 59.0, 1.0),  # over 59 s: 5 full buckets and 9 s of the current one
        ([55.0] * 10, 59.0, 10 / 59),
        ([0.0] * 10, 200.0, 0.0),  # long ago
    ],
)
def test_requests_per_second_over_the_last_minute(offsets, now, rate):
    clock = Clock()
    activity = Activity(bucket_s=10, window_s=900, clock=clock)
    for offset in offsets:
        clock.now = T0 + offset
        activity.record(ctx(200))
    assert activity.snapshot(T0 + now)["requests_per_s"] == pytest.approx(rate, abs=1e-3)


def test_bad_geometry_is_refused():
    with pytest.raises(ValueError):
        Activity(bucket_s=0)
    with pytest.raises(ValueError):
        Activity(bucket_s=10, window_s=5)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 50, allow_nan=False), st.sampled_from([200, 404, 502])), max_size=60),
       st.floats(0, 400, allow_nan=False))
def test_the_ring_counts_what_a_list_would(events, later):
    """Whatever the times (in order), each bucket of the window holds exactly the requests a
    plain list of them would put there, and nothing older than the window survives."""
    clock = Clock()
    activity = Activity(bucket_s=10, window_s=120, clock=clock)
    seen: list[tuple[float, int]] = []
    for step, status in events:
        clock.now += step
        activity.record(ctx(status))
        seen.append((clock.now, status))
    clock.now += later
    rows = activity.series()
    first = rows[0]["t"]
    for row in rows:
        inside = [s for t, s in seen if row["t"] <= t < row["t"] + 10]
        assert row["requests"] == len(inside)
        assert row["errors"] == sum(s >= 400 for s in inside)
    assert activity.snapshot()["totals"]["requests"] == sum(t >= first for t, _ in seen)
