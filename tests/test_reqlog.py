"""The request log's pure parts (opt-out, headers, bodies, stream reassembly) and its writer's
rotation and pruning, on real files with an injected clock."""
from __future__ import annotations

import json
import os
import time

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import ProviderConfig, RequestLogSettings, UpstreamKey
from gateway.context import RequestContext
from gateway.logs import Redactor
from gateway.secrets import Secret
from gateway.usage.reassemble import reassemble
from gateway.usage.reqlog import FILE_NAME, RequestLog, body_field, clean_headers, opted_out

from .conftest import eventually


def sse(*objs: object) -> bytes:
    return b"".join(b"data: " + orjson.dumps(o) + b"\n\n" for o in objs)


def delta(d: dict, index: int = 0, finish: str | None = None, **extra: object) -> dict:
    choice: dict = {"index": index, "delta": d}
    if finish is not None:
        choice["finish_reason"] = finish
    return {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 7, "model": "zai-glm-4.7",
            "choices": [choice], **extra}


# ---- opt-out and headers ----------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "out"), [
    (None, False), ("", False), ("true", True), ("TRUE", True), (" True ", True), ("1", True), ("yes", True),
    ("Yes", True), ("false", False), ("0", False), ("no", False), ("nope", False), ("truee", False),
])
def test_opted_out(value, out):
    assert opted_out(value) is out


@pytest.mark.parametrize(("headers", "out"), [
    ({}, {}),
    ({"Content-Type": "application/json", "User-Agent": "OpenAI/Python 1.50"},
     {"content-type": "application/json", "user-agent": "OpenAI/Python 1.50"}),
    ({"Authorization": "Bearer sk-glm-abcdefgh"}, {"authorization": "****"}),
    ({"x-api-key": "sk-glm-abcdefgh", "Cookie": "session=1", "Proxy-Authorization": "Basic eA=="},
     {"x-api-key": "****", "cookie": "****", "proxy-authorization": "****"}),
    ({"X-Upstream-Token": "csk-anything", "api-key": "azure"}, {"x-upstream-token": "****", "api-key": "****"}),
    ({"X-Stainless-Lang": "python", "X-Stainless-Retry-Count": "0"},
     {"x-stainless-lang": "python", "x-stainless-retry-count": "0"}),
    ({"X-Request-Id": "r-1", "Host": "gw:18080"}, {"x-request-id": "r-1", "host": "gw:18080"}),
])
def test_clean_headers_keeps_an_allow_list(headers, out):
    assert clean_headers(headers) == out


def test_clean_headers_joins_repeated_ones():
    from multidict import CIMultiDict

    headers = CIMultiDict([("Accept", "a"), ("accept", "b"), ("Cookie", "x"), ("cookie", "y")])
    assert clean_headers(headers) == {"accept": "a, b", "cookie": "****"}


# ---- bodies -----------------------------------------------------------------------------------------

R = Redactor(["csk-upstream-secret-1"])


def rendered(value: object) -> object:
    return orjson.loads(orjson.dumps({"v": value}))["v"]


@pytest.mark.parametrize(("data", "valid", "out"), [
    (b'{"a":1}', False, {"a": 1}),
    (b'{"a":1}', True, {"a": 1}),
    (b'{\n  "a": 1\n}', False, {"a": 1}),  # pretty-printed: re-encoded on one line
    (b'{"a":"\\u00e9t\\u00e9"}', False, {"a": "été"}),
    (b"not json", False, "not json"),
    (b'{"a":', False, '{"a":'),
    (b"\xff\xfe", False, "\ufffd\ufffd"),
    (b"[1,2]", False, [1, 2]),
])
def test_body_field(data, valid, out):
    value, cut = body_field(data, 1024, R, valid=valid)
    assert cut is None
    assert rendered(value) == out
    assert b"\n" not in orjson.dumps({"v": value})


def test_body_field_cuts_after_scrubbing():
    data = b'{"content": "' + b"x" * 980 + b'csk-upstream-secret-1 and more"}'  # the key spans the cut
    value, cut = body_field(data, 1000, R)
    assert cut == len(data)
    assert value == '{"content": "' + "x" * 980 + "**** an"  # scrubbed, then cut: no part of the key


def test_a_key_spelt_with_escapes_is_decoded_so_the_scrub_finds_it():
    data = b'{"content": "csk-upstream-secret-\\u0031"}'
    line = R.scrub(orjson.dumps({"v": body_field(data, 1024, R)[0]}).decode())
    assert "csk-upstream-secret-1" not in line and "****" in line


def test_a_body_nested_past_orjsons_depth_is_kept_as_text():
    deep = b"[" * 300 + b"]" * 300 + b"\n"  # orjson reads it; it will not write 300 levels
    value, _ = body_field(deep, 4096, R)
    assert isinstance(value, str) and value.startswith("[[[")


# ---- stream reassembly ------------------------------------------------------------------------------

def test_reassemble_content_reasoning_and_usage():
    chunks = [
        sse(delta({"role": "assistant", "reasoning_content": "think "})),
        sse(delta({"reasoning_content": "more"}), delta({"content": "Hel"})),
        sse(delta({"content": "lo"})),
        sse(delta({}, finish="stop", usage={"prompt_tokens": 5, "completion_tokens": 3,
                                            "completion_tokens_details": {"reasoning_tokens": 2}})),
        b"data: [DONE]\n\n",
    ]
    out = reassemble(chunks)
    assert out["id"] == "chatcmpl-9" and out["model"] == "zai-glm-4.7" and out["created"] == 7
    assert out["object"] == "chat.completion"
    assert out["choices"] == [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "reasoning_content": "think more", "content": "Hello"}}]
    assert out["usage"] == {"prompt_tokens": 5, "completion_tokens": 3,
                            "completion_tokens_details": {"reasoning_tokens": 2}}
    assert out["events"] == 5  # data events; [DONE] is not one


def test_reassemble_tool_calls_by_index():
    chunks = [
        sse(delta({"role": "assistant", "content": None, "tool_calls": [
            {"index": 0, "id": "call_a", "type": "function", "function": {"name": "read_file", "arguments": ""}}]})),
        sse(delta({"tool_calls": [{"index": 0, "function": {"arguments": '{"pa'}}]})),
        sse(delta({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                                   "function": {"name": "grep", "arguments": '{"q":'}}]})),
        sse(delta({"tool_calls": [{"index": 0, "function": {"arguments": 'th": "a.py"}'}}]})),
        sse(delta({"tool_calls": [{"index": 1, "function": {"arguments": ' "x"}'}}]})),
        sse(delta({}, finish="tool_calls")),
    ]
    out = reassemble(chunks)
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert "content" not in choice["message"]
    assert choice["message"]["tool_calls"] == [
        {"index": 0, "id": "call_a", "type": "function",
         "function": {"name": "read_file", "arguments": '{"path": "a.py"}'}},
        {"index": 1, "id": "call_b", "type": "function", "function": {"name": "grep", "arguments": '{"q": "x"}'}},
    ]
    assert orjson.loads(choice["message"]["tool_calls"][0]["function"]["arguments"]) == {"path": "a.py"}


@pytest.mark.parametrize(("chunks", "check"), [
    ([], lambda o: o["choices"] == [] and o["usage"] is None and o["events"] == 0),
    ([b"data: not json\n\n", b": keep-alive\n\n"], lambda o: o["unparsed_events"] == 1 and o["events"] == 1),
    ([sse({"error": {"message": "overloaded", "code": 503}})],
     lambda o: o["errors"] == [{"message": "overloaded", "code": 503}]),
    ([sse(delta({"content": "a"}, index=1), delta({"content": "b"}, index=0))],
     lambda o: [c["message"]["content"] for c in o["choices"]] == ["b", "a"]),
    ([sse(delta({"tool_calls": [{"index": 0, "function": {"name": "f"}}]}),
          delta({"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": "{}"}}]}))],
     lambda o: o["choices"][0]["message"]["tool_calls"][0]["function"] == {"name": "f", "arguments": "{}"}),
    ([sse(delta({"content": "x" * 50}), delta({"content": "y" * 80}))],
     lambda o: o["choices"][0]["message"]["content"] == "x" * 50 + "y" * 50 and o["choices"][0]["truncated"]),
    ([sse({"choices": "nope", "id": ["not", "a", "string"], "usage": "none"})],
     lambda o: o["choices"] == [] and "id" not in o and o["usage"] is None),
    ([sse({"choices": [{"index": True, "delta": {"content": 5, "tool_calls": [7, {"index": "x"}]}}]})],
     lambda o: o["choices"][0]["index"] == 0 and o["choices"][0]["message"]["tool_calls"][0]["id"] is None),
])
def test_reassemble_odd_streams(chunks, check):
    out = reassemble(chunks, max_chars=100)
    assert check(out), out
    orjson.dumps(out)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["index", "delta", "choices", "content", "tool_calls", "function", "arguments", "name",
                         "usage", "id", "finish_reason", "reasoning_content", "error", "x"]), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(JSONISH.map(lambda o: b"data: " + json.dumps(o).encode()),  # big ints too
                          st.binary(max_size=40)), max_size=12))
def test_reassemble_never_fails_and_always_renders(parts):
    chunks = [p + b"\n\n" for p in parts]
    out = reassemble(chunks, max_chars=64)
    orjson.dumps(out)  # whatever came, the record renders


# ---- the writer: rotation and pruning on real files -------------------------------------------------

CFG = ProviderConfig(name="cerebras", base_url="http://127.0.0.1:1/v1",
                     keys=(UpstreamKey("k1", Secret("csk-upstream-secret-1")),), model="zai-glm-4.7")


def finished(rid: str, body: bytes = b'{"messages":[]}') -> RequestContext:
    ctx = RequestContext(rid, "POST", "/v1/chat/completions")
    ctx.log_body = True
    ctx.request_body = body
    ctx.status = 200
    ctx.finished_ns = time.perf_counter_ns()
    return ctx


def make_log(tmp_path, clock=time.time, **kw) -> RequestLog:
    settings_ = RequestLogSettings(enabled=True, directory=tmp_path, **kw)
    log = RequestLog(settings_, [CFG], ["csk-upstream-secret-1"], clock=clock)
    log.open()
    return log


def age(path, days: float, now: float) -> None:
    os.utime(path, (now - days * 86400, now - days * 86400))


async def test_records_rotate_by_size_keeping_the_backups(tmp_path):
    log = make_log(tmp_path, max_bytes=1024, backups=2)
    try:
        for i in range(12):
            log.record(finished(f"r{i}", b'{"messages": "' + b"x" * 300 + b'"}'))
        await eventually(lambda: log.records_rendered == 12)
    finally:
        log.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [FILE_NAME, FILE_NAME + ".1", FILE_NAME + ".2"]
    ids = []
    for name in reversed(names):  # oldest first
        assert (tmp_path / name).stat().st_size <= 1024
        ids += [orjson.loads(line)["request_id"] for line in (tmp_path / name).read_text().splitlines()]
    assert ids == [f"r{i}" for i in range(12 - len(ids), 12)]  # the newest, in order; the oldest rotated away


def test_prune_deletes_rotated_files_past_the_retention(tmp_path):
    now = 1_900_000_000.0
    for name, days in ((".1", 1), (".2", 8), (".3", 30), (".old", 30)):
        (tmp_path / (FILE_NAME + name)).write_text("{}\n")
        age(tmp_path / (FILE_NAME + name), days, now)
    (tmp_path / "other.log").write_text("x")
    age(tmp_path / "other.log", 30, now)
    log = make_log(tmp_path, clock=lambda: now, retention_days=7)
    try:
        log.prune()
    finally:
        log.close()
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["other.log", FILE_NAME, FILE_NAME + ".1", FILE_NAME + ".old"]  # only numbered backups


def test_prune_rotates_out_a_current_file_that_old(tmp_path):
    now = 1_900_000_000.0
    (tmp_path / FILE_NAME).write_text('{"request_id": "ancient"}\n')
    age(tmp_path / FILE_NAME, 9, now)
    clock = [now - 30 * 86400]  # at start the file is recent: kept
    log = make_log(tmp_path, clock=lambda: clock[0], retention_days=7)
    try:
        log.prune()
        assert (tmp_path / FILE_NAME).read_text() != ""
        clock[0] = now
        log.prune()
        assert (tmp_path / FILE_NAME).read_text() == ""
        assert not (tmp_path / (FILE_NAME + ".1")).exists()
    finally:
        log.close()


async def test_writer_prunes_at_start_and_every_interval(tmp_path):
    now = [1_900_000_000.0]
    settings_ = RequestLogSettings(enabled=True, directory=tmp_path, retention_days=1)
    log = RequestLog(settings_, [CFG], clock=lambda: now[0], prune_every=0.05)
    old = tmp_path / (FILE_NAME + ".1")
    old.write_text("{}\n")
    age(old, 2, now[0])
    log.open()
    try:
        await eventually(lambda: not old.exists())  # at start
        old.write_text("{}\n")
        age(old, 0.5, now[0])
        now[0] += 86400  # a day later the file is past the retention
        await eventually(lambda: not old.exists())
    finally:
        log.close()


async def test_a_full_queue_drops_records_and_counts_them(tmp_path):
    settings_ = RequestLogSettings(enabled=True, directory=tmp_path)
    log = RequestLog(settings_, [CFG], queue_max_bytes=1000)
    log.open()
    try:
        log._writer.write = lambda entry: None  # type: ignore[union-attr]  # a writer that never catches up
        for i in range(5):
            log.record(finished(f"r{i}", b"x" * 400))
        assert log.records_queued == 2 and log.records_dropped == 3
    finally:
        log.close()


def test_not_logged_requests_are_not_queued(tmp_path):
    log = make_log(tmp_path)
    try:
        ctx = finished("r")
        ctx.log_body = False
        log.record(ctx)
        assert log.records_queued == 0
    finally:
        log.close()


def test_close_writes_what_is_queued(tmp_path):
    log = make_log(tmp_path)
    for i in range(50):
        log.record(finished(f"r{i}"))
    log.close()  # at shutdown (SIGTERM): nothing queued is lost
    ids = [orjson.loads(line)["request_id"] for line in (tmp_path / FILE_NAME).read_text().splitlines()]
    assert ids == [f"r{i}" for i in range(50)]
