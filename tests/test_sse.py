import re
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sse import (
    DONE,
    EventTooLarge,
    SSESplitter,
    data_event,
    error_event,
    event_data,
    has_data,
)

E1 = b'data: {"a":1}\n\n'
E2 = b'data: {"b":2}\n\n'


def feed_all(chunks, max_event=1 << 20):
    s = SSESplitter(max_event)
    got = []
    for c in chunks:
        got += s.feed(c)
    return got, s.tail()


@pytest.mark.parametrize(
    "chunks, events, tail",
    [
        ([E1], [E1], b""),
        ([E1 + E2], [E1, E2], b""),
        ([E1[:5], E1[5:]], [E1], b""),
        ([E1 + E2[:3], E2[3:]], [E1, E2], b""),
        ([b"data: x\n", b"\n"], [b"data: x\n\n"], b""),
        ([b": keep-alive\n\n", E1], [b": keep-alive\n\n", E1], b""),
        ([b"data: partial"], [], b"data: partial"),
        ([b"event: x\ndata: 1\ndata: 2\n\n"], [b"event: x\ndata: 1\ndata: 2\n\n"], b""),
        ([b"", E1, b""], [E1], b""),
        # CRLF, whole and cut at each of its bytes
        ([b"data: x\r\n\r\n"], [b"data: x\n\n"], b""),
        ([b"data: x\r", b"\n\r\n"], [b"data: x\n\n"], b""),
        ([b"data: x\r\n", b"\r\n"], [b"data: x\n\n"], b""),
        ([b"data: x\r\n\r", b"\n"], [b"data: x\n\n"], b""),
        ([b"data: x\r\n\r", b"\ndata: y\r\n\r\n"], [b"data: x\n\n", b"data: y\n\n"], b""),
        ([b"data: x\r", b"\n", b"\r", b"\n"], [b"data: x\n\n"], b""),
        ([b"data: x\r", b"", b"\n\r\n"], [b"data: x\n\n"], b""),  # an empty read keeps the CR's state
        # bare CR line ends: the blank line is CR CR, and a CR cut from its LF is one line end
        ([b"data: x\r\r"], [b"data: x\n\n"], b""),
        ([b"data: x\r", b"\r"], [b"data: x\n\n"], b""),
        ([b"data: 1\rdata: 2\r\rdata: 3\r\r"], [b"data: 1\ndata: 2\n\n", b"data: 3\n\n"], b""),
        ([b"data: x\r\r", b"\ndata: y\n\n"], [b"data: x\n\n", b"data: y\n\n"], b""),  # CR, CRLF
        ([b"data: x\r", b"\ndata: y\n\n"], [b"data: x\ndata: y\n\n"], b""),  # one CRLF, not two
        # mixed line ends in one event
        ([b"data: 1\r\ndata: 2\rdata: 3\n\r\n"], [b"data: 1\ndata: 2\ndata: 3\n\n"], b""),
        ([b"data: x\n\r", b"\n"], [b"data: x\n\n"], b""),
        # the cut between the two LFs of a blank line, after a pending part
        ([b"da", b"ta: x\n", b"\ndata: y\n", b"\n"], [b"data: x\n\n", b"data: y\n\n"], b""),
        ([b"data: partial\r"], [], b"data: partial\n"),
    ],
)
def test_splitter(chunks, events, tail):
    assert feed_all(chunks) == (events, tail)


def test_splitter_byte_by_byte():
    s = SSESplitter()
    stream = E1 + E2 + DONE
    got = [e for i in range(len(stream)) for e in s.feed(stream[i : i + 1])]
    assert got == [E1, E2, DONE]


STREAMS = [
    b"data: a\n\ndata: b\n\n",
    b"data: a\r\n\r\ndata: b\r\n\r\n",
    b"data: a\r\rdata: b\r\r",
    b"data: a\r\n\rdata: b\n\r\n: c\r\r\n",
]


@pytest.mark.parametrize("stream", STREAMS)
def test_every_two_and_three_way_cut_gives_the_same_events(stream):
    whole = feed_all([stream])
    n = len(stream)
    for i in range(n + 1):
        for j in range(i, n + 1):
            assert feed_all([stream[:i], stream[i:j], stream[j:]]) == whole, (i, j)


# ---- properties: any cut of any stream, every line-ending style ------------------------------------

ENDINGS = [b"\n", b"\r\n", b"\r"]
line = st.binary(max_size=12).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")).filter(bool)
event = st.lists(line, min_size=1, max_size=4)


@st.composite
def sse_streams(draw):
    """A stream of events, its line ends drawn per line (one style for all, or mixed)."""
    events = draw(st.lists(event, max_size=6))
    style = draw(st.sampled_from(["lf", "crlf", "cr", "mixed"]))
    pick = (lambda: draw(st.sampled_from(ENDINGS))) if style == "mixed" else None
    fixed = {"lf": b"\n", "crlf": b"\r\n", "cr": b"\r"}.get(style)
    out = b""
    for lines in events:
        for x in [*lines, b""]:  # b"": the blank line that ends the event
            out += x + (pick() if pick else fixed)
    if draw(st.booleans()) and events:
        out += draw(line)  # an unterminated last event
    return out


def reference(stream: bytes) -> tuple[list[bytes], bytes]:
    """The spec, read plainly: lines split on CRLF, LF or CR; a blank line ends an event."""
    lines = re.split(rb"\r\n|\r|\n", stream)
    tail = lines.pop()  # what follows the last line end (b"" if the stream ends with one)
    events, current = [], []
    for x in lines:
        if x:
            current.append(x)
        elif current:
            events.append(b"\n".join(current) + b"\n\n")
            current = []
    rest = b"".join(c + b"\n" for c in current) + tail
    return events, rest


def cuts(stream: bytes, points: list[int]) -> list[bytes]:
    points = sorted({p % (len(stream) + 1) for p in points})
    return [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]


@settings(max_examples=400, deadline=None)
@given(sse_streams(), st.lists(st.integers(min_value=0), max_size=12))
def test_any_cut_gives_the_events_of_the_whole_stream(stream, points):
    whole = feed_all([stream])
    assert feed_all(cuts(stream, points)) == whole
    events, tail = whole
    assert (events, tail) == reference(stream)
    for e in events:
        assert e.endswith(b"\n\n") and b"\r" not in e and b"\n\n" not in e[:-2]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64).map(lambda b: b.translate(bytes.maketrans(b"abc", b"\r\n\n"))),
       st.lists(st.integers(min_value=0), max_size=8))
def test_hostile_bytes_cut_anywhere_split_alike(stream, points):
    """Any bytes at all (CR and LF dense): the same events and tail whatever the cuts."""
    assert feed_all(cuts(stream, points)) == feed_all([stream])


# ---- the size cap -------------------------------------------------------------------------------


def outcome(chunks, max_event):
    """(events before the stream ended, whether it ended on EventTooLarge)."""
    s = SSESplitter(max_event)
    got = []
    try:
        for c in chunks:
            got += s.feed(c)
    except EventTooLarge as e:
        assert e.limit == max_event and str(max_event) in str(e)
        return got, True
    return got, False


@pytest.mark.parametrize(
    "chunks, events, too_large",
    [
        ([b"data: 1234\n\n"], [b"data: 1234\n\n"], False),  # 12 bytes: at the cap
        ([b"data: 12345\n\n"], [], True),
        ([b"data: 1234\n\n", b"data: 12345\n\n"], [b"data: 1234\n\n"], True),
        ([b"data: 12", b"34\n\n"], [b"data: 1234\n\n"], False),
        ([b"data: 12", b"345\n", b"\n"], [], True),
        ([b"data: 12", b"3", b"4", b"5", b"6", b"7"], [], True),  # no end in sight: stops holding it
        ([b"data: 1234\r\n\r\n"], [b"data: 1234\n\n"], False),  # counted with LF line ends
        ([b"data: 1234567890123"], [], True),
    ],
)
def test_an_event_over_the_cap_ends_the_stream(chunks, events, too_large):
    assert outcome(chunks, 12) == (events, too_large)


@settings(max_examples=300, deadline=None)
@given(sse_streams(), st.lists(st.integers(min_value=0), max_size=10), st.integers(min_value=4, max_value=40))
def test_the_cap_holds_however_the_stream_is_cut(stream, points, cap):
    events, tail = reference(stream)
    expected_too_large = any(len(e) > cap for e in events) or len(tail) > cap
    got, too_large = outcome(cuts(stream, points), cap)
    assert too_large == expected_too_large
    assert all(len(e) <= cap for e in got)
    assert got == events[: len(got)]
    if not too_large:
        assert got == events


# ---- linear work: count the bytes every search runs over, no clock ---------------------------------


def test_one_big_event_in_small_reads_is_searched_once():
    """An 8 MiB event in 1 KiB reads: every ``find``/``replace`` runs over a 1 KiB read, never over
    what is pending (which made the old splitter quadratic: 2.4 s for this event)."""
    size = 8 * 1024 * 1024
    stream = b"data: " + b"x" * size + b"\n\n"
    work = [0]

    def count(frame, what, fn):
        if what == "c_call" and getattr(fn, "__name__", "") in ("find", "replace"):
            owner = getattr(fn, "__self__", None)
            if isinstance(owner, (bytes, bytearray)):
                work[0] += len(owner)

    s = SSESplitter(max_event=16 * 1024 * 1024)
    got = []
    sys.setprofile(count)
    try:
        for i in range(0, len(stream), 1024):
            got += s.feed(stream[i : i + 1024])
            if work[0] > 2 * len(stream):
                break  # quadratic: stop before it takes minutes
    finally:
        sys.setprofile(None)
    assert work[0] <= 2 * len(stream)
    assert got == [stream]


def test_the_common_read_is_passed_through_uncopied():
    s = SSESplitter()
    chunk = bytes(E1)
    (out,) = s.feed(chunk)
    assert out is chunk


# ---- event helpers -------------------------------------------------------------------------------


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


@pytest.mark.parametrize(
    "chunk, expected",
    [
        (E1, True),
        (E1 + DONE, True),
        (b": keep-alive\n\n" + E1, True),
        (b"event: x\ndata: 1\n\n", True),
        (b"data:x\n\n", True),
        (DONE, False),
        (b"data:[DONE]\n\n", False),
        (b": keep-alive\n\n", False),
        (b": keep-alive\n\n" + DONE, False),
        (b"event: ping\nid: 3\nretry: 100\n\n", False),
        (b"data:\n\ndata:  \n\n", False),
        (b"", False),
    ],
)
def test_has_data(chunk, expected):
    assert has_data(chunk) is expected


def test_framing():
    assert data_event(b"{}") == b"data: {}\n\n"
    assert event_data(DONE) == b"[DONE]" and event_data(E1) != b"[DONE]"
    ev = error_event("boom", code="x")
    assert ev.startswith(b"data: {") and ev.endswith(b"\n\n")
    assert b'"error":{"message":"boom","type":"api_error","param":null,"code":"x"}' in ev
