"""Worker processes that die or are stopped mid-order: nothing is lost, nothing doubles.

Each test runs ``flask flashsale worker`` in a subprocess on the real test
Redis, with a host app (``tests/worker_host.py``) whose hook writes to its own
SQLite table keyed on ``order.id``, and gets stuck on one chosen order.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis as redis_lib
from flask import Flask

from flask_flashsale import FlashSale
from flask_flashsale.worker import SIGNAL_REPEAT_WINDOW, Worker

from .helpers import ticket
from .worker_host import WorkerProcess, host_with_orders, rows, wait_until

ORDERS = 20
STUCK = 9  # index of the order the first worker gets stuck on
STREAM = "flashsale:{drop}:orders"


@dataclass
class Host:
    """The host app (in this process) with ORDERS admitted orders, oldest first,
    and where its subprocess workers run."""

    app: Flask
    ext: FlashSale
    tickets: list[str]
    tmp_path: Path
    redis_url: str
    redis: redis_lib.Redis

    @property
    def db(self) -> Path:
        """The host's SQLite database (its ``orders`` and ``calls`` tables)."""
        return self.tmp_path / "host.sqlite3"

    def start_worker(self, name: str, **env: str) -> WorkerProcess:
        """``flask flashsale worker --name NAME`` in a subprocess, ``env`` added."""
        return WorkerProcess(
            {
                "TEST_REDIS_URL": self.redis_url,
                "HOST_DB": str(self.db),
                "STUCK_MARKER": str(self.tmp_path / "stuck"),
                **env,
            },
            self.tmp_path / f"{name}.log",
            "--name",
            name,
        )

    def stopped_when_stuck(
        self, worker: WorkerProcess, stop: Callable[[WorkerProcess], None], timeout: float
    ) -> tuple[int, str]:
        """Once ``worker``'s hook is stuck, ``stop(worker)``; its exit code (within
        ``timeout`` s) and output. The worker is closed in any case."""
        try:
            wait_until(lambda: (self.tmp_path / "stuck").exists(), timeout=30)
            stop(worker)
            return worker.wait(timeout), worker.output()
        finally:
            worker.close()

    def killed_when_stuck(self, **env: str) -> int:
        """Run a worker "doomed" with ``env`` and SIGKILL it once its hook is stuck;
        the orders then left pending on it."""
        doomed = self.start_worker("doomed", **env)
        code, _ = self.stopped_when_stuck(doomed, send(signal.SIGKILL), 10)
        assert code == -signal.SIGKILL
        return self.pending()

    def pending(self) -> int:
        """Orders delivered to a worker and not yet acknowledged."""
        return int(self.redis.xpending(STREAM, "workers")["pending"])

    def statuses(self) -> Counter[str]:
        """How many tickets are in each status."""
        with self.app.app_context():
            return Counter(ticket(self.ext, t).status for t in self.tickets)

    def check_each_order_stored_once_and_confirmed(self) -> None:
        """Every order is in the host table once, every ticket confirmed, the stream
        empty and nothing pending."""
        stored = rows(self.db, "SELECT id FROM orders")
        assert sorted(order_id for (order_id,) in stored) == sorted(self.tickets)
        assert self.statuses() == Counter({"confirmed": ORDERS})
        assert self.redis.xlen(STREAM) == 0
        assert self.pending() == 0


@pytest.fixture
def host(
    tmp_path: Path,
    redis_url: str,
    redis_client: redis_lib.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> Host:
    app, ext, tickets = host_with_orders(tmp_path, redis_url, monkeypatch, ORDERS)
    return Host(app, ext, tickets, tmp_path, redis_url, redis_client)


def send(*signals: signal.Signals) -> Callable[[WorkerProcess], None]:
    """A ``stop`` for :meth:`Host.stopped_when_stuck`: send ``signals``, one right after
    the other."""

    def stop(worker: WorkerProcess) -> None:
        for sig in signals:
            worker.signal(sig)

    return stop


@pytest.mark.slow
@pytest.mark.parametrize("stuck_after_commit", [True, False], ids=["committed", "uncommitted"])
def test_a_worker_killed_mid_order_loses_nothing_and_doubles_nothing(
    host: Host, stuck_after_commit: bool
) -> None:
    tickets = host.tickets
    pending_after_kill = host.killed_when_stuck(
        STUCK_ORDER=tickets[STUCK],
        STUCK_AFTER_COMMIT="1" if stuck_after_commit else "0",
        WORKER_BATCH="1",  # one order in hand at a time: exactly one is left behind
    )

    # A second worker (this process) drains the queue, claiming the dead one's order.
    rescued = Worker(host.app, name="rescuer", burst=True).run()

    calls = rows(host.db, "SELECT order_id, pid, attempt FROM calls")
    by_process = Counter("rescuer" if pid == os.getpid() else "doomed" for _, pid, _ in calls)
    claimed = [(o, a) for o, pid, a in calls if pid == os.getpid() and a > 1]
    print(
        f"\nSIGKILL mid-order ({'after' if stuck_after_commit else 'before'} commit): "
        f"orders={ORDERS} hook_calls={dict(by_process)} "
        f"pending_after_kill={pending_after_kill} claimed={len(claimed)} rescued={rescued}"
    )
    assert pending_after_kill == 1  # the stuck order, held by the dead worker
    # The dead worker took orders 0..STUCK; the rescuer claimed the stuck one
    # (its second delivery, counted by Redis) and read the rest.
    assert by_process == Counter({"doomed": STUCK + 1, "rescuer": ORDERS - STUCK})
    assert claimed == [(tickets[STUCK], 2)]
    assert rescued == ORDERS - STUCK
    host.check_each_order_stored_once_and_confirmed()


@pytest.mark.slow
def test_a_worker_killed_mid_batch_loses_nothing_and_its_unstarted_orders_are_claimed(
    host: Host,
) -> None:
    tickets = host.tickets
    pending_after_kill = host.killed_when_stuck(
        STUCK_ORDER=tickets[STUCK], STUCK_AFTER_COMMIT="1"
    )  # the default batch (32) reads all ORDERS orders at once
    confirmed_before = host.statuses()["confirmed"]

    rescued = Worker(host.app, name="rescuer", burst=True).run()

    calls = rows(host.db, "SELECT order_id, pid, attempt FROM calls")
    doomed_calls = [o for o, pid, _ in calls if pid != os.getpid()]
    rescuer_calls = [(o, a) for o, pid, a in calls if pid == os.getpid()]
    # The dead worker held the whole batch: every order it had not confirmed
    # (at least the stuck one and those after it) stayed pending on it.
    assert confirmed_before <= STUCK
    assert pending_after_kill == ORDERS - confirmed_before
    assert doomed_calls == tickets[: STUCK + 1]
    # The rescuer claimed each of them once, as a second delivery, and the
    # orders the dead worker never started reached a hook exactly once.
    assert sorted(o for o, _ in rescuer_calls) == sorted(tickets[confirmed_before:])
    assert {a for _, a in rescuer_calls} == {2}
    assert rescued == ORDERS - confirmed_before
    assert Counter(o for o, _, _ in calls)[tickets[-1]] == 1
    host.check_each_order_stored_once_and_confirmed()


@pytest.mark.slow
def test_sigterm_finishes_the_order_in_hand_then_exits_0(host: Host) -> None:
    first = host.tickets[0]
    worker = host.start_worker(
        "graceful",
        STUCK_ORDER=first,
        STUCK_AFTER_COMMIT="0",  # the row is written only when the hook finishes
        STUCK_SECONDS="1.5",
        CLAIM_IDLE="30",
    )
    code, output = host.stopped_when_stuck(worker, send(signal.SIGTERM), 30)
    assert code == 0, output
    assert rows(host.db, "SELECT id FROM orders") == [(first,)]  # the order in hand completed
    with host.app.app_context():
        assert ticket(host.ext, first).status == "confirmed"
    # Nothing is left pending on the stopped worker; the rest wait, undelivered.
    assert host.pending() == 0
    assert host.redis.xlen(STREAM) == ORDERS - 1
    assert host.redis.xinfo_consumers(STREAM, "workers") == []
    assert not host.redis.sismember("flashsale:workers", "graceful")
    assert "SIGTERM" in output


@pytest.mark.slow
def test_a_second_signal_stops_at_once_and_the_order_is_redelivered(host: Host) -> None:
    worker = host.start_worker("impatient", STUCK_ORDER=host.tickets[0], STUCK_SECONDS="60")

    def interrupt_twice(worker: WorkerProcess) -> None:
        worker.signal(signal.SIGINT)
        wait_until(lambda: "finishing the order in hand" in worker.output(), timeout=10)
        time.sleep(SIGNAL_REPEAT_WINDOW + 0.1)  # a repeat within the window is the same request
        worker.signal(signal.SIGINT)

    try:
        code, _ = host.stopped_when_stuck(worker, interrupt_twice, 15)  # far less than 60 s
    except subprocess.TimeoutExpired:
        pytest.fail("a second signal did not stop the worker")
    assert code == 1
    assert host.pending() == 1
    assert Worker(host.app, name="next", burst=True).run() == ORDERS
    host.check_each_order_stored_once_and_confirmed()


@pytest.mark.slow
def test_one_signal_delivered_twice_at_once_is_still_a_graceful_stop(host: Host) -> None:
    # `timeout`, shells and process managers often signal the worker and its
    # process group: the same request arrives twice within microseconds.
    first = host.tickets[0]
    worker = host.start_worker("wrapped", STUCK_ORDER=first, STUCK_SECONDS="1", CLAIM_IDLE="30")
    code, output = host.stopped_when_stuck(worker, send(signal.SIGTERM, signal.SIGTERM), 30)
    assert code == 0, output
    assert rows(host.db, "SELECT id FROM orders") == [(first,)]
    assert host.pending() == 0
    assert output.count("finishing the order in hand") == 1
