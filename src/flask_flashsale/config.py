"""Every ``FLASHSALE_*`` configuration key, its default, and how it is read.

One module holds them all so the docs (``docs/configuration.rst``) and the code
cannot drift apart. :meth:`FlashSale.init_app` calls :func:`load` once per app.

Each key is declared once, as a field of :class:`Settings`::

    cache_ttl: float = setting("FLASHSALE_CACHE_TTL", 1.0, _float(0))

names the Flask config key, its default and its reader (which converts and
validates the raw value, raising :class:`~flask_flashsale.ConfigurationError`
that names the key). :data:`DEFAULTS` and :func:`load` are derived from these
declarations.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar, cast

from .errors import ConfigurationError

T = TypeVar("T")
N = TypeVar("N", int, float)

#: Reads one key from a Flask config: ``read(config, key) -> value``, raising
#: :class:`~flask_flashsale.ConfigurationError` that names ``key``.
Reader = Callable[[Mapping[str, Any], str], T]

STRATEGIES = ("lua", "optimistic", "lock")


def setting(key: str, default: Any, read: Reader[T]) -> T:
    """Declare a :class:`Settings` field: its config ``key``, raw ``default`` and reader."""
    return cast(T, field(metadata={"key": key, "default": default, "read": read}))


def _as_given(config: Mapping[str, Any], key: str) -> Any:
    return config[key]


def _flag(config: Mapping[str, Any], key: str) -> bool:
    return bool(config[key])


def _optional(config: Mapping[str, Any], key: str) -> Any:
    return config[key] or None


def _number(kind: type[N], minimum: float) -> Reader[N]:
    """A number of type ``kind`` that is at least ``minimum``."""

    def read(config: Mapping[str, Any], key: str) -> N:
        raw = config[key]
        try:
            value = kind(raw)
        except (TypeError, ValueError):
            raise ConfigurationError(f"{key} must be a number, got {raw!r}") from None
        if value < minimum:
            raise ConfigurationError(f"{key} must be >= {minimum}, got {raw!r}")
        return value

    return read


def _int(minimum: int) -> Reader[int]:
    return _number(int, minimum)


def _float(minimum: float) -> Reader[float]:
    return _number(float, minimum)


def _rate(config: Mapping[str, Any], key: str) -> str | None:
    """A rate setting (``"5/second;burst=10"``), checked here so the error names ``key``."""
    from .ratelimit import parse_rate

    raw = config[key] or None
    if raw is not None:
        parse_rate(raw, setting=key)
    return cast("str | None", raw)


def _strategy(config: Mapping[str, Any], key: str) -> str:
    strategy = str(config[key])
    if strategy not in STRATEGIES:
        raise ConfigurationError(f"{key} must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
    return strategy


def _key_prefix(config: Mapping[str, Any], key: str) -> str:
    prefix = str(config[key])
    if not prefix or any(c in prefix for c in "{} \t\n"):
        raise ConfigurationError(
            f"{key} must be non-empty without braces or spaces; got {prefix!r}"
        )
    return prefix


def _redis_url(config: Mapping[str, Any], key: str) -> str:
    """The URL; its scheme picks the backend, so a bad URL fails here, at start-up."""
    from .connection import backend_class

    url = str(config[key])
    backend_class(url)(url)
    return url


def _inline_worker(config: Mapping[str, Any], key: str) -> bool:
    """As configured; unset (``None``): on for a process-local backend (``memory://``)."""
    inline = config[key]
    if inline is None:
        from .connection import backend_class

        inline = backend_class(str(config["FLASHSALE_REDIS_URL"])).process_local
    return bool(inline)


def _url_prefix(config: Mapping[str, Any], key: str) -> str:
    url_prefix = str(config[key]).rstrip("/")
    if not url_prefix.startswith("/"):
        raise ConfigurationError(f"{key} must start with '/'; got {config[key]!r}")
    return url_prefix


def _metrics_enabled(config: Mapping[str, Any], key: str) -> bool:
    from .metrics import available

    wanted = config[key]
    if wanted is None:
        return available()
    if wanted and not available():
        raise ConfigurationError(f"{key} needs prometheus_client: install Flask-FlashSale[metrics]")
    return bool(wanted)


def _metrics_path(config: Mapping[str, Any], key: str) -> str | None:
    path = config[key]
    if not path:
        return None
    if not str(path).startswith("/"):
        raise ConfigurationError(f"{key} must start with '/'; got {path!r}")
    return str(path)


def _path(config: Mapping[str, Any], key: str) -> str | None:
    """A URL path setting: ``None``/empty turns the feature off; otherwise it starts with '/'."""
    path = config[key]
    if not path:
        return None
    if not isinstance(path, str) or not path.startswith("/") or path == "/":
        raise ConfigurationError(f"{key} must be a path like '/flashsale'; got {path!r}")
    return path.rstrip("/")


_ORIGIN = re.compile(
    r"([a-z][a-z0-9+.\-]*)://"  # scheme
    r"(\[[0-9a-f:.]+\]|[a-z0-9\-._~%!$&'()*+,;=]+)"  # host (no userinfo, path, query)
    r"(?::([0-9]{1,5}))?"  # port
)
_DEFAULT_PORTS = {"http": "80", "https": "443"}


def normalize_origin(value: str) -> str | None:
    """``scheme://host[:port]`` lower-cased, without a default port; ``None`` if not an origin.

    ``Origin: null`` (sandboxed frames, some redirects) is no origin: ``None``.
    """
    m = _ORIGIN.fullmatch(value.strip().lower().removesuffix("/"))
    if m is None:
        return None
    scheme, host, port = m.groups()
    if port is None or _DEFAULT_PORTS.get(scheme) == port:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def _allowed_origins(config: Mapping[str, Any], key: str) -> frozenset[str]:
    raw = config[key]
    if not raw:
        return frozenset()
    if isinstance(raw, str):
        items: list[object] = [part for part in raw.split(",") if part.strip()]
    elif isinstance(raw, (list, tuple, set, frozenset)):
        items = list(raw)
    else:
        raise ConfigurationError(
            f"{key} must be a list of origins or a comma-separated string; got {raw!r}"
        )
    origins = set()
    for item in items:
        if not isinstance(item, str):
            raise ConfigurationError(f"{key} must hold strings; got {item!r}")
        if item.strip() in ("null", "*"):
            raise ConfigurationError(
                f"{key} cannot hold {item.strip()!r}: list each trusted origin "
                "(scheme://host[:port]); 'null' is never trusted"
            )
        origin = normalize_origin(item)
        if origin is None:
            raise ConfigurationError(
                f"{key} entries must be origins like 'https://shop.example' or "
                f"'https://shop.example:8443' (no path); got {item!r}"
            )
        origins.add(origin)
    return frozenset(origins)


@dataclass(frozen=True, kw_only=True)
class Settings:
    """The configuration of one app, read and validated once by ``init_app``.

    Each field declares its key (see :func:`setting`). :func:`load` reads the
    keys in this order, so the first bad key in this order is the one reported.
    Fields have no default of their own: build one with :func:`load`.
    """

    inventory_strategy: str = setting("FLASHSALE_INVENTORY_STRATEGY", "lua", _strategy)
    key_prefix: str = setting("FLASHSALE_KEY_PREFIX", "flashsale", _key_prefix)
    redis_url: str = setting("FLASHSALE_REDIS_URL", "redis://localhost:6379/0", _redis_url)
    inline_worker: bool = setting("FLASHSALE_INLINE_WORKER", None, _inline_worker)
    url_prefix: str = setting("FLASHSALE_URL_PREFIX", "/api/flash-sales", _url_prefix)
    order_rate_per_user: str | None = setting("FLASHSALE_ORDER_RATE_PER_USER", None, _rate)
    order_rate_per_sale: str | None = setting("FLASHSALE_ORDER_RATE_PER_SALE", None, _rate)
    cache_ttl: float = setting("FLASHSALE_CACHE_TTL", 1.0, _float(0))
    max_attempts: int = setting("FLASHSALE_MAX_ATTEMPTS", 5, _int(1))
    claim_idle: float = setting("FLASHSALE_CLAIM_IDLE", 30.0, _float(0))
    retry_backoff: float = setting("FLASHSALE_RETRY_BACKOFF", 1.0, _float(0))
    pool_size: int = setting("FLASHSALE_REDIS_POOL_SIZE", 50, _int(1))
    socket_timeout: float = setting("FLASHSALE_REDIS_SOCKET_TIMEOUT", 0.5, _float(0.001))
    connect_timeout: float = setting("FLASHSALE_REDIS_CONNECT_TIMEOUT", 0.5, _float(0.001))
    pool_timeout: float = setting("FLASHSALE_REDIS_POOL_TIMEOUT", 1.0, _float(0))
    health_check_interval: int = setting("FLASHSALE_REDIS_HEALTH_CHECK_INTERVAL", 30, _int(0))
    #: Admission scripts sent pre-packed on the pool's connections (one Redis server).
    fast_admission: bool = setting("FLASHSALE_FAST_ADMISSION", True, _flag)
    ticket_ttl: int = setting("FLASHSALE_TICKET_TTL", 7 * 24 * 3600, _int(1))
    max_body: int = setting("FLASHSALE_MAX_BODY", 16 * 1024, _int(1))
    max_quantity: int = setting("FLASHSALE_MAX_QUANTITY", 100, _int(1))
    secret: str | None = setting("FLASHSALE_SECRET", None, _as_given)
    optimistic_retries: int = setting("FLASHSALE_OPTIMISTIC_RETRIES", 10, _int(0))
    lock_timeout: float = setting("FLASHSALE_LOCK_TIMEOUT", 1.0, _float(0.001))
    lock_wait: float = setting("FLASHSALE_LOCK_WAIT", 1.0, _float(0))
    cache_max_age: int = setting("FLASHSALE_CACHE_MAX_AGE", 1, _int(0))
    breaker_fail_max: int = setting("FLASHSALE_BREAKER_FAIL_MAX", 5, _int(0))
    breaker_reset_timeout: float = setting("FLASHSALE_BREAKER_RESET_TIMEOUT", 2.0, _float(0.01))
    ratelimit_headers: bool = setting("FLASHSALE_RATELIMIT_HEADERS", True, _flag)
    api_rate_limit: str | None = setting("FLASHSALE_API_RATE_LIMIT", None, _optional)
    api_rate_limit_key: str = setting("FLASHSALE_API_RATE_LIMIT_KEY", "user_or_ip", _as_given)
    worker_batch: int = setting("FLASHSALE_WORKER_BATCH", 32, _int(1))
    metrics: bool = setting("FLASHSALE_METRICS", None, _metrics_enabled)
    metrics_path: str | None = setting("FLASHSALE_METRICS_PATH", None, _metrics_path)
    #: Where the operator dashboard is served (``None``: not served).
    dashboard_path: str | None = setting("FLASHSALE_DASHBOARD_PATH", None, _path)
    #: Origins besides the app's own that may send unsafe requests (normalised).
    allowed_origins: frozenset[str] = setting("FLASHSALE_ALLOWED_ORIGINS", (), _allowed_origins)
    autoscale_lag: int = setting("FLASHSALE_AUTOSCALE_LAG", 100, _int(0))
    autoscale_up_after: float = setting("FLASHSALE_AUTOSCALE_UP_AFTER", 3.0, _float(0))
    autoscale_down_after: float = setting("FLASHSALE_AUTOSCALE_DOWN_AFTER", 30.0, _float(0))
    autoscale_interval: float = setting("FLASHSALE_AUTOSCALE_INTERVAL", 1.0, _float(0.01))
    autoscale_restart_backoff: float = setting(
        "FLASHSALE_AUTOSCALE_RESTART_BACKOFF", 1.0, _float(0.01)
    )
    #: Seconds a waiting room's pass lives once the buyer is ready.
    pass_ttl: float = setting("FLASHSALE_PASS_TTL", 120, _float(0.001))


#: Default value of every configuration key the extension reads.
DEFAULTS: dict[str, Any] = {f.metadata["key"]: f.metadata["default"] for f in fields(Settings)}


def load(config: MutableMapping[str, Any]) -> Settings:
    """Set the defaults on ``config`` (a Flask config) and return validated settings.

    Raises :class:`~flask_flashsale.ConfigurationError` naming the bad key, so a
    typo fails at start-up rather than on the night of the sale.
    """
    for key, value in DEFAULTS.items():
        config.setdefault(key, value)
    values = {f.name: f.metadata["read"](config, f.metadata["key"]) for f in fields(Settings)}
    return Settings(**values)


def redis_address(url: str) -> str:
    """Where ``FLASHSALE_REDIS_URL`` points, for messages: ``host:port`` (or a socket path).

    No credentials: ``redis://:secret@cache.internal/0`` gives ``cache.internal:6379``;
    several hosts (``redis+cluster://a:7000,b:7001``) stay a list.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    if scheme.lower() == "unix":
        return "unix://" + rest.split("?", 1)[0]
    netloc = rest.split("/", 1)[0].split("?", 1)[0].rpartition("@")[2]
    if not netloc:
        return url
    port = "26379" if scheme.lower() == "redis+sentinel" else "6379"
    hosts = []
    for host in netloc.split(","):
        has_port = host.rpartition("]")[2] if host.startswith("[") else host
        hosts.append(host if ":" in has_port else f"{host}:{port}")
    return ",".join(hosts)
