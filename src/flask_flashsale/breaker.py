"""A circuit breaker in front of Redis.

After ``FLASHSALE_BREAKER_FAIL_MAX`` consecutive connection errors or timeouts
the breaker *opens*: for ``FLASHSALE_BREAKER_RESET_TIMEOUT`` seconds every
Redis call fails at once with :class:`CircuitOpen`, a ``503
backend_unavailable`` with ``Retry-After``, instead of each request waiting on
a dead server. Then it is *half-open*: one call goes through as a probe; if
Redis answers the breaker closes, if not it opens again.

A timeout (a whole socket timeout without an answer: Redis is frozen or
stalled) makes it half-open at once: the next call is a probe and the others
are refused until it returns, so calls made while the first ones are stuck
fail fast instead of each waiting its own socket timeout. A refused
connection does not: it fails in microseconds, and a few of them before the
breaker opens cost nothing.

Only outages count: a ``ResponseError`` (a bad script, ``NOSCRIPT``, which
redis-py handles by reloading the script) means Redis answered. "No free
connection in our own pool" means we are busy, and a call refused by the
breaker itself tells nothing new: these two leave the breaker as it is.

Why not :mod:`pybreaker`: its ``CircuitBreaker.call`` holds one ``RLock``
while the guarded function runs, so every Redis call of a threaded worker
would run one at a time (8 threads x 10 calls of 10 ms take 0.8 s instead of
0.1 s with pybreaker 1.4.1; danielfm/pybreaker issue #3, and PRs #40, #41,
#57, #77 to remove the lock were closed unmerged). The breaker sits under every
command of the hot path, so it must not serialize them; this one takes a lock
only when its state changes, and costs two attribute checks per call while
closed.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis
from redis.client import Pipeline
from redis.cluster import ClusterPipeline, RedisCluster
from redis.exceptions import ClusterDownError, MaxConnectionsError, WatchError

from . import signals
from .connection import POOL_EXHAUSTED, BoundedPool
from .errors import BackendUnavailable

if TYPE_CHECKING:
    from flask import Flask

    from .config import Settings
    from .protocols import RedisClient

logger = logging.getLogger("flask_flashsale")

#: The breaker lets every call through.
CLOSED = "closed"
#: The breaker refuses every call until ``reset_timeout`` has passed.
OPEN = "open"
#: One probe call is in flight; the others are refused.
HALF_OPEN = "half-open"


class CircuitOpen(BackendUnavailable, redis.ConnectionError):
    """Raised instead of calling Redis while the circuit breaker is open.

    It is a :class:`~flask_flashsale.BackendUnavailable` (so it renders as a
    ``503`` problem+json with ``Retry-After``, even from a host's own view) and
    a :class:`redis.ConnectionError` (so code that already copes with Redis
    being down, such as a worker loop, copes with it too), the way werkzeug's
    ``BadRequestKeyError`` is both a ``BadRequest`` and a ``KeyError``.
    """


def _tells_nothing(exc: BaseException) -> bool:
    # Our own pool is busy, or the breaker itself refused: no news about Redis.
    return isinstance(exc, (CircuitOpen, MaxConnectionsError)) or (
        isinstance(exc, redis.ConnectionError) and str(exc) == POOL_EXHAUSTED
    )


def is_outage(exc: BaseException) -> bool:
    """True if ``exc`` says Redis is unreachable or too slow (what trips the breaker)."""
    if _tells_nothing(exc):
        return False
    # CLUSTERDOWN: the slot's master failed and no replica took over yet.
    return isinstance(exc, (redis.ConnectionError, redis.TimeoutError, ClusterDownError))


class CircuitBreaker:
    """Closed, open, half-open: the classic state machine, safe across threads.

    ``fail_max`` consecutive outage errors open it; after ``reset_timeout``
    seconds one probe call is let through. ``on_change(old, new)`` is called
    (outside the lock) on every state change.
    """

    def __init__(
        self,
        fail_max: int = 5,
        reset_timeout: float = 2.0,
        *,
        on_change: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        #: Consecutive outage errors that open the breaker.
        self.fail_max = fail_max
        #: Seconds the breaker stays open before a probe.
        self.reset_timeout = reset_timeout
        #: ``closed``, ``open`` or ``half-open``.
        self.state = CLOSED
        #: Consecutive outage errors so far (reset by any answer from Redis).
        self.failures = 0
        #: How many times the breaker has opened (a counter for metrics).
        self.opened = 0
        #: How many calls were refused without reaching Redis (a counter for metrics).
        self.rejected = 0
        self._on_change = on_change
        self._clock = clock
        self._opened_at = 0.0
        self._probe_started = 0.0
        self._lock = threading.Lock()

    def retry_after(self) -> float:
        """Seconds until the breaker will let a probe through (0 when closed)."""
        if self.state == CLOSED:
            return 0.0
        return max(0.0, self._opened_at + self.reset_timeout - self._clock())

    def before_call(self) -> None:
        """Raise :class:`CircuitOpen` unless a call may go to Redis now."""
        if self.state is CLOSED:
            return
        now = self._clock()
        with self._lock:
            if self.state is OPEN and now >= self._opened_at + self.reset_timeout:
                change = self._set(HALF_OPEN)
                self._probe_started = now
            elif self.state is HALF_OPEN and now >= self._probe_started + self.reset_timeout:
                # The probe never reported back (its thread died): allow another.
                change = None
                self._probe_started = now
            elif self.state is CLOSED:
                return
            else:
                self.rejected += 1
                wait = max(0.0, self._opened_at + self.reset_timeout - now)
                raise CircuitOpen(
                    "the sale backend is unavailable (circuit breaker open)",
                    retry_after=max(1.0, wait),
                )
        self._notify(change)

    def on_success(self) -> None:
        """Record that Redis answered."""
        if self.failures or self.state is not CLOSED:
            with self._lock:
                self.failures = 0
                change = self._set(CLOSED)
            self._notify(change)

    def on_error(self, exc: BaseException) -> None:
        """Record a failed call: outages count, a timeout makes the next call a
        probe, errors Redis answered with count as answers, and a busy pool or
        a refusal by the breaker change nothing."""
        if isinstance(exc, WatchError) and is_outage(exc.__context__ or exc):
            # redis-py turns a connection error or a timeout on a connection that
            # is WATCHing into a WatchError; what happened is the outage.
            exc = exc.__context__ or exc
        if not is_outage(exc):
            if not _tells_nothing(exc):
                self.on_success()
            return
        with self._lock:
            self.failures += 1
            change = None
            now = self._clock()
            if self.state is HALF_OPEN or (self.state is CLOSED and self.failures >= self.fail_max):
                self._opened_at = now
                self.opened += 1
                change = self._set(OPEN)
            elif self.state is CLOSED and isinstance(exc, redis.TimeoutError):
                # Redis did not answer for a whole socket timeout: calls sent
                # meanwhile are stuck too. Stop sending them; the next call is
                # a probe (its slot is free: "started" reset_timeout ago).
                self._opened_at = self._probe_started = now - self.reset_timeout
                change = self._set(HALF_OPEN)
        self._notify(change)

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` (one Redis round trip) through the breaker."""
        self.before_call()
        try:
            result = fn(*args, **kwargs)
        except redis.RedisError as exc:
            self.on_error(exc)
            raise
        self.on_success()
        return result

    def _set(self, new: str) -> tuple[str, str] | None:
        old = self.state
        if old is new:
            return None
        self.state = new
        return (old, new)

    def _notify(self, change: tuple[str, str] | None) -> None:
        if change is not None and self._on_change is not None:
            self._on_change(*change)


class GuardedPipeline(Pipeline):
    """A redis-py pipeline whose round trips go through a :class:`CircuitBreaker`."""

    def __init__(self, breaker: CircuitBreaker, *args: Any) -> None:
        super().__init__(*args)
        #: The breaker every round trip goes through.
        self.breaker = breaker

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Send the queued commands (one round trip), through the breaker."""
        result: list[Any] = self.breaker.call(super().execute, raise_on_error)
        return result

    def immediate_execute_command(self, *args: Any, **options: Any) -> Any:
        """Run a command at once (``WATCH`` and reads while watching), through the breaker."""
        return self.breaker.call(super().immediate_execute_command, *args, **options)


class GuardedRedis(redis.Redis):
    """A :class:`redis.Redis` client whose every command goes through a breaker.

    Scripts (``EVALSHA``), pipelines, transactions and locks made from it are
    guarded too; ``pubsub()`` and ``monitor()`` are not.
    """

    def __init__(self, breaker: CircuitBreaker, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        #: The breaker every command goes through.
        self.breaker = breaker

    def execute_command(self, *args: Any, **options: Any) -> Any:
        """Run one command (one round trip), through the breaker."""
        return self.breaker.call(super().execute_command, *args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> GuardedPipeline:
        """A pipeline whose round trips go through the same breaker."""
        return GuardedPipeline(
            self.breaker, self.connection_pool, self.response_callbacks, transaction, shard_hint
        )


class GuardedClusterPipeline(ClusterPipeline):
    """A cluster pipeline (one round trip per node) whose ``execute`` goes
    through the cluster client's breaker."""

    breaker: CircuitBreaker | None = None

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Send the queued commands, through the breaker."""
        if self.breaker is None:
            return list(super().execute(raise_on_error))
        result: list[Any] = self.breaker.call(super().execute, raise_on_error)
        return result


class GuardedCluster(RedisCluster):
    """A :class:`redis.cluster.RedisCluster` whose commands go through :attr:`breaker`.

    One breaker for the whole cluster, set by
    :meth:`~flask_flashsale.connection.ClusterBackend.client` (``None``: off).
    Each call counts once, after redis-py's own redirections (``MOVED``,
    ``ASK``) and retries: a failover that redis-py rides out by refreshing
    its slot map is not an outage; a call that still fails is.
    """

    #: The breaker every command goes through (``None``: not guarded).
    breaker: CircuitBreaker | None = None

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        """Run one command on the node owning its keys, through the breaker."""
        if self.breaker is None:
            return super().execute_command(*args, **kwargs)  # type: ignore[no-untyped-call]
        return self.breaker.call(super().execute_command, *args, **kwargs)

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> Any:
        """A pipeline whose ``execute`` goes through the same breaker."""
        pipe = super().pipeline(transaction, shard_hint)  # type: ignore[no-untyped-call]
        pipe.__class__ = GuardedClusterPipeline
        pipe.breaker = self.breaker
        return pipe


def guard(client: RedisClient, breaker: CircuitBreaker | None) -> RedisClient:
    """Put ``breaker`` in front of ``client``; return the client to use.

    Plain :class:`redis.Redis` clients (``redis://``, ``rediss://``,
    ``unix://``, the master of a Sentinel group) are guarded here; a cluster
    client is a :class:`GuardedCluster` from the start; the embedded
    ``memory://`` store cannot be down.
    """
    if isinstance(client, GuardedCluster):
        client.breaker = breaker
        return client
    if breaker is None or type(client) is not redis.Redis:
        return client
    pool = client.connection_pool
    if isinstance(pool, BoundedPool):
        pool.breaker = breaker  # a call that waited for a connection checks it again
    return GuardedRedis(breaker, connection_pool=pool)


def breaker_for(app: Flask, settings: Settings) -> CircuitBreaker | None:
    """The breaker of one app, from its settings (``None`` when turned off).

    State changes are logged and sent as
    :data:`~flask_flashsale.signals.breaker_state_changed` with the app as sender.
    """
    if settings.breaker_fail_max == 0:
        return None
    app_ref = weakref.ref(app)

    def on_change(old: str, new: str) -> None:
        log = logger.warning if new == OPEN else logger.info
        log("flashsale: Redis circuit breaker %s -> %s", old, new)
        target = app_ref()
        if target is not None and signals.breaker_state_changed.receivers:
            signals.breaker_state_changed.send(target, old_state=old, new_state=new)

    return CircuitBreaker(
        settings.breaker_fail_max, settings.breaker_reset_timeout, on_change=on_change
    )
