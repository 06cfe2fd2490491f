"""Order hooks for the ``worker`` benchmark: no-op, sleep, SQLite, PostgreSQL.

Each hook writes the order the way the docs tell a host to: one row keyed by
``order.id`` with "insert or ignore", committed per order, so a redelivery is
harmless. ``make_hook(spec)`` builds one from a spec string, so a worker
process can be told which to use through the environment.

The batch hooks (``sqlite-batch:<path>``, ``postgres-batch:<conninfo>``,
``noop-batch``; :func:`make_batch_hook`, registered with
``order_batch_handler``) write the orders of one worker read in one
transaction: SQLite with ``executemany`` of the same "insert or ignore"
(in-process, so no round trip to save), PostgreSQL with one statement,
``INSERT ... SELECT * FROM unnest(<one array per column>) ON CONFLICT (id)
DO NOTHING``, autocommit. That one was the fastest of the three ways to
send a batch in one round trip measured on the bench machine, for 32 and
128 rows: it is one statement of fixed text (prepared once by psycopg, the
plan reused) with five array parameters, where ``executemany`` in pipeline
mode binds and executes the statement once per row (about 0.6-0.8x its
rate), and a multi-row ``VALUES`` list has a text that changes with the
batch size and five parameters per row (about 0.75-0.9x).

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

    def hit(self, orders: int = 1) -> None:
        """Record ``orders`` handled orders."""
        now = time.perf_counter()
        with self._lock:
            if not self.count:
                self.first = now
            self.count += orders
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


def _sqlite_connection(path: str) -> Callable[[], sqlite3.Connection]:
    """A function returning this thread's connection to ``path`` (WAL, synchronous=NORMAL)."""
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

    return connection


def _sqlite(path: str) -> Callable[[Order], None]:
    connection = _sqlite_connection(path)

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


def _postgres_connection(conninfo: str) -> Callable[[], Any]:
    """A function returning this thread's autocommit connection to ``conninfo``."""
    import psycopg

    local = threading.local()

    def connection() -> Any:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = psycopg.connect(conninfo, autocommit=True)
            local.conn = conn
        return conn

    return connection


def _postgres(conninfo: str) -> Callable[[Order], None]:
    connection = _postgres_connection(conninfo)

    def hook(order: Order) -> None:
        connection().execute(
            "INSERT INTO bench_orders (id, user_id, sale_id, quantity, price)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
            (order.id, order.user_id, order.sale_id, order.quantity,
             None if order.price is None else str(order.price)),
        )
        STATS.hit()

    return hook


def _row(order: Order) -> tuple[str, str, str, int, str | None]:
    return (order.id, order.user_id, order.sale_id, order.quantity,
            None if order.price is None else str(order.price))


def _noop_batch() -> Callable[[list[Order]], None]:
    def hook(orders: list[Order]) -> None:
        STATS.hit(len(orders))

    return hook


def _sqlite_batch(path: str) -> Callable[[list[Order]], None]:
    connection = _sqlite_connection(path)

    def hook(orders: list[Order]) -> None:
        db = connection()
        with db:  # one transaction
            db.executemany(
                "INSERT OR IGNORE INTO bench_orders (id, user_id, sale_id, quantity, price)"
                " VALUES (?, ?, ?, ?, ?)",
                [_row(o) for o in orders],
            )
        STATS.hit(len(orders))

    return hook


def _postgres_batch(conninfo: str) -> Callable[[list[Order]], None]:
    connection = _postgres_connection(conninfo)

    def hook(orders: list[Order]) -> None:
        columns = list(zip(*(_row(o) for o in orders), strict=True))
        # One statement, so one implicit transaction in autocommit mode.
        connection().execute(
            "INSERT INTO bench_orders (id, user_id, sale_id, quantity, price)"
            " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::int[], %s::text[])"
            " ON CONFLICT (id) DO NOTHING",
            [list(c) for c in columns],
        )
        STATS.hit(len(orders))

    return hook


def is_batch(spec: str) -> bool:
    """True for the specs of batch hooks (``<kind>-batch[:<arg>]``)."""
    return spec.partition(":")[0].endswith("-batch")


def make_batch_hook(spec: str) -> Callable[[list[Order]], None]:
    """``noop-batch``, ``sqlite-batch:<path>`` or ``postgres-batch:<conninfo>`` -> a batch hook."""
    kind, _, arg = spec.partition(":")
    if kind == "noop-batch":
        return _noop_batch()
    if kind == "sqlite-batch":
        return _sqlite_batch(arg)
    if kind == "postgres-batch":
        return _postgres_batch(arg)
    raise ValueError(
        f"unknown batch hook {spec!r}: use noop-batch, sqlite-batch:<path> "
        "or postgres-batch:<conninfo>"
    )


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
    kind = kind.removesuffix("-batch")
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
    kind = kind.removesuffix("-batch")
    if kind == "sqlite":
        with sqlite3.connect(arg) as db:
            return int(db.execute("SELECT count(*) FROM bench_orders").fetchone()[0])
    if kind == "postgres":
        import psycopg

        with psycopg.connect(arg) as conn:
            row = conn.execute("SELECT count(*) FROM bench_orders").fetchone()
            return int(row[0]) if row else 0
    return None
