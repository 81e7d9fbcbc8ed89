import pytest

from gateway.logs import Redactor


@pytest.mark.parametrize(
    "value, leaked",
    [
        ("calling with csk-abcdef123456", "csk-abcdef123456"),
        ("Authorization: Bearer abc.def-ghi", "abc.def-ghi"),
        ("client key sk-glm-AbCdEf_12345-xyz", "sk-glm-AbCdEf_12345-xyz"),
        ("configured secret my-zai-key-0001 used", "my-zai-key-0001"),
        ("upper case CSK-ABCDEF123456", "CSK-ABCDEF123456"),
        ("AUTHORIZATION: BEARER abc.def-ghi", "abc.def-ghi"),
    ],
)
def test_redactor_scrubs(value, leaked):
    out = Redactor(["my-zai-key-0001"])(None, "info", {"event": "x", "detail": value})
    assert leaked not in out["detail"]
    assert "****" in out["detail"]


SECRET = "zai-secret-0001"


class Holder:
    def __str__(self) -> str:
        return f"Holder({SECRET})"


@pytest.mark.parametrize(
    "value, expected",
    [
        ({"headers": {"Authorization": "Bearer abc.def"}}, {"headers": {"Authorization": "****"}}),
        ([SECRET, ["x", (SECRET, 1)]], ["****", ["x", ["****", 1]]]),
        ((SECRET, None, 2.5, True), ["****", None, 2.5, True]),
        ({SECRET}, ["****"]),
        ({SECRET: 1, 7: "ok"}, {"****": 1, "7": "ok"}),  # keys too (and made text, as JSON needs)
        (f"body {SECRET}".encode(), "body ****"),
        (Holder(), "Holder(****)"),
        (ValueError(f"bad key {SECRET}"), "bad key ****"),
        ([[[[[[[[[[SECRET]]]]]]]]]], [[[[[[[["[['****']]"]]]]]]]]),  # past MAX_DEPTH: the text, scrubbed
        ({"n": 1, "ok": [1, "two"]}, {"n": 1, "ok": [1, "two"]}),
    ],
)
def test_redactor_scrubs_nested_values(value, expected):
    out = Redactor([SECRET])(None, "info", {"event": "x", "field": value})
    assert out["field"] == expected
    assert SECRET not in repr(out)


def test_redactor_leaves_the_callers_objects_alone_and_stops_at_cycles():
    inner = {"key": SECRET}
    loop: list = [inner]
    loop.append(loop)
    out = Redactor([SECRET])(None, "info", {"event": "x", "field": loop})
    assert inner == {"key": SECRET} and loop[1] is loop  # copied, not changed
    assert SECRET not in repr(out)


@pytest.mark.parametrize("limit", [10, 40, 80, 160, 200])
def test_shorten_never_keeps_part_of_a_secret(monkeypatch, limit):
    """A secret at every position across the cut: no piece of it survives, whatever the limit."""
    from gateway import logs

    secret = "csk-one-1111111111"  # not key-shaped enough for the patterns alone: only a known secret
    monkeypatch.setattr(logs._Access, "redactor", Redactor([secret]))
    for at in range(limit - len(secret) - 2, limit + 2):
        text = "Invalid API key: " [: max(at, 0)].ljust(max(at, 0), ".") + secret + " was rejected"
        out = logs.shorten(text, limit)
        assert len(out) <= limit
        assert not any(secret[:n] in out for n in range(5, len(secret) + 1)), (at, out)
        assert logs.redact(text) == text.replace(secret, "****")


def test_redactor_leaves_ordinary_values():
    event = {"event": "request", "path": "/v1/chat/completions", "status": 200, "client": "alice"}
    assert Redactor(["secret-1234"])(None, "info", dict(event)) == event


def test_rotating_file_rotates_by_size(tmp_path):
    from gateway.logs import RotatingFile

    f = RotatingFile(tmp_path / "g.log", max_bytes=100, backups=2)
    for i in range(10):
        f.write(f"line {i:02d} " + "x" * 30 + "\n")  # 39 bytes each: two lines a file
    f.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["g.log", "g.log.1", "g.log.2"]  # older files beyond 2 backups are gone
    assert (tmp_path / "g.log").read_text().startswith("line 08")
    assert (tmp_path / "g.log.1").read_text().startswith("line 06")
    assert all(p.stat().st_size <= 100 for p in tmp_path.iterdir())


def test_rotating_file_continues_an_existing_file(tmp_path):
    from gateway.logs import RotatingFile

    (tmp_path / "g.log").write_text("x" * 90 + "\n")
    f = RotatingFile(tmp_path / "g.log", max_bytes=100, backups=1)
    f.write("y" * 20 + "\n")  # would pass 100 bytes: rotates first
    f.close()
    assert (tmp_path / "g.log").read_text() == "y" * 20 + "\n"
    assert (tmp_path / "g.log.1").read_text() == "x" * 90 + "\n"


def test_line_writer_writes_everything_before_stop(tmp_path):
    from gateway.logs import LineWriter, RotatingFile

    writer = LineWriter([RotatingFile(tmp_path / "g.log", max_bytes=10**9, backups=0)])
    for i in range(5000):
        writer.write(f'{{"n": {i}}}')
    writer.stop()
    lines = (tmp_path / "g.log").read_text().splitlines()
    assert lines == [f'{{"n": {i}}}' for i in range(5000)]


def test_line_writer_takes_lines_from_many_threads_each_once(tmp_path):
    import threading

    from gateway.logs import LineWriter, RotatingFile

    writer = LineWriter([RotatingFile(tmp_path / "g.log", max_bytes=10**9, backups=0)], gather=0)

    def burst(t: int) -> None:
        for i in range(3000):
            writer.write(f"{t}-{i}")

    threads = [threading.Thread(target=burst, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.stop()
    lines = (tmp_path / "g.log").read_text().splitlines()
    assert sorted(lines) == sorted(f"{t}-{i}" for t in range(4) for i in range(3000))
    for t in range(4):  # each thread's lines in its order
        mine = [line for line in lines if line.startswith(f"{t}-")]
        assert mine == [f"{t}-{i}" for i in range(3000)]


async def test_line_writer_writes_a_late_line_without_being_stopped(tmp_path):
    """A line that arrives after a batch went out is written by the next wakeup (no lost wakeup)."""
    from gateway.logs import LineWriter, RotatingFile

    from .conftest import eventually

    path = tmp_path / "g.log"
    writer = LineWriter([RotatingFile(path, max_bytes=10**9, backups=0)], gather=0)
    try:
        for n in range(50):
            writer.write(f"line {n}")
            await eventually(lambda n=n: path.read_text().splitlines()[-1:] == [f"line {n}"])
    finally:
        writer.stop()


def test_exceptions_are_rendered_without_secrets(monkeypatch):
    import json

    import structlog

    from gateway import logs

    monkeypatch.setattr(logs._Access, "redactor", Redactor(["csk-secret-value"]))
    lines = []
    logger = structlog.wrap_logger(
        type("L", (), {"msg": lambda self, line: lines.append(line), "error": lambda self, line: lines.append(line)})(),
        processors=logs.processors(),
    )
    try:
        raise RuntimeError("failed with csk-secret-value")
    except RuntimeError:
        logger.exception("boom")
    record = json.loads(lines[0])
    assert "RuntimeError" in record["exception"]
    assert "csk-secret-value" not in lines[0]


class ListSink:
    def __init__(self) -> None:
        self.data = ""

    def write(self, data: str) -> None:
        self.data += data

    def close(self) -> None:
        pass


@pytest.fixture
def access_sink(monkeypatch):
    """``access()`` pointed at an in-memory sink, at INFO, with one configured secret."""
    import logging

    from gateway import logs

    sink = ListSink()
    writer = logs.LineWriter([sink], gather=0)
    monkeypatch.setattr(logs._Access, "writer", writer)
    monkeypatch.setattr(logs._Access, "redactor", Redactor(["zai-secret-0001"]))
    monkeypatch.setattr(logs._Access, "min_level", logging.INFO)
    yield sink
    writer.stop()


def test_access_lines_scrub_nested_values(access_sink):
    import json

    from gateway import logs

    fields = {"request_id": "r2", "skipped": ["cerebras: zai-secret-0001"], "status": 502}
    logs.access("request", "info", fields)
    logs._Access.writer.stop()
    line = json.loads(access_sink.data)
    assert line["skipped"] == ["cerebras: ****"] and line["status"] == 502 and line["request_id"] == "r2"


@pytest.mark.parametrize("fields, level, expected", [
    ({"request_id": "r1", "status": 200, "path": "/v1/chat/completions"}, "info",
     {"request_id": "r1", "status": 200, "path": "/v1/chat/completions"}),
    ({"model": "zai-secret-0001", "detail": "Bearer abc.def"}, "info", {"model": "****", "detail": "****"}),
    ({"path": "/v1/x", "client": "alice", "model": "SK-GLM-ABCDEF123"}, "info",
     {"path": "/v1/x", "client": "alice", "model": "****"}),  # one suspect value: only it changes
    ({"path": "/health"}, "debug", None),  # below the configured level
])
def test_access_lines_have_the_shape_of_every_other_line(access_sink, fields, level, expected):
    import json
    import re

    from gateway import logs

    logs.access("request", level, dict(fields))
    logs._Access.writer.stop()
    if expected is None:
        assert access_sink.data == ""
        return
    line = json.loads(access_sink.data)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", line.pop("timestamp"))
    assert line == {**expected, "event": "request", "level": level}


def echoing(secret: str) -> str:
    """An upstream 401 message that echoes the key (Cerebras sometimes does), placed across each
    cut the gateway makes: the client's error (80), the key's disabled reason (120), the summary (160)."""
    text = "Invalid API key provided: ".ljust(68, ".") + secret
    text = text.ljust(111, ".") + secret
    return text.ljust(152, ".") + secret + " is not a valid key."


async def test_an_echoed_upstream_key_reaches_no_log_no_error_and_no_status(gateway, fake, log_dir, monkeypatch):
    import json

    from gateway import logs
    from tests import fakes
    from tests.conftest import UPSTREAM_KEYS, eventually

    monkeypatch.setattr(logs._Access, "redactor", Redactor(UPSTREAM_KEYS.values()))  # as configure() does
    for secret in UPSTREAM_KEYS.values():
        fake.script(secret, fakes.error(401, {"message": echoing(secret), "type": "invalid_request_error",
                                              "param": "api_key", "code": "wrong_api_key"}))
    client = await gateway()
    resp = await client.post("/v1/chat/completions", json={"model": "zai-glm-4.7", "messages": [
        {"role": "user", "content": "hi"}]}, headers={"X-Request-Id": "echoed-key-1"})
    assert resp.status == 502
    error = await resp.text()
    assert "cerebras/k1: auth (401 Invalid API key provided" in error
    status = await (await client.get("/_status")).text()

    def logged():
        lines = [x for x in (log_dir / "gateway.log").read_text().splitlines() if "echoed-key-1" in x]
        return lines if sum('"upstream_failed"' in x for x in lines) == 3 and '"request"' in lines[-1] else None

    log_text = "\n".join(await eventually(logged))
    assert json.loads(error)["error"]["message"].count("****") == 3  # each key's first echo, scrubbed
    for secret in UPSTREAM_KEYS.values():
        for text in (error, status, log_text):
            assert not any(secret[:n] in text for n in range(5, len(secret) + 1))


# ---- long text, writer hooks, rotation within a batch ------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

PIECES = st.sampled_from(["sk-glm-", "SK-GLM-", "csk-", "CSK-", "Bearer", "bearer ", "BEARER\t", "task-", "sk-",
                          "abcdef", "AbC_12-", "x", " ", '"', ",", "'", "\n", "é", "İ", "ı", "\u212a",
                          "ſk-glm-abcdefg", "cſk-"])


@settings(max_examples=400, deadline=None)
@given(st.lists(PIECES, max_size=60), st.integers(0, 5000))
def test_long_text_is_scrubbed_as_the_regex_would(pieces, pad):
    from gateway.logs import _PATTERNS, _scrub_patterns

    text = "." * pad + "".join(pieces)  # past 4,096 characters, only where a needle starts is matched
    assert _scrub_patterns(text) == _PATTERNS.sub("****", text)


def test_a_batch_rotates_between_its_lines(tmp_path):
    from gateway.logs import RotatingFile

    f = RotatingFile(tmp_path / "g.log", max_bytes=100, backups=5)
    f.write("".join(f"line {i:02d} " + "x" * 30 + "\n" for i in range(6)))  # one write of 234 bytes
    f.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.log", "g.log.1", "g.log.2"]
    assert all(p.stat().st_size <= 100 for p in tmp_path.iterdir())
    assert (tmp_path / "g.log.2").read_text().startswith("line 00")


def test_a_failed_rotation_does_not_leave_the_file_closed(tmp_path):
    import shutil

    from gateway.logs import RotatingFile

    where = tmp_path / "d"
    where.mkdir()
    f = RotatingFile(where / "g.log", max_bytes=50, backups=1)
    f.write("a" * 40 + "\n")
    shutil.rmtree(where)  # the directory is gone: the rotation fails
    with pytest.raises(OSError):
        f.write("b" * 40 + "\n")
    where.mkdir()  # back: the next write opens the file again
    f.write("c" * 10 + "\n")
    f.close()
    assert (where / "g.log").read_text() == "c" * 10 + "\n"


def test_line_writer_renders_in_its_thread_and_ticks(tmp_path):
    import threading

    from gateway.logs import LineWriter, RotatingFile

    threads: list[str] = []
    ticks: list[float] = []

    def render(item):
        threads.append(threading.current_thread().name)
        if item == "boom":
            raise RuntimeError("a renderer's bug")
        return None if item == "skip" else f"<{item}>"

    writer = LineWriter([RotatingFile(tmp_path / "g.log", max_bytes=10**9, backups=0)], gather=0, render=render,
                        tick=lambda: ticks.append(1), tick_every=3600, name="my-writer")
    for item in ("a", "boom", "skip", "b"):
        writer.write(item)
    writer.stop()
    assert (tmp_path / "g.log").read_text() == "<a>\n<b>\n"
    assert set(threads) == {"my-writer"}
    assert ticks == [1]  # at start; the next one an hour later
