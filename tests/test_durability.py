"""Redis comes back from an older append-only file: reconcile --fix puts the books right.

``appendfsync everysec`` may lose the last second of writes on power loss, and
a failover promotes a replica that may lag: either way Redis restarts with an
older state than the buyers and the host saw. This reproduces that with a real
``redis-server --appendonly yes``: orders are admitted and confirmed, the data
directory is copied, more orders are admitted and written by the host, then
Redis is killed and started again on the old copy.

Before reconciliation Redis has forgotten stock the host already holds (those
units would be sold twice) and tickets buyers hold. ``flask flashsale
reconcile --fix`` takes the stock again and restores the forgotten tickets
(the host's orders carry their ids), after which no buyer can push the host's
units past the stock.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from flask_flashsale import FlashSale, Order
from flask_flashsale.cli import flashsale_cli

from .helpers import build_app
from .redis_server import RedisServer
from .worker_host import FAST

STOCK = 20


class Host:
    """The host's own database: one row per order, the order id as primary key."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, check_same_thread=False)
        self.db.execute(
            "CREATE TABLE orders (id TEXT PRIMARY KEY, user_id TEXT, sale_id TEXT, quantity INT)"
        )

    def persist(self, order: Order) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO orders VALUES (?, ?, ?, ?)",
            (order.id, order.user_id, order.sale_id, order.quantity),
        )
        self.db.commit()

    def orders(self, sale_id: str) -> list[tuple[str, str, int]]:
        """The reconcile source: the host's orders of the sale, with their ids."""
        rows = self.db.execute(
            "SELECT id, user_id, quantity FROM orders WHERE sale_id = ?", (sale_id,)
        )
        return list(rows.fetchall())

    def units(self) -> int:
        return int(self.db.execute("SELECT COALESCE(SUM(quantity), 0) FROM orders").fetchone()[0])

    def app(self, url: str) -> tuple[Flask, FlashSale]:
        """A web/worker process of the host (a new one after each Redis restart)."""
        app, ext = build_app(url, **FAST)
        ext.order_handler(self.persist)
        ext.reconcile_source(self.orders)
        return app, ext


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    host = Host(tmp_path / "host.db")
    yield host
    host.db.close()


def admit(ext: FlashSale, users: list[str]) -> dict[str, str]:
    """Admit one unit per buyer (each with an Idempotency-Key); ``{user: ticket_id}``."""
    tickets = {}
    for user in users:
        admission = ext.place_order("tee", user, idempotency_key=f"{user}-click")
        assert admission.status == "queued", admission
        assert admission.ticket_id is not None
        tickets[user] = admission.ticket_id
    return tickets


def restart_on_old_copy(server: RedisServer, snapshot: Path) -> None:
    """Kill Redis (no shutdown) and start it again on an older data directory."""
    server.kill()
    shutil.rmtree(server.dir)
    shutil.copytree(snapshot, server.dir)
    server.start()


def redis_books(ext: FlashSale) -> tuple[int, int]:
    sale = FlashSale.state().sales.get("tee")
    assert sale is not None
    return sale.stock, sale.remaining


def test_reconcile_fix_repairs_redis_restarted_on_an_older_append_only_file(
    private_redis: RedisServer, host: Host, tmp_path: Path
) -> None:
    url = private_redis.url
    app, ext = host.app(url)
    with app.app_context():
        ext.create_sale("tee", stock=STOCK, per_user_limit=2)
        early = admit(ext, [f"early{i}" for i in range(6)])
        ext.run_worker(burst=True)
    assert host.units() == 6

    # The point the older state will come from: what a lagging replica or an
    # AOF synced a second ago holds.
    private_redis.stop()
    snapshot = tmp_path / "snapshot"
    shutil.copytree(private_redis.dir, snapshot)
    private_redis.start()

    app, ext = host.app(url)
    with app.app_context():
        late = admit(ext, [f"late{i}" for i in range(5)])
        ext.run_worker(burst=True)
        assert ext.get_ticket(late["late0"]).status == "confirmed"  # type: ignore[union-attr]
    assert host.units() == 11

    restart_on_old_copy(private_redis, snapshot)

    app, ext = host.app(url)
    runner = app.test_cli_runner()
    with app.app_context():
        stock, remaining = redis_books(ext)
        # Redis counts 6 units taken; the host holds 11. Selling what Redis
        # thinks remains would put 11 + 14 = 25 units in the host for a stock of 20.
        assert stock - remaining == 6 < host.units()
        assert host.units() + remaining > STOCK
        assert ext.get_ticket(late["late0"]) is None  # the buyer's ticket is forgotten
        assert ext.get_ticket(early["early0"]).status == "confirmed"  # type: ignore[union-attr]

    check = runner.invoke(flashsale_cli, ["reconcile", "tee"])
    assert check.exit_code == 1, check.output
    assert "late0: Redis holds 0 (pending 0, confirmed 0), host has 1 -> take 1" in check.output

    fixed = runner.invoke(flashsale_cli, ["reconcile", "tee", "--fix"])
    assert fixed.exit_code == 0, fixed.output
    assert "repaired: remaining is now 9" in fixed.output
    assert runner.invoke(flashsale_cli, ["reconcile", "tee"]).exit_code == 0

    with app.app_context():
        assert redis_books(ext) == (STOCK, STOCK - 11)
        # The buyers' tickets are back, and a retry of the same click is the same order.
        for user, ticket_id in late.items():
            ticket = ext.get_ticket(ticket_id)
            assert ticket is not None
            assert (ticket.user_id, ticket.quantity, ticket.status) == (user, 1, "confirmed")
        retry = ext.place_order("tee", "late0", idempotency_key="late0-click")
        assert (retry.status, retry.ticket_id) == ("duplicate", late["late0"])

        # Everyone else buys what is left, and more.
        admitted = 0
        for i in range(30):
            admitted += ext.place_order("tee", f"crowd{i}").status == "queued"
        ext.run_worker(burst=True)
    assert admitted == STOCK - 11
    assert host.units() == STOCK
    assert runner.invoke(flashsale_cli, ["reconcile", "tee"]).exit_code == 0
