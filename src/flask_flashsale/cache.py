"""The in-process sale cache, the sold-out flags, and their invalidation.

A flash sale is mostly reads and mostly "no". Each app keeps, for
``FLASHSALE_CACHE_TTL`` seconds:

- the :class:`~flask_flashsale.Sale` objects served by ``get_sale`` and
  ``list_sales`` (so a page refresh costs no Redis command), and
- a *sold-out flag* per sale, set when admission answers that no unit is left,
  which lets ``place_order`` refuse later attempts without Redis.

Admin changes publish ``"changed <sale>"`` and the admission script publishes
``"sold_out <sale>"`` on the ``<prefix>:events`` channel (the kinds and the
format live in :mod:`flask_flashsale.events`); a :class:`Subscriber`
thread per app applies them, so every process drops what it knew about the
sale right away. A lost message (the subscriber was reconnecting) is bounded by
the TTL: every entry and flag expires. After each re-subscription (Redis
restarted, the connection dropped) the whole cache is dropped, since messages
may have been missed meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .events import CHANGED, SOLD_OUT, event, parse_event

if TYPE_CHECKING:
    from .models import Sale
    from .protocols import EventsClient, RedisClient

logger = logging.getLogger("flask_flashsale")


#: Seconds a ``sold_out`` event is held stale after a change of this process
#: (:meth:`SaleCache.own_change`), at most: its own ``changed`` event ends it sooner.
OWN_CHANGE_WAIT = 1.0


class SaleCache:
    """Sale data and sold-out flags of one app, each kept for ``ttl`` seconds.

    ``ttl == 0`` turns caching (and the sold-out fast path) off. Reads never
    take a lock; writes do. Every invalidation bumps :attr:`epoch`, and a value
    read from Redis is stored only if no invalidation happened while it was
    being read, so a slow read can never put back what an event removed.
    """

    def __init__(
        self,
        ttl: float,
        *,
        client: RedisClient | None = None,
        channel: str = "",
        subscriber: Subscriber | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        #: Seconds an entry or a sold-out flag is trusted.
        self.ttl = ttl
        #: Bumped by every invalidation.
        self.epoch = 0
        #: Reads answered from memory (a counter for metrics).
        self.hits = 0
        #: Reads that went to Redis.
        self.misses = 0
        #: Invalidations applied (local changes and events).
        self.invalidations = 0
        #: The thread that applies events from other processes (started lazily).
        self.subscriber = subscriber
        self._client = client
        self._channel = channel
        self._clock = clock
        self._sales: dict[str, tuple[float, Sale]] = {}
        self._list: tuple[float, tuple[Sale, ...]] | None = None
        self._known: list[str] = []
        self._sold_out: dict[str, float] = {}
        # Changes this process made whose own "changed" event has not come
        # back yet: sale id -> (count, deadline). See own_change().
        self._awaiting: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()
        if subscriber is not None:
            subscriber.cache = self

    # -- reads -----------------------------------------------------------------

    def sale(self, sale_id: str, load: Callable[[str], Sale | None]) -> Sale | None:
        """The sale from memory, else from ``load(sale_id)`` (kept if found)."""
        entry = self._sales.get(sale_id)
        if entry is not None and entry[0] > self._clock():
            self.hits += 1
            return entry[1]
        self.misses += 1
        epoch = self.epoch
        found = load(sale_id)
        if found is not None and self.ttl > 0:
            self._start_subscriber()
            with self._lock:
                if epoch == self.epoch:
                    self._sales[sale_id] = (self._clock() + self.ttl, found)
        return found

    def sales(self, load: Callable[[Sequence[str]], list[Sale]]) -> list[Sale]:
        """Every sale from memory, else from ``load(known_ids)``.

        ``known_ids`` are the ids of the last load, so the loader can read the
        index and every known sale in one pipelined round trip.
        """
        entry = self._list
        if entry is not None and entry[0] > self._clock():
            self.hits += 1
            return list(entry[1])
        self.misses += 1
        epoch = self.epoch
        found = load(self._known)
        if self.ttl > 0:
            self._start_subscriber()
            with self._lock:
                self._known = [s.id for s in found]
                if epoch == self.epoch:
                    now = self._clock()
                    expires = now + self.ttl
                    self._list = (expires, tuple(found))
                    # Start over from the full list, so that entries of sales
                    # deleted while an event was lost do not pile up.
                    self._sales = {sale.id: (expires, sale) for sale in found}
                    self._sold_out = {k: t for k, t in self._sold_out.items() if t > now}
        return found

    def sold_out(self, sale_id: str) -> bool:
        """True while ``sale_id`` is known to have no unit left (the fast path).

        One dict lookup; a clock read only for a flagged sale.
        """
        until = self._sold_out.get(sale_id)
        return until is not None and until > self._clock()

    # -- writes ----------------------------------------------------------------

    def note_sold_out(self, sale_id: str, epoch: int) -> None:
        """Admission answered "no unit left": flag the sale, unless an event came
        in since ``epoch`` was read (it may have been a restock)."""
        if self.ttl <= 0:
            return
        self._start_subscriber()
        with self._lock:
            if epoch == self.epoch:
                self._flag(sale_id)

    def invalidate(self, sale_id: str | None = None) -> None:
        """Forget ``sale_id`` (its data and its sold-out flag), or everything."""
        with self._lock:
            self.epoch += 1
            self.invalidations += 1
            self._list = None
            if sale_id is None:
                self._sales.clear()
                self._sold_out.clear()
            else:
                self._sales.pop(sale_id, None)
                self._sold_out.pop(sale_id, None)

    def own_change(self, sale_id: str) -> None:
        """This process changed ``sale_id`` in Redis and a ``changed`` event is on
        its way (published by the script, or by :meth:`changed`): forget the sale.

        Until that event comes back through the subscriber (or for one
        second), a ``sold_out`` event for the sale is stale: it was published
        before the change (events arrive in order), so it must not flag a sale
        this process has just restocked.
        """
        subscriber = self.subscriber
        if subscriber is not None and subscriber.subscribed.is_set():
            # (Not subscribed: the event will not come back, and no earlier
            # event is waiting to be delivered either.)
            with self._lock:
                count, _ = self._awaiting.get(sale_id, (0, 0.0))
                self._awaiting[sale_id] = (count + 1, self._clock() + OWN_CHANGE_WAIT)
        self.invalidate(sale_id)

    def changed(self, sale_id: str) -> None:
        """An admin change to ``sale_id`` was written: forget it here, and tell
        every other process (one ``PUBLISH``)."""
        self.own_change(sale_id)
        if self._client is not None and self._channel:
            self._client.publish(self._channel, event(CHANGED, sale_id))

    def apply(self, message: str | bytes) -> None:
        """Apply one message from the events channel; unknown kinds are ignored."""
        text = message.decode(errors="replace") if isinstance(message, bytes) else message
        kind, sale_id = parse_event(text)
        if not sale_id:
            return
        if kind == CHANGED:
            with self._lock:
                count, deadline = self._awaiting.pop(sale_id, (0, 0.0))
                if count > 1:
                    self._awaiting[sale_id] = (count - 1, deadline)
            self.invalidate(sale_id)
        elif kind == SOLD_OUT and self.ttl > 0:
            with self._lock:
                awaiting = self._awaiting.get(sale_id)
                if awaiting is not None and awaiting[1] > self._clock():
                    return  # published before a change of ours that is not back yet
                self.invalidations += 1
                self._flag(sale_id)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the subscriber thread, waiting up to ``timeout`` seconds for it
        (it starts again on the next cache miss)."""
        if self.subscriber is not None:
            self.subscriber.stop(timeout)

    def _flag(self, sale_id: str) -> None:
        # Called with the lock held. The data is dropped too, so that pages
        # show the sale as sold out without waiting for the TTL.
        self._sold_out[sale_id] = self._clock() + self.ttl
        self._sales.pop(sale_id, None)
        self._list = None
        self.epoch += 1

    def _start_subscriber(self) -> None:
        if self.subscriber is not None:
            self.subscriber.start()


class Subscriber:
    """A daemon thread that applies the events channel to a :class:`SaleCache`.

    ``client`` is the backend's events client
    (:meth:`~flask_flashsale.connection.Backend.events_client`): anything with
    a ``pubsub()``.

    It reconnects by itself (with a capped backoff) when Redis goes away, and
    drops the whole cache when it subscribes again. :meth:`start` is cheap
    and idempotent, and restarts the thread in a forked child (threads do not
    survive ``fork``, e.g. gunicorn's ``--preload``).
    """

    def __init__(
        self,
        client: EventsClient,
        channel: str,
        *,
        poll: float = 0.5,
        max_backoff: float = 1.0,
    ) -> None:
        #: Source of the pub/sub connection (``client.pubsub()``).
        self.client = client
        #: The channel listened to.
        self.channel = channel
        #: The cache the events are applied to (set by :class:`SaleCache`).
        self.cache: SaleCache | None = None
        #: Set while subscribed; cleared while reconnecting.
        self.subscribed = threading.Event()
        #: How many times the thread (re)subscribed.
        self.subscriptions = 0
        self._poll = poll
        self._max_backoff = max_backoff
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        """True while the thread is alive in this process."""
        thread = self._thread
        return thread is not None and thread.is_alive() and self._pid == os.getpid()

    def start(self) -> None:
        """Start the thread unless it is already running (or starting) in this process."""
        if self.running:
            return
        with self._lock:
            if self._thread is not None and self._pid == os.getpid():
                return  # made in this process: running, or being started
            if self._pid not in (0, os.getpid()) and self.cache is not None:
                self.cache.invalidate()  # inherited from a parent process
            self._stopping = threading.Event()
            self.subscribed.clear()
            self._pid = os.getpid()
            thread = self._thread = threading.Thread(
                target=self._run,
                args=(self._stopping,),
                name=f"flashsale-events[{self.channel}]",
                daemon=True,
            )
        # Started outside the lock: under gevent, ``start()`` yields to other
        # greenlets, and this lock may be a real OS lock (an app built before
        # gunicorn's gevent worker patched threading, with ``--preload``):
        # a greenlet waiting for it would block the whole worker.
        thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Ask the thread to stop and wait up to ``timeout`` seconds for it."""
        with self._lock:
            self._stopping.set()
            thread, self._thread = self._thread, None
        self.subscribed.clear()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self, stopping: threading.Event) -> None:
        backoff = 0.05
        while not stopping.is_set():
            pubsub = None
            try:
                pubsub = self.client.pubsub()
                pubsub.subscribe(self.channel)
                while not stopping.is_set():
                    message = pubsub.get_message(timeout=self._poll)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        # Whatever was published while we were reconnecting is
                        # lost: trust nothing cached before. (Before the first
                        # subscription only a moment passed since the first
                        # read; the TTL covers it.)
                        if self.subscriptions and self.cache is not None:
                            self.cache.invalidate()
                        self.subscriptions += 1
                        self.subscribed.set()
                        backoff = 0.05
                    elif message["type"] == "message" and self.cache is not None:
                        self.cache.apply(message["data"])
            except Exception as exc:  # keep the thread alive whatever happens
                if self.subscribed.is_set():
                    logger.warning(
                        "flashsale: events subscriber lost Redis at %s: %s: %s",
                        client_address(self.client),
                        type(exc).__name__,
                        exc,
                    )
                self.subscribed.clear()
                stopping.wait(backoff)
                backoff = min(backoff * 2, self._max_backoff)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):  # best effort on a dead socket
                        pubsub.close()
        self.subscribed.clear()


def client_address(client: object) -> str:
    """``host:port`` (or the socket path) a redis-py client connects to, for log lines."""
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    if "host" in kwargs:
        return f"{kwargs['host']}:{kwargs.get('port', 6379)}"
    return "Redis"
