"""The chaos suite's host app: the bench app plus a shop's own order table.

Served by gunicorn and run by ``flask --app benchmarks.chaos_app:create_app
flashsale worker`` in :mod:`benchmarks.chaos`. It is :func:`benchmarks.app.create_app`
(identity from the ``X-User`` header, ``/bare``) with ``FLASHSALE_SECRET`` set,
an ``order_handler`` that writes each order into the host's database with the
order id as primary key (``INSERT .. ON CONFLICT DO NOTHING``, so a redelivery
is harmless), a log of every hook call, and a ``reconcile_source`` reading the
orders back. Configured from the environment, so that every process builds
the same app:

``BENCH_REDIS_URL``
    the run's Redis (see :mod:`benchmarks.app`).
``CHAOS_DB``, ``CHAOS_TABLE``
    ``postgres:<conninfo>`` or ``sqlite:<path>`` (WAL mode), and the name
    prefix of the run's two tables: ``<prefix>_orders`` and ``<prefix>_calls``.
``CHAOS_POISON_USER``
    a buyer whose order makes the hook kill its process (``os._exit(17)``),
    every time it is delivered: a segfault or an OOM kill, in effect.
``CHAOS_FAIL_RATE``
    the share of hook calls that raise (before writing anything), e.g. ``0.3``.
``CHAOS_HOOK_MS``
    milliseconds of "host work" per hook call (default ``1``).
``CHAOS_CLAIM_IDLE``
    ``FLASHSALE_CLAIM_IDLE`` (default ``1.5`` s, so a dead worker's orders
    move on within a run).

The call log has one ``start`` row per call, committed before the work, and
one ``ok`` (committed with the order's row) or ``raised`` row at its end; a
call with no end row died with its worker.

For a sale with a payment timeout (``python -m benchmarks chaos
--payment-timeout S``) the app is also the shop's payment side. Each order
row has a ``state``: the order hook writes it ``new``; ``POST
/chaos/pay/<ticket_id>`` (the payment provider's webhook, in effect) calls
:meth:`~flask_flashsale.FlashSale.mark_paid` and marks the row ``paid`` (an
upsert: the webhook can beat the worker); the ``expiry_handler`` marks it
``expired`` (its calls are logged as ``expiry_start`` / ``expiry_ok`` /
``expiry_raised``, and ``CHAOS_FAIL_RATE`` applies to it too). The payment
endpoint answers ``200`` with the decision, as a webhook would::

    {"outcome": "paid" | "too_late" | "refused", "ticket_status": "...",
     "pay_by_ms": 1764..., "redis_before_ms": 1764..., "redis_after_ms": 1764...}

``redis_before_ms`` and ``redis_after_ms`` are Redis ``TIME`` (ms) read just
before and just after ``mark_paid``, on the app's own Redis client: the script
that judged the payment ran between the two, on the same clock. An unknown
ticket is a ``404 ticket_not_found`` problem, Redis down a ``503
backend_unavailable`` one.
"""

from __future__ import annotations

import os
import random
import re
import sqlite3
import threading
import time
from collections import Counter
from typing import Any

import redis
from flask import Flask

from flask_flashsale import (
    BackendUnavailable,
    Order,
    PaymentRefused,
    PaymentTooLate,
    Ticket,
)

from .app import create_app as create_bench_app

#: ``FLASHSALE_SECRET`` of every process of a run (ticket ids of idempotent orders).
SECRET = "chaos-suite-secret"
#: Exit code of a worker killed by the poison order.
POISON_EXIT = 17
_TABLE = re.compile(r"[a-z][a-z0-9_]{0,40}")


class HostDB:
    """The host's ``orders`` table and its log of hook calls, in PostgreSQL or SQLite.

    ``spec`` is ``postgres:<conninfo>`` or ``sqlite:<path>``; ``table`` the
    prefix of the two table names. One connection per thread, opened lazily.
    """

    def __init__(self, spec: str, table: str) -> None:
        self.kind, _, self.target = spec.partition(":")
        if self.kind not in ("postgres", "sqlite"):
            raise ValueError(f"CHAOS_DB must be postgres:<conninfo> or sqlite:<path>: {spec!r}")
        if not _TABLE.fullmatch(table):
            raise ValueError(f"bad table prefix {table!r}")
        self.orders = f"{table}_orders"
        self.calls = f"{table}_calls"
        self._local = threading.local()

    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self.kind == "postgres":
                import psycopg

                conn = psycopg.connect(self.target, autocommit=True)
            else:
                conn = sqlite3.connect(self.target, timeout=30, isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
            self._local.conn = conn
        return conn

    def _run(self, *statements: tuple[str, tuple[Any, ...]]) -> list[Any]:
        """Run ``statements`` in one transaction; return the last one's rows."""
        conn = self._conn()
        if self.kind == "postgres":
            with conn.transaction():
                for sql, params in statements:
                    cur = conn.execute(sql.replace("?", "%s"), params)
            return list(cur.fetchall()) if cur.description else []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, params in statements:
                cur = conn.execute(sql, params)
            rows = list(cur.fetchall())
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return rows

    def create(self) -> None:
        """Create the run's two tables."""
        self._run(
            (f"CREATE TABLE IF NOT EXISTS {self.orders} (id TEXT PRIMARY KEY,"
             " sale_id TEXT NOT NULL, user_id TEXT NOT NULL, quantity INTEGER NOT NULL,"
             " state TEXT NOT NULL DEFAULT 'new')", ()),
            (f"CREATE TABLE IF NOT EXISTS {self.calls} (order_id TEXT NOT NULL,"
             " sale_id TEXT NOT NULL, attempt INTEGER NOT NULL, pid INTEGER NOT NULL,"
             " outcome TEXT NOT NULL)", ()),
        )

    def drop(self) -> None:
        """Drop the run's two tables."""
        self._run((f"DROP TABLE IF EXISTS {self.orders}", ()),
                  (f"DROP TABLE IF EXISTS {self.calls}", ()))

    def log_call(self, order: Order, outcome: str) -> None:
        """Log one hook call's ``start`` or ``raised``."""
        self._run(self._call(order, outcome))

    def write(self, order: Order) -> None:
        """Write the order's row (once) and log the call's ``ok``, in one transaction."""
        self._run(
            (f"INSERT INTO {self.orders} (id, sale_id, user_id, quantity) VALUES (?, ?, ?, ?)"
             " ON CONFLICT (id) DO NOTHING",
             (order.id, order.sale_id, order.user_id, order.quantity)),
            self._call(order, "ok"),
        )

    def mark_paid(self, ticket: Ticket) -> None:
        """The payment webhook: the order's row says ``paid`` (written here if the
        order hook has not run yet; it then leaves the row alone)."""
        self._run((f"INSERT INTO {self.orders} (id, sale_id, user_id, quantity, state)"
                   " VALUES (?, ?, ?, ?, 'paid') ON CONFLICT (id) DO UPDATE SET state = 'paid'",
                   (ticket.id, ticket.sale_id, ticket.user_id, ticket.quantity)))

    def log_expiry(self, ticket: Ticket, outcome: str) -> None:
        """Log one expiry hook call's ``expiry_start`` or ``expiry_raised``."""
        self._run(self._expiry_call(ticket, outcome))

    def mark_expired(self, ticket: Ticket) -> None:
        """The expiry hook: the order's row says ``expired``, and the call's
        ``expiry_ok`` is logged, in one transaction."""
        self._run(
            (f"INSERT INTO {self.orders} (id, sale_id, user_id, quantity, state)"
             " VALUES (?, ?, ?, ?, 'expired') ON CONFLICT (id) DO UPDATE SET state = 'expired'",
             (ticket.id, ticket.sale_id, ticket.user_id, ticket.quantity)),
            self._expiry_call(ticket, "expiry_ok"),
        )

    def _call(self, order: Order, outcome: str) -> tuple[str, tuple[Any, ...]]:
        return (f"INSERT INTO {self.calls} (order_id, sale_id, attempt, pid, outcome)"
                " VALUES (?, ?, ?, ?, ?)",
                (order.id, order.sale_id, order.attempt, os.getpid(), outcome))

    def _expiry_call(self, ticket: Ticket, outcome: str) -> tuple[str, tuple[Any, ...]]:
        return (f"INSERT INTO {self.calls} (order_id, sale_id, attempt, pid, outcome)"
                " VALUES (?, ?, 0, ?, ?)", (ticket.id, ticket.sale_id, os.getpid(), outcome))

    def rows(self, sale_id: str) -> dict[str, tuple[str, int]]:
        """The sale's orders: order id -> (buyer, units)."""
        found = self._run((f"SELECT id, user_id, quantity FROM {self.orders} WHERE sale_id = ?",
                           (sale_id,)))
        return {str(i): (str(u), int(q)) for i, u, q in found}

    def states(self, sale_id: str) -> dict[str, str]:
        """The state of each of the sale's rows: ``new``, ``paid`` or ``expired``."""
        found = self._run((f"SELECT id, state FROM {self.orders} WHERE sale_id = ?",
                           (sale_id,)))
        return {str(i): str(st) for i, st in found}

    def units_by_user(self, sale_id: str) -> dict[str, int]:
        """Units of the sale's orders per buyer, expired ones left out (the
        ``reconcile_source``)."""
        found = self._run((f"SELECT user_id, sum(quantity) FROM {self.orders}"
                           " WHERE sale_id = ? AND state <> 'expired' GROUP BY user_id",
                           (sale_id,)))
        return {str(u): int(n) for u, n in found}

    def call_counts(self, sale_id: str) -> dict[str, Counter[str]]:
        """Hook calls per order id: how many by outcome (``start``, ``ok``, ``raised``,
        and the expiry hook's ``expiry_start``, ``expiry_ok``, ``expiry_raised``),
        and ``attempt``, the highest delivery count an order hook call was made with."""
        found = self._run((f"SELECT order_id, outcome, count(*), max(attempt) FROM {self.calls}"
                           " WHERE sale_id = ? GROUP BY order_id, outcome", (sale_id,)))
        out: dict[str, Counter[str]] = {}
        for order_id, outcome, n, attempt in found:
            counts = out.setdefault(str(order_id), Counter())
            counts[str(outcome)] = int(n)
            counts["attempt"] = max(counts["attempt"], int(attempt))
        return out

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def create_app(db: HostDB | None = None, **config: Any) -> Flask:
    """Build the host app; ``db`` and ``config`` override what the environment says."""
    env = os.environ
    app = create_bench_app(
        FLASHSALE_SECRET=SECRET,
        FLASHSALE_CLAIM_IDLE=float(env.get("CHAOS_CLAIM_IDLE", "1.5")),
        FLASHSALE_RETRY_BACKOFF=0.05,
        **config,
    )
    if db is None:
        db = HostDB(env.get("CHAOS_DB", "sqlite:chaos.sqlite3"), env.get("CHAOS_TABLE", "chaos"))
    flashsale = app.extensions["flashsale"].ext
    poison = env.get("CHAOS_POISON_USER") or None
    fail_rate = float(env.get("CHAOS_FAIL_RATE", "0"))
    work = float(env.get("CHAOS_HOOK_MS", "1")) / 1000
    rng = random.Random()

    @flashsale.order_handler  # replaces the bench app's hook
    def persist(order: Order) -> None:
        db.log_call(order, "start")
        if order.user_id == poison:
            os._exit(POISON_EXIT)
        time.sleep(work)
        if fail_rate and rng.random() < fail_rate:
            db.log_call(order, "raised")
            raise RuntimeError("chaos: the host's database refused the order")
        db.write(order)

    @flashsale.expiry_handler
    def release(ticket: Ticket) -> None:
        db.log_expiry(ticket, "expiry_start")
        time.sleep(work)
        if fail_rate and rng.random() < fail_rate:
            db.log_expiry(ticket, "expiry_raised")
            raise RuntimeError("chaos: the host's database refused the expiry")
        db.mark_expired(ticket)

    @flashsale.reconcile_source
    def host_orders(sale_id: str) -> dict[str, int]:
        return db.units_by_user(sale_id)

    client = app.extensions["flashsale"].client

    def redis_ms() -> int:
        seconds, micros = client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    @app.post("/chaos/pay/<ticket_id>")
    def pay(ticket_id: str) -> dict[str, Any]:
        """The payment webhook: mark the ticket paid, answer the decision and Redis' clock."""
        ticket_status = ""
        pay_by: int | None = None
        try:
            before = redis_ms()
            try:
                ticket = flashsale.mark_paid(ticket_id)  # TicketNotFound: a 404 problem
                outcome, ticket_status = "paid", ticket.status
                if ticket.pay_by is not None:
                    pay_by = round(ticket.pay_by.timestamp() * 1000)
            except PaymentTooLate as exc:
                outcome, ticket_status = "too_late", exc.ticket_status
            except PaymentRefused as exc:
                outcome, ticket_status = "refused", exc.ticket_status
            after = redis_ms()
        except redis.RedisError as exc:  # incl. the breaker's CircuitOpen
            raise BackendUnavailable("the sale backend is unavailable", retry_after=1) from exc
        if outcome == "paid":
            db.mark_paid(ticket)
        return {"outcome": outcome, "ticket_status": ticket_status, "pay_by_ms": pay_by,
                "redis_before_ms": before, "redis_after_ms": after}

    app.extensions["chaos_db"] = db
    return app
