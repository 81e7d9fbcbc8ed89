"""Settings, parsed and validated once at start from an environment mapping.

``Settings.from_env(os.environ)`` is the only place the environment is read. A bad value raises
``ConfigError`` whose message names the variable, the value's problem and what is expected.
"""
from __future__ import annotations

import dataclasses
import json
import shlex
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from yarl import URL

from .classify import ClassifierSettings
from .cors import parse_origins
from .local import flags as local_flags
from .local.gguf import has_magic
from .local.models import ModelFolder
from .secrets import Secret
from .storage import is_postgres_url, redacted
from .strategy.settings import MODEL_ALIASES, USES_LOCAL, StrategySettings
from .usage.prices import PriceFileError, PriceTable, default_prices, load_prices

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
class Proxy:
    """A forward proxy for upstream calls: its URL without credentials, and the credentials."""

    url: str  # http://host:port
    login: str = ""
    password: Secret = field(default_factory=lambda: Secret(""))


@dataclass(frozen=True)
class Proxies:
    """``HTTP_PROXY`` / ``HTTPS_PROXY`` / ``NO_PROXY`` (or their lower-case names), read once at
    start. Not aiohttp's ``trust_env``: that reads the environment and ``~/.netrc`` from a worker
    thread on every request (0.2 ms each, measured), and a ``.netrc`` entry for an upstream host
    makes every call to it fail (aiohttp refuses Basic auth beside our Authorization header)."""

    http: Proxy | None = None
    https: Proxy | None = None
    no_proxy: str = ""

    def for_url(self, url: str) -> Proxy | None:
        """The proxy a call to ``url`` goes through, if any: by scheme, unless NO_PROXY names its
        host (curl's and urllib's rules: suffixes, a leading dot, ``*`` for all; no CIDR ranges)."""
        parsed = URL(url)
        proxy = self.https if parsed.scheme == "https" else self.http
        if proxy is None or not self.no_proxy:
            return proxy
        bypass = urllib.request.proxy_bypass_environment(  # type: ignore[attr-defined]  # (pure, given the mapping)
            f"{parsed.host}:{parsed.port}", {"no": self.no_proxy}
        )
        return None if bypass else proxy


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
class RequestLogSettings:
    """``LOG_REQUESTS`` and ``REQUEST_LOG_*``: one JSON record per chat request, with its bodies."""

    enabled: bool = False
    directory: Path | None = Path("./logs/requests")  # None: LOG_DIR and REQUEST_LOG_DIR both empty
    max_bytes: int = 50 * 1024 * 1024  # the file is rotated at this size
    backups: int = 10  # rotated files kept
    retention_days: float = 7.0  # rotated files older than this are deleted
    max_body_bytes: int = 1024 * 1024  # each body (request, answer) kept up to this; longer: cut, marked


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
    database_url: Secret | None = None  # DATABASE_URL: keys and usage in PostgreSQL instead (replicas)
    log_dir: Path | None = Path("./logs")
    log_level: str = "INFO"
    log_file_max_bytes: int = 10 * 1024 * 1024
    log_file_backups: int = 5
    max_request_bytes: int = 20 * 1024 * 1024
    timeouts: Timeouts = field(default_factory=Timeouts)
    max_key_wait: float = 30.0
    fallback_on_cooldown: bool = True
    # budgets and alerts (gateway/clients): provider -> monthly USD cap; percent thresholds
    provider_budgets: Mapping[str, float] = field(default_factory=dict)
    alert_thresholds: tuple[float, ...] = (50.0, 80.0, 100.0)
    alert_webhook_url: Secret | None = None  # may carry a token (Slack, Discord): never shown
    alert_webhook_timeout: float = 5.0
    repair_tool_calls: bool = True
    key_cache_refresh: float = 0.25
    usage_flush_interval: float = 2.0
    metrics_public: bool = False  # /metrics without an admin key
    cors_origins: tuple[str, ...] = ()  # allowed browser origins; ("*",) for any; () for none
    # the usage ledger (gateway/usage)
    prices: PriceTable = field(default_factory=default_prices)  # defaults + PRICES_FILE
    usage_queue_max: int = 100_000
    usage_retention_days: float = 90.0
    upstream_max_connections: int = 1000  # open to all upstreams at once
    upstream_max_connections_per_host: int = 500  # to one host:port (its keys share it)
    proxies: Proxies = field(default_factory=Proxies)
    request_head_timeout: float = 10.0  # a request's head, from its first byte (or the connection's opening)
    request_body_timeout: float = 60.0  # the whole body, from the end of its head
    max_client_connections: int = 4096  # lowered at start to what the open-files limit can hold
    request_log: RequestLogSettings = field(default_factory=RequestLogSettings)
    strategy: StrategySettings = field(default_factory=StrategySettings)  # routing strategies
    classifier: ClassifierSettings = field(default_factory=ClassifierSettings)  # for the smart ones
    local: LocalSettings | None = None  # the managed local server; None: none (or LOCAL_BASE_URL)
    redis_url: Secret | None = None  # REDIS_URL: state shared with other replicas (may hold a password)

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
        """Every upstream secret, proxy password and the alert webhook's URL, for the log redactor."""
        found = [k.secret.reveal() for p in self.providers for k in p.keys if k.secret]
        found += [p.password.reveal() for p in (self.proxies.http, self.proxies.https) if p and p.password]
        if self.alert_webhook_url:
            found.append(self.alert_webhook_url.reveal())
        if self.database_url and (password := urlsplit(self.database_url.reveal()).password):
            found.append(password)
        if self.redis_url:
            found.append(self.redis_url.reveal())
        return found

    @property
    def database(self) -> str | Path:
        """Where keys and usage live: the PostgreSQL URL (DATABASE_URL) or the SQLite file."""
        return self.database_url.reveal() if self.database_url else self.incoming_key_db

    @property
    def database_name(self) -> str:
        """The variable that names it, and how messages may show it (never a password)."""
        if self.database_url:
            return f"DATABASE_URL: {redacted(self.database_url.reveal())}"
        return f"INCOMING_KEY_DB: {self.incoming_key_db}"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
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
        max_connections = r.integer("UPSTREAM_MAX_CONNECTIONS", 1000, minimum=1)
        per_host = r.integer("UPSTREAM_MAX_CONNECTIONS_PER_HOST", min(500, max_connections), minimum=1,
                             maximum=max_connections)
        settings = cls(
            providers=providers,
            host=r.text("HOST", "127.0.0.1"),
            port=r.integer("PORT", 18080, minimum=0, maximum=65535),
            enable_incoming_auth=r.boolean("ENABLE_INCOMING_AUTH", True),
            incoming_key_db=Path(r.text("INCOMING_KEY_DB", "./data/incoming_keys.db")),
            database_url=_database_url(r.text("DATABASE_URL", "")),
            log_dir=Path(log_dir) if log_dir else None,
            log_level=r.choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")),
            log_file_max_bytes=r.integer("LOG_FILE_MAX_BYTES", 10 * 1024 * 1024, minimum=1024),
            log_file_backups=r.integer("LOG_FILE_BACKUPS", 5, minimum=0),
            max_request_bytes=r.integer("MAX_REQUEST_BYTES", 20 * 1024 * 1024, minimum=1024),
            timeouts=timeouts,
            max_key_wait=r.number("MAX_KEY_WAIT", 30.0, minimum=0.0),
            fallback_on_cooldown=r.boolean("FALLBACK_ON_COOLDOWN", True),
            **_budget_settings(r),
            repair_tool_calls=r.boolean("REPAIR_TOOL_CALLS", True),
            key_cache_refresh=r.number("KEY_CACHE_REFRESH", 0.25, minimum=0.01, maximum=1.0),
            usage_flush_interval=r.number("USAGE_FLUSH_INTERVAL", 2.0, minimum=0.05),
            metrics_public=r.boolean("METRICS_PUBLIC", False),
            cors_origins=r.origins("CORS_ORIGINS"),
            prices=_prices(r),
            usage_queue_max=r.integer("USAGE_QUEUE_MAX", 100_000, minimum=1),
            usage_retention_days=r.number("USAGE_RETENTION_DAYS", 90.0, minimum=0.01),
            upstream_max_connections=max_connections,
            upstream_max_connections_per_host=per_host,
            proxies=_proxies(r),
            request_head_timeout=r.number("REQUEST_HEAD_TIMEOUT", 10.0, minimum=0.05, maximum=3600.0),
            request_body_timeout=r.number("REQUEST_BODY_TIMEOUT", 60.0, minimum=0.05, maximum=3600.0),
            max_client_connections=r.integer("MAX_CLIENT_CONNECTIONS", 4096, minimum=1, maximum=1_000_000),
            request_log=_request_log(r, log_dir),
            strategy=_strategy(r, providers),
            classifier=ClassifierSettings.from_env(r),
            local=managed,
            redis_url=_redis_url(r),
        )
        return settings


def _redis_url(r: _Reader) -> Secret | None:
    """REDIS_URL (redis://, rediss:// or unix://), or None; the error never echoes it (a password)."""
    url = r.text("REDIS_URL", "")
    if not url:
        return None
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("REDIS_URL must start with redis://, rediss:// or unix://")
    return Secret(url)


def _request_log(r: _Reader, log_dir: str) -> RequestLogSettings:
    """LOG_REQUESTS and its REQUEST_LOG_* settings (each read and checked even when it is off)."""
    enabled = r.boolean("LOG_REQUESTS", False)
    given = r.text("REQUEST_LOG_DIR", "")
    where = Path(given) if given else Path(log_dir) / "requests" if log_dir else None
    if enabled and where is None:
        raise ConfigError("LOG_REQUESTS=true needs a directory: set REQUEST_LOG_DIR (LOG_DIR is empty)")
    return RequestLogSettings(
        enabled=enabled,
        directory=where,
        max_bytes=r.integer("REQUEST_LOG_MAX_BYTES", 50 * 1024 * 1024, minimum=1024),
        backups=r.integer("REQUEST_LOG_BACKUPS", 10, minimum=0),
        retention_days=r.number("REQUEST_LOG_RETENTION_DAYS", 7.0, minimum=0.001),
        max_body_bytes=r.integer("REQUEST_LOG_MAX_BODY_BYTES", 1024 * 1024, minimum=256),
    )


def _prices(r: _Reader) -> PriceTable:
    """The default prices, with ``PRICES_FILE``'s laid over them: read and checked at start."""
    prices_file = r.text("PRICES_FILE", "")
    if not prices_file:
        return default_prices()
    try:
        return load_prices(Path(prices_file), (CEREBRAS, SYNTHETIC, ZAI, LOCAL))
    except PriceFileError as e:
        raise ConfigError(f"PRICES_FILE: {e}") from None


BUDGETED_PROVIDERS = (CEREBRAS, SYNTHETIC, ZAI)  # the paid ones: {NAME}_MONTHLY_BUDGET_USD


def _database_url(url: str) -> Secret | None:
    if not url:
        return None
    if not is_postgres_url(url):
        raise ConfigError(f"DATABASE_URL must be a postgresql:// URL (or unset, for SQLite in INCOMING_KEY_DB); "
                          f"got {redacted(url)!r}")
    try:
        urlsplit(url).port  # noqa: B018  (raises on a port that is no number)
    except ValueError:
        raise ConfigError(f"DATABASE_URL has a bad port: {redacted(url)!r}") from None
    return Secret(url)


def _budget_settings(r: _Reader) -> dict[str, Any]:
    """Provider-wide monthly caps and budget alerts."""
    caps = {}
    for name in BUDGETED_PROVIDERS:
        var = f"{name.upper()}_MONTHLY_BUDGET_USD"
        if r.text(var, ""):
            caps[name] = r.number(var, 0.0, minimum=0.0)
    raw = r.text("ALERT_THRESHOLDS", "50,80,100")
    try:
        thresholds = tuple(sorted({float(t) for t in raw.split(",") if t.strip()}))
    except ValueError:
        raise ConfigError(f"ALERT_THRESHOLDS must be comma-separated percentages like 50,80,100, got {raw!r}") from None
    if any(not 0 < t <= 1000 for t in thresholds):
        raise ConfigError(f"ALERT_THRESHOLDS: each percentage must be above 0 and at most 1000, got {raw!r}")
    url = r.text("ALERT_WEBHOOK_URL", "")
    if url:
        try:
            parsed = URL(url)
        except ValueError:
            parsed = None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
            raise ConfigError("ALERT_WEBHOOK_URL must be an http:// or https:// URL with a host")
    return {
        "provider_budgets": caps,
        "alert_thresholds": thresholds,
        "alert_webhook_url": Secret(url) if url else None,
        "alert_webhook_timeout": r.number("ALERT_WEBHOOK_TIMEOUT", 5.0, minimum=0.1, maximum=60.0),
    }


def _strategy(r: _Reader, providers: tuple[ProviderConfig, ...]) -> StrategySettings:
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


def _cerebras(r: _Reader, threshold: int, read_timeout: float) -> ProviderConfig | None:
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
    r: _Reader, name: str, base_url: str, model: str, cooldown: float, read_timeout: float, dialect: str = "openai"
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


def _local(r: _Reader, cooldown: float) -> tuple[ProviderConfig | None, LocalSettings | None]:
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


def _managed(r: _Reader, path: str, folder: str, model: str) -> LocalSettings | None:
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


def _proxies(r: _Reader) -> Proxies:
    """The lower-case names win over the upper-case ones, as in curl and urllib."""

    def one(var: str) -> Proxy | None:
        for name in (var.lower(), var):
            raw = r.text(name, "")
            if raw:
                return parse_proxy(name, raw)
        return None

    return Proxies(http=one("HTTP_PROXY"), https=one("HTTPS_PROXY"),
                   no_proxy=r.text("no_proxy", "") or r.text("NO_PROXY", ""))


def parse_proxy(var: str, raw: str) -> Proxy:
    """``http://[user:password@]host:port`` (a bare ``host:port`` means http). The value is never
    echoed in an error: it may hold a password."""
    url = raw if "://" in raw else f"http://{raw}"
    try:
        parsed = URL(url)
    except ValueError:
        raise ConfigError(f"{var} is not a valid URL (the port must be a number from 0 to 65535)") from None
    if parsed.scheme != "http":
        raise ConfigError(f"{var} must be an http:// proxy URL (the tunnel to an https upstream is still TLS); "
                          f"got a {parsed.scheme}:// URL")
    if not parsed.host:
        raise ConfigError(f"{var} has no host")
    if parsed.path not in ("", "/") or parsed.query_string or parsed.fragment:
        raise ConfigError(f"{var} must be a proxy's address only, with no path, query or fragment")
    return Proxy(url=str(URL.build(scheme="http", host=parsed.host, port=parsed.port)),
                 login=parsed.user or "", password=Secret(parsed.password or ""))


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
        """An upstream base URL, checked now for what a call to it needs. The value is echoed
        only when it cannot hold credentials."""
        value = self.text(var, default) or default
        shown = "the value" if "@" in value else repr(value)
        if not value.startswith(("http://", "https://")):
            raise ConfigError(f"{var} must be an http:// or https:// URL, got {shown}")
        try:
            parsed = URL(value)  # (refuses a port that is not a number from 0 to 65535)
        except ValueError:
            raise ConfigError(f"{var}: {shown}: the port is not a number from 0 to 65535") from None
        if parsed.user is not None or parsed.password is not None:
            raise ConfigError(f"{var}: credentials in the URL are not supported; use the API key settings")
        if not parsed.host:
            raise ConfigError(f"{var}: {shown}: no host")
        if parsed.query_string or parsed.fragment:
            raise ConfigError(f"{var}: {shown}: a base URL takes no ?query or #fragment "
                              "(/chat/completions is appended to its path)")
        return value.rstrip("/")


def _bounded(var: str, value, minimum, maximum):
    if minimum is not None and value < minimum:
        raise ConfigError(f"{var} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{var} must be at most {maximum}, got {value}")
    return value
