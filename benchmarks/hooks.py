"""Order hooks for the ``worker`` benchmark: no-op, sleep, SQLite, PostgreSQL.

Each hook writes the order the way the docs tell a host to: one row keyed by
``order.id`` with "insert or ignore", committed per order, so a redelivery is
harmless. ``make_hook(spec)`` builds one from a spec string, so a worker
process can be told which to use through the environment.

Every hook records when it ran (``STATS``); the worker benchmark reads the
first and last time and the count, so start-up and shutdown never count
towards orders per second.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from flask_flashsale import Order

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS bench_orders ("
    " id TEXT PRIMARY KEY, user_id TEXT NOT NULL, sale_id TEXT NOT NULL,"
    " quantity INTEGER NOT NULL, price TEXT)"
)


class Stats:
    """Counts hook calls and remembers the first and last call time (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0
        self.first = 0.0
        self.last = 0.0

    def hit(self) -> None:
        """Record one handled order."""
        now = time.perf_counter()
        with self._lock:
            if not self.count:
                self.first = now
            self.count += 1
            self.last = now

    def as_dict(self) -> dict[str, float]:
        """``count``, ``first``, ``last`` (``time.perf_counter`` seconds)."""
        return {"count": self.count, "first": self.first, "last": self.last}


#: Hook statistics of this process.
STATS = Stats()


def _noop() -> Callable[[Order], None]:
    def hook(order: Order) -> None:
        STATS.hit()

    return hook


def _sleep(seconds: float) -> Callable[[Order], None]:
    def hook(order: Order) -> None:
        time.sleep(seconds)  # a remote call of fixed latency that holds no lock
        STATS.hit()

    return hook


def _sqlite(path: str) -> Callable[[Order], None]:
    local = threading.local()

    def connection() -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(local, "db", None)
        if db is None:
            db = sqlite3.connect(path, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(SCHEMA)
            local.db = db
        return db

    def hook(order: Order) -> None:
        db = connection()
        db.execute(
            "INSERT OR IGNORE INTO bench_orders (id, user_id, sale_id, quantity, price)"
            " VALUES (?, ?, ?, ?, ?)",
            (order.id, order.user_id, order.sale_id, order.quantity,
             None if order.price is None else str(order.price)),
        )
        db.commit()
        STATS.hit()

    return hook


def _postgres(conninfo: str) -> Callable[[Order], None]:
    import psycopg

    local = threading.local()

    def connection() -> Any:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = psycopg.connect(conninfo, autocommit=True)
            local.conn = conn
        return conn

    def hook(order: Order) -> None:
        connection().execute(
            "INSERT INTO bench_orders (id, user_id, sale_id, quantity, price)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
            (order.id, order.user_id, order.sale_id, order.quantity,
             None if order.price is None else str(order.price)),
        )
        STATS.hit()

    return hook


def make_hook(spec: str) -> Callable[[Order], None]:
    """``noop``, ``sleep:<seconds>``, ``sqlite:<path>`` or ``postgres:<conninfo>`` -> a hook."""
    kind, _, arg = spec.partition(":")
    if kind == "noop":
        return _noop()
    if kind == "sleep":
        return _sleep(float(arg))
    if kind == "sqlite":
        return _sqlite(arg)
    if kind == "postgres":
        return _postgres(arg)
    raise ValueError(
        f"unknown hook {spec!r}: use noop, sleep:<seconds>, sqlite:<path> or postgres:<conninfo>"
    )


def prepare_table(spec: str) -> None:
    """Create (and empty) the hook's table before a run."""
    kind, _, arg = spec.partition(":")
    if kind == "sqlite":
        with sqlite3.connect(arg) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(SCHEMA)
            db.execute("DELETE FROM bench_orders")
    elif kind == "postgres":
        import psycopg

        with psycopg.connect(arg, autocommit=True) as conn:
            conn.execute(SCHEMA)
            conn.execute("TRUNCATE bench_orders")


def count_rows(spec: str) -> int | None:
    """Rows in the hook's table (``None`` for the no-op hook)."""
    kind, _, arg = spec.partition(":")
    if kind == "sqlite":
        with sqlite3.connect(arg) as db:
            return int(db.execute("SELECT count(*) FROM bench_orders").fetchone()[0])
    if kind == "postgres":
        import psycopg

        with psycopg.connect(arg) as conn:
            row = conn.execute("SELECT count(*) FROM bench_orders").fetchone()
            return int(row[0]) if row else 0
    return None
