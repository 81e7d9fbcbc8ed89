"""Prices: the default table, the cost and savings arithmetic, and PRICES_FILE (JSON or TOML)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import ConfigError, Settings
from gateway.context import Usage
from gateway.usage.prices import (
    DEFAULT_PRICES,
    Price,
    PriceFileError,
    PriceTable,
    cost,
    default_prices,
    load_prices,
    parse_prices,
    saved,
)

PROVIDERS = frozenset({"cerebras", "synthetic", "zai", "local"})


@pytest.mark.parametrize(
    "provider, model, expected",
    [
        ("cerebras", "zai-glm-4.7", Price(2.25, 2.75)),
        ("zai", "glm-4.7", Price(0.60, 2.20, 0.11)),
        ("synthetic", "hf:zai-org/GLM-4.7", Price(0.55, 2.19)),
        ("local", "glm-local", Price(0.0, 0.0)),  # any local model is free
        ("local", None, Price(0.0, 0.0)),
        ("cerebras", "llama-3.3-70b", None),  # no price: never silently 0
        ("zai", "glm-4.5", None),
        (None, "zai-glm-4.7", None),
        ("openai", "gpt-4o", None),
    ],
)
def test_default_lookup(provider, model, expected):
    assert default_prices().lookup(provider, model) == expected


@pytest.mark.parametrize(
    "usage, price, expected",
    [
        (Usage(1_000_000, 0), Price(2.25, 2.75), 2.25),
        (Usage(0, 1_000_000), Price(2.25, 2.75), 2.75),
        (Usage(1000, 500), Price(2.25, 2.75), (1000 * 2.25 + 500 * 2.75) / 1e6),
        # cached tokens are part of the prompt, billed at the cached price
        (Usage(1000, 100, cached_tokens=800), Price(0.60, 2.20, 0.11), (200 * 0.60 + 800 * 0.11 + 100 * 2.20) / 1e6),
        # no cached price: cached tokens cost the input price
        (Usage(1000, 100, cached_tokens=800), Price(0.55, 2.19), (1000 * 0.55 + 100 * 2.19) / 1e6),
        # reasoning is part of the completion tokens: not billed twice
        (Usage(10, 100, reasoning_tokens=80), Price(1.0, 2.0), (10 * 1.0 + 100 * 2.0) / 1e6),
        # a provider reporting more cached than prompt tokens: cached capped at the prompt
        (Usage(100, 0, cached_tokens=500), Price(1.0, 1.0, 0.5), 100 * 0.5 / 1e6),
        (Usage(0, 0), Price(2.25, 2.75), 0.0),
        (Usage(123, 456), Price(0.0, 0.0), 0.0),
    ],
)
def test_cost(usage, price, expected):
    assert cost(usage, price) == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize(
    "cost_usd, primary, expected",
    [
        (0.0, 0.01, 0.01),  # served by the free local model
        (0.002, 0.005, 0.003),
        (0.005, 0.005, 0.0),  # served by the primary itself
        (0.006, 0.005, -0.001),  # a dearer fallback: a negative saving, shown as it is
        (None, 0.005, None),  # not priced: no saving claimed
        (0.005, None, None),
    ],
)
def test_saved(cost_usd, primary, expected):
    result = saved(cost_usd, primary)
    assert result == (None if expected is None else pytest.approx(expected))


def test_json_file_overrides_and_extends_the_defaults(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text('{"cerebras": {"zai-glm-4.7": {"input": 3, "output": 4}, "qwen-3": {"input": 1, "output": 2}},'
                    ' "local": {"glm-local": {"input": 0.01, "output": 0.02}}}')
    table = load_prices(path, PROVIDERS)
    assert table.lookup("cerebras", "zai-glm-4.7") == Price(3.0, 4.0)
    assert table.lookup("cerebras", "qwen-3") == Price(1.0, 2.0)
    assert table.lookup("local", "glm-local") == Price(0.01, 0.02)
    assert table.lookup("local", "other") == Price(0.0, 0.0)  # the default "*" stays
    assert table.lookup("zai", "glm-4.7") == DEFAULT_PRICES[("zai", "glm-4.7")]


def test_toml_file(tmp_path):
    path = tmp_path / "prices.toml"
    path.write_text('[zai."glm-4.7"]\ninput = 0.5\noutput = 2.0\ncached_input = 0.1\n\n'
                    '[synthetic."*"]\ninput = 0.4\noutput = 1.5\n')
    table = load_prices(path, PROVIDERS)
    assert table.lookup("zai", "glm-4.7") == Price(0.5, 2.0, 0.1)
    assert table.lookup("synthetic", "hf:anything") == Price(0.4, 1.5)


@pytest.mark.parametrize(
    "text, toml, names",
    [
        ("{not json", False, ["not valid JSON"]),
        ("[x\n", True, ["not valid TOML"]),
        ("[1, 2]", False, ["object of providers"]),
        ('{"cerebas": {"m": {"input": 1, "output": 1}}}', False, ["unknown provider 'cerebas'"]),
        ('{"cerebras": 5}', False, ["cerebras must map model names"]),
        ('{"cerebras": {}}', False, ["cerebras must map model names"]),
        ('{"cerebras": {"m": 2.25}}', False, ["cerebras/m", "must be an object"]),
        ('{"cerebras": {"m": {"input": 1}}}', False, ["cerebras/m", "output is missing"]),
        ('{"cerebras": {"m": {"input": -1, "output": 1}}}', False, ["cerebras/m", "input must be a number"]),
        ('{"cerebras": {"m": {"input": "2.25", "output": 1}}}', False, ["input must be a number", "'2.25'"]),
        ('{"cerebras": {"m": {"input": true, "output": 1}}}', False, ["input must be a number"]),
        ('{"cerebras": {"m": {"input": 1, "output": 1, "cached": 0.1}}}', False, ["unknown field 'cached'"]),
        ('{"cerebras": {"m": {"input": 1e999, "output": 1}}}', False, ["input must be a number"]),
        ('[cerebras.m]\ninput = nan\noutput = 1\n', True, ["input must be a number"]),
    ],
)
def test_bad_files_name_the_file_the_entry_and_the_problem(text, toml, names):
    with pytest.raises(PriceFileError) as e:
        parse_prices(text, toml=toml, source="prices.x", providers=PROVIDERS)
    message = str(e.value)
    assert message.startswith("prices.x: ")
    for name in names:
        assert name in message


@settings(max_examples=300, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["cerebras", "zai", "local", "x", "input", "output", "cached_input", "*"]), inner, max_size=4),
    max_leaves=20,
))
def test_any_json_is_a_price_table_or_a_price_file_error(data):
    import json

    try:
        text = json.dumps(data)
    except ValueError:
        return
    try:
        table = parse_prices(text, toml=False, source="f", providers=PROVIDERS)
    except PriceFileError:
        return
    for price in table.values():  # what is accepted is usable
        assert price.input >= 0 and price.output >= 0 and price.cached >= 0


def test_settings_read_prices_file_and_stop_on_a_bad_one(tmp_path):
    good = tmp_path / "p.json"
    good.write_text('{"cerebras": {"zai-glm-4.7": {"input": 9, "output": 9}}}')
    s = Settings.from_env({"CEREBRAS_API_KEYS": "csk-a", "PRICES_FILE": str(good)})
    assert s.prices.lookup("cerebras", "zai-glm-4.7") == Price(9.0, 9.0)
    assert Settings.from_env({"CEREBRAS_API_KEYS": "csk-a"}).prices == PriceTable(DEFAULT_PRICES)
    bad = tmp_path / "bad.toml"
    bad.write_text('[zai."glm-4.7"]\ninput = 1\n')
    with pytest.raises(ConfigError, match=r"^PRICES_FILE: .*bad.toml: zai/glm-4.7: output is missing"):
        Settings.from_env({"CEREBRAS_API_KEYS": "csk-a", "PRICES_FILE": str(bad)})
    with pytest.raises(ConfigError, match=r"^PRICES_FILE: .*missing.json: cannot read it"):
        Settings.from_env({"CEREBRAS_API_KEYS": "csk-a", "PRICES_FILE": str(tmp_path / "missing.json")})
