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
            await eventually(lambda: path.read_text().splitlines()[-1:] == [f"line {n}"])
    finally:
        writer.stop()


def test_exceptions_are_rendered_without_secrets():
    import json

    import structlog

    from gateway.logs import processors

    lines = []
    logger = structlog.wrap_logger(
        type("L", (), {"msg": lambda self, line: lines.append(line), "error": lambda self, line: lines.append(line)})(),
        processors=processors(["csk-secret-value"]),
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
