"""The autoscaling supervisor: ``flask flashsale worker --autoscale MIN,MAX``.

One process keeps between MIN and MAX worker processes, each running the
normal worker loop (:class:`~flask_flashsale.worker.Worker`, what ``flask
flashsale worker`` runs) under a name of its own, and never handles an order
itself. Its loop, in the manner of rq's worker pool::

    while not stopping:
        sample    the lag of every sale (OrderQueue.stats, as `status` shows it)
        decide    one worker more, one fewer, or as many as now (Scaler)
        act       SIGTERM the youngest worker beyond the target
        reap      collect workers that exited; a death schedules a restart (Backoff)
        spawn     start workers up to the target, never more than MAX processes
        beat      its registry entry, listing its workers, for `flask flashsale status`
    stop: SIGTERM to every worker, wait until each finished the order in hand

Workers are forked (``multiprocessing``'s ``fork`` context) and run the very
app object the supervisor was given. A spawned or re-executed process would
have to rebuild the app from an import path, and there is none to be had in
general: ``flask --app`` also finds apps in ``wsgi.py``/``app.py``, calls
factories with arguments, and :meth:`FlashSale.run_worker` may be called from
any Python code; a Flask app cannot be pickled either. Forking works the same
for all of them and starts a worker in milliseconds. It needs a POSIX system,
and a supervisor that holds no threads or locks when it forks: the supervisor
runs no thread of its own (it stops an inline worker thread), redis-py's pools
open new connections in a forked child, and the cache's event thread restarts
itself there.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_for_exit
from typing import TYPE_CHECKING

import redis
from flask import Flask

from . import registry
from .errors import ConfigurationError
from .registry import SupervisedWorker
from .worker import (
    SIGNAL_REPEAT_WINDOW,
    STOP_SIGNALS,
    WORKER_NAME,
    Worker,
    default_name,
    install_stop_handlers,
    restore_handlers,
)

if TYPE_CHECKING:
    from ctypes import c_longlong
    from multiprocessing.process import BaseProcess
    from types import FrameType

    from .config import Settings

log = logging.getLogger("flask_flashsale.autoscale")

#: Largest MAX of ``--autoscale MIN,MAX``.
MAX_WORKERS = 256
#: A worker that ran this many seconds before it died had been healthy: its
#: restart waits the first back-off again.
STABLE_AFTER = 10.0
#: Longest wait before restarting a worker that keeps dying (seconds).
MAX_RESTART_BACKOFF = 60.0
#: Seconds between a worker's checks that its supervisor is still alive.
ORPHAN_CHECK = 1.0
#: Workers are named ``<supervisor>.w<n>``: a supervisor name leaves room for that.
MAX_NAME = 90

_SIGNALS = set(STOP_SIGNALS)


@dataclass(frozen=True)
class Policy:
    """When to scale and how fast to restart: the ``FLASHSALE_AUTOSCALE_*`` settings."""

    #: Lag per worker above which one more is started (``FLASHSALE_AUTOSCALE_LAG``).
    lag: int
    #: Seconds the lag must stay above that before a worker is added.
    up_after: float
    #: Seconds without lag, and with a worker to spare, before one is stopped.
    down_after: float
    #: Seconds between two samples of the queues.
    interval: float
    #: First wait before restarting a worker that died; doubles while they die young.
    restart_backoff: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        """The policy an app's configuration asks for."""
        return cls(
            lag=settings.autoscale_lag,
            up_after=settings.autoscale_up_after,
            down_after=settings.autoscale_down_after,
            interval=settings.autoscale_interval,
            restart_backoff=settings.autoscale_restart_backoff,
        )


@dataclass(frozen=True)
class Sample:
    """The queues at one moment, summed over every sale (:meth:`OrderQueue.stats`)."""

    #: Orders admitted and not yet delivered to any worker.
    lag: int
    #: Orders delivered and not yet settled (in hand, awaiting a retry, or
    #: held by a dead worker).
    pending: int


@dataclass(frozen=True)
class Decision:
    """A change of the number of workers, and why."""

    target: int
    reason: str


class Scaler:
    """Decides how many workers to run from successive samples (no I/O, no clock of its own).

    One more once the lag per worker has stayed above ``policy.lag`` for
    ``policy.up_after`` seconds; one fewer once no order has waited for a
    worker (lag 0) while fewer orders were in hand than there are consumers
    (so at least one had nothing to do) for ``policy.down_after`` seconds.
    Each change starts the wait again, so the new count has time to show.
    """

    def __init__(self, policy: Policy, minimum: int, maximum: int, consumers: int = 1) -> None:
        self.policy = policy
        self.minimum = minimum
        self.maximum = maximum
        #: Consumer threads per worker process (``--concurrency``).
        self.consumers = consumers
        self._high_since: float | None = None
        self._idle_since: float | None = None

    def decide(self, now: float, sample: Sample, current: int) -> Decision | None:
        """The new number of workers, or ``None`` to keep ``current``."""
        p = self.policy
        if sample.lag > p.lag * current:
            self._idle_since = None
            if self._high_since is None:
                self._high_since = now
            if current < self.maximum and now - self._high_since >= p.up_after:
                self._high_since = now
                return Decision(
                    current + 1,
                    f"lag {sample.lag} ({sample.lag / current:.0f} per worker) above"
                    f" {p.lag} per worker for {p.up_after:g}s",
                )
            return None
        self._high_since = None
        capacity = current * self.consumers
        if sample.lag == 0 and sample.pending < capacity:
            if self._idle_since is None:
                self._idle_since = now
            if current > self.minimum and now - self._idle_since >= p.down_after:
                self._idle_since = now
                return Decision(
                    current - 1,
                    f"no lag and {sample.pending} order(s) in hand for {capacity}"
                    f" consumer(s) for {p.down_after:g}s",
                )
            return None
        self._idle_since = None
        return None

    def reset(self) -> None:
        """Forget both waits (the queues could not be read)."""
        self._high_since = self._idle_since = None


class Backoff:
    """The wait before restarting a worker that died: doubling while workers die young.

    A death after ``stable_after`` seconds of work starts again from ``base``.
    """

    def __init__(
        self, base: float, *, stable_after: float = STABLE_AFTER, cap: float = MAX_RESTART_BACKOFF
    ) -> None:
        self.base = base
        self.stable_after = stable_after
        self.cap = max(cap, base)
        self._streak = 0

    def after_death(self, lived: float) -> float:
        """Record the death of a worker that ran ``lived`` seconds; return the wait."""
        self._streak = 1 if lived >= self.stable_after else self._streak + 1
        return float(min(self.base * 2 ** (self._streak - 1), self.cap))


class _Child:
    """One worker process of the supervisor."""

    __slots__ = ("name", "pid", "process", "settled", "started", "stopping")

    def __init__(self, name: str, process: BaseProcess, settled: c_longlong) -> None:
        self.name = name
        self.process = process
        self.pid = process.pid or 0
        #: Orders the worker settled, written by the worker (shared memory).
        self.settled = settled
        self.started = time.monotonic()
        #: Sent SIGTERM by the supervisor: finishing the order in hand.
        self.stopping = False


class Supervisor:
    """Keeps ``minimum``..``maximum`` worker processes for ``app``, scaled on the queue lag.

    See :meth:`FlashSale.run_worker` (``autoscale=``) and :doc:`worker`.
    Raises :class:`~flask_flashsale.ConfigurationError` under ``memory://``,
    where fork is not available, or without an ``order_handler``;
    :class:`ValueError` for a bad range, name or concurrency.
    """

    def __init__(
        self,
        app: Flask,
        minimum: int,
        maximum: int,
        *,
        name: str | None = None,
        concurrency: int = 1,
    ) -> None:
        from .extension import FlashSale

        for value in (minimum, maximum, concurrency):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"autoscale needs whole numbers, got {value!r}")
        if not 1 <= minimum <= maximum <= MAX_WORKERS:
            raise ValueError(
                f"autoscale needs 1 <= MIN <= MAX <= {MAX_WORKERS}, got {minimum},{maximum}"
            )
        if concurrency < 1:
            raise ValueError(f"concurrency must be a positive int, got {concurrency!r}")
        if name is not None and (not WORKER_NAME.fullmatch(name) or len(name) > MAX_NAME):
            raise ValueError(
                f"supervisor names are 1-{MAX_NAME} of [A-Za-z0-9_.:@-] (its workers"
                f" add .w<n>), got {name!r}"
            )
        state = FlashSale.state(app)
        if state.backend.process_local:
            raise ConfigurationError(
                "--autoscale runs workers in separate processes and needs a Redis server;"
                " memory:// lives inside one process"
            )
        if "fork" not in multiprocessing.get_all_start_methods():
            raise ConfigurationError("--autoscale forks worker processes: not possible here")
        hooks = state.ext.hooks
        if hooks.order_handler is None and hooks.order_batch_handler is None:
            raise ConfigurationError(
                "no order handler: decorate a function with @flashsale.order_handler"
                " or @flashsale.order_batch_handler"
            )
        self.app = app
        self.state = state
        #: The supervisor's name; its workers are ``<name>.w1``, ``<name>.w2``...
        self.name = name or default_name()
        self.minimum = minimum
        self.maximum = maximum
        self.concurrency = concurrency
        self.policy = Policy.from_settings(state.settings)
        self.scaler = Scaler(self.policy, minimum, maximum, consumers=concurrency)
        self.backoff = Backoff(self.policy.restart_backoff)
        #: Worker processes wanted now.
        self.target = minimum
        self._context = multiprocessing.get_context("fork")
        self._children: list[_Child] = []
        self._spawned = 0
        self._not_before = 0.0  # no worker starts before (a restart's back-off)
        self._stopping = threading.Event()
        self._signalled_at: float | None = None
        self._forced = False
        self._clean = True
        self._settled = 0
        self._lag: int | None = None
        self._redis_ok = True
        self._started = int(time.time() * 1000)

    # -- the loop --------------------------------------------------------------

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT or :meth:`stop`; return the orders its workers settled.

        Stopping sends SIGTERM to every worker and waits until each has
        finished the order in hand. Raises ``SystemExit(1)`` if one did not
        exit cleanly (a second signal stops the workers at once).
        """
        inline = self.state.inline_worker
        if inline is not None:  # orders run in the workers only
            inline.stop()
        previous = install_stop_handlers(self._on_signal)
        log.info(
            "supervisor %s started (pid %d): %d..%d workers",
            self.name,
            os.getpid(),
            self.minimum,
            self.maximum,
        )
        try:
            while not self._stopping.is_set():
                sample = self._sample()
                if sample is not None:
                    self._scale(sample)
                self._reap()
                self._spawn()
                self._beat()
                self._stopping.wait(self.policy.interval)
        finally:
            self._shutdown()
            restore_handlers(previous)
        if not self._clean:
            raise SystemExit(1)
        log.info("supervisor %s stopped: its workers settled %d order(s)", self.name, self._settled)
        return self._settled

    def stop(self) -> None:
        """Ask the supervisor to stop its workers after the order in hand (thread-safe)."""
        self._stopping.set()

    @property
    def children(self) -> list[SupervisedWorker]:
        """Its worker processes now, oldest first."""
        return [
            SupervisedWorker(c.name, c.pid, "stopping" if c.stopping else "running")
            for c in self._children
        ]

    # -- sample, decide, act ---------------------------------------------------

    def _sample(self) -> Sample | None:
        """The lag and pending orders of every sale, as ``flask flashsale status`` reads them."""
        queue = self.state.orders
        try:
            stats = queue.stats(queue.sale_ids())
        except redis.RedisError as exc:
            if self._redis_ok:
                log.warning("supervisor %s: cannot read the queues: %s", self.name, exc)
            self._redis_ok = False
            self._lag = None
            self.scaler.reset()
            return None
        self._redis_ok = True
        sample = Sample(lag=sum(s.lag for s in stats), pending=sum(s.pending for s in stats))
        self._lag = sample.lag
        return sample

    def _scale(self, sample: Sample) -> None:
        decision = self.scaler.decide(time.monotonic(), sample, self.target)
        if decision is None:
            return
        log.info(
            "supervisor %s: scaling %s %d -> %d workers: %s",
            self.name,
            "up" if decision.target > self.target else "down",
            self.target,
            decision.target,
            decision.reason,
        )
        self.target = decision.target
        running = [c for c in self._children if not c.stopping]
        for child in running[self.target :]:  # the youngest go first
            self._retire(child)

    def _retire(self, child: _Child) -> None:
        """SIGTERM: the worker finishes the order in hand, hands back the rest, exits."""
        child.stopping = True
        try:
            os.kill(child.pid, signal.SIGTERM)
        except ProcessLookupError:  # already gone: reaped next
            return
        log.info(
            "supervisor %s: worker %s (pid %d) asked to stop", self.name, child.name, child.pid
        )

    def _reap(self) -> None:
        """Collect workers that exited; schedule the restart of those that died."""
        now = time.monotonic()
        for child in list(self._children):
            if child.process.is_alive():
                continue
            self._children.remove(child)
            code = child.process.exitcode
            child.process.close()
            self._settled += int(child.settled.value)
            how = _describe(code)
            if child.stopping or self._stopping.is_set():
                if code != 0 and self._stopping.is_set():
                    self._clean = False
                log.info(
                    "supervisor %s: worker %s (pid %d) %s", self.name, child.name, child.pid, how
                )
                continue
            delay = self.backoff.after_death(now - child.started)
            log.warning(
                "supervisor %s: worker %s (pid %d) %s after %.1fs; restarting in %gs",
                self.name,
                child.name,
                child.pid,
                how,
                now - child.started,
                delay,
            )
            self._not_before = max(self._not_before, time.monotonic() + delay)

    def _spawn(self) -> None:
        """Start workers up to the target: never more than MAX processes, stopping ones included."""
        while (
            not self._stopping.is_set()
            and sum(not c.stopping for c in self._children) < self.target
            and len(self._children) < self.maximum
            and time.monotonic() >= self._not_before
        ):
            self._spawned += 1
            name = f"{self.name}.w{self._spawned}"
            settled = self._context.RawValue("q", 0)
            process = self._context.Process(
                target=_worker_main,
                args=(self.app, name, self.concurrency, os.getpid(), settled),
                name=name,
            )
            # Blocked across the fork: a signal forwarded before the worker has
            # its handlers waits for them instead of hitting the supervisor's.
            previous = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
            try:
                process.start()
            except OSError as exc:  # out of processes or memory: try again later
                delay = self.backoff.after_death(0.0)
                self._not_before = time.monotonic() + delay
                log.error(
                    "supervisor %s: cannot start a worker (%s); retry in %gs", self.name, exc, delay
                )
                return
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, previous)
            child = _Child(name, process, settled)
            self._children.append(child)
            log.info("supervisor %s: worker %s started (pid %d)", self.name, name, child.pid)

    def _beat(self) -> None:
        """The registry entry, with the workers it runs: alive for three intervals + 5 s.

        The margin keeps it in ``status`` through a few missed beats (a slow
        Redis, a starved host); workers' entries live 3 heartbeats + 1 s.
        """
        fields = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": self._started,
            "beat": int(time.time() * 1000),
            "min": self.minimum,
            "max": self.maximum,
            "target": self.target,
            "lag": "" if self._lag is None else self._lag,
            "state": "stopping" if self._stopping.is_set() else "running",
        }
        try:
            registry.beat_supervisor(
                self.state.client,
                self.state.keys,
                self.name,
                fields,
                self.children,
                ttl=3 * self.policy.interval + 5,
            )
        except redis.RedisError as exc:
            if self._redis_ok:
                log.warning("supervisor %s: heartbeat failed: %s", self.name, exc)

    # -- stopping --------------------------------------------------------------

    def _shutdown(self) -> None:
        """SIGTERM every worker; wait for all of them (a second signal: SIGTERM again)."""
        self._stopping.set()
        for child in self._children:
            if not child.stopping:
                self._retire(child)
        forwarded_twice = False
        next_beat = 0.0
        while self._children:
            if self._forced and not forwarded_twice:
                forwarded_twice = True
                for child in self._children:  # their second signal: stop at once
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child.pid, signal.SIGTERM)
            wait_for_exit([c.process.sentinel for c in self._children], timeout=0.2)
            self._reap()
            if time.monotonic() >= next_beat:
                self._beat()
                next_beat = time.monotonic() + self.policy.interval
        try:
            registry.unregister_supervisor(self.state.client, self.state.keys, self.name)
        except redis.RedisError as exc:
            log.warning("supervisor %s: could not leave the registry: %s", self.name, exc)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if self._signalled_at is None:
            self._signalled_at = now
            self._stopping.set()
            log.info(
                "supervisor %s: %s, stopping %d worker(s) after the order in hand",
                self.name,
                signal.Signals(signum).name,
                len(self._children),
            )
        elif now - self._signalled_at > SIGNAL_REPEAT_WINDOW and not self._forced:
            self._forced = True
            log.warning("supervisor %s: second signal, stopping the workers now", self.name)


def _describe(code: int | None) -> str:
    """How a process ended, from its exit code."""
    if code is None:
        return "exited"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


def _worker_main(
    app: Flask, name: str, concurrency: int, supervisor: int, settled: c_longlong
) -> None:
    """Body of a worker process: the normal worker loop, until stopped or orphaned."""
    worker = Worker(app, name=name, concurrency=concurrency)
    for sig in _SIGNALS:  # until run() installs the worker's own handlers
        signal.signal(sig, lambda signum, frame: worker.stop())
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
    done = threading.Event()
    watch = threading.Thread(
        target=_watch_supervisor,
        args=(worker, supervisor, settled, done),
        name=f"{name}-watch",
        daemon=True,
    )
    watch.start()
    try:
        worker.run()
    finally:
        done.set()
        settled.value = worker.processed


def _watch_supervisor(
    worker: Worker, supervisor: int, settled: c_longlong, done: threading.Event
) -> None:
    """Report the worker's count; stop it gracefully if the supervisor dies (SIGKILL, OOM)."""
    while not done.wait(ORPHAN_CHECK):
        settled.value = worker.processed
        if os.getppid() != supervisor:
            log.warning(
                "worker %s: its supervisor (pid %d) is gone; finishing the order in hand",
                worker.name,
                supervisor,
            )
            worker.stop()
            return
