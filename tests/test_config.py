from pathlib import Path

import pytest

from gateway.config import ConfigError, Settings, parse_keys
from gateway.strategy.settings import MODEL_ALIASES

BASE = {"CEREBRAS_API_KEYS": '{"main": "csk-aaaa", "spare": "csk-bbbb"}'}


def test_defaults():
    s = Settings.from_env(BASE)
    assert (s.host, s.port, s.enable_incoming_auth) == ("127.0.0.1", 18080, True)
    assert s.incoming_key_db == Path("./data/incoming_keys.db")
    assert s.log_dir == Path("./logs")
    (cerebras,) = s.providers
    assert cerebras.base_url == "https://api.cerebras.ai/v1"
    assert cerebras.chat_url == "https://api.cerebras.ai/v1/chat/completions"
    assert [k.name for k in cerebras.keys] == ["main", "spare"]
    assert cerebras.max_completion_tokens == 16384
    assert cerebras.cooldown == 60.0
    assert s.max_key_wait == 30.0


@pytest.mark.parametrize(
    "raw, names",
    [
        ('{"a": "x1", "b": "x2"}', ["a", "b"]),
        ("x1, x2 ,x3", ["key1", "key2", "key3"]),
        ("x1", ["key1"]),
        ("", []),
        ("  ", []),
    ],
)
def test_parse_keys(raw, names):
    keys = parse_keys("V", raw)
    assert [k.name for k in keys] == names
    assert all(k.secret.reveal().startswith("x") for k in keys)


def test_secrets_do_not_print():
    (key,) = parse_keys("V", '{"a": "csk-topsecret"}')
    assert "topsecret" not in repr(key) and "topsecret" not in str(key.secret)
    assert key.secret.reveal() == "csk-topsecret"


@pytest.mark.parametrize(
    "env, var",
    [
        ({"PORT": "http"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"ENABLE_INCOMING_AUTH": "maybe"}, "ENABLE_INCOMING_AUTH"),
        ({"CEREBRAS_API_KEYS": "{not json"}, "CEREBRAS_API_KEYS"),
        ({"CEREBRAS_API_KEYS": '{"a": ""}'}, "CEREBRAS_API_KEYS"),
        ({"CEREBRAS_API_KEYS": '{"a": 5}'}, "CEREBRAS_API_KEYS"),
        ({"CEREBRAS_API_KEYS": "k,k"}, "CEREBRAS_API_KEYS"),
        ({"CEREBRAS_BASE_URL": "api.cerebras.ai"}, "CEREBRAS_BASE_URL"),
        ({"CEREBRAS_BASE_URL": "https://"}, "CEREBRAS_BASE_URL"),
        ({"CEREBRAS_BASE_URL": "https://api.cerebras.ai:99999/v1"}, "CEREBRAS_BASE_URL"),
        ({"SYNTHETIC_API_KEY": "syn-1", "SYNTHETIC_BASE_URL": "https://u:pw@api.synthetic.new/v1"},
         "SYNTHETIC_BASE_URL"),
        ({"CEREBRAS_API_KEYS": '{"a": "csk-one\\ninjected"}'}, "CEREBRAS_API_KEYS"),
        ({"CEREBRAS_API_KEYS": "csk-one,csk two"}, "CEREBRAS_API_KEYS"),
        ({"CEREBRAS_API_KEYS": "", "CEREBRAS_API_KEY": "csk-é"}, "CEREBRAS_API_KEY"),
        ({"LOCAL_BASE_URL": "http://127.0.0.1:8080/v1", "LOCAL_API_KEY": "local key"}, "LOCAL_API_KEY"),
        ({"MAX_KEY_WAIT": "-1"}, "MAX_KEY_WAIT"),
        ({"MAX_KEY_WAIT": "nan"}, "MAX_KEY_WAIT"),
        ({"CEREBRAS_COOLDOWN": "soon"}, "CEREBRAS_COOLDOWN"),
        ({"MAX_REQUEST_BYTES": "10"}, "MAX_REQUEST_BYTES"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"KEY_CACHE_REFRESH": "5"}, "KEY_CACHE_REFRESH"),
        ({"CEREBRAS_MAX_COMPLETION_TOKENS": "0"}, "CEREBRAS_MAX_COMPLETION_TOKENS"),
    ],
)
def test_bad_values_name_the_variable(env, var):
    with pytest.raises(ConfigError) as e:
        Settings.from_env({**BASE, **env})
    assert str(e.value).startswith(var)
    assert "pw@" not in str(e.value) and "injected" not in str(e.value)  # secrets are not echoed


def test_no_upstream_is_an_error():
    with pytest.raises(ConfigError, match="CEREBRAS_API_KEYS"):
        Settings.from_env({})


@pytest.mark.parametrize("raw, expected", [("1", True), ("yes", True), ("ON", True), ("0", False), ("off", False), ("", True)])
def test_booleans(raw, expected):
    assert Settings.from_env({**BASE, "ENABLE_INCOMING_AUTH": raw}).enable_incoming_auth is expected


def test_single_key_variable_and_trailing_slash():
    s = Settings.from_env({"CEREBRAS_API_KEY": "csk-x", "CEREBRAS_BASE_URL": "http://127.0.0.1:9/v1/"})
    assert [k.name for k in s.providers[0].keys] == ["key1"]
    assert s.providers[0].chat_url == "http://127.0.0.1:9/v1/chat/completions"


def test_model_passthrough():
    s = Settings.from_env({**BASE, "CEREBRAS_MODELS": "gpt-oss-120b, qwen-3"})
    p = s.providers[0]
    assert p.model_for("gpt-oss-120b") == "gpt-oss-120b"
    assert p.model_for("gpt-4o") == "zai-glm-4.7"
    assert p.model_for(None) == "zai-glm-4.7"
    # the providers' models, then the names that pick a routing strategy (gateway/strategy)
    assert s.public_models[:3] == ["zai-glm-4.7", "gpt-oss-120b", "qwen-3"]
    assert s.public_models[3:] == list(MODEL_ALIASES)


def test_empty_log_dir_means_stdout_only():
    assert Settings.from_env({**BASE, "LOG_DIR": ""}).log_dir is None


def test_read_timeouts_per_provider():
    s = Settings.from_env({**BASE, "UPSTREAM_READ_TIMEOUT": "90", "ZAI_API_KEY": "z", "ZAI_READ_TIMEOUT": "300",
                           "SYNTHETIC_API_KEY": "s", "LOCAL_BASE_URL": "http://127.0.0.1:8080/v1"})
    timeouts = {p.name: p.read_timeout for p in s.providers}
    assert timeouts == {"cerebras": 90.0, "synthetic": 90.0, "zai": 300.0, "local": 600.0}
