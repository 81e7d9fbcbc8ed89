"""Settings, parsed and validated once at start from an environment mapping.

``Settings.from_env(os.environ)`` is the only place the environment is read. A bad value raises
``ConfigError`` whose message names the variable, the value's problem and what is expected.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, TypeVar

from .cors import parse_origins
from .httpclient import Endpoint
from .secrets import Secret
from .strategy.settings import MODEL_ALIASES, USES_LOCAL, StrategySettings

T = TypeVar("T")

CEREBRAS = "cerebras"
SYNTHETIC = "synthetic"
ZAI = "zai"
LOCAL = "local"
LOCAL_READ_TIMEOUT = 600.0


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
    accepts_prediction: bool = False  # {NAME}_ACCEPTS_PREDICTION: an escalated draft goes as `prediction`

    def model_for(self, requested: object) -> str:
        """The model name this provider gets for a client's requested model."""
        if isinstance(requested, str) and requested in self.passthrough_models:
            return requested
        return self.model

    @property
    def chat_url(self) -> str:
        return self.base_url + "/chat/completions"


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
    strategy: StrategySettings = field(default_factory=StrategySettings)  # routing strategies

    @property
    def public_models(self) -> list[str]:
        seen: dict[str, None] = {}
        for p in self.providers:
            seen[p.model] = None
            for m in sorted(p.passthrough_models):
                seen[m] = None
        for alias in MODEL_ALIASES:  # the names that pick a routing strategy
            seen[alias] = None
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
            _local(r, fallback_cooldown),
        )
        providers = tuple(p for p in candidates if p is not None)
        if not providers:
            raise ConfigError(
                "no upstream is configured: set CEREBRAS_API_KEYS (a JSON object "
                '{"name": "key", ...} or a comma-separated list of keys), SYNTHETIC_API_KEY, '
                "ZAI_API_KEY or LOCAL_BASE_URL"
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
            strategy=_strategy(r, providers),
        )
        return settings


def _strategy(r: "_Reader", providers: tuple[ProviderConfig, ...]) -> StrategySettings:
    try:
        strategy = StrategySettings.from_env(r)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if not any(p.name == LOCAL for p in providers):
        if strategy.local_only:
            raise ConfigError("LOCAL_ONLY=true needs a local upstream: set LOCAL_BASE_URL")
        if strategy.strategy in USES_LOCAL:
            raise ConfigError(f"ROUTING_STRATEGY={strategy.strategy.value} needs a local upstream: set LOCAL_BASE_URL")
    return strategy


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
        accepts_prediction=r.boolean("CEREBRAS_ACCEPTS_PREDICTION", False),
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
    prediction = r.boolean(f"{prefix}_ACCEPTS_PREDICTION", False)
    if not keys:
        return None
    return ProviderConfig(name=name, base_url=url, keys=keys, model=model, cooldown=cooldown, dialect=dialect,
                          read_timeout=read, accepts_prediction=prediction)


def _local(r: "_Reader", cooldown: float) -> ProviderConfig | None:
    """A local llama.cpp server: ``LOCAL_BASE_URL`` (unset: none), ``LOCAL_MODEL``, ``LOCAL_API_KEY``."""
    if not r.text("LOCAL_BASE_URL", ""):
        return None
    url = r.url("LOCAL_BASE_URL", "")
    model = r.text("LOCAL_MODEL", "glm-local") or "glm-local"
    local_key = r.text("LOCAL_API_KEY", "")
    key = UpstreamKey("local", Secret(_checked("LOCAL_API_KEY", local_key) if local_key else ""))
    # a CPU llama.cpp may be silent for minutes while it reads a long prompt
    read = r.number("LOCAL_READ_TIMEOUT", LOCAL_READ_TIMEOUT, minimum=0.1)
    return ProviderConfig(name=LOCAL, base_url=url, keys=(key,), model=model, cooldown=cooldown, read_timeout=read)


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
