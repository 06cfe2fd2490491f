"""Redis clients from ``FLASHSALE_REDIS_URL``, chosen by URL scheme.

A small registry maps each scheme to a factory (the way ``limits``'
``storage_from_string`` does), which is how ``memory://`` (embedded fakeredis)
and ``redis+cluster://`` fit beside plain Redis.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from queue import Empty, LifoQueue
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .config import Settings
from .errors import ConfigurationError

Factory = Callable[[str, Settings], Any]

#: What :class:`redis.BlockingConnectionPool` raises when no connection could be
#: had in time: our own load, not a Redis outage.
POOL_EXHAUSTED = "No connection available."

# Less than this left of a call's budget after waiting for a connection: give up
# rather than send a command that has no time to be answered.
_MIN_LEFT = 0.002

# Attribute of a checked-out connection: the monotonic time its call must be
# answered by, set only when the call had to wait for it (else 0.0).
_DEADLINE = "_flashsale_deadline"


class _FreeConnections(LifoQueue[Any]):
    """The pool's queue of free connections (``None`` stands for one not yet made).

    A free connection is taken at once, exactly as before; only when none is
    free does :meth:`BoundedPool._wait` decide how long to wait and what the
    waiter may do with what it gets.
    """

    def __init__(self, maxsize: int, on_wait: Callable[[_FreeConnections, float | None], Any]):
        super().__init__(maxsize)
        self._on_wait = on_wait

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        try:
            return super().get(block=False)
        except Empty:
            if not block:
                raise
        return self._on_wait(self, timeout)

    def wait(self, timeout: float | None) -> Any:
        """Block up to ``timeout`` seconds for a free connection (``Empty`` if none)."""
        return super().get(True, timeout)


def _needs_command_name() -> bool:
    """redis-py 5's ``get_connection(command_name, ...)`` requires an argument."""
    signature = inspect.signature(redis.BlockingConnectionPool.get_connection)
    param = signature.parameters.get("command_name")
    return param is not None and param.default is inspect.Parameter.empty


_NEEDS_COMMAND_NAME = _needs_command_name()


class BoundedPool(redis.BlockingConnectionPool):
    """A blocking pool in which a call's wait for a connection and its round trip
    share one budget: ``FLASHSALE_REDIS_SOCKET_TIMEOUT`` from the moment it asks.

    The contract (``DESIGN.md``) is that while Redis is down or frozen no answer
    takes longer than the socket timeout plus 100 ms, whatever the pool size and
    the number of waiting threads. redis-py's own pool cannot keep it: its wait
    (``timeout``, our ``FLASHSALE_REDIS_POOL_TIMEOUT``) and the socket timeout
    of the command that follows are separate clocks, so a thread that waited
    for a connection held by a call stuck on a frozen Redis then sends its own
    command and waits a whole socket timeout more; and redis-py has no per-call
    deadline to hand to the socket. So, only on the slow path (no connection
    was free; the fast path is redis-py's own, with no extra clock read,
    syscall or lock):

    - the wait is capped at the socket timeout;
    - a connection that comes back broken (its call failed, it is no longer
      connected) is not reconnected by the waiter: a new connection's handshake
      would cost a socket timeout of its own, and the failure it inherits says
      Redis is in trouble. The waiter gets ``No connection available.`` (a
      ``503`` that does not count towards the breaker), the connection goes
      back for a caller that has the time to reconnect it;
    - if the circuit breaker opened meanwhile, the waiter is refused with
      :class:`~flask_flashsale.breaker.CircuitOpen` without a round trip;
    - otherwise its socket gets only what is left of the budget for this call
      (one ``settimeout`` now and one when the connection comes back).
    """

    def __init__(self, **kwargs: Any) -> None:
        #: The circuit breaker a waiter checks again once it has a connection.
        self.breaker: Any = None
        kwargs["queue_class"] = lambda size: _FreeConnections(size, self._wait)
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]
        #: Seconds a call may take, pool wait included (the socket timeout).
        self.budget: float | None = self.connection_kwargs.get("socket_timeout")

    def make_connection(self) -> Any:
        """A new connection (not yet connected), with no deadline."""
        connection = super().make_connection()  # type: ignore[no-untyped-call]
        setattr(connection, _DEADLINE, 0.0)
        return connection

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        """A connected connection; one that was waited for gets only what is
        left of its call's budget as its socket timeout."""
        if not args and _NEEDS_COMMAND_NAME:
            args = ("",)  # redis-py 5 requires the (unused) command name; 6+ deprecates it
        connection = super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        deadline = getattr(connection, _DEADLINE, 0.0)
        if deadline:
            # Applied here, after redis-py's own checks of the connection: its
            # pure-Python parser's can_read() resets the socket's timeout.
            left = deadline - time.monotonic()
            if left < _MIN_LEFT:
                self.release(connection)
                raise redis.ConnectionError(POOL_EXHAUSTED)
            sock = connection._sock
            if sock is not None:
                sock.settimeout(left)
        return connection

    def release(self, connection: Any) -> None:
        """Give a connection back (its own socket timeout restored)."""
        if getattr(connection, _DEADLINE, 0.0):
            setattr(connection, _DEADLINE, 0.0)
            sock = connection._sock
            if sock is not None:
                sock.settimeout(connection.socket_timeout)
        super().release(connection)  # type: ignore[no-untyped-call]

    def _wait(self, free: _FreeConnections, timeout: float | None) -> Any:
        budget = self.budget
        if budget is None:  # no socket timeout, no budget: redis-py's plain wait
            return free.wait(timeout)
        started = time.monotonic()
        connection = free.wait(budget if timeout is None else min(timeout, budget))
        deadline = started + budget
        if (
            connection is None
            or connection._sock is None
            or deadline - time.monotonic() < _MIN_LEFT
        ):
            free.put_nowait(connection)
            raise Empty
        breaker = self.breaker
        if breaker is not None:
            try:
                breaker.before_call()
            except BaseException:
                free.put_nowait(connection)
                raise
        setattr(connection, _DEADLINE, deadline)
        return connection


def _redis(url: str, settings: Settings) -> redis.Redis:
    # A blocking pool: under a spike, requests queue briefly for a connection
    # (up to FLASHSALE_REDIS_POOL_TIMEOUT, at most the socket timeout) instead
    # of opening thousands of sockets.
    pool = BoundedPool.from_url(
        url,
        max_connections=settings.pool_size,
        timeout=settings.pool_timeout,
        socket_timeout=settings.socket_timeout,
        # A connect that outlasts the socket timeout would break the bound too.
        socket_connect_timeout=min(settings.connect_timeout, settings.socket_timeout),
        health_check_interval=settings.health_check_interval,
        # Never send a command again inside the same call: a retried timeout is a
        # second socket timeout in one answer. redis-py >= 6 retries by default
        # when a client makes its own pool, and a URL's ``?retry_on_timeout=true``
        # would ask for one retry here; with ``retries=0`` neither happens.
        retry=Retry(NoBackoff(), 0),
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
