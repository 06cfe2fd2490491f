"""A single-instance Redis lock that hands out fencing tokens.

:class:`FencedLock` takes the lock with ``SET key token NX PX lease`` and, in
the same script (``lock_acquire.lua``), increments a per-lock counter: the
value is the *fencing token* of this holding. Release and extend reuse
redis-py's :class:`redis.lock.Lock` and its token-checked Lua scripts, so a
holder whose lease expired can neither release nor extend the next holder's
lock.

A lease can still expire while its holder is paused (GC, swap, a slow
network), and the holder may not notice before it writes. The fencing token
is what makes that safe: the resource remembers the largest token it has
accepted and refuses smaller ones (see :doc:`/consistency`).
"""

from __future__ import annotations

import random
import time
import uuid
from types import TracebackType
from typing import TYPE_CHECKING

from redis.exceptions import LockError
from redis.lock import Lock as RedisLock

from .errors import LockLost, LockNotAcquired

if TYPE_CHECKING:
    from .protocols import RedisClient, Script


class _Lease(RedisLock):
    """redis-py's lock, with acquisition replaced by the fencing script."""

    def __init__(
        self,
        client: RedisClient,
        key: str,
        fence_key: str,
        script: Script,
        *,
        timeout: float,
        thread_local: bool,
    ) -> None:
        super().__init__(client, key, timeout=timeout, thread_local=thread_local)
        self.fence_key = fence_key
        self.acquire_script = script
        self.local.fence = None

    def do_acquire(self, token: str | bytes) -> bool:
        """One attempt: take the lock and record its fencing token (0 when taken)."""
        lease_ms = max(1, int(float(self.timeout or 0) * 1000))
        fence = int(
            self.acquire_script(
                keys=[self.name, self.fence_key], args=[token, lease_ms], client=self.redis
            )
        )
        if fence:
            self.local.fence = fence
            return True
        return False


class FencedLock:
    """A distributed lock on one Redis server whose holdings carry fencing tokens.

    Used as a context manager it acquires the lock and yields the fencing
    token (an ``int`` that grows with every acquisition of this lock name)::

        lock = flashsale.lock("import-prices", timeout=30)
        with lock as token:
            ...                    # pass ``token`` along with every write
            lock.extend(30)        # need more time? (raises LockLost if expired)

    ``timeout`` is the lease in seconds: Redis drops the lock after it, so a
    crashed holder cannot block others forever. ``blocking_timeout`` bounds the
    wait (``None``: wait forever); after it :class:`~flask_flashsale.LockNotAcquired`
    is raised. Waiters poll with a random pause of up to ``sleep`` seconds; the
    lock is not fair (no queue).
    """

    def __init__(
        self,
        client: RedisClient,
        key: str,
        fence_key: str,
        *,
        script: Script,
        timeout: float,
        blocking_timeout: float | None = None,
        sleep: float = 0.05,
        thread_local: bool = True,
    ) -> None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ValueError(f"timeout (the lease, in seconds) must be > 0; got {timeout!r}")
        if blocking_timeout is not None and blocking_timeout < 0:
            raise ValueError(f"blocking_timeout must be >= 0 or None; got {blocking_timeout!r}")
        self.blocking_timeout = blocking_timeout
        self.sleep = sleep
        self._lease = _Lease(
            client,
            key,
            fence_key,
            script,
            timeout=timeout,
            thread_local=thread_local,
        )

    @property
    def key(self) -> str:
        """The Redis key of the lock."""
        return str(self._lease.name)

    @property
    def token(self) -> int | None:
        """Fencing token of the current holding (in this thread), ``None`` if not held."""
        if self._held() is None:
            return None
        fence: int | None = getattr(self._lease.local, "fence", None)
        return fence

    @property
    def holder(self) -> str | None:
        """The random value stored in the lock key while held here (``None`` if not held).

        Scripts that must only write while the lock is held compare it with the key.
        """
        token = self._held()
        return None if token is None else token.decode()

    def acquire(self) -> int:
        """Take the lock, waiting at most ``blocking_timeout``; return the fencing token.

        Raises :class:`~flask_flashsale.LockNotAcquired` when the wait runs out.
        """
        lease = self._lease
        # Bytes, as redis-py's own acquire stores it (owned() compares bytes).
        holder = uuid.uuid4().hex.encode()
        wait = self.blocking_timeout
        deadline = None if wait is None else time.monotonic() + wait
        while True:
            if lease.do_acquire(holder):
                lease.local.token = holder
                fence: int = lease.local.fence
                return fence
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise LockNotAcquired(f"lock {self.key!r} not acquired within {wait} s")
            pause = random.uniform(0, self.sleep)
            time.sleep(pause if deadline is None else min(pause, deadline - now))

    def _held(self) -> bytes | None:
        # Thread-local storage: another thread sees no token (not even the attribute).
        token: bytes | None = getattr(self._lease.local, "token", None)
        return token

    def _check_held(self) -> None:
        if self._held() is None:
            raise LockLost(f"lock {self.key!r} is not held (here, by this thread)")

    def release(self) -> None:
        """Release the lock; :class:`~flask_flashsale.LockLost` if the lease had expired."""
        self._check_held()
        try:
            self._lease.release()
        except LockError:
            raise LockLost(f"lock {self.key!r} was no longer held (its lease expired)") from None
        finally:
            self._lease.local.fence = None

    def extend(self, seconds: float, *, replace_ttl: bool = False) -> None:
        """Add ``seconds`` to the lease (or set it, with ``replace_ttl``).

        Raises :class:`~flask_flashsale.LockLost` if the lease had already
        expired: another holder may have run meanwhile.
        """
        self._check_held()
        try:
            self._lease.extend(seconds, replace_ttl=replace_ttl)
        except LockError:
            raise LockLost(f"lock {self.key!r} was no longer held (its lease expired)") from None

    def owned(self) -> bool:
        """True while this holder (this thread) still holds the lock."""
        return self._held() is not None and bool(self._lease.owned())

    def __enter__(self) -> int:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
