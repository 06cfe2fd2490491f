"""Redis clients from ``FLASHSALE_REDIS_URL``, chosen by URL scheme.

A small registry maps each scheme to a factory (the way ``limits``'
``storage_from_string`` does), which is how ``memory://`` (embedded fakeredis)
and ``redis+cluster://`` fit beside plain Redis.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis

from .config import Settings
from .errors import ConfigurationError

Factory = Callable[[str, Settings], Any]

#: What :class:`redis.BlockingConnectionPool` raises when no connection could be
#: had in time: our own load, not a Redis outage.
POOL_EXHAUSTED = "No connection available."


def _redis(url: str, settings: Settings) -> redis.Redis:
    # A blocking pool: under a spike, requests queue briefly for a connection
    # (up to FLASHSALE_REDIS_POOL_TIMEOUT) instead of opening thousands of sockets.
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=settings.pool_size,
        timeout=settings.pool_timeout,
        socket_timeout=settings.socket_timeout,
        socket_connect_timeout=settings.connect_timeout,
        health_check_interval=settings.health_check_interval,
        decode_responses=True,
    )
    return redis.Redis(connection_pool=pool)


def _cluster(url: str, settings: Settings) -> Any:
    from redis.cluster import RedisCluster

    return RedisCluster.from_url(
        "redis://" + url.split("://", 1)[1],
        max_connections=settings.pool_size,
        socket_timeout=settings.socket_timeout,
        socket_connect_timeout=settings.connect_timeout,
        decode_responses=True,
    )


def _memory(url: str, settings: Settings) -> Any:
    try:
        import fakeredis
    except ImportError:  # pragma: no cover - depends on the environment
        raise ConfigurationError(
            "FLASHSALE_REDIS_URL='memory://' needs the 'memory' extra: "
            "pip install 'Flask-FlashSale[memory]'"
        ) from None
    # Each app gets its own embedded server, kept in its app.extensions state.
    return fakeredis.FakeRedis(server=fakeredis.FakeServer(version=(7,)), decode_responses=True)


#: URL scheme -> client factory.
SCHEMES: dict[str, Factory] = {
    "redis": _redis,
    "rediss": _redis,
    "unix": _redis,
    "redis+cluster": _cluster,
    "memory": _memory,
}


def client_from_settings(settings: Settings) -> Any:
    """Create the app's Redis client (one shared connection pool)."""
    scheme = settings.redis_url.split("://", 1)[0].lower() if "://" in settings.redis_url else ""
    factory = SCHEMES.get(scheme)
    if factory is None:
        raise ConfigurationError(
            f"FLASHSALE_REDIS_URL scheme {scheme!r} is not supported; "
            f"use one of {', '.join(s + '://' for s in SCHEMES)}"
        )
    return factory(settings.redis_url, settings)
