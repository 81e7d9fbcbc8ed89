"""Settings, parsed and validated once at start from an environment mapping.

``Settings.from_env(os.environ)`` is the only place the environment is read. A bad value raises
``ConfigError`` whose message names the variable, the value's problem and what is expected.
"""
from __future__ import annotations

import dataclasses
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, TypeVar

from .cors import parse_origins
from .httpclient import Endpoint
from .local import flags as local_flags
from .local.gguf import has_magic
from .local.models import ModelFolder
from .secrets import Secret

T = TypeVar("T")

CEREBRAS = "cerebras"
SYNTHETIC = "synthetic"
ZAI = "zai"
LOCAL = "local"
LOCAL_READ_TIMEOUT = 600.0
# a managed local server's port is known only once it runs: its provider finds the URL per call
MANAGED_LOCAL_URL = "http://127.0.0.1:0/v1"


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class UpstreamKey:
    name: str
    secret: Secret


@dataclass(frozen=True)
class Timeouts:
    connect: float = 10.0
    read: float = 120.0  # longest silence between two bytes from the upstream
    total: float = 600.0


@dataclass(frozen=True)
class ProviderConfig:
    """One upstream: where it is, which keys it takes and how its model is named."""

    name: str
    base_url: str
    keys: tuple[UpstreamKey, ...]
    model: str
    passthrough_models: frozenset[str] = frozenset()
    max_completion_tokens: int | None = None
    cooldown: float = 60.0
    max_prompt_tokens: int | None = None  # larger prompts skip this provider
    dialect: str = "openai"  # which error mapper reads its answers
    read_timeout: float | None = None  # longest silence from it; None: UPSTREAM_READ_TIMEOUT

    def model_for(self, requested: object) -> str:
        """The model name this provider gets for a client's requested model."""
        if isinstance(requested, str) and requested in self.passthrough_models:
            return requested
        return self.model

    @property
    def chat_url(self) -> str:
        return self.base_url + "/chat/completions"


@dataclass(frozen=True)
class LocalSettings:
    """A llama.cpp server the gateway runs itself: ``LOCAL_MODEL_PATH`` (one GGUF file) or
    ``LOCAL_MODELS_DIR`` (a folder of them, ``LOCAL_MODEL`` the one loaded at start)."""

    default_model: str  # its name: the file's path relative to the folder (or the file's name)
    model_path: Path | None = None
    models_dir: Path | None = None
    ctx_size: int | None = None  # None: 4096, or the model's trained context if shorter; 0: the trained one
    parallel: int = 1  # slots: requests served at once (the context is split between them)
    threads: int = 0  # 0: llama.cpp's choice
    gpu_layers: int = 0  # layers offloaded to a GPU; -1 all
    server_args: tuple[str, ...] = ()  # further llama-server flags (gateway/local/flags.py)
    auto_switch: bool = False  # a request naming another GGUF of the folder switches to it
    slot_dir: Path | None = Path("./data/local-slots")  # warm prompt caches saved here
    start_timeout: float = 300.0  # seconds a model may take to load


@dataclass(frozen=True)
class Settings:
    providers: tuple[ProviderConfig, ...]
    host: str = "127.0.0.1"
    port: int = 18080
    enable_incoming_auth: bool = True
    incoming_key_db: Path = Path("./data/incoming_keys.db")
    log_dir: Path | None = Path("./logs")
    log_level: str = "INFO"
    log_file_max_bytes: int = 10 * 1024 * 1024
    log_file_backups: int = 5
    max_request_bytes: int = 20 * 1024 * 1024
    timeouts: Timeouts = field(default_factory=Timeouts)
    max_key_wait: float = 30.0
    fallback_on_cooldown: bool = True
    token_threshold: int = 120_000
    repair_tool_calls: bool = True
    key_cache_refresh: float = 0.25
    usage_flush_interval: float = 2.0
    metrics_public: bool = False  # /metrics without an admin key
    cors_origins: tuple[str, ...] = ()  # allowed browser origins; ("*",) for any; () for none
    local: LocalSettings | None = None  # the managed local server; None: none (or LOCAL_BASE_URL)

    @property
    def public_models(self) -> list[str]:
        seen: dict[str, None] = {}
        for p in self.providers:
            seen[p.model] = None
            for m in sorted(p.passthrough_models):
                seen[m] = None
        return list(seen)

    def secrets(self) -> list[str]:
        """Every upstream secret, for the log redactor."""
        return [k.secret.reveal() for p in self.providers for k in p.keys if k.secret]

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Settings":
        r = _Reader(env)
        timeouts = Timeouts(
            connect=r.number("UPSTREAM_CONNECT_TIMEOUT", 10.0, minimum=0.1),
            read=r.number("UPSTREAM_READ_TIMEOUT", 120.0, minimum=0.1),
            total=r.number("UPSTREAM_TIMEOUT", 600.0, minimum=0.1),
        )
        threshold = r.integer("TOKEN_THRESHOLD", 120_000, minimum=1)
        fallback_cooldown = r.number("FALLBACK_COOLDOWN", 30.0, minimum=0.0)
        read = timeouts.read
        candidates = (
            _cerebras(r, threshold, read),
            _fallback(r, SYNTHETIC, "https://api.synthetic.new/openai/v1", "hf:zai-org/GLM-4.7", fallback_cooldown,
                      read),
            _fallback(r, ZAI, "https://api.z.ai/api/coding/paas/v4", "glm-4.7", fallback_cooldown, read,
                      dialect="zai"),
        )
        local, managed = _local(r, fallback_cooldown)
        providers = tuple(p for p in candidates if p is not None)
        if local is not None:
            providers = (local, *providers) if r.boolean("LOCAL_FIRST", False) else (*providers, local)
        else:
            r.boolean("LOCAL_FIRST", False)
        if not providers:
            raise ConfigError(
                "no upstream is configured: set CEREBRAS_API_KEYS (a JSON object "
                '{"name": "key", ...} or a comma-separated list of keys), SYNTHETIC_API_KEY, '
                "ZAI_API_KEY, LOCAL_BASE_URL (a llama.cpp server you run), or LOCAL_MODEL_PATH / "
                "LOCAL_MODELS_DIR (GGUF models the gateway runs itself)"
            )
        log_dir = r.text("LOG_DIR", "./logs")
        settings = cls(
            providers=providers,
            host=r.text("HOST", "127.0.0.1"),
            port=r.integer("PORT", 18080, minimum=0, maximum=65535),
            enable_incoming_auth=r.boolean("ENABLE_INCOMING_AUTH", True),
            incoming_key_db=Path(r.text("INCOMING_KEY_DB", "./data/incoming_keys.db")),
            log_dir=Path(log_dir) if log_dir else None,
            log_level=r.choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")),
            log_file_max_bytes=r.integer("LOG_FILE_MAX_BYTES", 10 * 1024 * 1024, minimum=1024),
            log_file_backups=r.integer("LOG_FILE_BACKUPS", 5, minimum=0),
            max_request_bytes=r.integer("MAX_REQUEST_BYTES", 20 * 1024 * 1024, minimum=1024),
            timeouts=timeouts,
            max_key_wait=r.number("MAX_KEY_WAIT", 30.0, minimum=0.0),
            fallback_on_cooldown=r.boolean("FALLBACK_ON_COOLDOWN", True),
            token_threshold=threshold,
            repair_tool_calls=r.boolean("REPAIR_TOOL_CALLS", True),
            key_cache_refresh=r.number("KEY_CACHE_REFRESH", 0.25, minimum=0.01, maximum=1.0),
            usage_flush_interval=r.number("USAGE_FLUSH_INTERVAL", 2.0, minimum=0.05),
            metrics_public=r.boolean("METRICS_PUBLIC", False),
            cors_origins=r.origins("CORS_ORIGINS"),
            local=managed,
        )
        return settings


def _cerebras(r: "_Reader", threshold: int, read_timeout: float) -> ProviderConfig | None:
    keys = parse_keys("CEREBRAS_API_KEYS", r.text("CEREBRAS_API_KEYS", ""))
    single = r.text("CEREBRAS_API_KEY", "")
    if not keys and single:
        keys = (UpstreamKey("key1", Secret(_checked("CEREBRAS_API_KEY", single))),)
    base_url = r.url("CEREBRAS_BASE_URL", "https://api.cerebras.ai/v1")
    model = r.text("CEREBRAS_MODEL", "zai-glm-4.7") or "zai-glm-4.7"
    extra = r.text("CEREBRAS_MODELS", "")
    cap = r.integer("CEREBRAS_MAX_COMPLETION_TOKENS", 16384, minimum=1)
    cooldown = r.number("CEREBRAS_COOLDOWN", 60.0, minimum=0.0)
    read = r.number("CEREBRAS_READ_TIMEOUT", read_timeout, minimum=0.1)
    if not keys:
        return None
    return ProviderConfig(
        name=CEREBRAS,
        base_url=base_url,
        keys=keys,
        model=model,
        passthrough_models=frozenset({model, *(m.strip() for m in extra.split(",") if m.strip())}),
        max_completion_tokens=cap,
        cooldown=cooldown,
        max_prompt_tokens=threshold,
        read_timeout=read,
    )


def _fallback(
    r: "_Reader", name: str, base_url: str, model: str, cooldown: float, read_timeout: float, dialect: str = "openai"
) -> ProviderConfig | None:
    """Synthetic / Z.ai: ``{NAME}_API_KEY`` (one key, a list or a JSON object), base URL, model."""
    prefix = name.upper()
    keys = parse_keys(f"{prefix}_API_KEY", r.text(f"{prefix}_API_KEY", ""))
    url = r.url(f"{prefix}_BASE_URL", base_url)
    model = r.text(f"{prefix}_MODEL", model) or model
    read = r.number(f"{prefix}_READ_TIMEOUT", read_timeout, minimum=0.1)
    if not keys:
        return None
    return ProviderConfig(name=name, base_url=url, keys=keys, model=model, cooldown=cooldown, dialect=dialect,
                          read_timeout=read)


def _local(r: "_Reader", cooldown: float) -> tuple[ProviderConfig | None, LocalSettings | None]:
    """The local backend: a llama.cpp server you run (``LOCAL_BASE_URL``), or one the gateway runs
    on a GGUF file (``LOCAL_MODEL_PATH``) or a folder of them (``LOCAL_MODELS_DIR``); or none."""
    url = r.text("LOCAL_BASE_URL", "")
    path = r.text("LOCAL_MODEL_PATH", "")
    folder = r.text("LOCAL_MODELS_DIR", "")
    model = r.text("LOCAL_MODEL", "")
    local_key = r.text("LOCAL_API_KEY", "")
    # a CPU llama.cpp may be silent for minutes while it reads a long prompt
    read = r.number("LOCAL_READ_TIMEOUT", LOCAL_READ_TIMEOUT, minimum=0.1)
    managed = _managed(r, path, folder, model)
    if url and managed is not None:
        raise ConfigError("set LOCAL_BASE_URL (a llama.cpp server you run) or LOCAL_MODEL_PATH / LOCAL_MODELS_DIR "
                          "(GGUF models the gateway runs), not both")
    if managed is not None:
        return ProviderConfig(name=LOCAL, base_url=MANAGED_LOCAL_URL, keys=(UpstreamKey("local", Secret("")),),
                              model=managed.default_model, cooldown=cooldown, read_timeout=read), managed
    if not url:
        return None, None
    url = r.url("LOCAL_BASE_URL", "")
    key = UpstreamKey("local", Secret(_checked("LOCAL_API_KEY", local_key) if local_key else ""))
    return ProviderConfig(name=LOCAL, base_url=url, keys=(key,), model=model or "glm-local", cooldown=cooldown,
                          read_timeout=read), None


def _managed(r: "_Reader", path: str, folder: str, model: str) -> LocalSettings | None:
    """``LOCAL_MODEL_PATH`` / ``LOCAL_MODELS_DIR`` and the server's settings, checked now: a path
    that is not there, not a GGUF file or an unknown ``LOCAL_MODEL`` stop the gateway at start."""
    slot_dir = r.text("LOCAL_SLOT_DIR", "./data/local-slots")
    tuning = LocalSettings(
        default_model="",
        ctx_size=r.integer("LOCAL_CTX_SIZE", 0, minimum=0, maximum=1 << 24) if r.text("LOCAL_CTX_SIZE", "") else None,
        parallel=r.integer("LOCAL_PARALLEL", 1, minimum=1, maximum=256),
        threads=r.integer("LOCAL_THREADS", 0, minimum=0, maximum=1024),
        gpu_layers=r.integer("LOCAL_GPU_LAYERS", 0, minimum=-1),
        server_args=_server_args(r.text("LOCAL_SERVER_ARGS", "")),
        auto_switch=r.boolean("LOCAL_AUTO_SWITCH", False),
        slot_dir=Path(slot_dir) if slot_dir else None,  # empty: warm-ups are not kept on disk
        start_timeout=r.number("LOCAL_START_TIMEOUT", 300.0, minimum=1.0),
    )
    if path and folder:
        raise ConfigError("set LOCAL_MODEL_PATH (one GGUF file) or LOCAL_MODELS_DIR (a folder of them), not both")
    if path:
        file = Path(path).expanduser()
        if file.is_dir():
            raise ConfigError(f"LOCAL_MODEL_PATH: {path} is a folder; for a folder of models use LOCAL_MODELS_DIR")
        _check_gguf("LOCAL_MODEL_PATH", file)
        return dataclasses.replace(tuning, default_model=file.name, model_path=file)
    if not folder:
        return None
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ConfigError(f"LOCAL_MODELS_DIR: {folder} is not a folder")
    try:
        names = [name for name, _, _ in ModelFolder(root=root).files()]
    except OSError as e:
        raise ConfigError(f"LOCAL_MODELS_DIR: cannot list {folder}: {e.strerror or e}") from None
    if not names:
        raise ConfigError(f"LOCAL_MODELS_DIR: no .gguf files in {folder}")
    chosen = model or names[0]
    if chosen not in names and chosen + ".gguf" in names:
        chosen += ".gguf"
    if chosen not in names:
        shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
        raise ConfigError(f"LOCAL_MODEL: {model!r} is not in LOCAL_MODELS_DIR ({folder}); it has {shown}")
    _check_gguf("LOCAL_MODEL" if model else "LOCAL_MODELS_DIR", root / chosen)
    return dataclasses.replace(tuning, default_model=chosen, models_dir=root)


def _check_gguf(var: str, file: Path) -> None:
    try:
        magic = has_magic(file)
    except FileNotFoundError:
        raise ConfigError(f"{var}: no file at {file}") from None
    except OSError as e:
        raise ConfigError(f"{var}: cannot read {file}: {e.strerror or e}") from None
    if not magic:
        raise ConfigError(f"{var}: {file} is not a GGUF model file (it does not start with 'GGUF')")


def _server_args(raw: str) -> tuple[str, ...]:
    try:
        args = tuple(shlex.split(raw))
        local_flags.parse(args)
    except ValueError as e:
        raise ConfigError(f"LOCAL_SERVER_ARGS: {e}") from None
    return args


def parse_keys(var: str, raw: str) -> tuple[UpstreamKey, ...]:
    """``{"name": "secret", ...}`` or ``secret1,secret2`` (named key1, key2, ...)."""
    raw = raw.strip()
    if not raw:
        return ()
    if raw.startswith("{"):
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{var} is not valid JSON ({e.msg} at position {e.pos})") from None
        if not isinstance(obj, dict) or not obj:
            raise ConfigError(f'{var} must be a non-empty JSON object {{"name": "key", ...}}')
        keys = []
        for name, secret in obj.items():
            if not isinstance(secret, str) or not secret.strip():
                raise ConfigError(f"{var}: the key named {name!r} must be a non-empty string")
            if not _sendable(secret.strip()):
                raise ConfigError(f"{var}: the key named {name!r} has spaces or control characters inside")
            if not str(name).strip():
                raise ConfigError(f"{var}: every key needs a non-empty name")
            keys.append(UpstreamKey(str(name).strip(), Secret(secret.strip())))
        return tuple(keys)
    secrets = [s.strip() for s in raw.split(",") if s.strip()]
    if len(set(secrets)) != len(secrets):
        raise ConfigError(f"{var} lists the same key twice")
    for i, s in enumerate(secrets, 1):
        if not _sendable(s):
            raise ConfigError(f"{var}: key {i} has spaces or control characters inside")
    return tuple(UpstreamKey(f"key{i}", Secret(s)) for i, s in enumerate(secrets, 1))


def _sendable(secret: str) -> bool:
    """Whether a key can go in an Authorization header as it is: visible ASCII, no spaces."""
    return secret.isascii() and secret.isprintable() and not any(c.isspace() for c in secret)


def _checked(var: str, secret: str) -> str:
    if not _sendable(secret):
        raise ConfigError(f"{var} has spaces or control characters inside")
    return secret


class _Reader:
    """Typed, validated access to an environment mapping; errors name the variable."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def text(self, var: str, default: str) -> str:
        value = self.env.get(var)
        return default if value is None else value.strip()

    def _parsed(self, var: str, default: T, parse: Callable[[str], T], expected: str) -> T:
        raw = self.env.get(var)
        if raw is None or raw.strip() == "":
            return default
        try:
            return parse(raw.strip())
        except (ValueError, TypeError):
            raise ConfigError(f"{var} must be {expected}, got {raw.strip()!r}") from None

    def integer(self, var: str, default: int, minimum: int | None = None, maximum: int | None = None) -> int:
        value = self._parsed(var, default, int, "an integer")
        return _bounded(var, value, minimum, maximum)

    def number(self, var: str, default: float, minimum: float | None = None, maximum: float | None = None) -> float:
        value = self._parsed(var, default, float, "a number")
        if value != value:  # NaN
            raise ConfigError(f"{var} must be a number, got 'nan'")
        return _bounded(var, value, minimum, maximum)

    def boolean(self, var: str, default: bool) -> bool:
        def parse(raw: str) -> bool:
            low = raw.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)

        return self._parsed(var, default, parse, "true or false (1/0, yes/no, on/off)")

    def choice(self, var: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(var, default).upper() or default
        if value not in choices:
            raise ConfigError(f"{var} must be one of {', '.join(choices)}, got {value!r}")
        return value

    def origins(self, var: str) -> tuple[str, ...]:
        try:
            return parse_origins(self.text(var, ""))
        except ValueError as e:
            raise ConfigError(f"{var}: {e}") from None

    def url(self, var: str, default: str) -> str:
        value = self.text(var, default) or default
        if not value.startswith(("http://", "https://")):
            raise ConfigError(f"{var} must be an http:// or https:// URL, got {value!r}")
        try:
            Endpoint.parse(value)  # what the upstream client will accept, checked now
        except ValueError as e:
            raise ConfigError(f"{var}: {e}") from None
        return value.rstrip("/")


def _bounded(var: str, value, minimum, maximum):
    if minimum is not None and value < minimum:
        raise ConfigError(f"{var} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{var} must be at most {maximum}, got {value}")
    return value
