"""The local backend's settings: a GGUF path alone is a configuration; bad ones stop the gateway
at start with a message naming the variable."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gateway.config import LOCAL, MANAGED_LOCAL_URL, ConfigError, Settings


@pytest.fixture
def models(tmp_path, gguf_models) -> Path:
    root = tmp_path / "models"
    (root / "sub").mkdir(parents=True)
    shutil.copy(gguf_models["a"], root / "a.gguf")
    shutil.copy(gguf_models["b"], root / "sub" / "b.gguf")
    (root / "text.gguf").write_text("not a model")
    return root


def test_a_gguf_file_alone_is_a_configuration(gguf_models):
    s = Settings.from_env({"LOCAL_MODEL_PATH": str(gguf_models["a"])})
    (local,) = s.providers
    assert (local.name, local.base_url, local.model) == (LOCAL, MANAGED_LOCAL_URL, "a.gguf")
    assert s.local is not None
    assert (s.local.default_model, s.local.model_path, s.local.models_dir) == ("a.gguf", gguf_models["a"], None)
    assert (s.local.ctx_size, s.local.parallel, s.local.threads, s.local.gpu_layers) == (None, 1, 0, 0)
    assert (s.local.auto_switch, s.local.server_args, s.local.slot_dir) == (False, (), Path("./data/local-slots"))
    assert [m for m in s.public_models if not m.startswith("glm-gateway/")] == ["a.gguf"]  # and the strategy aliases


def test_a_folder_and_its_default(models):
    s = Settings.from_env({"LOCAL_MODELS_DIR": str(models), "LOCAL_MODEL": "sub/b", "LOCAL_CTX_SIZE": "0",
                           "LOCAL_PARALLEL": "4", "LOCAL_THREADS": "8", "LOCAL_GPU_LAYERS": "-1",
                           "LOCAL_SERVER_ARGS": "--flash-attn on --cache-type-k q8_0 --jinja",
                           "LOCAL_AUTO_SWITCH": "yes", "LOCAL_SLOT_DIR": "", "LOCAL_START_TIMEOUT": "30"})
    assert s.local is not None
    assert s.local.default_model == "sub/b.gguf" and s.local.models_dir == models
    assert (s.local.ctx_size, s.local.parallel, s.local.threads, s.local.gpu_layers) == (0, 4, 8, -1)
    assert s.local.server_args == ("--flash-attn", "on", "--cache-type-k", "q8_0", "--jinja")
    assert s.local.auto_switch is True and s.local.slot_dir is None and s.local.start_timeout == 30


def test_without_local_model_the_first_file_is_loaded(models):
    s = Settings.from_env({"LOCAL_MODELS_DIR": str(models)})
    assert s.local is not None and s.local.default_model == "a.gguf"


def test_local_first_puts_local_before_the_cloud(gguf_models):
    base = {"LOCAL_MODEL_PATH": str(gguf_models["a"]), "CEREBRAS_API_KEYS": "csk-a", "ZAI_API_KEY": "z"}
    assert [p.name for p in Settings.from_env(base).providers] == ["cerebras", "zai", "local"]
    assert [p.name for p in Settings.from_env({**base, "LOCAL_FIRST": "true"}).providers] == ["local", "cerebras",
                                                                                              "zai"]


def test_local_base_url_keeps_working():
    s = Settings.from_env({"LOCAL_BASE_URL": "http://127.0.0.1:8080/v1"})
    (local,) = s.providers
    assert (local.base_url, local.model, s.local) == ("http://127.0.0.1:8080/v1", "glm-local", None)


@pytest.mark.parametrize(
    "env, var, words",
    [
        ({"LOCAL_MODEL_PATH": "{tmp}/missing.gguf"}, "LOCAL_MODEL_PATH", "no file at"),
        ({"LOCAL_MODEL_PATH": "{models}"}, "LOCAL_MODEL_PATH", "for a folder of models use LOCAL_MODELS_DIR"),
        ({"LOCAL_MODEL_PATH": "{models}/text.gguf"}, "LOCAL_MODEL_PATH", "is not a GGUF model file"),
        ({"LOCAL_MODELS_DIR": "{tmp}/nowhere"}, "LOCAL_MODELS_DIR", "is not a folder"),
        ({"LOCAL_MODELS_DIR": "{tmp}/empty"}, "LOCAL_MODELS_DIR", "no .gguf files"),
        ({"LOCAL_MODELS_DIR": "{models}", "LOCAL_MODEL": "c.gguf"}, "LOCAL_MODEL", "it has a.gguf, sub/b.gguf"),
        ({"LOCAL_MODELS_DIR": "{models}", "LOCAL_MODEL": "text.gguf"}, "LOCAL_MODEL", "is not a GGUF model file"),
        ({"LOCAL_MODELS_DIR": "{models}", "LOCAL_MODEL_PATH": "{models}/a.gguf"}, "LOCAL_MODEL_PATH",
         "not both"),
        ({"LOCAL_MODEL_PATH": "{models}/a.gguf", "LOCAL_BASE_URL": "http://127.0.0.1:8080/v1"}, "LOCAL_BASE_URL",
         "not both"),
        ({"LOCAL_MODEL_PATH": "{models}/a.gguf", "LOCAL_SERVER_ARGS": "--ctx-size 8192"}, "LOCAL_SERVER_ARGS",
         "use LOCAL_CTX_SIZE"),
        ({"LOCAL_MODEL_PATH": "{models}/a.gguf", "LOCAL_SERVER_ARGS": "--nonsense"}, "LOCAL_SERVER_ARGS",
         "not a supported llama-server flag"),
        ({"LOCAL_MODEL_PATH": "{models}/a.gguf", "LOCAL_SERVER_ARGS": "--chat-template 'unclosed"},
         "LOCAL_SERVER_ARGS", "quotation"),
        ({"LOCAL_MODEL_PATH": "{models}/a.gguf", "LOCAL_CTX_SIZE": "-1"}, "LOCAL_CTX_SIZE", "at least 0"),
        ({"LOCAL_MODEL_PATH": "{models}/a.gguf", "LOCAL_PARALLEL": "0"}, "LOCAL_PARALLEL", "at least 1"),
        ({"LOCAL_MODEL_PATH": "{models}/a.gguf", "LOCAL_GPU_LAYERS": "all"}, "LOCAL_GPU_LAYERS", "an integer"),
        ({"LOCAL_MODEL_PATH": "{models}/a.gguf", "LOCAL_AUTO_SWITCH": "maybe"}, "LOCAL_AUTO_SWITCH", "true or false"),
        ({"LOCAL_MODEL_PATH": "{models}/a.gguf", "LOCAL_FIRST": "2"}, "LOCAL_FIRST", "true or false"),
        ({"LOCAL_MODEL_PATH": "{models}/a.gguf", "LOCAL_START_TIMEOUT": "0"}, "LOCAL_START_TIMEOUT", "at least 1"),
    ],
)
def test_bad_settings_name_the_variable(tmp_path, models, env, var, words):
    (tmp_path / "empty").mkdir()
    filled = {k: v.format(tmp=tmp_path, models=models) for k, v in env.items()}
    with pytest.raises(ConfigError) as e:
        Settings.from_env(filled)
    assert var in str(e.value) and words in str(e.value), str(e.value)


def test_no_upstream_names_the_local_options():
    with pytest.raises(ConfigError, match="LOCAL_MODEL_PATH / LOCAL_MODELS_DIR"):
        Settings.from_env({})
