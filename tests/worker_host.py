"""A host app for worker tests: its hook writes orders to its own SQLite table.

Subprocess workers load it with ``flask --app tests.worker_host:create_app``;
the environment says where Redis and the database are, and which order the
hook should get stuck on (to be killed or stopped mid-order).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_flashsale import FlashSale, Order
from flask_flashsale.worker import Worker

from .helpers import ROOT

FLASK = [sys.executable, "-m", "flask", "--app", "tests.worker_host:create_app"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    id       TEXT PRIMARY KEY,      -- order.id: the unique key that makes the hook idempotent
    user_id  TEXT NOT NULL,
    quantity INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS calls (  -- every hook call, to count deliveries
    order_id TEXT NOT NULL,
    pid      INTEGER NOT NULL,
    attempt  INTEGER NOT NULL
);
"""


def init_db(path: Path) -> None:
    """Create the host's tables."""
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA)


def rows(path: Path, sql: str) -> list[Any]:
    """Run a query on the host database."""
    with sqlite3.connect(path, timeout=10) as db:
        return db.execute(sql).fetchall()


def create_app() -> Flask:
    """The host app, configured from the environment.

    ``TEST_REDIS_URL``, ``HOST_DB``, ``WORKER_BATCH``; ``STUCK_ORDER`` (an order id) makes the
    hook write ``STUCK_MARKER`` and sleep ``STUCK_SECONDS`` on that order's
    first delivery, after committing its row when ``STUCK_AFTER_COMMIT=1``,
    else inside the still-open transaction. ``POISON_USER`` makes the hook kill
    its process (``os._exit(17)``) on every order of that buyer, before writing
    it; ``MAX_ATTEMPTS`` sets ``FLASHSALE_MAX_ATTEMPTS``. ``HOOK_SECONDS`` makes
    every hook call that slow. ``HOSTCFG_<KEY>`` sets config ``<KEY>`` (JSON
    values), e.g. ``HOSTCFG_FLASHSALE_AUTOSCALE_LAG=2``. ``BATCH_HOOK=1``
    registers an ``order_batch_handler`` instead: one transaction and one
    multi-row insert per call, killing its process before writing anything
    when an order of ``POISON_USER`` is in the list (with
    ``POISON_RAISES_IN_BATCH=1``: raising instead when the list holds others too).
    """
    app = Flask("worker-host")
    app.config.update(
        SECRET_KEY="test-secret",
        FLASHSALE_REDIS_URL=os.environ["TEST_REDIS_URL"],
        FLASHSALE_INLINE_WORKER=False,
        FLASHSALE_CLAIM_IDLE=float(os.environ.get("CLAIM_IDLE", "0.5")),
        FLASHSALE_RETRY_BACKOFF=0.02,
        FLASHSALE_WORKER_BATCH=int(os.environ.get("WORKER_BATCH", "32")),
        FLASHSALE_MAX_ATTEMPTS=int(os.environ.get("MAX_ATTEMPTS", "5")),
    )
    app.config.from_prefixed_env("HOSTCFG")
    flashsale = FlashSale(app)
    db_path = os.environ["HOST_DB"]
    stuck = os.environ.get("STUCK_ORDER")
    after_commit = os.environ.get("STUCK_AFTER_COMMIT") == "1"
    poison = os.environ.get("POISON_USER")
    slow = float(os.environ.get("HOOK_SECONDS", "0"))

    def get_stuck(order: Order) -> None:
        Path(os.environ["STUCK_MARKER"]).write_text(str(os.getpid()))
        time.sleep(float(os.environ.get("STUCK_SECONDS", "60")))

    if os.environ.get("BATCH_HOOK") == "1":
        raises_in_batch = os.environ.get("POISON_RAISES_IN_BATCH") == "1"

        @flashsale.order_batch_handler
        def persist_many(orders: list[Order]) -> None:
            db = sqlite3.connect(db_path, timeout=10)
            try:
                with db:
                    db.executemany(
                        "INSERT INTO calls VALUES (?, ?, ?)",
                        [(o.id, os.getpid(), o.attempt) for o in orders],
                    )
                if any(o.user_id == poison for o in orders):
                    if len(orders) > 1 and raises_in_batch:
                        raise RuntimeError("a batch with the poison order")
                    os._exit(17)  # a segfault or an OOM kill, whenever the poison order is in hand
                with db:
                    db.executemany(
                        "INSERT OR IGNORE INTO orders VALUES (?, ?, ?)",
                        [(o.id, o.user_id, o.quantity) for o in orders],
                    )
            finally:
                db.close()

        return app

    @flashsale.order_handler
    def persist(order: Order) -> None:
        db = sqlite3.connect(db_path, timeout=10)
        try:
            with db:
                db.execute(
                    "INSERT INTO calls VALUES (?, ?, ?)", (order.id, os.getpid(), order.attempt)
                )
            if order.user_id == poison:
                os._exit(17)  # a segfault or an OOM kill, on this order every time
            if slow:
                time.sleep(slow)
            db.execute(
                "INSERT OR IGNORE INTO orders VALUES (?, ?, ?)",
                (order.id, order.user_id, order.quantity),
            )
            if order.id == stuck and order.attempt == 1 and not after_commit:
                get_stuck(order)  # mid-transaction: nothing committed yet
            db.commit()
            if order.id == stuck and order.attempt == 1 and after_commit:
                get_stuck(order)  # committed, but the worker has not acknowledged it
        finally:
            db.close()

    return app


class WorkerProcess:
    """``flask flashsale worker`` in a subprocess, bounded in time, stopped by pid."""

    def __init__(self, env: dict[str, str], log: Path, *args: str) -> None:
        self.log = log
        self._log_file = log.open("wb")
        full_env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
            **env,
        }
        self.proc = subprocess.Popen(
            [*FLASK, "flashsale", "worker", *args],
            cwd=ROOT,
            env=full_env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the worker."""
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Wait for the exit code (raises ``TimeoutExpired``)."""
        return self.proc.wait(timeout)

    def output(self) -> str:
        """What the worker printed so far."""
        self._log_file.flush()
        return self.log.read_text(errors="replace")

    def close(self) -> None:
        """Kill the worker if it still runs."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log_file.close()


def host_with_orders(
    tmp_path: Path, redis_url: str, env: Any, orders: int
) -> tuple[Flask, FlashSale, list[str]]:
    """The host app in this process (its database in ``tmp_path``, ``env`` a
    ``MonkeyPatch`` for the environment) with sale ``drop`` and ``orders``
    admitted orders, oldest first."""
    db = tmp_path / "host.sqlite3"
    init_db(db)
    env.setenv("TEST_REDIS_URL", redis_url)
    env.setenv("HOST_DB", str(db))
    app = create_app()
    ext: FlashSale = app.extensions["flashsale"].ext
    with app.app_context():
        ext.create_sale("drop", stock=orders)
        tickets = []
        for i in range(orders):
            admission = ext.place_order("drop", f"user{i}")
            assert admission.ticket_id is not None
            tickets.append(admission.ticket_id)
    return app, ext, tickets


def wait_until(check: Callable[[], Any], timeout: float = 20.0, interval: float = 0.02) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {check}")
        time.sleep(interval)


#: Worker settings that keep tests fast: dead workers' orders are claimed after
#: half a second, and retries back off from 20 ms.
FAST = {"FLASHSALE_CLAIM_IDLE": 0.5, "FLASHSALE_RETRY_BACKOFF": 0.02}


@contextmanager
def worker_thread(app: Flask, **kwargs: Any) -> Iterator[Worker]:
    """Run a :class:`Worker` in a thread for the duration of the block, then stop it."""
    worker = Worker(app, **kwargs)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            worker.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(15)
        assert not thread.is_alive(), "the worker did not stop"
        if errors:
            raise errors[0]


def supervise(
    tmp_path: Path,
    redis_url: str,
    redis_client: Any,
    env: dict[str, str],
    stream: str = "flashsale:{drop}:orders",
) -> list[int]:
    """Run workers like ``Restart=always`` until ``stream`` is drained; return exit codes.

    Each worker runs the host app of this module on ``tmp_path/host.sqlite3``
    with ``env`` added to its environment; the last one, once the stream is
    empty, is stopped with SIGTERM. Fails the test after 90 s.
    """
    exits: list[int] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        worker = WorkerProcess(
            {"TEST_REDIS_URL": redis_url, "HOST_DB": str(tmp_path / "host.sqlite3"), **env},
            tmp_path / f"worker{len(exits)}.log",
            "--name",
            f"w{len(exits)}",
        )
        try:
            while worker.proc.poll() is None and redis_client.xlen(stream) > 0:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            if worker.proc.poll() is None:  # drained: a graceful stop
                worker.signal(signal.SIGTERM)
                exits.append(worker.wait(20))
                return exits
            exits.append(worker.proc.returncode)
        finally:
            worker.close()
    pytest.fail(f"the queue was not drained in time; exits so far: {exits}")


def check_poison_given_up_alone(
    app: Flask,
    ext: FlashSale,
    tickets: list[str],
    poison: str,
    redis_client: Any,
    db: Path,
    *,
    stock: int,
    hook_calls: int,
) -> None:
    """After :func:`supervise`: the poison order alone was given up, every other one kept.

    Its hook ran ``hook_calls`` times; it is ``failed`` and dead-lettered; every
    batch-mate is confirmed and stored once; exactly its unit came back, late
    buyers take that one unit and the host never holds more than ``stock``.
    """
    calls = Counter(order_id for (order_id,) in rows(db, "SELECT order_id FROM calls"))
    stored = {order_id for (order_id,) in rows(db, "SELECT id FROM orders")}
    with app.app_context():
        status = {t: ext.get_ticket(t).status for t in tickets}  # type: ignore[union-attr]
        remaining = ext.get_sale("drop").remaining  # type: ignore[union-attr]
    assert calls[poison] == hook_calls
    assert status[poison] == "failed"
    assert redis_client.xlen("flashsale:{drop}:dead") == 1
    others = [t for t in tickets if t != poison]
    assert {status[t] for t in others} == {"confirmed"}
    assert stored == set(others)
    assert remaining == 1  # exactly the poison order's unit came back
    with app.app_context():
        late = [ext.place_order("drop", f"late{i}") for i in range(5)]
        Worker(app, name="late", burst=True).run()
    assert Counter(a.status for a in late) == Counter({"queued": 1, "sold_out": 4})
    assert len(rows(db, "SELECT id FROM orders")) == stock
