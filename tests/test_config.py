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
        ({"CEREBRAS_BASE_URL": "https://api.cerebras.ai/v1?key=x"}, "CEREBRAS_BASE_URL"),
        ({"CEREBRAS_BASE_URL": "u:pw@api.cerebras.ai/v1"}, "CEREBRAS_BASE_URL"),
        ({"UPSTREAM_MAX_CONNECTIONS": "0"}, "UPSTREAM_MAX_CONNECTIONS"),
        ({"UPSTREAM_MAX_CONNECTIONS": "10", "UPSTREAM_MAX_CONNECTIONS_PER_HOST": "20"},
         "UPSTREAM_MAX_CONNECTIONS_PER_HOST"),
        ({"HTTPS_PROXY": "https://u:pw@proxy.corp:3128"}, "HTTPS_PROXY"),
        ({"https_proxy": "http://u:pw@proxy.corp:99999"}, "https_proxy"),
        ({"HTTP_PROXY": "http://u:pw@:3128"}, "HTTP_PROXY"),
        ({"HTTP_PROXY": "http://u:pw@proxy.corp:3128/path"}, "HTTP_PROXY"),
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


def test_connection_limits():
    s = Settings.from_env(BASE)
    assert (s.upstream_max_connections, s.upstream_max_connections_per_host) == (1000, 500)
    s = Settings.from_env({**BASE, "UPSTREAM_MAX_CONNECTIONS": "50"})
    assert (s.upstream_max_connections, s.upstream_max_connections_per_host) == (50, 50)


@pytest.mark.parametrize(
    "env, url, proxy",
    [
        ({}, "https://api.cerebras.ai/v1", None),
        ({"HTTPS_PROXY": "http://proxy.corp:3128"}, "https://api.cerebras.ai/v1", "http://proxy.corp:3128"),
        ({"HTTPS_PROXY": "proxy.corp:3128"}, "https://api.cerebras.ai/v1", "http://proxy.corp:3128"),
        ({"HTTPS_PROXY": "http://proxy.corp:3128"}, "http://127.0.0.1:8080/v1", None),  # by scheme
        ({"HTTP_PROXY": "http://proxy.corp:3128"}, "http://127.0.0.1:8080/v1", "http://proxy.corp:3128"),
        ({"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:2"}, "https://a.example/v1", "http://lower:2"),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "cerebras.ai"}, "https://api.cerebras.ai/v1", None),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": ".cerebras.ai"}, "https://api.cerebras.ai/v1", None),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "ai.cerebras"}, "https://api.cerebras.ai/v1", "http://p:1"),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "*"}, "https://api.cerebras.ai/v1", None),
        ({"HTTP_PROXY": "http://p:1", "no_proxy": "localhost, 127.0.0.1"}, "http://127.0.0.1:8080/v1", None),
        ({"HTTP_PROXY": "http://p:1", "NO_PROXY": "127.0.0.1:9999"}, "http://127.0.0.1:8080/v1", "http://p:1"),
    ],
)
def test_which_proxy_a_call_goes_through(env, url, proxy):
    chosen = Settings.from_env({**BASE, **env}).proxies.for_url(url)
    assert (chosen.url if chosen else None) == proxy


def test_proxy_credentials_are_kept_apart_and_hidden():
    s = Settings.from_env({**BASE, "HTTPS_PROXY": "http://me:s3cret-proxy@proxy.corp:3128"})
    p = s.proxies.https
    assert (p.url, p.login, p.password.reveal()) == ("http://proxy.corp:3128", "me", "s3cret-proxy")
    assert "s3cret-proxy" not in repr(s) and "s3cret-proxy" in s.secrets()  # redacted from logs
def test_budget_and_alert_settings():
    s = Settings.from_env(BASE)
    assert (s.provider_budgets, s.alert_thresholds, s.alert_webhook_url) == ({}, (50, 80, 100), None)
    url = "https://hooks.example.com/services/T0/B0/tok3n"
    s = Settings.from_env({**BASE, "CEREBRAS_MONTHLY_BUDGET_USD": "100", "ZAI_MONTHLY_BUDGET_USD": "0",
                           "ALERT_THRESHOLDS": "90, 25,90", "ALERT_WEBHOOK_URL": url})
    assert s.provider_budgets == {"cerebras": 100.0, "zai": 0.0}
    assert s.alert_thresholds == (25.0, 90.0)
    assert s.alert_webhook_url.reveal() == url and url not in repr(s)
    assert url in s.secrets()  # the log redactor hides it
    assert Settings.from_env({**BASE, "ALERT_THRESHOLDS": ""}).alert_thresholds == ()  # no alerts


@pytest.mark.parametrize(
    "env, says",
    [
        ({"CEREBRAS_MONTHLY_BUDGET_USD": "-5"}, "CEREBRAS_MONTHLY_BUDGET_USD must be at least 0"),
        ({"SYNTHETIC_MONTHLY_BUDGET_USD": "lots"}, "SYNTHETIC_MONTHLY_BUDGET_USD must be a number"),
        ({"ALERT_THRESHOLDS": "50,eighty"}, "ALERT_THRESHOLDS must be comma-separated percentages"),
        ({"ALERT_THRESHOLDS": "0,50"}, "ALERT_THRESHOLDS: each percentage must be above 0"),
        ({"ALERT_WEBHOOK_URL": "ftp://x.example/tok3n"}, "ALERT_WEBHOOK_URL must be an http:// or https:// URL"),
        ({"ALERT_WEBHOOK_URL": "https:///tok3n"}, "ALERT_WEBHOOK_URL must be an http:// or https:// URL"),
        ({"ALERT_WEBHOOK_TIMEOUT": "0"}, "ALERT_WEBHOOK_TIMEOUT must be at least 0.1"),
    ],
)
def test_bad_budget_and_alert_settings_name_the_variable(env, says):
    with pytest.raises(ConfigError) as e:
        Settings.from_env({**BASE, **env})
    assert says in str(e.value)
    assert "tok3n" not in str(e.value)  # a webhook URL's token is never echoed
def test_request_log_defaults():
    log = Settings.from_env(BASE).request_log
    assert log.enabled is False
    assert log.directory == Path("./logs/requests")
    assert (log.max_bytes, log.backups, log.retention_days, log.max_body_bytes) == (50 * 2**20, 10, 7.0, 2**20)


@pytest.mark.parametrize(("env", "directory"), [
    ({"LOG_DIR": "/var/log/gw"}, Path("/var/log/gw/requests")),
    ({"LOG_DIR": "/var/log/gw", "REQUEST_LOG_DIR": "/data/req"}, Path("/data/req")),
    ({"LOG_DIR": "", "REQUEST_LOG_DIR": "/data/req", "LOG_REQUESTS": "true"}, Path("/data/req")),
    ({"LOG_DIR": ""}, None),  # off: no directory needed
])
def test_request_log_directory(env, directory):
    assert Settings.from_env({**BASE, **env}).request_log.directory == directory


@pytest.mark.parametrize(("env", "message"), [
    ({"LOG_REQUESTS": "true", "LOG_DIR": ""}, "LOG_REQUESTS=true needs a directory: set REQUEST_LOG_DIR"),
    ({"LOG_REQUESTS": "maybe"}, "LOG_REQUESTS must be true or false"),
    ({"REQUEST_LOG_MAX_BYTES": "100"}, "REQUEST_LOG_MAX_BYTES must be at least 1024"),
    ({"REQUEST_LOG_BACKUPS": "-1"}, "REQUEST_LOG_BACKUPS must be at least 0"),
    ({"REQUEST_LOG_RETENTION_DAYS": "0"}, "REQUEST_LOG_RETENTION_DAYS must be at least"),
    ({"REQUEST_LOG_MAX_BODY_BYTES": "ten"}, "REQUEST_LOG_MAX_BODY_BYTES must be an integer"),
])
def test_request_log_settings_are_checked(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({**BASE, **env})
