"""``LOCAL_SERVER_ARGS``: llama-server's own flags, for the bundled llama.cpp server.

The xllamacpp wheel runs llama.cpp's server from a parameter object, not a command line, so the
flags users know from ``llama-server --help`` are mapped here to that object's fields. Pure (no
xllamacpp import): the configuration checks ``LOCAL_SERVER_ARGS`` at start with :func:`parse`,
and the child process (gateway/local/child.py) applies the result. Flags the gateway sets itself
(model, port, context size...) are refused with the setting to use instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["int", "float", "str", "on", "off", "choice", "floats"]


@dataclass(frozen=True)
class Flag:
    field: str  # the CommonParams attribute, dotted for nested ones ("mmproj.path")
    kind: Kind  # "on"/"off": a switch that sets the field True/False, taking no value
    enum: str = ""  # for "choice": the xllamacpp enum class
    choices: tuple[tuple[str, str], ...] = ()  # value -> enum member


_FA = (("on", "LLAMA_FLASH_ATTN_TYPE_ENABLED"), ("off", "LLAMA_FLASH_ATTN_TYPE_DISABLED"),
       ("auto", "LLAMA_FLASH_ATTN_TYPE_AUTO"))
_CACHE = tuple((t.lower(), f"GGML_TYPE_{t}") for t in ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "IQ4_NL",
                                                       "Q5_0", "Q5_1"))
_ROPE = (("none", "LLAMA_ROPE_SCALING_TYPE_NONE"), ("linear", "LLAMA_ROPE_SCALING_TYPE_LINEAR"),
         ("yarn", "LLAMA_ROPE_SCALING_TYPE_YARN"))
_SPLIT = (("none", "LLAMA_SPLIT_MODE_NONE"), ("layer", "LLAMA_SPLIT_MODE_LAYER"), ("row", "LLAMA_SPLIT_MODE_ROW"))
_REASONING = (("none", "COMMON_REASONING_FORMAT_NONE"), ("auto", "COMMON_REASONING_FORMAT_AUTO"),
              ("deepseek", "COMMON_REASONING_FORMAT_DEEPSEEK"),
              ("deepseek-legacy", "COMMON_REASONING_FORMAT_DEEPSEEK_LEGACY"))

FLAGS: dict[str, Flag] = {
    "--flash-attn": Flag("flash_attn_type", "choice", "llama_flash_attn_type", _FA),
    "--cache-type-k": Flag("cache_type_k", "choice", "ggml_type", _CACHE),
    "--cache-type-v": Flag("cache_type_v", "choice", "ggml_type", _CACHE),
    "--batch-size": Flag("n_batch", "int"),
    "--ubatch-size": Flag("n_ubatch", "int"),
    "--threads-batch": Flag("cpuparams_batch.n_threads", "int"),
    "--threads-http": Flag("n_threads_http", "int"),
    "--rope-scaling": Flag("rope_scaling_type", "choice", "llama_rope_scaling_type", _ROPE),
    "--rope-freq-base": Flag("rope_freq_base", "float"),
    "--rope-freq-scale": Flag("rope_freq_scale", "float"),
    "--yarn-orig-ctx": Flag("yarn_orig_ctx", "int"),
    "--split-mode": Flag("split_mode", "choice", "llama_split_mode", _SPLIT),
    "--tensor-split": Flag("tensor_split", "floats"),
    "--main-gpu": Flag("main_gpu", "int"),
    "--cont-batching": Flag("cont_batching", "on"),
    "--no-cont-batching": Flag("cont_batching", "off"),
    "--cache-reuse": Flag("n_cache_reuse", "int"),
    "--cache-ram": Flag("cache_ram_mib", "int"),
    "--chat-template": Flag("chat_template", "str"),
    "--jinja": Flag("use_jinja", "on"),
    "--no-jinja": Flag("use_jinja", "off"),
    "--reasoning-format": Flag("reasoning_format", "choice", "common_reasoning_format", _REASONING),
    "--keep": Flag("n_keep", "int"),
    "--swa-full": Flag("swa_full", "on"),
    "--kv-unified": Flag("kv_unified", "on"),
    "--no-kv-offload": Flag("no_kv_offload", "on"),
    "--context-shift": Flag("ctx_shift", "on"),
    "--no-context-shift": Flag("ctx_shift", "off"),
    "--mmproj": Flag("mmproj.path", "str"),
    "--slot-prompt-similarity": Flag("slot_prompt_similarity", "float"),
    "--verbosity": Flag("verbosity", "int"),
    "--metrics": Flag("endpoint_metrics", "on"),
    "--no-warmup": Flag("warmup", "off"),
}
ALIASES = {
    "-fa": "--flash-attn", "-ctk": "--cache-type-k", "-ctv": "--cache-type-v", "-b": "--batch-size",
    "-ub": "--ubatch-size", "-tb": "--threads-batch", "-sm": "--split-mode", "-ts": "--tensor-split",
    "-mg": "--main-gpu", "-cb": "--cont-batching", "-nocb": "--no-cont-batching", "-kvu": "--kv-unified",
    "-nkvo": "--no-kv-offload", "-lv": "--verbosity", "-sps": "--slot-prompt-similarity", "-mm": "--mmproj",
}
# set by the gateway from its own settings (or needed by it): refused, naming what to use instead
MANAGED = {
    "-m": "use LOCAL_MODEL_PATH or LOCAL_MODEL", "--model": "use LOCAL_MODEL_PATH or LOCAL_MODEL",
    "--host": "it listens on loopback only", "--port": "a free loopback port is chosen",
    "-c": "use LOCAL_CTX_SIZE", "--ctx-size": "use LOCAL_CTX_SIZE",
    "-np": "use LOCAL_PARALLEL", "--parallel": "use LOCAL_PARALLEL",
    "-t": "use LOCAL_THREADS", "--threads": "use LOCAL_THREADS",
    "-ngl": "use LOCAL_GPU_LAYERS", "--n-gpu-layers": "use LOCAL_GPU_LAYERS", "--gpu-layers": "use LOCAL_GPU_LAYERS",
    "--api-key": "each server gets a fresh key only the gateway knows", "--slot-save-path": "use LOCAL_SLOT_DIR",
    "-a": "the model's file name is its alias", "--alias": "the model's file name is its alias",
}

Value = int | float | str | bool | tuple[float, ...] | tuple[str, str]  # tuple[str, str]: (enum, member)


@dataclass(frozen=True)
class Setting:
    flag: str
    field: str
    value: Value


def parse(args: list[str] | tuple[str, ...]) -> list[Setting]:
    """The settings ``args`` make; ValueError naming the flag at fault (pure)."""
    out: list[Setting] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        name, eq, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        name = ALIASES.get(name, name)
        if name in MANAGED:
            raise ValueError(f"{name} is set by the gateway ({MANAGED[name]})")
        flag = FLAGS.get(name)
        if flag is None:
            raise ValueError(f"{arg!r} is not a supported llama-server flag; supported: {', '.join(sorted(FLAGS))}")
        if flag.kind in ("on", "off"):
            if eq:
                raise ValueError(f"{name} takes no value")
            out.append(Setting(name, flag.field, flag.kind == "on"))
            continue
        if eq:
            raw = inline
        elif i < len(args):
            raw = args[i]
            i += 1
        else:
            raise ValueError(f"{name} needs a value")
        out.append(Setting(name, flag.field, _value(name, flag, raw)))
    return out


def _value(name: str, flag: Flag, raw: str) -> Value:
    try:
        if flag.kind == "int":
            return int(raw)
        if flag.kind == "float":
            return float(raw)
        if flag.kind == "floats":
            return tuple(float(x) for x in raw.split(","))
    except ValueError:
        raise ValueError(f"{name} needs {'an integer' if flag.kind == 'int' else 'a number'}, got {raw!r}") from None
    if flag.kind == "choice":
        member = dict(flag.choices).get(raw.lower())
        if member is None:
            raise ValueError(f"{name} must be one of {', '.join(c for c, _ in flag.choices)}, got {raw!r}")
        return (flag.enum, member)
    return raw


def rope_scaled(settings: list[Setting]) -> bool:
    """Whether the flags stretch the model's context (so a context past the trained one is meant)."""
    return any(
        s.field in ("rope_freq_scale", "yarn_orig_ctx")
        or (s.field == "rope_scaling_type" and s.value != ("llama_rope_scaling_type", "LLAMA_ROPE_SCALING_TYPE_NONE"))
        for s in settings
    )
