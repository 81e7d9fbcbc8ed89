import pytest

from gateway.sse import DONE, SSESplitter, data_event, error_event, event_data, is_done

E1 = b'data: {"a":1}\n\n'
E2 = b'data: {"b":2}\n\n'


@pytest.mark.parametrize(
    "chunks, events, tail",
    [
        ([E1], [E1], b""),
        ([E1 + E2], [E1, E2], b""),
        ([E1[:5], E1[5:]], [E1], b""),
        ([E1 + E2[:3], E2[3:]], [E1, E2], b""),
        ([b"data: x\n", b"\n"], [b"data: x\n\n"], b""),
        ([b"data: x\r\n\r\n"], [b"data: x\n\n"], b""),
        ([b": keep-alive\n\n", E1], [b": keep-alive\n\n", E1], b""),
        ([b"data: partial"], [], b"data: partial"),
        ([b"event: x\ndata: 1\ndata: 2\n\n"], [b"event: x\ndata: 1\ndata: 2\n\n"], b""),
    ],
)
def test_splitter(chunks, events, tail):
    s = SSESplitter()
    got = []
    for c in chunks:
        got += s.feed(c)
    assert got == events
    assert s.tail() == tail


def test_splitter_byte_by_byte():
    s = SSESplitter()
    stream = E1 + E2 + DONE
    got = [e for i in range(len(stream)) for e in s.feed(stream[i : i + 1])]
    assert got == [E1, E2, DONE]


@pytest.mark.parametrize(
    "event, data",
    [
        (E1, b'{"a":1}'),
        (b"data:nospace\n\n", b"nospace"),
        (b"event: x\ndata: 1\ndata: 2\n\n", b"1\n2"),
        (b": comment\n\n", None),
        (DONE, b"[DONE]"),
    ],
)
def test_event_data(event, data):
    assert event_data(event) == data


def test_framing():
    assert data_event(b"{}") == b"data: {}\n\n"
    assert is_done(DONE) and not is_done(E1)
    ev = error_event("boom", code="x")
    assert ev.startswith(b"data: {") and ev.endswith(b"\n\n")
    assert b'"error":{"message":"boom","type":"api_error","param":null,"code":"x"}' in ev
