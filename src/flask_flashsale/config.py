"""Every ``FLASHSALE_*`` configuration key, its default, and how it is read.

One module holds them all so the docs (``docs/configuration.rst``) and the code
cannot drift apart. :meth:`FlashSale.init_app` calls :func:`load` once per app.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError

#: Default value of every configuration key the extension reads.
DEFAULTS: dict[str, Any] = {
    "FLASHSALE_REDIS_URL": "redis://localhost:6379/0",
    "FLASHSALE_KEY_PREFIX": "flashsale",
    "FLASHSALE_URL_PREFIX": "/api/flash-sales",
    "FLASHSALE_INVENTORY_STRATEGY": "lua",
    "FLASHSALE_ORDER_RATE_PER_USER": None,
    "FLASHSALE_ORDER_RATE_PER_SALE": None,
    "FLASHSALE_CACHE_TTL": 1.0,
    "FLASHSALE_MAX_ATTEMPTS": 5,
    "FLASHSALE_CLAIM_IDLE": 30.0,
    "FLASHSALE_RETRY_BACKOFF": 1.0,
    "FLASHSALE_INLINE_WORKER": None,
    "FLASHSALE_REDIS_POOL_SIZE": 50,
    "FLASHSALE_REDIS_SOCKET_TIMEOUT": 0.5,
    "FLASHSALE_REDIS_CONNECT_TIMEOUT": 0.5,
    "FLASHSALE_REDIS_POOL_TIMEOUT": 1.0,
    "FLASHSALE_REDIS_HEALTH_CHECK_INTERVAL": 30,
    "FLASHSALE_TICKET_TTL": 7 * 24 * 3600,
    "FLASHSALE_MAX_BODY": 16 * 1024,
    "FLASHSALE_MAX_QUANTITY": 100,
    "FLASHSALE_SECRET": None,
    "FLASHSALE_OPTIMISTIC_RETRIES": 10,
    "FLASHSALE_LOCK_TIMEOUT": 1.0,
    "FLASHSALE_LOCK_WAIT": 1.0,
    "FLASHSALE_CACHE_MAX_AGE": 1,
    "FLASHSALE_BREAKER_FAIL_MAX": 5,
    "FLASHSALE_BREAKER_RESET_TIMEOUT": 2.0,
    "FLASHSALE_RATELIMIT_HEADERS": True,
    "FLASHSALE_API_RATE_LIMIT": None,
    "FLASHSALE_API_RATE_LIMIT_KEY": "user_or_ip",
    "FLASHSALE_WORKER_BATCH": 32,
    "FLASHSALE_METRICS": None,
    "FLASHSALE_METRICS_PATH": None,
    "FLASHSALE_DASHBOARD_PATH": None,
    "FLASHSALE_ALLOWED_ORIGINS": (),
    "FLASHSALE_AUTOSCALE_LAG": 100,
    "FLASHSALE_AUTOSCALE_UP_AFTER": 3.0,
    "FLASHSALE_AUTOSCALE_DOWN_AFTER": 30.0,
    "FLASHSALE_AUTOSCALE_INTERVAL": 1.0,
    "FLASHSALE_AUTOSCALE_RESTART_BACKOFF": 1.0,
    "FLASHSALE_PASS_TTL": 120,
}


@dataclass(frozen=True)
class Settings:
    """The configuration of one app, read and validated once by ``init_app``."""

    redis_url: str
    key_prefix: str
    url_prefix: str
    inventory_strategy: str
    order_rate_per_user: str | None
    order_rate_per_sale: str | None
    cache_ttl: float
    max_attempts: int
    claim_idle: float
    retry_backoff: float
    inline_worker: bool
    pool_size: int
    socket_timeout: float
    connect_timeout: float
    pool_timeout: float
    health_check_interval: int
    ticket_ttl: int
    max_body: int
    max_quantity: int
    secret: str | None
    optimistic_retries: int
    lock_timeout: float
    lock_wait: float
    cache_max_age: int
    breaker_fail_max: int
    breaker_reset_timeout: float
    ratelimit_headers: bool = True
    api_rate_limit: str | None = None
    api_rate_limit_key: str = "user_or_ip"
    worker_batch: int = 32
    metrics: bool = False
    metrics_path: str | None = None
    #: Where the operator dashboard is served (``None``: not served).
    dashboard_path: str | None = None
    #: Origins besides the app's own that may send unsafe requests (normalised).
    allowed_origins: frozenset[str] = frozenset()
    autoscale_lag: int = 100
    autoscale_up_after: float = 3.0
    autoscale_down_after: float = 30.0
    autoscale_interval: float = 1.0
    autoscale_restart_backoff: float = 1.0
    #: Seconds a waiting room's pass lives once the buyer is ready.
    pass_ttl: float = 120.0


STRATEGIES = ("lua", "optimistic", "lock")


def _number(config: Any, key: str, kind: type, minimum: float) -> Any:
    raw = config[key]
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{key} must be a number, got {raw!r}") from None
    if value < minimum:
        raise ConfigurationError(f"{key} must be >= {minimum}, got {raw!r}")
    return value


def _rate(config: Any, key: str) -> str | None:
    """A rate setting (``"5/second;burst=10"``), checked here so the error names ``key``."""
    from .ratelimit import parse_rate

    raw = config[key] or None
    if raw is not None:
        parse_rate(raw, setting=key)
    return raw


def load(config: Any) -> Settings:
    """Set the defaults on ``config`` (a Flask config) and return validated settings.

    Raises :class:`~flask_flashsale.ConfigurationError` naming the bad key, so a
    typo fails at start-up rather than on the night of the sale.
    """
    for key, value in DEFAULTS.items():
        config.setdefault(key, value)
    url = str(config["FLASHSALE_REDIS_URL"])
    strategy = str(config["FLASHSALE_INVENTORY_STRATEGY"])
    if strategy not in STRATEGIES:
        raise ConfigurationError(
            f"FLASHSALE_INVENTORY_STRATEGY must be one of {', '.join(STRATEGIES)}; got {strategy!r}"
        )
    prefix = str(config["FLASHSALE_KEY_PREFIX"])
    if not prefix or any(c in prefix for c in "{} \t\n"):
        raise ConfigurationError(
            f"FLASHSALE_KEY_PREFIX must be non-empty without braces or spaces; got {prefix!r}"
        )
    # The scheme picks the backend; a bad URL fails here, at start-up.
    from .connection import backend_class

    backend = backend_class(url)
    backend(url)
    inline = config["FLASHSALE_INLINE_WORKER"]
    if inline is None:
        inline = backend.process_local
    url_prefix = str(config["FLASHSALE_URL_PREFIX"]).rstrip("/")
    if not url_prefix.startswith("/"):
        raise ConfigurationError(
            f"FLASHSALE_URL_PREFIX must start with '/'; got {config['FLASHSALE_URL_PREFIX']!r}"
        )
    return Settings(
        redis_url=url,
        key_prefix=prefix,
        url_prefix=url_prefix,
        inventory_strategy=strategy,
        order_rate_per_user=_rate(config, "FLASHSALE_ORDER_RATE_PER_USER"),
        order_rate_per_sale=_rate(config, "FLASHSALE_ORDER_RATE_PER_SALE"),
        cache_ttl=_number(config, "FLASHSALE_CACHE_TTL", float, 0),
        max_attempts=_number(config, "FLASHSALE_MAX_ATTEMPTS", int, 1),
        claim_idle=_number(config, "FLASHSALE_CLAIM_IDLE", float, 0),
        retry_backoff=_number(config, "FLASHSALE_RETRY_BACKOFF", float, 0),
        inline_worker=bool(inline),
        pool_size=_number(config, "FLASHSALE_REDIS_POOL_SIZE", int, 1),
        socket_timeout=_number(config, "FLASHSALE_REDIS_SOCKET_TIMEOUT", float, 0.001),
        connect_timeout=_number(config, "FLASHSALE_REDIS_CONNECT_TIMEOUT", float, 0.001),
        pool_timeout=_number(config, "FLASHSALE_REDIS_POOL_TIMEOUT", float, 0),
        health_check_interval=_number(config, "FLASHSALE_REDIS_HEALTH_CHECK_INTERVAL", int, 0),
        ticket_ttl=_number(config, "FLASHSALE_TICKET_TTL", int, 1),
        max_body=_number(config, "FLASHSALE_MAX_BODY", int, 1),
        max_quantity=_number(config, "FLASHSALE_MAX_QUANTITY", int, 1),
        secret=config["FLASHSALE_SECRET"],
        optimistic_retries=_number(config, "FLASHSALE_OPTIMISTIC_RETRIES", int, 0),
        lock_timeout=_number(config, "FLASHSALE_LOCK_TIMEOUT", float, 0.001),
        lock_wait=_number(config, "FLASHSALE_LOCK_WAIT", float, 0),
        cache_max_age=_number(config, "FLASHSALE_CACHE_MAX_AGE", int, 0),
        breaker_fail_max=_number(config, "FLASHSALE_BREAKER_FAIL_MAX", int, 0),
        breaker_reset_timeout=_number(config, "FLASHSALE_BREAKER_RESET_TIMEOUT", float, 0.01),
        ratelimit_headers=bool(config["FLASHSALE_RATELIMIT_HEADERS"]),
        api_rate_limit=config["FLASHSALE_API_RATE_LIMIT"] or None,
        api_rate_limit_key=config["FLASHSALE_API_RATE_LIMIT_KEY"],
        worker_batch=_number(config, "FLASHSALE_WORKER_BATCH", int, 1),
        metrics=_metrics_enabled(config),
        metrics_path=_metrics_path(config),
        dashboard_path=_path(config, "FLASHSALE_DASHBOARD_PATH"),
        allowed_origins=_allowed_origins(config),
        autoscale_lag=_number(config, "FLASHSALE_AUTOSCALE_LAG", int, 0),
        autoscale_up_after=_number(config, "FLASHSALE_AUTOSCALE_UP_AFTER", float, 0),
        autoscale_down_after=_number(config, "FLASHSALE_AUTOSCALE_DOWN_AFTER", float, 0),
        autoscale_interval=_number(config, "FLASHSALE_AUTOSCALE_INTERVAL", float, 0.01),
        autoscale_restart_backoff=_number(
            config, "FLASHSALE_AUTOSCALE_RESTART_BACKOFF", float, 0.01
        ),
        pass_ttl=_number(config, "FLASHSALE_PASS_TTL", float, 0.001),
    )


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


def _metrics_enabled(config: Any) -> bool:
    from .metrics import available

    wanted = config["FLASHSALE_METRICS"]
    if wanted is None:
        return available()
    if wanted and not available():
        raise ConfigurationError(
            "FLASHSALE_METRICS needs prometheus_client: install Flask-FlashSale[metrics]"
        )
    return bool(wanted)


def _metrics_path(config: Any) -> str | None:
    path = config["FLASHSALE_METRICS_PATH"]
    if not path:
        return None
    if not str(path).startswith("/"):
        raise ConfigurationError(f"FLASHSALE_METRICS_PATH must start with '/'; got {path!r}")
    return str(path)


def _path(config: Any, key: str) -> str | None:
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


def _allowed_origins(config: Any) -> frozenset[str]:
    key = "FLASHSALE_ALLOWED_ORIGINS"
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
