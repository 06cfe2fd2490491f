"""The types of what the extension talks to: a Redis client, its pipelines, its scripts.

Every module that sends commands takes a :class:`RedisClient`: the commands the
package calls, and nothing more. The clients the backends make all satisfy it
(checked by mypy where :mod:`~flask_flashsale.connection` returns them):
:class:`redis.Redis`, :class:`redis.cluster.RedisCluster`, their breaker-guarded
subclasses (:class:`~flask_flashsale.breaker.GuardedRedis`,
:class:`~flask_flashsale.breaker.GuardedCluster`), the Sentinel master and
``fakeredis.FakeRedis`` (``memory://``). Their pipelines satisfy
:class:`RedisPipeline`, and what ``register_script`` returns satisfies
:class:`Script`.

Replies are typed ``Any``: redis-py annotates each command of its (shared
sync and asyncio) command classes as returning ``X | Awaitable[X]``, and what
a command returns depends on ``decode_responses``; the modules that read a
reply convert it (``int(...)``, ``str(...)``) where it matters. Where redis-py
types a parameter with an invariant generic over its own key types
(``dict[KeyT, ...]``, ``Mapping[FieldT, ...]``), the parameter here is
``Any``-keyed so that a plain ``dict[str, ...]`` can be passed.

Add a command here when a module starts to use it; mypy then checks that every
client above has it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from redis import Redis
    from redis.client import PubSub
    from redis.cluster import RedisCluster

#: A value Redis stores: what redis-py encodes for a command's argument.
Value = str | bytes | int | float


class Script(Protocol):
    """A registered Lua script (redis-py's ``Script``), run with ``EVALSHA``.

    ``keys`` fill ``KEYS``, ``args`` fill ``ARGV``; ``client`` runs it on
    another redis-py client or pipeline than the one it was registered on
    (redis-py's own classes only: it looks at their type).
    """

    def __call__(
        self,
        keys: Sequence[str] | None = None,
        args: Iterable[Value] | None = None,
        client: Redis | RedisCluster | None = None,
    ) -> Any:
        """Run the script; return its reply."""


class RedisCommands(Protocol):
    """The Redis commands the package sends, on a client or queued on a pipeline."""

    def delete(self, *names: str) -> Any:
        """``DEL``."""

    def expire(self, name: str, time: int) -> Any:
        """``EXPIRE`` (seconds)."""

    def pexpire(self, name: str, time: int) -> Any:
        """``PEXPIRE`` (milliseconds)."""

    def hget(self, name: str, key: str) -> Any:
        """``HGET``."""

    def hgetall(self, name: str) -> Any:
        """``HGETALL``."""

    def hincrby(self, name: str, key: str, amount: int = 1) -> Any:
        """``HINCRBY``."""

    def hlen(self, name: str) -> Any:
        """``HLEN``."""

    def hmget(self, name: str, keys: str | Iterable[str], *args: str) -> Any:
        """``HMGET``."""

    def hset(
        self,
        name: str,
        key: str | None = None,
        value: Value | None = None,
        mapping: Mapping[Any, Any] | None = None,
    ) -> Any:
        """``HSET`` of one field, or of every field of ``mapping``."""

    def publish(self, channel: str, message: str) -> Any:
        """``PUBLISH``."""

    def sadd(self, name: str, *values: str) -> Any:
        """``SADD``."""

    def smembers(self, name: str) -> Any:
        """``SMEMBERS``."""

    def srem(self, name: str, *values: str) -> Any:
        """``SREM``."""

    def time(self) -> Any:
        """``TIME``: ``(seconds, microseconds)``."""

    def xadd(
        self,
        name: str,
        fields: dict[Any, Any],
        id: str = "*",
        maxlen: int | None = None,
        approximate: bool = True,
    ) -> Any:
        """``XADD``."""

    def xlen(self, name: str) -> Any:
        """``XLEN``."""

    def xpending(self, name: str, groupname: str) -> Any:
        """``XPENDING`` (the summary form)."""

    def xrange(
        self, name: str, min: str = "-", max: str = "+", count: int | None = None
    ) -> Any:
        """``XRANGE``."""

    def xreadgroup(
        self,
        groupname: str,
        consumername: str,
        streams: dict[Any, Any],
        count: int | None = None,
        block: int | None = None,
    ) -> Any:
        """``XREADGROUP``."""

    def zcard(self, name: str) -> Any:
        """``ZCARD``."""

    def zrangebyscore(
        self,
        name: str,
        min: float | str,
        max: float | str,
        start: int | None = None,
        num: int | None = None,
    ) -> Any:
        """``ZRANGEBYSCORE``."""


class RedisPipeline(RedisCommands, Protocol):
    """A redis-py pipeline: commands queue up and :meth:`execute` sends them at once.

    With ``transaction=True``, :meth:`watch` puts it in immediate mode (reads
    answer at once) until :meth:`multi` starts the ``MULTI``/``EXEC`` block.
    """

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Send the queued commands (one round trip per node); their replies in order."""

    def watch(self, *names: str) -> Any:
        """``WATCH`` ``names`` (optimistic locking)."""

    def multi(self) -> Any:
        """Start queueing the transaction after :meth:`watch`."""

    def __enter__(self) -> RedisPipeline:
        """The pipeline itself; :meth:`__exit__` resets it (``UNWATCH``)."""

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> Any:
        """Reset the pipeline."""


class RedisClient(RedisCommands, Protocol):
    """A Redis client as the package uses it (see the module's docstring)."""

    def pipeline(self, transaction: bool = True) -> RedisPipeline:
        """A pipeline on this client (``transaction=False``: no ``MULTI``/``EXEC``)."""

    def register_script(self, script: str) -> Script:
        """Register a Lua script (run later with ``EVALSHA``, reloaded on ``NOSCRIPT``)."""

    def scan_iter(self, match: str | None = None, count: int | None = None) -> Iterator[Any]:
        """``SCAN`` with ``MATCH``, every key (every master's, on a Cluster)."""

    def pubsub(self) -> PubSub:
        """A new pub/sub connection (not guarded by the circuit breaker)."""

    def close(self) -> None:
        """Close the client's connections."""


class EventsClient(Protocol):
    """What the cache's subscriber listens with: anything with a ``pubsub()``
    (a client, or :class:`~flask_flashsale.connection.Backend`'s stand-in for a Cluster)."""

    def pubsub(self) -> PubSub:
        """A new pub/sub connection."""


if TYPE_CHECKING:
    # mypy checks here that every client the backends make fits the protocols.
    import fakeredis
    from redis.client import Pipeline
    from redis.cluster import ClusterPipeline
    from redis.commands.core import Script as RedisScript

    from .breaker import GuardedCluster, GuardedPipeline, GuardedRedis

    def _fits(
        plain: Redis,
        cluster: RedisCluster,
        guarded: GuardedRedis,
        guarded_cluster: GuardedCluster,
        fake: fakeredis.FakeRedis,
        pipeline: Pipeline,
        cluster_pipeline: ClusterPipeline,
        guarded_pipeline: GuardedPipeline,
        script: RedisScript,
    ) -> None:
        clients: list[RedisClient] = [plain, cluster, guarded, guarded_cluster, fake]
        pipelines: list[RedisPipeline] = [pipeline, cluster_pipeline, guarded_pipeline]
        listeners: list[EventsClient] = [plain, cluster, fake]
        scripts: list[Script] = [script]
        del clients, pipelines, listeners, scripts
