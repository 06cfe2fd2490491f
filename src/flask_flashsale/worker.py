"""The worker: hands every admitted order to the host's order hook.

One loop per consumer (``flask flashsale worker``, :meth:`FlashSale.run_worker`)::

    bootstrap (register, install signal handlers)
    while not stopping:
        claim stale -> read -> handle -> ack        (heartbeat: its own thread)
        burst: exit once every sale's queue is empty
    finally: teardown (leave the groups, unregister)

The inline worker of the web process (:class:`InlineWorker`) runs the same
loop in a thread: an :class:`EmbeddedWorker` overrides a few of its steps.

Delivery is at least once: an order stays pending in Redis until one script
settles it (confirm, or compensate). A worker's heartbeat renews its hold on
the orders in its hands; orders left by a worker that stopped beating are
claimed by another after ``FLASHSALE_CLAIM_IDLE``. See ``docs/worker.rst``.

New orders are read and handled in batches. Claimed orders (retries due, and
orders of a worker that died) are handled in careful mode: one at a time,
fewest deaths first, each marked in Redis before its hook runs and settled
right after it, so a worker that dies inside a hook (a segfault, an OOM kill)
leaves the mark on exactly the order in hand. An order is compensated only
after its own hook raised ``FLASHSALE_MAX_ATTEMPTS`` times, or after its
worker died with it in hand that many times; never for deliveries counted
against it while it waited in someone's batch, and never once its hook returned.

With a batch hook (``order_batch_handler``) the new orders of one read that
need the hook go to it in one call, unmarked, like the orders of a batch with
the per-order hook: a worker that dies inside that call leaves every one of
them pending and none marked, so they are claimed and run in careful mode,
each alone (a list of one) and marked. A batch call that raises counts
nothing against its orders: each is then run alone, marked as in careful
mode, so a failure or a death is pinned on the one order that had it.

Each turn also expires the unpaid holds whose ``pay_by`` has passed (sales
with a payment timeout, :mod:`.payments`): one bounded batch per sale and
script, at most once per tick unless a batch was full. The expiry hook's
calls come back through the stream, and are handled like orders.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import signal
import socket
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import redis
from flask import Flask

from . import registry, signals
from .errors import ConfigurationError
from .models import Order
from .orders import Delivery, OrderQueue
from .payments import EXPIRY_BATCH, Payments, expired_ticket, is_expiry

if TYPE_CHECKING:
    from types import FrameType
    from typing import TypeAlias

    #: What :func:`signal.signal` takes and returns: a function, ``SIG_DFL``/``SIG_IGN``, None.
    _SignalHandler: TypeAlias = Callable[[int, FrameType | None], object] | int | None

    from .extension import FlashSaleState, Hooks, OrderBatchHandler


log = logging.getLogger("flask_flashsale.worker")
T = TypeVar("T")

#: Idle sleep of a worker that cannot block on reads (``memory://``, Cluster).
POLL_INTERVAL = 0.05
#: Entries taken per sale and claim (retries due + orders of dead workers).
CLAIM_BATCH = 10
#: A consumer with nothing pending and idle this long is removed from the group.
PRUNE_AFTER = 3600.0
#: A signal repeated within this many seconds is the same request: wrappers
#: such as ``timeout`` or a shell deliver one signal to the worker and to its
#: process group. A later second signal stops the worker at once.
SIGNAL_REPEAT_WINDOW = 0.5
#: Orders of a batch whose hook returned are confirmed together, at the end of
#: the batch or once the oldest has waited this many seconds.
CONFIRM_AFTER = 0.05
#: Seconds between the worker's progress lines in the log (when it is busy).
PROGRESS_INTERVAL = 10.0
#: Worker names: they end up in key names and in the consumer group.
WORKER_NAME = re.compile(r"[A-Za-z0-9_.:@\-]{1,100}")


#: The signals that ask a worker (or a supervisor) to stop after the order in hand.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def install_stop_handlers(handler: _SignalHandler) -> dict[int, _SignalHandler]:
    """Handle :data:`STOP_SIGNALS` with ``handler``; return the handlers it replaced.

    Only the main thread may install signal handlers: elsewhere (a worker run
    in a thread) nothing is installed and ``{}`` is returned.
    """
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}


def restore_handlers(previous: dict[int, _SignalHandler]) -> None:
    """Put back the handlers :func:`install_stop_handlers` replaced."""
    for sig, old in previous.items():
        signal.signal(sig, old)


class _AppGone(Exception):
    """The app of a worker that holds it weakly (:class:`EmbeddedWorker`) was collected."""


def default_name() -> str:
    """``<host>.<pid>.<random>``: unique among the workers of a deployment."""
    host = re.sub(r"[^A-Za-z0-9_.\-]", "-", socket.gethostname())[:60] or "host"
    return f"{host}.{os.getpid()}.{secrets.token_hex(2)}"


class _Consumer:
    """One member of the consumer group: a loop's name and the orders in its hands."""

    __slots__ = ("cursors", "in_hand", "name", "next_claim")

    def __init__(self, name: str) -> None:
        self.name = name
        self.in_hand: dict[str, Delivery] = {}
        self.next_claim = 0.0
        #: Where the next XAUTOCLAIM scan of each sale's pending list resumes.
        self.cursors: dict[str, str] = {}


class _Confirms:
    """Orders whose hook returned (or that were cancelled), waiting for one confirm call.

    They are confirmed together at the end of the batch, or as soon as the
    oldest has waited :data:`CONFIRM_AFTER` seconds, so slow hooks still
    confirm about one order per call and a crash redelivers few of them.
    """

    __slots__ = ("deliveries", "orders", "since")

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.orders: list[Order | None] = []
        self.since = 0.0

    def __len__(self) -> int:
        return len(self.deliveries)

    def add(self, d: Delivery, order: Order | None) -> None:
        """Queue ``d`` for confirmation; ``order`` is sent with ``order_confirmed``."""
        if not self.deliveries:
            self.since = time.monotonic()
        self.deliveries.append(d)
        self.orders.append(order)

    def due(self) -> bool:
        """True once the oldest waiting order has waited long enough."""
        return bool(self.deliveries) and time.monotonic() - self.since >= CONFIRM_AFTER

    def take(self) -> tuple[list[Delivery], list[Order | None]]:
        """Empty the list; return what it held."""
        out = (self.deliveries, self.orders)
        self.deliveries, self.orders = [], []
        return out


class Worker:
    """Processes the order queue of one app; see :meth:`FlashSale.run_worker`.

    ``concurrency`` consumers each read up to ``FLASHSALE_WORKER_BATCH``
    orders per sale at a time.
    :meth:`run` blocks until :meth:`stop`, SIGTERM/SIGINT, or (``burst``) an
    empty queue; :meth:`step` is one turn of the loop, for embedding.
    """

    #: Whether :meth:`run` renews the leases from a heartbeat thread of its
    #: own; if not, the loop renews them between turns and between orders.
    heartbeat_thread = True

    def __init__(
        self,
        app: Flask,
        *,
        name: str | None = None,
        burst: bool = False,
        concurrency: int = 1,
        handle_signals: bool = True,
    ) -> None:
        from .extension import FlashSale

        if name is not None and not WORKER_NAME.fullmatch(name):
            raise ValueError(f"worker names are 1-100 of [A-Za-z0-9_.:@-], got {name!r}")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be a positive int, got {concurrency!r}")
        state = FlashSale.state(app)
        self._app = self._hold(app)
        self._ext = self._hold(state.ext)  # its hooks, looked up at each order
        self._state_of = FlashSale.state
        #: Validated configuration of the app.
        self.settings = settings = state.settings
        #: The app's key builder.
        self.keys = state.keys
        #: Worker name (consumer names are derived from it).
        self.name = name or default_name()
        self.burst = burst
        self.handle_signals = handle_signals
        backend = state.backend
        # Blocking reads need the real server; memory:// ignores BLOCK, and a
        # Cluster read must not span slots: those poll each stream instead.
        self.polling = not backend.can_block
        tick = min(1.0, settings.claim_idle / 2)
        if settings.retry_backoff > 0:
            tick = min(tick, settings.retry_backoff)
        if backend.process_local:
            tick = min(tick, 0.1)  # round trips are function calls there
        #: Seconds between claims, discoveries of new sales, and blocking reads.
        self.tick = max(0.05, tick)
        #: Seconds between heartbeats (lease renewal + registry).
        self.heartbeat = max(0.05, min(5.0, settings.claim_idle / 3))
        self.client = state.client if self.polling else backend.blocking_client(self.tick)
        self._own_client = self.client is not state.client
        self.queue = OrderQueue(
            self.client,
            state.keys,
            ticket_ttl=settings.ticket_ttl,
            on_change=state.cache.own_change,
        )
        #: Payments and expiry of unpaid holds, on the worker's client.
        self.payments = Payments(self.client, state.keys, on_change=state.cache.own_change)
        self._next_expiry = 0.0
        self._expiring = threading.Lock()
        self._consumers = [
            _Consumer(self.name if concurrency == 1 else f"{self.name}-{i}")
            for i in range(concurrency)
        ]
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._sales: list[str] = []
        self._groups: set[str] = set()
        self._next_discovery = 0.0
        self._next_prune = time.monotonic() + PRUNE_AFTER / 10
        self._next_beat = 0.0
        self._started = int(time.time() * 1000)
        self._errors: list[BaseException] = []
        self._signalled_at: float | None = None
        #: Orders read per stream at once (``FLASHSALE_WORKER_BATCH``).
        self.batch = settings.worker_batch
        # True while run()'s heartbeat thread renews the leases; otherwise
        # step() renews them between the orders of a batch.
        self._beating = False
        #: Orders settled by outcome: ``confirmed``, ``failed``, ``settled``, plus
        #: ``retried``, and ``expired`` (unpaid holds this worker expired).
        self.counts: dict[str, int] = dict.fromkeys(
            ("confirmed", "failed", "settled", "retried", "expired"), 0
        )
        #: Seconds between progress lines (``INFO`` on ``flask_flashsale.worker``).
        self.progress_interval = PROGRESS_INTERVAL
        self._last_progress = (time.monotonic(), dict(self.counts))

    # -- the loop --------------------------------------------------------------

    def run(self) -> int:
        """Process orders until stopped; return how many this worker settled.

        Raises :class:`~flask_flashsale.ConfigurationError` when neither
        ``order_handler`` nor ``order_batch_handler`` is registered.
        """
        self._check_handler()
        previous = install_stop_handlers(self._on_signal) if self.handle_signals else {}
        finished = threading.Event()
        heart = None
        if self.heartbeat_thread:
            heart = threading.Thread(
                target=self._heartbeat_loop, args=(finished,), name=f"{self.name}-heartbeat"
            )
            heart.daemon = True
        log.info("worker %s started (%d consumer(s))", self.name, len(self._consumers))
        try:
            try:
                self._beat()
            except redis.RedisError as exc:  # the loop waits for Redis to come back
                log.warning("worker %s: Redis unavailable at start: %s", self.name, exc)
            if heart is not None:
                heart.start()
                self._beating = True
            if len(self._consumers) == 1:
                self._work(self._consumers[0])
            else:
                self._work_in_threads()
        finally:
            self._stopping.set()
            finished.set()
            self._beating = False
            if heart is not None and heart.is_alive():
                heart.join(5)
            self._teardown()
            restore_handlers(previous)
        if self._errors:
            raise self._errors[0]
        log.info("worker %s stopped: %s", self.name, self.counts)
        return self.processed

    def stop(self) -> None:
        """Ask the loop to stop once the order in hand is settled (thread-safe)."""
        self._stopping.set()

    @property
    def app(self) -> Flask:
        """The app whose orders this worker handles."""
        app = self._app()
        if app is None:
            raise _AppGone()
        return app

    @property
    def state(self) -> FlashSaleState:
        """The app's extension state (:meth:`FlashSale.state <flask_flashsale.FlashSale.state>`)."""
        return self._state_of(self.app)

    @property
    def processed(self) -> int:
        """Orders settled so far: confirmed, failed for good, or found cancelled."""
        return self.counts["confirmed"] + self.counts["failed"] + self.counts["settled"]

    def step(self, consumer: int = 0) -> int:
        """One turn of the loop: claim, else read a batch; handle and settle.

        Returns how many orders it handled.
        """
        c = self._consumers[consumer]
        try:
            sales = self._discover()
            expired = self._expire(sales)
            batch = self._claim(c, sales)
            if batch:
                return expired + self._step_careful(c, batch)
            if not batch:
                block = None if self.polling or self.burst or expired else int(self.tick * 1000)
                batch = self.queue.read(
                    c.name, sales, block_ms=block, count=self.batch, split=self.polling
                )
        except redis.ResponseError as exc:
            # A sale was deleted (and maybe re-created) under our feet: its
            # stream or group is gone, or our blocked read on it was unblocked.
            if not str(exc).startswith(("NOGROUP", "UNBLOCKED")):
                raise
            self._forget_groups()
            return 0
        for d in batch:
            c.in_hand[d.entry_id] = d
        batch_handler = self._hooks().order_batch_handler
        if batch_handler is not None and batch:
            return expired + self._step_batch(c, batch, batch_handler)
        done = 0  # orders started (the first ``done`` of the batch)
        confirms = _Confirms()
        try:
            statuses: list[str | None] = []
            checked = 0.0
            for i, d in enumerate(batch):
                if self._stopping.is_set():
                    break
                if time.monotonic() - checked >= CONFIRM_AFTER:
                    # The tickets of the rest of the batch, in one round trip:
                    # again once older than a moment, so that an order
                    # cancelled while it waited in a batch of slow hooks
                    # still skips the hook.
                    statuses[i:] = self.queue.ticket_statuses(batch[i:])
                    checked = time.monotonic()
                done += 1
                self._handle(c, d, statuses[i], confirms)
                if confirms.due():
                    self._settle(c, confirms)
                if not self._beating and time.monotonic() >= self._next_beat:
                    self._beat()  # no heartbeat thread (embedded, step()): renew the leases here
            self._settle(c, confirms)
            return expired + done
        finally:
            # Stopping, or a failure (even a second signal inside a hook):
            # confirm the hooks that returned, hand back the orders not started.
            self._wind_up(c, confirms, batch[done:])
            c.in_hand.clear()

    def _step_batch(self, c: _Consumer, batch: list[Delivery], handler: OrderBatchHandler) -> int:
        """New orders with a batch hook: one call for those that need it; how many started.

        Cancelled and failed tickets are only acknowledged, expiry-hook calls
        are made one by one, the rest goes to ``handler`` in one list. If it
        raises, :meth:`_one_by_one` runs each order of the list alone.
        """
        confirms = _Confirms()
        # Orders not started yet, handed back however the turn ends.
        rest = {(d.sale_id, d.entry_id): d for d in batch}
        try:
            if self._stopping.is_set():
                return 0
            hooked: list[Delivery] = []
            expiries: list[tuple[Delivery, str | None]] = []
            for d, status in zip(batch, self.queue.ticket_statuses(batch), strict=True):
                if is_expiry(d.fields):
                    expiries.append((d, status))
                    continue
                del rest[d.sale_id, d.entry_id]
                if status in ("cancelled", "failed"):
                    confirms.add(d, None)  # acknowledged, the ticket stays as it is
                else:
                    hooked.append(d)
            if hooked:
                self._call_batch(c, hooked, handler, confirms, rest)
            for d, status in expiries:
                if self._stopping.is_set():
                    break
                del rest[d.sale_id, d.entry_id]
                self._handle(c, d, status, confirms)
                self._between_orders(c, confirms)
            self._settle(c, confirms)
            return len(batch) - len(rest)
        finally:
            self._wind_up(c, confirms, list(rest.values()))
            c.in_hand.clear()

    def _call_batch(
        self,
        c: _Consumer,
        ds: list[Delivery],
        handler: OrderBatchHandler,
        confirms: _Confirms,
        rest: dict[tuple[str, str], Delivery],
    ) -> None:
        """Call the batch hook once with the orders of ``ds``; queue them for confirmation.

        If it raises, nothing is counted against them (one bad order must not
        fail its batch-mates): each is run alone by :meth:`_one_by_one`.
        """
        with self.app.app_context():
            orders = [d.order() for d in ds]
            try:
                handler(orders)
            except Exception as exc:
                if len(ds) == 1:  # it failed alone: that counts
                    self._hook_failed(c, ds[0], exc, started=False)
                    return
                error: Exception = exc
            else:
                for d, order in zip(ds, orders, strict=True):
                    confirms.add(d, order)
                return
        log.warning(
            "worker %s: a batch of %d order(s) failed (%s: %s); handling them one at a time",
            c.name,
            len(ds),
            type(error).__name__,
            str(error)[:200],
        )
        for d in ds:
            rest[d.sale_id, d.entry_id] = d
        self._one_by_one(c, ds, confirms, rest)

    def _one_by_one(
        self,
        c: _Consumer,
        ds: list[Delivery],
        confirms: _Confirms,
        rest: dict[tuple[str, str], Delivery],
    ) -> None:
        """Run each order of a failed batch alone, marked and settled as in careful mode.

        A failure is then counted on the order that failed by itself, and a
        death inside its call is pinned on it (:meth:`OrderQueue.start`).
        Orders not started when the worker is asked to stop stay in ``rest``.
        """
        for d in ds:
            if self._stopping.is_set():
                return
            del rest[d.sale_id, d.entry_id]
            deaths, status = self.queue.start(c.name, d)
            if deaths < 0:  # another worker claimed it meanwhile
                c.in_hand.pop(d.entry_id, None)
                continue
            self._handle(c, d, status, confirms, started=deaths > 0)
            # Settled right away, as in careful mode: an order whose hook
            # returned must not keep its mark while the next one runs.
            self._settle(c, confirms)
            if not self._beating and time.monotonic() >= self._next_beat:
                self._beat()

    def _between_orders(self, c: _Consumer, confirms: _Confirms) -> None:
        """Confirm what waited long enough; renew the leases without a heartbeat thread."""
        if confirms.due():
            self._settle(c, confirms)
        if not self._beating and time.monotonic() >= self._next_beat:
            self._beat()

    def _step_careful(self, c: _Consumer, batch: list[Delivery]) -> int:
        """Claimed orders, one at a time, fewest deaths first; return how many were started.

        The orders a dead worker left behind go first and the suspect of its
        death (the one it held when it died) last, so a poison order cannot
        hold back its batch-mates.
        """
        batch = sorted(batch, key=lambda d: d.deaths)
        for d in batch:
            c.in_hand[d.entry_id] = d
        done = 0
        try:
            for d in batch:
                if self._stopping.is_set():
                    break
                done += 1
                self._handle_claimed(c, d)
                if not self._beating and time.monotonic() >= self._next_beat:
                    self._beat()
            return done
        finally:
            self._wind_up(c, _Confirms(), batch[done:])
            c.in_hand.clear()

    def _handle_claimed(self, c: _Consumer, d: Delivery) -> None:
        limit = self.settings.max_attempts
        if d.deaths >= limit:
            # Its worker died with it in hand that many times: give it up
            # without calling the hook again.
            self._fail(c, d, f"its worker died {d.deaths} times while handling it")
            c.in_hand.pop(d.entry_id, None)
            return
        deaths, status = self.queue.start(c.name, d)
        if deaths < 0:  # another worker claimed it meanwhile
            c.in_hand.pop(d.entry_id, None)
            return
        confirms = _Confirms()
        self._handle(c, d, status, confirms, started=deaths > 0)
        self._settle(c, confirms)

    def _work(self, c: _Consumer) -> None:
        failures = 0
        index = self._consumers.index(c)
        # (An embedded worker also stops once its app is garbage-collected.)
        while not self._stopping.is_set() and self._app() is not None:
            try:
                if not self._beating and time.monotonic() >= self._next_beat:
                    self._beat()  # no heartbeat thread: renew the leases between turns
                handled = self.step(index)
                if not handled and self.burst and self._drained():
                    return
                failures = 0
            except _AppGone:
                return
            except Exception as exc:
                failures += 1
                self._stopping.wait(self._retry_delay(c, exc, failures))
                continue
            if not handled and (self.polling or self.burst):
                self._stopping.wait(POLL_INTERVAL)

    def _work_in_threads(self) -> None:
        def guarded(c: _Consumer) -> None:
            try:
                self._work(c)
            except BaseException as exc:  # surfaced by run() once every thread is done
                self._errors.append(exc)
                self._stopping.set()

        threads = [
            threading.Thread(target=guarded, args=(c,), name=c.name, daemon=True)
            for c in self._consumers
        ]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(0.2)  # short joins: the main thread must keep handling signals

    def _retry_delay(self, c: _Consumer, exc: Exception, failures: int) -> float:
        """Seconds to wait after a turn failed ``failures`` times in a row.

        Only an unavailable Redis is waited out (backing off); anything else
        is raised, and stops the worker.
        """
        if not isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
            raise exc
        delay = min(0.1 * 2.0**failures, 5.0)
        log.warning("worker %s: Redis unavailable (%s); retry in %.1fs", c.name, exc, delay)
        return delay

    # -- one order -------------------------------------------------------------

    def _handle(
        self,
        c: _Consumer,
        d: Delivery,
        status: str | None,
        confirms: _Confirms,
        *,
        started: bool = False,
    ) -> None:
        """Call the hook for ``d`` (unless its ticket is settled); queue or record the outcome.

        ``started``: a death mark was recorded for this attempt
        (:meth:`OrderQueue.start`); a failure takes it back.
        """
        expiry = is_expiry(d.fields)  # the expiry hook's call of an expired hold
        with self.app.app_context():
            order = d.order()
            if status in ("cancelled", "failed") and not expiry:
                confirms.add(d, None)  # acknowledged, the ticket stays as it is
            else:
                try:
                    if expiry:
                        expiry_handler = self._hooks().expiry_handler
                        if expiry_handler is not None:
                            expiry_handler(expired_ticket(d.sale_id, d.fields))
                    else:
                        self._call_hook(order)
                except Exception as exc:
                    self._hook_failed(c, d, exc, started=started)
                else:
                    confirms.add(d, None if expiry else order)

    def _hook_failed(self, c: _Consumer, d: Delivery, exc: Exception, *, started: bool) -> None:
        """Record that ``d``'s own hook call raised: a retry later, or compensation.

        Inside the app context of the call. ``started``: see :meth:`_handle`.
        """
        settings = self.settings
        reason = f"{type(exc).__name__}: {exc}"[:500]
        failures = d.failures + 1
        final = failures >= settings.max_attempts
        log.log(
            logging.ERROR if final else logging.WARNING,
            "%s %s attempt %d/%d failed: %s",
            "expiry hook of order" if is_expiry(d.fields) else "order",
            d.ticket_id,
            failures,
            settings.max_attempts,
            reason,
            exc_info=exc if final else None,  # the traceback once, when the order is given up
        )
        if final:
            self._fail(c, d, reason)
        elif self.queue.retry(c.name, d, self._backoff(failures), started=started):
            self._count("retried")
        c.in_hand.pop(d.entry_id, None)

    def _settle(self, c: _Consumer, confirms: _Confirms) -> None:
        """Confirm the orders waiting in ``confirms`` (one script call per sale)."""
        if not confirms.deliveries:
            return
        deliveries, orders = confirms.take()
        outcomes = self.queue.confirm_many(deliveries)
        for d, order, outcome in zip(deliveries, orders, outcomes, strict=True):
            if outcome in ("awaiting_payment", "paid"):  # confirmed, with a payment timeout
                outcome = "confirmed"
            self._count(outcome)
            c.in_hand.pop(d.entry_id, None)
            if outcome == "confirmed" and order is not None and signals.order_confirmed.receivers:
                with self.app.app_context():
                    signals.order_confirmed.send(self.app, order=order)

    def _wind_up(self, c: _Consumer, confirms: _Confirms, rest: list[Delivery]) -> None:
        """After a batch, however it ended: settle what is done, hand back what is not."""
        try:
            self._settle(c, confirms)
        except redis.RedisError as exc:  # they stay pending: redelivered, hence at least once
            log.warning("worker %s: could not confirm %d order(s): %s", c.name, len(confirms), exc)
        if rest:
            try:
                self._release(c, rest)
            except redis.RedisError as exc:  # they stay pending: claimed after the idle time
                log.warning(
                    "worker %s: could not hand back %d order(s): %s", c.name, len(rest), exc
                )

    def _fail(self, c: _Consumer, d: Delivery, reason: str) -> None:
        if is_expiry(d.fields):
            # The hold's stock is already back: its hook call is only dead-lettered.
            if self.queue.compensate(c.name, d, f"expiry hook: {reason}") == "failed":
                log.error("expiry hook of order %s given up (dead letter): %s", d.ticket_id, reason)
            return
        outcome = self.queue.compensate(c.name, d, reason)
        self._count(outcome)
        if outcome == "failed":
            log.error("order %s failed for good, stock given back: %s", d.ticket_id, reason)
            if signals.order_failed.receivers:
                signals.order_failed.send(self.app, order=d.order(), reason=reason)

    def _backoff(self, attempt: int) -> float:
        """Delay before the next attempt: doubling from ``FLASHSALE_RETRY_BACKOFF``.

        Capped at ``FLASHSALE_CLAIM_IDLE``, after which any worker's claim would
        take the order anyway.
        """
        s = self.settings
        return float(min(s.retry_backoff * 2 ** (attempt - 1), s.claim_idle))

    def _release(self, c: _Consumer, rest: list[Delivery]) -> None:
        """Hand back orders read but not started, at once for any worker.

        One read once goes back to the queue undelivered; one delivered before
        (a retry, a claimed order) becomes a retry due now, which counts one
        more delivery.
        """
        self.queue.release(c.name, rest)

    # -- around the loop -------------------------------------------------------

    def _hold(self, obj: T) -> Callable[[], T | None]:
        """How the worker holds its app and extension: strongly (an embedded worker: weakly)."""
        return lambda: obj

    def _hooks(self) -> Hooks:
        ext = self._ext()
        if ext is None:
            raise _AppGone()
        return ext.hooks

    def _has_handler(self) -> bool:
        hooks = self._hooks()
        return hooks.order_handler is not None or hooks.order_batch_handler is not None

    def _call_hook(self, order: Order) -> None:
        """Hand one order to the host: ``order_handler(order)``, or the batch hook with [order]."""
        hooks = self._hooks()
        if hooks.order_batch_handler is not None:
            hooks.order_batch_handler([order])
        elif hooks.order_handler is not None:
            hooks.order_handler(order)
        else:
            raise ConfigurationError("no order handler registered")

    def _check_handler(self) -> None:
        """Refuse to start without an order handler."""
        if not self._has_handler():
            raise ConfigurationError(
                "no order handler: decorate a function with @flashsale.order_handler"
                " or @flashsale.order_batch_handler"
            )

    def _count(self, outcome: str) -> None:
        if outcome in self.counts:
            with self._lock:
                self.counts[outcome] += 1

    def _discover(self) -> list[str]:
        """Every sale's stream, with the group created; re-read once per tick."""
        now = time.monotonic()
        if now < self._next_discovery:
            return self._sales
        with self._lock:
            if now >= self._next_discovery:
                sales = []
                for sale_id in self.queue.sale_ids():
                    if sale_id in self._groups or self.queue.ensure_group(sale_id):
                        self._groups.add(sale_id)
                        sales.append(sale_id)
                self._sales = sales
                self._next_discovery = now + self.tick
        return self._sales

    def _forget_groups(self) -> None:
        with self._lock:
            self._groups.clear()
            self._next_discovery = 0.0

    def _claim(self, c: _Consumer, sales: list[str]) -> list[Delivery]:
        now = time.monotonic()
        if now < c.next_claim:
            return []
        prune = 0
        if now >= self._next_prune:
            prune = int(PRUNE_AFTER * 1000)
            self._next_prune = now + PRUNE_AFTER / 10
        idle = int(self.settings.claim_idle * 1000)
        batch: list[Delivery] = []
        full = False
        for sale_id in sales:
            got, c.cursors[sale_id] = self.queue.claim(
                c.name,
                sale_id,
                idle_ms=idle,
                count=CLAIM_BATCH,
                prune_ms=prune,
                cursor=c.cursors.get(sale_id, "0-0"),
            )
            full = full or len(got) == CLAIM_BATCH or c.cursors[sale_id] != "0-0"
            batch += got
        c.next_claim = now if full else now + self.tick
        return batch

    def _drained(self) -> bool:
        self._next_discovery = 0.0
        sales = self._discover()
        return self.queue.backlog(sales) == 0 and not self._expire(sales, force=True)

    def _expire(self, sales: list[str], *, force: bool = False) -> int:
        """Expire the unpaid holds that are due: one bounded batch per sale; how many.

        At most once per tick (one consumer thread at a time), again at once
        while batches come back full; ``force`` (a burst worker about to
        exit): now. Sends ``order_expired`` for each hold this call expired.
        """
        now = time.monotonic()
        if (not force and now < self._next_expiry) or not self._expiring.acquire(blocking=False):
            return 0
        try:
            notify = self._hooks().expiry_handler is not None
            expired, full = self.payments.expire_due(sales, count=EXPIRY_BATCH, notify=notify)
            self._next_expiry = now if full else now + self.tick
        finally:
            self._expiring.release()
        if expired:
            with self._lock:
                self.counts["expired"] += len(expired)
            log.debug("worker %s: %d unpaid hold(s) expired", self.name, len(expired))
            if signals.order_expired.receivers:
                with self.app.app_context():
                    for ticket in expired:
                        signals.order_expired.send(self.app, ticket=ticket)
        return len(expired)

    def _heartbeat_loop(self, finished: threading.Event) -> None:
        # Runs until the loops are done (not merely asked to stop): the order
        # in hand during a graceful stop keeps its lease.
        while not finished.wait(self.heartbeat):
            try:
                self._beat()
                if time.monotonic() - self._last_progress[0] >= self.progress_interval:
                    self.log_progress()
            except redis.RedisError as exc:
                log.warning("worker %s: heartbeat failed: %s", self.name, exc)

    def log_progress(self) -> str | None:
        """Log one line: orders/s since the last line, totals, and the queue's lag.

        Quiet (returns ``None``) when nothing was settled since the last line
        and nothing waits. Called by the heartbeat every
        :attr:`progress_interval` seconds; returns the line.
        """
        now = time.monotonic()
        since, before = self._last_progress
        with self._lock:
            counts = dict(self.counts)
        self._last_progress = (now, counts)
        stats = self.queue.stats(self._sales) if self._sales else []
        lag = sum(st.lag for st in stats)
        pending = sum(st.pending for st in stats)
        done = sum(counts[k] - before[k] for k in ("confirmed", "failed", "settled"))
        if not done and not lag and not pending:
            return None
        line = (
            f"worker {self.name}: {done / max(now - since, 1e-9):.1f} orders/s, "
            f"confirmed {counts['confirmed']}, retried {counts['retried']}, "
            f"failed {counts['failed']}; lag {lag}, pending {pending}"
        )
        log.info("%s", line)
        return line

    def _beat(self) -> None:
        """Renew the hold on every order in hand, and the registry entry."""
        busy = False
        for c in self._consumers:
            by_sale: dict[str, list[str]] = {}
            for d in list(c.in_hand.values()):
                by_sale.setdefault(d.sale_id, []).append(d.entry_id)
            for sale_id, ids in by_sale.items():
                self.queue.touch(c.name, sale_id, ids)
            busy = busy or bool(by_sale)
        fields = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "concurrency": len(self._consumers),
            "state": "busy" if busy else "idle",
            "started": self._started,
            "beat": int(time.time() * 1000),
            "processed": self.processed,
            **{k: v for k, v in self.counts.items() if k in ("confirmed", "failed")},
        }
        registry.beat(self.client, self.keys, self.name, fields, ttl=3 * self.heartbeat + 1)
        self._next_beat = time.monotonic() + self.heartbeat

    def _teardown(self) -> None:
        try:
            for c in self._consumers:
                for sale_id in self._sales:
                    self.queue.leave(c.name, sale_id)
            registry.unregister(self.client, self.keys, self.name)
        except redis.RedisError as exc:
            log.warning("worker %s: teardown incomplete: %s", self.name, exc)
        if self._own_client:
            self.client.close()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if self._signalled_at is None:
            self._signalled_at = now
            self._stopping.set()
            name = signal.Signals(signum).name
            log.info("worker %s: %s, finishing the order in hand", self.name, name)
        elif now - self._signalled_at > SIGNAL_REPEAT_WINDOW:
            log.warning("worker %s: second signal, stopping now", self.name)
            raise SystemExit(1)  # the order in hand stays pending: another worker claims it


class EmbeddedWorker(Worker):
    """The :class:`Worker` an :class:`InlineWorker` thread runs: the same :meth:`run`.

    One consumer, no signal handlers, and four steps of its own, for a thread
    of the web process: it holds its app only weakly and stops once the app is
    garbage-collected; it renews its leases between turns rather than from a
    heartbeat thread; without an order handler it waits for one (warning
    once) rather than refusing to start; and a turn that fails for any reason
    is logged and tried again a second later, rather than stopping the loop.
    """

    heartbeat_thread = False

    def __init__(self, app: Flask) -> None:
        super().__init__(app, name=f"inline.{default_name()}", handle_signals=False)
        self._warned = False

    def _hold(self, obj: T) -> Callable[[], T | None]:
        return weakref.ref(obj)

    def _check_handler(self) -> None:
        return None  # a handler registered after init_app is used: see step()

    def step(self, consumer: int = 0) -> int:
        """One turn of the loop (:meth:`Worker.step`), or one tick's wait without a handler."""
        if not self._has_handler():
            if not self._warned:
                log.warning(
                    "inline worker: no @order_handler (nor @order_batch_handler) registered;"
                    " orders stay queued"
                )
                self._warned = True
            self._stopping.wait(self.tick)
            return 0
        return super().step(consumer)

    def _retry_delay(self, c: _Consumer, exc: Exception, failures: int) -> float:
        log.error("inline worker: turn failed; retrying in 1s", exc_info=exc)
        return 1.0


class InlineWorker:
    """A worker thread inside the web process (``FLASHSALE_INLINE_WORKER``).

    The default for ``memory://``, so an app runs end to end in one process.
    The thread is a daemon running an :class:`EmbeddedWorker`, which holds the
    app only weakly: it stops on :meth:`stop`, or by itself once the app is
    garbage-collected, so apps made and dropped by a test suite leave no
    thread behind. Hooks should finish well within ``FLASHSALE_CLAIM_IDLE``
    (no lease renewal runs while the thread is in a hook).
    """

    def __init__(self, app: Flask) -> None:
        #: The worker the thread runs (one consumer, no signal handlers).
        self.worker = EmbeddedWorker(app)
        #: The daemon thread.
        self.thread = threading.Thread(
            target=self.worker.run, name=f"flashsale-inline-{app.name}", daemon=True
        )
        self.thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop after the order in hand and wait up to ``timeout`` s; True if it stopped."""
        self.worker.stop()
        self.thread.join(timeout)
        return not self.thread.is_alive()
