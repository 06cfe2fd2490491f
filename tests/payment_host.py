"""A host app for payment tests in worker subprocesses: SQLite rows and expiry calls.

Workers load it with ``flask --app tests.payment_host:create_app flashsale worker``;
the environment says where Redis and the database are, and whether the
expiry hook should get stuck on its first call (to be killed mid-batch).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from flask import Flask

from flask_flashsale import FlashSale, Order, Ticket

from .helpers import ROOT

FLASK = [sys.executable, "-m", "flask", "--app", "tests.payment_host:create_app"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (      -- the order hook's rows
    id       TEXT PRIMARY KEY,
    user_id  TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    expired  INTEGER NOT NULL DEFAULT 0  -- set by the expiry hook
);
CREATE TABLE IF NOT EXISTS expiry_calls (  -- every expiry hook call
    order_id TEXT NOT NULL,
    pid      INTEGER NOT NULL
);
"""


def init_db(path: Path) -> None:
    """Create the host's tables."""
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA)


def create_app() -> Flask:
    """The host app, configured from the environment.

    ``TEST_REDIS_URL``, ``HOST_DB``; ``STUCK_MARKER`` (a path) makes the first
    expiry hook call of the process record itself, write the marker and sleep
    a minute (the test kills the worker meanwhile).
    """
    app = Flask("payment-host")
    app.config.update(
        SECRET_KEY="test-secret",
        FLASHSALE_REDIS_URL=os.environ["TEST_REDIS_URL"],
        FLASHSALE_INLINE_WORKER=False,
        FLASHSALE_CLAIM_IDLE=0.5,
        FLASHSALE_RETRY_BACKOFF=0.02,
    )
    flashsale = FlashSale(app)
    db_path = os.environ["HOST_DB"]
    marker = os.environ.get("STUCK_MARKER")

    @flashsale.order_handler
    def persist(order: Order) -> None:
        with sqlite3.connect(db_path, timeout=10) as db:
            db.execute(
                "INSERT OR IGNORE INTO orders (id, user_id, quantity) VALUES (?, ?, ?)",
                (order.id, order.user_id, order.quantity),
            )

    @flashsale.expiry_handler
    def cancel_row(ticket: Ticket) -> None:
        with sqlite3.connect(db_path, timeout=10) as db:
            db.execute("INSERT INTO expiry_calls VALUES (?, ?)", (ticket.id, os.getpid()))
            db.execute("UPDATE orders SET expired = 1 WHERE id = ?", (ticket.id,))
        if marker and not Path(marker).exists():
            Path(marker).write_text(str(os.getpid()))
            time.sleep(60)

    return app


class Worker:
    """``flask flashsale worker`` of the payment host in a subprocess, stopped by pid."""

    def __init__(self, env: dict[str, str], log: Path, *args: str) -> None:
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [*FLASK, "flashsale", "worker", *args],
            cwd=ROOT,
            env={
                **os.environ,
                "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
                **env,
            },
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> int:
        """SIGKILL the worker; return its exit status."""
        self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within 10 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
