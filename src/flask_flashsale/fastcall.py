"""The admission round trip without redis-py's per-call layers.

:class:`FastScript` runs a registered script with the call shape of redis-py's
``Script`` (``script(keys=[...], args=[...])``, the same decoded reply, the
same exceptions), on the same connections, through the same circuit breaker,
for a fraction of the client CPU. :func:`build_strategy
<flask_flashsale.strategies.build_strategy>` uses it for the admission script
when ``FLASHSALE_FAST_ADMISSION`` is on and the backend is one Redis server
(``redis://``, ``rediss://``, ``unix://``); a Cluster, Sentinel or
``memory://`` keeps redis-py's ``Script``.

Why redis-py's own path cannot be this cheap (redis-py 5 to 8): one
``EVALSHA`` through ``Script.__call__`` goes through ``evalsha`` ->
``execute_command`` (our breaker) -> ``_execute_command`` (retry object,
lambda, observability hooks, ``should_reconnect``) -> the pool's
``get_connection`` (fork check, the free queue's lock and condition,
``connect()``, and ``can_read()``: a ``poll()`` syscall per checkout) -> ``send_command``
(the command packed again from its arguments, every call) ->
``parse_response`` -> ``release`` (the queue's lock again). redis-py has no API
to send pre-packed bytes through a client, nor to keep a connection out of
the pool between calls. Measured (``python -m benchmarks admission-client``):
see :doc:`/performance`.

What this keeps from redis-py: the connections themselves (the pool's own
``Connection`` objects, made by the pool: TLS, unix sockets, password, db,
timeouts, the hiredis parser), their ``send_packed_command`` and
``read_response`` (errors, timeouts, decoding, disconnect on error), and the
pool's checkout whenever no idle connection is at hand, with its budget
(:class:`~flask_flashsale.connection.BoundedPool`). What it does by hand, and
only that: pack the command (the ``EVALSHA <sha> <numkeys>`` prefix once, the
keys and arguments per call; with a :class:`Template`, the values that are the
same for every call once too) and keep the connections it used in the pool's
:attr:`~flask_flashsale.connection.BoundedPool.lent` list.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

import redis
from redis.cluster import RedisCluster
from redis.connection import Encoder  # type: ignore[attr-defined]
from redis.exceptions import NoScriptError, ResponseError

from .connection import _DEADLINE, BoundedPool

if TYPE_CHECKING:
    from .protocols import RedisClient, Script, Value

#: A lent connection idle for longer than this (seconds) is checked before
#: use. After a Redis restart a connection's socket is dead (the kernel of the
#: old server closed it), and the command sent on it would fail: that order
#: would be a 503 although Redis is back. The check is redis-py's own
#: ``can_read()`` (a ``poll()``; ~0.8 us against ~0.04 us for the clock read
#: that decides whether to make it, on a ~12 us call), so it runs only when a
#: connection sat idle; under load connections come back within a
#: millisecond and skip it.
#: A server that dies and comes back within this time after a connection's
#: last use escapes the check: that one order answers 503.
IDLE_CHECK = 0.01

# Connections are typed Any: redis-py leaves its Connection methods unannotated.

# RESP bulk-string headers of the short values admission sends, made once.
_BULK_CACHED = 256
_BULK = [b"$%d\r\n" % n for n in range(_BULK_CACHED)]

# Attribute of a lent connection: the monotonic time its last call began.
_USED = "_flashsale_used"


def fast_script_for(script: Script, client: RedisClient) -> Script:
    """``script`` as a :class:`FastScript` when ``client`` allows it, else ``script``.

    Only a plain (or breaker-guarded) client on a
    :class:`~flask_flashsale.connection.BoundedPool` qualifies: one Redis
    server. Cluster and Sentinel clients route commands themselves, and
    ``memory://`` has no socket.
    """
    from .breaker import GuardedRedis

    pool = getattr(client, "connection_pool", None)
    if (
        type(client) not in (redis.Redis, GuardedRedis)
        or type(pool) is not BoundedPool
        or getattr(pool, "cache", None) is not None  # client-side caching wraps connections
    ):
        return script
    return FastScript(script, client)  # type: ignore[arg-type]  # a redis-py Script, checked above


class FastScript:
    """A registered redis-py ``Script`` run with one pre-packed ``EVALSHA``.

    ``fast(keys=[...], args=[...])`` answers exactly what ``script(keys=...,
    args=...)`` would, raises the same exceptions, and makes one round trip
    (two more, ``SCRIPT LOAD`` and the ``EVALSHA`` again, after a
    ``NOSCRIPT``: the script did not run, so sending it again is safe).

    - Breaker: ``before_call`` first (an open breaker refuses without a round
      trip), then ``on_success`` or ``on_error``, as
      :class:`~flask_flashsale.breaker.GuardedRedis` does for each command.
    - Connections: the pool's own. An idle one is popped from the pool's
      ``lent`` list (no lock, no syscall); when none is, the pool's checkout
      (redis-py's, with the wait/round-trip budget of
      :class:`~flask_flashsale.connection.BoundedPool`) gives one. After the
      call it goes back to ``lent``, or to the pool's queue if someone waits
      for a connection or it was waited for (its socket timeout is then
      restored by the pool). So the fast path never holds more sockets than
      ``FLASHSALE_REDIS_POOL_SIZE``, and never keeps one from other callers.
    - A connection idle longer than :data:`IDLE_CHECK` is checked first
      (after a restart it is dead); a command is never sent twice: any error
      but a reply error disconnects the connection and gives it back to the
      pool, which reconnects it on its next checkout.
    """

    def __init__(self, script: Any, client: redis.Redis) -> None:
        #: The redis-py ``Script`` this one runs.
        self.redis_script = script
        #: The script's source and SHA1 (as on redis-py's ``Script``).
        self.script: str = script.script
        self.sha: str = script.sha
        #: The client's pool, whose connections this uses.
        self.pool = cast(BoundedPool, client.connection_pool)  # checked by fast_script_for
        #: The client's circuit breaker (``None`` when turned off).
        self.breaker: Any = getattr(client, "breaker", None)
        #: Seconds a connection may sit idle before it is checked (see :data:`IDLE_CHECK`).
        self.idle_check = IDLE_CHECK
        self._lent = self.pool.lent
        kwargs = self.pool.connection_kwargs
        self._encoding: str = kwargs.get("encoding", "utf-8")
        self._errors: str = kwargs.get("encoding_errors", "strict")
        self._encoder = Encoder(self._encoding, self._errors, False)  # type: ignore[no-untyped-call]
        self._sha: bytes = script.sha.encode()
        self._heads: dict[tuple[int, int], bytes] = {}

    def __call__(
        self,
        keys: Sequence[str] | None = None,
        args: Iterable[Value] | None = None,
        client: redis.Redis | RedisCluster | None = None,
    ) -> Any:
        """Run the script on ``keys`` and ``args``; return its decoded reply.

        With ``client`` (another client or a pipeline), redis-py's ``Script``
        runs it there instead.
        """
        if client is not None:
            return self.redis_script(keys=keys, args=args, client=client)
        if keys is None:
            keys = ()
        if not isinstance(args, (list, tuple)):
            args = tuple(args or ())
        return self.run(self.pack(keys, args))

    def pack(self, keys: Sequence[Any], args: Sequence[Any]) -> bytes:
        """The ``EVALSHA`` command for ``keys`` and ``args``, as sent (RESP)."""
        nkeys = len(keys)
        parts = [self._head(nkeys, nkeys + len(args))]
        self._pack_values(parts.append, itertools.chain(keys, args), itertools.repeat(b"\r\n"))
        return b"".join(parts)

    def template(self, keys: Sequence[Value | None], args: Sequence[Value | None]) -> Template:
        """The command for ``keys`` and ``args`` with each ``None`` a slot.

        The values around the slots are packed once, here;
        :meth:`Template.pack` packs only the slots' values, in order (keys'
        slots first). For a caller that sends many commands differing in a
        few values (the admission: 8 of its 21 values change per order).
        """
        values = [*keys, *args]
        chunks: list[bytes] = []
        parts = [self._head(len(keys), len(values))]
        for value in values:
            if value is None:
                chunks.append(b"".join(parts))
                parts = [b"\r\n"]
            else:
                self._pack_values(parts.append, (value,), (b"\r\n",))
        chunks.append(b"".join(parts))
        return Template(self, chunks)

    def run(self, command: bytes) -> Any:
        """Send ``command`` (from :meth:`pack` or a :class:`Template`) and return
        its decoded reply, as :meth:`__call__` does (breaker, connection, NOSCRIPT)."""
        breaker = self.breaker
        if breaker is None:
            return self._call(command)
        breaker.before_call()
        try:
            reply = self._call(command)
        except redis.RedisError as exc:
            breaker.on_error(exc)
            raise
        breaker.on_success()
        return reply

    def _head(self, nkeys: int, total: int) -> bytes:
        # ``*<n>\r\n$7\r\nEVALSHA\r\n<sha>\r\n<numkeys>``, made once per shape.
        head = self._heads.get((nkeys, total))
        if head is None:
            numkeys = str(nkeys).encode()
            head = b"*%d\r\n$7\r\nEVALSHA\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
                total + 3,
                len(self._sha),
                self._sha,
                len(numkeys),
                numkeys,
            )
            self._heads[(nkeys, total)] = head
        return head

    def _pack_values(
        self, append: Callable[[bytes], None], values: Iterable[Any], tails: Iterable[bytes]
    ) -> None:
        # Each value as a RESP bulk string, followed by its tail (``tails`` may
        # be endless: itertools.repeat).
        encoding, errors = self._encoding, self._errors
        for value, tail in zip(values, tails, strict=False):
            if type(value) is str:
                data: Any = value.encode(encoding, errors)
            elif type(value) is int:
                data = str(value).encode()
            else:  # bytes, floats...; what redis-py refuses (bool, None) it refuses here
                data = self._encoder.encode(value)  # type: ignore[no-untyped-call]
            size = len(data)
            append(_BULK[size] if size < _BULK_CACHED else b"$%d\r\n" % size)
            append(data)
            append(tail)

    def _call(self, packed: bytes) -> Any:
        command = (packed,)
        pool = self.pool
        lent = self._lent
        now = time.monotonic()
        try:
            conn = lent.pop()
        except IndexError:
            # None idle: the pool's own checkout, budget and all. It may raise
            # (no connection in time, breaker opened meanwhile, connect failed);
            # then it kept or got back its connection.
            conn = pool.get_connection()
        else:
            if now - getattr(conn, _USED) > self.idle_check:
                self._check(conn)
        try:
            conn.send_packed_command(command, False)
            try:
                reply = conn.read_response()
            except NoScriptError:
                reply = self._load_and_send(conn, command)
        except ResponseError:
            # Redis answered (a script error): the connection is fine.
            self._give_back(conn, now)
            raise
        except BaseException:
            # The command may have reached Redis: never send it again. The
            # connection may hold half a reply: drop its socket, give it back
            # to the pool (which reconnects it when it is next checked out).
            conn.disconnect()
            pool.release(conn)
            raise
        self._give_back(conn, now)
        return reply

    def _check(self, conn: Any) -> None:
        """Reconnect an idle connection that is dead or has unexpected data
        (what redis-py's pool checks at every checkout). Nothing was sent yet."""
        try:
            if conn.can_read():
                raise redis.ConnectionError("Connection has data")
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            conn.disconnect()
            try:
                conn.connect()
            except BaseException:
                self.pool.release(conn)
                raise
        except BaseException:
            conn.disconnect()
            self.pool.release(conn)
            raise

    def _load_and_send(self, conn: Any, command: tuple[bytes]) -> Any:
        # NOSCRIPT: the script did not run (Redis restarted, SCRIPT FLUSH);
        # load it on this connection and send the command again, once.
        conn.send_command("SCRIPT", "LOAD", self.script, check_health=False)
        conn.read_response()
        conn.send_packed_command(command, False)
        return conn.read_response()

    def _give_back(self, conn: Any, used: float) -> None:
        pool = self.pool
        if pool.waiting or getattr(conn, _DEADLINE, 0):
            pool.release(conn)  # to a waiter; or its socket timeout restored
            return
        setattr(conn, _USED, used)
        self._lent.append(conn)
        if pool.waiting:
            # Someone began to wait meanwhile and may have missed it in ``lent``.
            with contextlib.suppress(IndexError):
                pool.release(self._lent.pop())


class Template:
    """An admission-like command with its fixed values packed once (see
    :meth:`FastScript.template`); :meth:`pack` fills the slots."""

    def __init__(self, script: FastScript, chunks: list[bytes]) -> None:
        self._script = script
        self._first = chunks[0]
        self._tails = chunks[1:]
        #: How many values :meth:`pack` takes.
        self.slots = len(self._tails)

    def pack(self, *values: Value) -> bytes:
        """The command with the slots filled by ``values``, as sent (RESP)."""
        if len(values) != self.slots:
            raise TypeError(f"this template takes {self.slots} values, not {len(values)}")
        parts = [self._first]
        self._script._pack_values(parts.append, values, self._tails)
        return b"".join(parts)
