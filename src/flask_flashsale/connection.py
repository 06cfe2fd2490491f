"""Backends: what ``FLASHSALE_REDIS_URL`` names, and every client made for it.

A small registry maps each URL scheme to a :class:`Backend` class (the way
``limits``' ``storage_from_string`` does). A backend knows how to make the
app's client, the cache subscriber's pub/sub client and the worker's blocking
client, and says what it can do (:attr:`Backend.can_block`,
:attr:`Backend.sharded_pubsub`, :attr:`Backend.process_local`...). Other
modules ask the backend; none of them looks at the URL.

- ``redis://``, ``rediss://``, ``unix://``: one Redis server (:class:`RedisBackend`);
- ``redis+cluster://h:p[,h:p...]``: a Redis Cluster (:class:`ClusterBackend`);
- ``redis+sentinel://[:password@]h:p[,h:p...]/service[/db]``: the master of
  a Sentinel-monitored group, followed across failovers (:class:`SentinelBackend`);
- ``memory://``: an embedded fakeredis store, one process only (:class:`MemoryBackend`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import os
import random
import threading
import time
import weakref
from collections.abc import Callable
from queue import Empty, LifoQueue
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import unquote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import SentinelConnectionPool

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .breaker import CircuitBreaker, GuardedCluster
    from .config import Settings
    from .protocols import EventsClient, RedisClient

#: What :class:`redis.BlockingConnectionPool` raises when no connection could be
#: had in time: our own load, not a Redis outage.
POOL_EXHAUSTED = "No connection available."

# Less than this left of a call's budget after waiting for a connection: give up
# rather than send a command that has no time to be answered.
_MIN_LEFT = 0.002

#: Seconds between two questions to the sentinels about where the master is,
#: asked by the next call that takes a connection (see :class:`SentinelPool`).
SENTINEL_RECHECK = 0.5

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

    The fast admission path (:mod:`~flask_flashsale.fastcall`) keeps the
    connections it used in :attr:`lent` instead of giving them back to the
    queue: they stay this pool's, counted in its size, so the process never
    holds more than ``max_connections`` sockets. A caller that finds the queue
    empty takes an idle one from :attr:`lent` before it waits, and while
    anyone waits (:attr:`waiting`) the fast path gives its connections back to
    the queue instead.
    """

    def __init__(self, **kwargs: Any) -> None:
        #: The circuit breaker a waiter checks again once it has a connection.
        self.breaker: Any = None
        #: Idle connections of this pool held outside its queue by the fast path
        #: (``list.pop``/``append`` are atomic: no lock on that path).
        self.lent: list[Any] = []
        #: How many callers wait for a connection now.
        self.waiting = 0
        self._waiting_lock = threading.Lock()
        kwargs["queue_class"] = lambda size: _FreeConnections(size, self._wait)
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]
        #: Seconds a call may take, pool wait included (the socket timeout).
        self.budget: float | None = self.connection_kwargs.get("socket_timeout")
        # A forked child must not use the parent's sockets. redis-py's own
        # pool notices the fork at its next call (``_checkpid``); the fast path
        # makes no pool call while it finds a lent connection, so forget them
        # at the fork itself (the child's pool makes new ones).
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _forget_lent(ref))

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
        with self._waiting_lock:
            self.waiting += 1
        try:
            # Counted as waiting first: the fast path looks at ``waiting``
            # after putting a connection in ``lent``, so one it puts there
            # now is either found here or handed to the queue.
            try:
                return self.lent.pop()
            except IndexError:
                pass
            return self._wait_for_queue(free, timeout)
        finally:
            with self._waiting_lock:
                self.waiting -= 1

    def _wait_for_queue(self, free: _FreeConnections, timeout: float | None) -> Any:
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


def _forget_lent(ref: weakref.ref[BoundedPool]) -> None:
    pool = ref()
    if pool is not None:
        pool.lent.clear()  # in place: the fast path holds this very list
        pool.waiting = 0  # threads that waited in the parent do not exist here
        pool._waiting_lock = threading.Lock()


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


def _memory(url: str, settings: Settings) -> RedisClient:
    try:
        import fakeredis
    except ImportError:  # pragma: no cover - depends on the environment
        raise ConfigurationError(
            "FLASHSALE_REDIS_URL='memory://' needs the 'memory' extra: "
            "pip install 'Flask-FlashSale[memory]'"
        ) from None
    # Each app gets its own embedded server, kept in its app.extensions state.
    return fakeredis.FakeRedis(server=fakeredis.FakeServer(version=(7,)), decode_responses=True)



class Backend:
    """One kind of Redis deployment, and the clients the extension makes for it.

    Made by :func:`backend_from_settings`; the app's
    :class:`~flask_flashsale.extension.FlashSaleState` keeps it as
    ``state.backend``.
    """

    #: Short name for messages and metrics (``redis``, ``cluster``, ``sentinel``, ``memory``).
    kind: ClassVar[str] = "redis"
    #: The worker may block in one ``XREADGROUP`` over every sale's stream.
    #: False where a read must stay on one node (Cluster) or ``BLOCK`` is
    #: ignored (``memory://``): such workers poll each stream instead.
    can_block: ClassVar[bool] = True
    #: Cache events travel by sharded pub/sub (``SSUBSCRIBE``/``SPUBLISH``).
    #: No backend uses it yet: see :doc:`/scaling` for why a Cluster uses
    #: ``PUBLISH``, which the cluster bus broadcasts to every node.
    sharded_pubsub: ClassVar[bool] = False
    #: The store lives inside this process (``memory://``): no other process
    #: (a CLI command, a worker) sees it.
    process_local: ClassVar[bool] = False
    #: Keys live on several nodes: no command may span two hash slots.
    sharded: ClassVar[bool] = False

    def __init__(self, url: str, settings: Settings | None = None) -> None:
        #: ``FLASHSALE_REDIS_URL``.
        self.url = url
        #: The app's settings (``None`` when only the URL was checked).
        self.settings = settings
        self.parse()

    def parse(self) -> None:
        """Check the URL; raise :class:`~flask_flashsale.ConfigurationError` if it is bad."""

    def _settings(self) -> Settings:
        if self.settings is None:  # pragma: no cover - a programming error
            raise RuntimeError("this backend was made from a URL alone")
        return self.settings

    def client(self, breaker: CircuitBreaker | None = None) -> RedisClient:
        """The app's client (one shared, blocking pool), guarded by ``breaker``."""
        from .breaker import guard

        return guard(self._client(self._settings()), breaker)

    def _client(self, settings: Settings) -> RedisClient:
        return _redis(self.url, settings)

    def events_client(self, client: RedisClient) -> EventsClient:
        """The client the cache subscriber listens with (``.pubsub()``).

        Its own client with a one-connection pool, so the subscription never
        holds one of the app's pooled connections (and is not counted by the
        circuit breaker).
        """
        return self._client(dataclasses.replace(self._settings(), pool_size=1))

    def blocking_client(self, block: float) -> RedisClient:
        """The worker's own client: its reads block ``block`` seconds, longer than
        the app's socket timeout allows.

        No retries inside redis-py (recent versions retry timeouts by default):
        the loop has its own back-off and an outage should reach it at once.
        """
        s = self._settings()
        return redis.Redis.from_url(
            self.url,
            retry=Retry(NoBackoff(), 0),
            socket_timeout=block + max(1.0, s.socket_timeout),
            socket_connect_timeout=s.connect_timeout,
            health_check_interval=s.health_check_interval,
            decode_responses=True,
        )


class RedisBackend(Backend):
    """One Redis server: ``redis://``, ``rediss://``, ``unix://``."""


def _hosts(url: str, default_port: int) -> tuple[str | None, list[tuple[str, int]], str]:
    """``(password, [(host, port)...], path)`` of ``scheme://[:pw@]h:p[,h:p...][/path]``."""
    rest = url.split("://", 1)[1]
    netloc, _, path = rest.partition("/")
    netloc = netloc.split("?", 1)[0]
    path = path.split("?", 1)[0]
    auth, at, hostlist = netloc.rpartition("@")
    password = unquote(auth.partition(":")[2]) if at and auth.partition(":")[2] else None
    hosts: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        if not item:
            continue
        host, colon, port = item.rpartition(":") if not item.endswith("]") else (item, "", "")
        if not colon:
            host, port = item, str(default_port)
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigurationError(f"FLASHSALE_REDIS_URL has a bad host:port {item!r}: {url!r}")
        hosts.append((host, int(port)))
    if not hosts:
        raise ConfigurationError(f"FLASHSALE_REDIS_URL names no host: {url!r}")
    return password, hosts, path


class ClusterBackend(Backend):
    """A Redis Cluster: ``redis+cluster://[:password@]h:p[,h:p...]``.

    Any reachable node of the list is enough to find the others. Every script
    keeps its keys in one slot (the ``{sale}`` hash tag), so each runs on the
    master owning its sale; redis-py follows ``MOVED``/``ASK`` and refreshes
    its slot map after a failover. The worker reads each sale's stream on the
    node that owns it, one ``XREADGROUP`` per stream.
    """

    kind = "cluster"
    can_block = False
    sharded = True

    def parse(self) -> None:
        """Read the password and the startup nodes."""
        self.password, self.nodes, _ = _hosts(self.url, 6379)

    def _client(self, settings: Settings) -> GuardedCluster:
        from redis.cluster import ClusterNode

        from .breaker import GuardedCluster

        return GuardedCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in self.nodes],  # type: ignore[no-untyped-call]
            password=self.password,
            max_connections=settings.pool_size,
            socket_timeout=settings.socket_timeout,
            socket_connect_timeout=min(settings.connect_timeout, settings.socket_timeout),
            health_check_interval=settings.health_check_interval,
            decode_responses=True,
        )

    def events_client(self, client: RedisClient) -> EventsClient:
        """Subscribes on a random node of ``client``'s cluster each time.

        ``PUBLISH`` on a Cluster reaches every node, replicas too, so any node
        will do; a new one is picked after each error (a node that failed).
        """
        return _ClusterEvents(client)

    def blocking_client(self, block: float) -> RedisClient:
        """Not used: a cluster worker polls each stream on its own node."""
        raise ConfigurationError("a Redis Cluster worker does not block across streams")


class _ClusterEvents:
    """``pubsub()`` on a random node of a cluster client (for :class:`~.cache.Subscriber`)."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster

    def pubsub(self) -> Any:
        nodes = list(self.cluster.get_nodes())
        return self.cluster.pubsub(node=random.choice(nodes) if nodes else None)


class SentinelBackend(Backend):
    """The master of a Sentinel group:
    ``redis+sentinel://[:password@]h:p[,h:p...]/service[/db]``.

    The hosts are the sentinels (port 26379 by default); ``password`` is the
    data nodes' (sentinels are asked without one). Every new connection asks
    the sentinels where the master is, and a connection to a master that was
    demoted is dropped (redis-py's ``SentinelConnectionPool``), so a failover
    is followed without a restart.
    """

    kind = "sentinel"

    def parse(self) -> None:
        """Read the password, the sentinels, the service name and the db."""
        self.password, self.sentinels, path = _hosts(self.url, 26379)
        service, _, db = path.strip("/").partition("/")
        if not service:
            raise ConfigurationError(
                "FLASHSALE_REDIS_URL needs the service name: "
                f"redis+sentinel://host:26379/<service>[/db], got {self.url!r}"
            )
        if db and not db.isdigit():
            raise ConfigurationError(f"FLASHSALE_REDIS_URL has a bad db {db!r}: {self.url!r}")
        self.service = service
        self.db = int(db or 0)

    def sentinel(self, socket_timeout: float) -> Any:
        """A :class:`redis.sentinel.Sentinel` on the URL's sentinels."""
        from redis.sentinel import Sentinel

        s = self._settings()
        return Sentinel(  # type: ignore[no-untyped-call]
            self.sentinels,
            socket_timeout=socket_timeout,
            socket_connect_timeout=min(s.connect_timeout, socket_timeout),
        )

    def _master(self, settings: Settings, socket_timeout: float, **kwargs: Any) -> RedisClient:
        # A redis.Redis (redis-py leaves master_for unannotated).
        master: RedisClient = self.sentinel(socket_timeout).master_for(
            self.service,
            db=self.db,
            password=self.password,
            socket_timeout=socket_timeout,
            socket_connect_timeout=min(settings.connect_timeout, socket_timeout),
            health_check_interval=settings.health_check_interval,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
            connection_pool_class=SentinelPool,
            **kwargs,
        )
        return master

    def _client(self, settings: Settings) -> RedisClient:
        return self._master(
            settings,
            settings.socket_timeout,
            max_connections=settings.pool_size,
        )

    def blocking_client(self, block: float) -> RedisClient:
        """The worker's own client on the current master (followed across failovers)."""
        s = self._settings()
        return self._master(s, block + max(1.0, s.socket_timeout))


class SentinelPool(SentinelConnectionPool):
    """redis-py's Sentinel pool, which also notices a failover while it is busy.

    redis-py asks the sentinels where the master is only when it opens a
    connection, or when the old master answers ``READONLY``. After a forced
    failover (``SENTINEL FAILOVER``, or a master cut off by a partition) the
    old master stays a master, and keeps taking writes, for ~10 s: a
    sentinel waits 8 s before it tells a master that came back as one to
    follow the new master. Pooled connections stayed on it that whole time,
    and everything they wrote was lost when it was demoted and resynced.

    So the first call that takes a connection each :data:`SENTINEL_RECHECK`
    seconds asks the sentinels again; when the master moved, idle connections
    are closed at once and busy ones when they come back (redis-py's own
    ``get_master_address``). If no sentinel answers, the pool keeps the
    master it knows.
    """

    #: Seconds between two questions to the sentinels.
    recheck: ClassVar[float] = SENTINEL_RECHECK

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self._recheck_at = 0.0

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        """A connection to the master the sentinels name now (asked at most
        every :attr:`recheck` seconds)."""
        now = time.monotonic()
        if now >= self._recheck_at:
            self._recheck_at = now + self.recheck
            # If no sentinel answers, keep the master we know.
            with contextlib.suppress(redis.RedisError):
                self.get_master_address()  # type: ignore[no-untyped-call]
        return super().get_connection(*args, **kwargs)


class MemoryBackend(Backend):
    """``memory://``: an embedded fakeredis server, for one process (tests, demos)."""

    kind = "memory"
    can_block = False
    process_local = True

    def _client(self, settings: Settings) -> RedisClient:
        return _memory(self.url, settings)

    def events_client(self, client: RedisClient) -> EventsClient:
        """The app's client itself: the embedded store has no other way in."""
        return client

    def blocking_client(self, block: float) -> RedisClient:
        """Not used: a ``memory://`` worker polls."""
        raise ConfigurationError("memory:// does not block")


#: URL scheme -> backend class.
SCHEMES: dict[str, type[Backend]] = {
    "redis": RedisBackend,
    "rediss": RedisBackend,
    "unix": RedisBackend,
    "redis+cluster": ClusterBackend,
    "redis+sentinel": SentinelBackend,
    "memory": MemoryBackend,
}


def backend_class(url: str) -> type[Backend]:
    """The backend class of ``url``'s scheme; raise ``ConfigurationError`` if unknown."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    found = SCHEMES.get(scheme)
    if found is None:
        raise ConfigurationError(
            f"FLASHSALE_REDIS_URL scheme {scheme!r} is not supported; "
            f"use one of {', '.join(s + '://' for s in SCHEMES)}"
        )
    return found


def backend_from_settings(settings: Settings) -> Backend:
    """The backend ``FLASHSALE_REDIS_URL`` names."""
    return backend_class(settings.redis_url)(settings.redis_url, settings)


def client_from_settings(settings: Settings) -> RedisClient:
    """A new unguarded client for ``FLASHSALE_REDIS_URL`` (its own connection pool)."""
    return backend_from_settings(settings)._client(settings)
