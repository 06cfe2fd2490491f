"""The example shop keeps its own stock with optimistic locking (a version column)."""

from __future__ import annotations

import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from examples.shop import app as shop
from flask_flashsale import Order


@pytest.fixture
def shop_app(redis_url: str, tmp_path: Path) -> Flask:
    return shop.create_app(
        {
            "SHOP_DATABASE": str(tmp_path / "shop.sqlite3"),
            "FLASHSALE_REDIS_URL": redis_url,
            "FLASHSALE_INLINE_WORKER": False,
            "SHOP_DEMO_STOCK": 50,
        }
    )


def order(n: int, quantity: int = 1) -> Order:
    ticket = f"demo-sneakers~{n:022d}"
    return Order(
        id=ticket,
        ticket_id=ticket,
        sale_id="demo-sneakers",
        user_id=f"user{n}",
        quantity=quantity,
        price=None,
        admitted_at=datetime.now(timezone.utc),
    )


def product_row(app: Flask) -> tuple[int, int]:
    with sqlite3.connect(app.config["SHOP_DATABASE"]) as db:
        row: tuple[int, int] = db.execute(
            "SELECT stock, version FROM products WHERE id = 'demo-sneakers'"
        ).fetchone()
    return row


def test_each_order_takes_the_shops_stock_and_bumps_the_version(shop_app: Flask) -> None:
    with shop_app.app_context():
        shop.persist_order(order(1))
        shop.persist_order(order(2, quantity=2))
    assert product_row(shop_app) == (47, 2)


def test_redelivered_order_takes_stock_once(shop_app: Flask) -> None:
    with shop_app.app_context():
        shop.persist_order(order(1))
        shop.persist_order(order(1))
    assert product_row(shop_app) == (49, 1)


def test_a_row_changed_between_read_and_update_is_retried(shop_app: Flask) -> None:
    with shop_app.app_context():
        db = shop.get_db()
        other = sqlite3.connect(shop_app.config["SHOP_DATABASE"])
        statements: list[str] = []

        def another_writer_sneaks_in(statement: str) -> None:
            # Runs as the handler starts its write transaction, after it read the version.
            if statement.startswith("BEGIN") and "BEGIN" not in statements:
                other.execute("UPDATE products SET stock = stock - 1, version = version + 1")
                other.commit()
            statements.append(statement.split()[0])

        db.set_trace_callback(another_writer_sneaks_in)
        shop.persist_order(order(1))
        db.set_trace_callback(None)
        other.close()
    # The first UPDATE matched no row (stale version), was rolled back and retried.
    assert statements.count("UPDATE") == 2 and "ROLLBACK" in statements, statements
    assert product_row(shop_app) == (48, 2)  # both writes counted, none lost


def test_concurrent_handlers_lose_no_update(shop_app: Flask) -> None:
    barrier = threading.Barrier(4)

    def handle(worker: int) -> None:
        with shop_app.app_context():
            barrier.wait()
            for n in range(worker, 40, 4):
                shop.persist_order(order(n))

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(handle, range(4)))
    assert product_row(shop_app) == (10, 40)


def test_shop_reconcile_source_counts_units_per_buyer(shop_app: Flask) -> None:
    with shop_app.app_context():
        shop.persist_order(order(1, quantity=2))
        shop.persist_order(order(2))
        units: dict[str, Any] = shop.confirmed_units("demo-sneakers")
    assert units == {"user1": 2, "user2": 1}
