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
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib
from flask import Flask

from flask_flashsale import FlashSale
from flask_flashsale.worker import SIGNAL_REPEAT_WINDOW, Worker

from .worker_host import WorkerProcess, host_with_orders, rows, wait_until

ORDERS = 20
STUCK = 9  # index of the order the first worker gets stuck on


@pytest.fixture
def host(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Flask, FlashSale, list[str]]]:
    """The host app (in this process) with ORDERS admitted orders, oldest first."""
    yield host_with_orders(tmp_path, redis_url, monkeypatch, ORDERS)


def start_worker(tmp_path: Path, redis_url: str, name: str, **env: str) -> WorkerProcess:
    return WorkerProcess(
        {
            "TEST_REDIS_URL": redis_url,
            "HOST_DB": str(tmp_path / "host.sqlite3"),
            "STUCK_MARKER": str(tmp_path / "stuck"),
            **env,
        },
        tmp_path / f"{name}.log",
        "--name",
        name,
    )


def statuses(app: Flask, ext: FlashSale, tickets: list[str]) -> Counter[str]:
    with app.app_context():
        return Counter(ext.get_ticket(t).status for t in tickets)  # type: ignore[union-attr]


@pytest.mark.slow
@pytest.mark.parametrize("stuck_after_commit", [True, False], ids=["committed", "uncommitted"])
def test_a_worker_killed_mid_order_loses_nothing_and_doubles_nothing(
    host: tuple[Flask, FlashSale, list[str]],
    tmp_path: Path,
    redis_url: str,
    redis_client: redis_lib.Redis,
    stuck_after_commit: bool,
) -> None:
    app, ext, tickets = host
    db = tmp_path / "host.sqlite3"
    doomed = start_worker(
        tmp_path,
        redis_url,
        "doomed",
        STUCK_ORDER=tickets[STUCK],
        STUCK_AFTER_COMMIT="1" if stuck_after_commit else "0",
        WORKER_BATCH="1",  # one order in hand at a time: exactly one is left behind
    )
    try:
        wait_until(lambda: (tmp_path / "stuck").exists(), timeout=30)
        doomed.signal(signal.SIGKILL)
        assert doomed.wait(10) == -signal.SIGKILL
    finally:
        doomed.close()
    pending_after_kill = redis_client.xpending("flashsale:{drop}:orders", "workers")["pending"]

    # A second worker (this process) drains the queue, claiming the dead one's order.
    rescuer = Worker(app, name="rescuer", burst=True)
    rescued = rescuer.run()

    calls = rows(db, "SELECT order_id, pid, attempt FROM calls")
    stored = rows(db, "SELECT id FROM orders")
    by_process = Counter("rescuer" if pid == os.getpid() else "doomed" for _, pid, _ in calls)
    claimed = [(o, a) for o, pid, a in calls if pid == os.getpid() and a > 1]
    confirmed = statuses(app, ext, tickets)["confirmed"]
    print(
        f"\nSIGKILL mid-order ({'after' if stuck_after_commit else 'before'} commit): "
        f"orders={ORDERS} hook_calls={dict(by_process)} "
        f"pending_after_kill={pending_after_kill} claimed={len(claimed)} "
        f"rescued={rescued} rows={len(stored)} confirmed={confirmed}"
    )
    assert pending_after_kill == 1  # the stuck order, held by the dead worker
    assert sorted(order_id for (order_id,) in stored) == sorted(tickets)  # each once
    assert confirmed == ORDERS
    # The dead worker took orders 0..STUCK; the rescuer claimed the stuck one
    # (its second delivery, counted by Redis) and read the rest.
    assert by_process == Counter({"doomed": STUCK + 1, "rescuer": ORDERS - STUCK})
    assert claimed == [(tickets[STUCK], 2)]
    assert rescued == ORDERS - STUCK
    assert redis_client.xlen("flashsale:{drop}:orders") == 0
    assert redis_client.xpending("flashsale:{drop}:orders", "workers")["pending"] == 0


@pytest.mark.slow
def test_a_worker_killed_mid_batch_loses_nothing_and_its_unstarted_orders_are_claimed(
    host: tuple[Flask, FlashSale, list[str]],
    tmp_path: Path,
    redis_url: str,
    redis_client: redis_lib.Redis,
) -> None:
    app, ext, tickets = host
    db = tmp_path / "host.sqlite3"
    doomed = start_worker(
        tmp_path, redis_url, "doomed", STUCK_ORDER=tickets[STUCK], STUCK_AFTER_COMMIT="1"
    )  # the default batch (32) reads all ORDERS orders at once
    try:
        wait_until(lambda: (tmp_path / "stuck").exists(), timeout=30)
        doomed.signal(signal.SIGKILL)
        assert doomed.wait(10) == -signal.SIGKILL
    finally:
        doomed.close()
    pending_after_kill = redis_client.xpending("flashsale:{drop}:orders", "workers")["pending"]
    confirmed_before = statuses(app, ext, tickets)["confirmed"]

    rescued = Worker(app, name="rescuer", burst=True).run()

    calls = rows(db, "SELECT order_id, pid, attempt FROM calls")
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
    assert sorted(order_id for (order_id,) in rows(db, "SELECT id FROM orders")) == sorted(tickets)
    assert statuses(app, ext, tickets) == Counter({"confirmed": ORDERS})
    assert redis_client.xlen("flashsale:{drop}:orders") == 0
    assert redis_client.xpending("flashsale:{drop}:orders", "workers")["pending"] == 0


@pytest.mark.slow
def test_sigterm_finishes_the_order_in_hand_then_exits_0(
    host: tuple[Flask, FlashSale, list[str]],
    tmp_path: Path,
    redis_url: str,
    redis_client: redis_lib.Redis,
) -> None:
    app, ext, tickets = host
    db = tmp_path / "host.sqlite3"
    worker = start_worker(
        tmp_path,
        redis_url,
        "graceful",
        STUCK_ORDER=tickets[0],
        STUCK_AFTER_COMMIT="0",  # the row is written only when the hook finishes
        STUCK_SECONDS="1.5",
        CLAIM_IDLE="30",
    )
    try:
        wait_until(lambda: (tmp_path / "stuck").exists(), timeout=30)
        worker.signal(signal.SIGTERM)
        code = worker.wait(30)
        output = worker.output()
    finally:
        worker.close()
    assert code == 0, output
    assert rows(db, "SELECT id FROM orders") == [(tickets[0],)]  # the order in hand completed
    with app.app_context():
        assert ext.get_ticket(tickets[0]).status == "confirmed"  # type: ignore[union-attr]
    # Nothing is left pending on the stopped worker; the rest wait, undelivered.
    assert redis_client.xpending("flashsale:{drop}:orders", "workers")["pending"] == 0
    assert redis_client.xlen("flashsale:{drop}:orders") == ORDERS - 1
    assert redis_client.xinfo_consumers("flashsale:{drop}:orders", "workers") == []
    assert not redis_client.sismember("flashsale:workers", "graceful")
    assert "SIGTERM" in output


@pytest.mark.slow
def test_a_second_signal_stops_at_once_and_the_order_is_redelivered(
    host: tuple[Flask, FlashSale, list[str]],
    tmp_path: Path,
    redis_url: str,
    redis_client: redis_lib.Redis,
) -> None:
    app, ext, tickets = host
    db = tmp_path / "host.sqlite3"
    worker = start_worker(
        tmp_path, redis_url, "impatient", STUCK_ORDER=tickets[0], STUCK_SECONDS="60"
    )
    try:
        wait_until(lambda: (tmp_path / "stuck").exists(), timeout=30)
        worker.signal(signal.SIGINT)
        wait_until(lambda: "finishing the order in hand" in worker.output(), timeout=10)
        time.sleep(SIGNAL_REPEAT_WINDOW + 0.1)  # a repeat within the window is the same request
        worker.signal(signal.SIGINT)
        code = worker.wait(15)  # far less than the hook's 60 s
    except subprocess.TimeoutExpired:
        pytest.fail("a second signal did not stop the worker")
    finally:
        worker.close()
    assert code == 1
    assert redis_client.xpending("flashsale:{drop}:orders", "workers")["pending"] == 1
    assert Worker(app, name="next", burst=True).run() == ORDERS
    assert sorted(order_id for (order_id,) in rows(db, "SELECT id FROM orders")) == sorted(tickets)
    assert statuses(app, ext, tickets) == Counter({"confirmed": ORDERS})


@pytest.mark.slow
def test_one_signal_delivered_twice_at_once_is_still_a_graceful_stop(
    host: tuple[Flask, FlashSale, list[str]],
    tmp_path: Path,
    redis_url: str,
    redis_client: redis_lib.Redis,
) -> None:
    # `timeout`, shells and process managers often signal the worker and its
    # process group: the same request arrives twice within microseconds.
    _, _, tickets = host
    db = tmp_path / "host.sqlite3"
    worker = start_worker(
        tmp_path, redis_url, "wrapped", STUCK_ORDER=tickets[0], STUCK_SECONDS="1", CLAIM_IDLE="30"
    )
    try:
        wait_until(lambda: (tmp_path / "stuck").exists(), timeout=30)
        worker.signal(signal.SIGTERM)
        worker.signal(signal.SIGTERM)
        code = worker.wait(30)
        output = worker.output()
    finally:
        worker.close()
    assert code == 0, output
    assert rows(db, "SELECT id FROM orders") == [(tickets[0],)]
    assert redis_client.xpending("flashsale:{drop}:orders", "workers")["pending"] == 0
    assert output.count("finishing the order in hand") == 1
