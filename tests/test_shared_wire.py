"""gateway/shared/wire.py: names, snapshots and merges (tables), hostile messages (hypothesis)."""
from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.keypool import KeyState
from gateway.ratelimits import RateLimits
from gateway.shared import wire

MONO, WALL = 1000.0, 1_700_000_000.0  # the two clocks, read at the same instant


def key(**fields) -> KeyState:
    k = KeyState("k1", "csk-secret")
    for name, value in fields.items():
        setattr(k, name, value)
    return k


@pytest.mark.parametrize("name, parsed", [
    (wire.key_name("rest", "cerebras", "k1"), ("rest", "cerebras", "k1")),
    (wire.key_name("breaker", "zai", "key:with:colons"), ("breaker", "zai", "key:with:colons")),
    ("gw:nonsense:cerebras:k1", None),
    ("other:rest:cerebras:k1", None),
    ("gw:rest:cerebras", None),
])
def test_key_names_round_trip(name, parsed):
    assert wire.parse_key_name(name) == parsed


@pytest.mark.parametrize("name, parsed", [
    (wire.spend_name("c", 7, "day", 1_700_000_000.0), ("c", "7", "day", 1_700_000_000.0)),
    (wire.spend_name("p", "cerebras", "month", 1_698_796_800.0), ("p", "cerebras", "month", 1_698_796_800.0)),
    ("gw:spend:x:7:day:0", None),
    ("gw:spend:c:7:day:soon", None),
    ("gw:spend:c:7:day", None),
])
def test_spend_names_round_trip(name, parsed):
    assert wire.parse_spend_name(name) == parsed


@pytest.mark.parametrize("state, field, expected", [
    ({"cooldown_until": MONO + 30, "cooldown_reason": "tpm"}, "rest", ({"until": WALL + 30, "reason": "tpm"}, 30.0)),
    ({"cooldown_until": MONO - 1, "cooldown_reason": "tpm"}, "rest", None),  # over: nothing to say
    ({"disabled_reason": "401"}, "disabled", ({"reason": "401"}, wire.DISABLED_TTL)),
    ({}, "disabled", None),
    ({}, "breaker", None),  # closed
    ({}, "limits", None),  # never reported
    ({"limits": RateLimits(60000, 5, 30.0), "limits_at": MONO - 2}, "limits",
     ({"at": WALL - 2, "l": [60000, 5, 30.0, None, None, None]}, wire.LIMITS_TTL)),
])
def test_snapshots(state, field, expected):
    assert wire.snapshot(key(**state), field, MONO, WALL) == expected


def test_a_breaker_snapshot_carries_its_opening():
    k = key()
    k.breaker.opens, k.breaker.open_until, k.breaker.errors, k.breaker.reason = 2, MONO + 10, 4, "4 errors"
    assert wire.snapshot(k, "breaker", MONO, WALL) == (
        {"until": WALL + 10, "opens": 2, "errors": 4, "reason": "4 errors"}, 10.0)


@pytest.mark.parametrize("state, field, value, changed, after", [
    # a longer rest is taken, on the local clock
    ({}, "rest", {"until": WALL + 30, "reason": "tpm"}, True, {"cooldown_until": MONO + 30, "cooldown_reason": "tpm"}),
    # a shorter one never shortens a longer local rest
    ({"cooldown_until": MONO + 60, "cooldown_reason": "day"}, "rest", {"until": WALL + 30, "reason": "tpm"}, False,
     {"cooldown_until": MONO + 60, "cooldown_reason": "day"}),
    # one already over changes nothing
    ({}, "rest", {"until": WALL - 1, "reason": "tpm"}, False, {"cooldown_until": 0.0}),
    ({}, "disabled", {"reason": "upstream answered 401"}, True, {"disabled_reason": "upstream answered 401"}),
    ({"disabled_reason": "mine"}, "disabled", {"reason": "theirs"}, False, {"disabled_reason": "mine"}),
    ({"limits_at": MONO - 5}, "limits", {"at": WALL - 1, "l": [1, 2, 3, 4, 5, 6]}, True,
     {"limits": RateLimits(1, 2, 3, 4, 5, 6), "limits_at": MONO - 1}),
    ({"limits_at": MONO - 1}, "limits", {"at": WALL - 5, "l": [1, 2, 3, 4, 5, 6]}, False, {"limits_at": MONO - 1}),
])
def test_merges_only_make_state_stricter(state, field, value, changed, after):
    k = key(**state)
    assert wire.merge(k, field, value, MONO, WALL) is changed
    for name, expected in after.items():
        assert getattr(k, name) == pytest.approx(expected) if isinstance(expected, float) else expected


def test_a_breaker_merge_opens_it_and_keeps_the_probe():
    k = key()
    k.breaker.probe = 9
    assert wire.merge(k, "breaker", {"until": WALL + 5, "opens": 1, "errors": 3, "reason": "3 errors"}, MONO, WALL)
    assert k.breaker.state(MONO).value == "open" and k.breaker.probe == 9
    assert not wire.merge(k, "breaker", {"until": WALL + 1, "opens": 1, "errors": 3}, MONO, WALL)  # earlier


@pytest.mark.parametrize("field, value", [
    ("rest", {}), ("rest", {"until": "soon"}), ("breaker", {"until": WALL + 5}), ("limits", {"at": WALL, "l": [1]}),
    ("limits", {"at": WALL, "l": "x"}), ("nonsense", {}), ("rest", {"until": 1e400}),
    ("breaker", {"until": WALL + 5, "opens": "many"}),
])
def test_malformed_values_raise_for_the_caller_to_drop(field, value):
    with pytest.raises((KeyError, TypeError, ValueError, OverflowError)):
        wire.merge(key(), field, value, MONO, WALL)


def test_messages_round_trip():
    raw = wire.key_message("me", "rest", "cerebras", "k1", {"until": WALL, "reason": "x"})
    assert wire.parse_message(raw) == {"o": "me", "f": "rest", "p": "cerebras", "k": "k1",
                                       "v": {"until": WALL, "reason": "x"}}
    assert wire.parse_message(wire.spend_message("me", "gw:spend:c:1:day:0", 0.5, 10))["usd"] == 0.5


JSON = st.recursive(st.none() | st.booleans() | st.floats(allow_nan=False) | st.text()
                    | st.integers(-(2**63), 2**63 - 1),
                    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=20)
OURS = st.fixed_dictionaries({"o": st.text(), "f": st.sampled_from([*wire.KEY_FIELDS, wire.SPEND, "x"])},
                             optional={"p": JSON, "k": JSON, "v": JSON, "n": JSON, "usd": JSON})


@given(st.one_of(st.binary(), st.text(), JSON.map(orjson.dumps), OURS.map(orjson.dumps)))
def test_hostile_messages_parse_to_none_or_a_well_shaped_message(raw):
    msg = wire.parse_message(raw)
    if msg is None:
        return
    assert isinstance(msg["o"], str)
    if msg["f"] == wire.SPEND:
        assert isinstance(msg["n"], str)
    else:
        assert msg["f"] in wire.KEY_FIELDS and isinstance(msg["v"], dict)


def test_window_additions_keep_only_well_formed_items():
    msg = wire.parse_message(wire.window_message("me", [("requests", 1, 1.0), ("tokens", 2, 900.0)]))
    assert wire.window_adds(msg) == [("requests", 1, 1.0), ("tokens", 2, 900.0)]
    hostile = {"o": "x", "f": "window", "w": [["requests", 1, -1], ["tokens", "2", 5], ["bytes", 1, 1],
                                             ["requests", True, 1], ["tokens", 3, True], [1, 2], "x",
                                             ["tokens", 4, 1e308 * 10], ["requests", 5, 2]]}
    assert wire.window_adds(wire.parse_message(orjson.dumps(hostile))) == [("requests", 5, 2.0)]
    assert wire.parse_message(b'{"o": "x", "f": "window", "w": {}}') is None
