"""The example shop keeps its own stock with optimistic locking, and stays consistent.

Its order hook writes the order and takes the shop's own stock in one
transaction; the product row has a version counter (SQLAlchemy's
``version_id_col``), so a row changed between read and write is retried, never
overwritten. Its sales are created from its own books, so a restarted
``memory://`` store neither forgets what was sold nor lets a buyer buy twice.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event, text

from examples.shop import app as shop
from flask_flashsale import FlashSale, Order


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
    """(stock, version) of the sneakers, read with a fresh connection."""
    with app.app_context():
        row = shop.db.session.execute(
            text("SELECT stock, version FROM products WHERE id = 'demo-sneakers'")
        ).one()
        shop.db.session.remove()
    return int(row[0]), int(row[1])


def test_each_order_takes_the_shops_stock_and_bumps_the_version(shop_app: Flask) -> None:
    _, version = product_row(shop_app)
    with shop_app.app_context():
        shop.persist_order(order(1))
        shop.persist_order(order(2, quantity=2))
    assert product_row(shop_app) == (47, version + 2)


def test_redelivered_order_takes_stock_once(shop_app: Flask) -> None:
    _, version = product_row(shop_app)
    with shop_app.app_context():
        shop.persist_order(order(1))
        shop.persist_order(order(1))
    assert product_row(shop_app) == (49, version + 1)


def test_a_row_changed_between_read_and_update_is_retried(shop_app: Flask) -> None:
    _, version = product_row(shop_app)
    statements: list[str] = []
    with shop_app.app_context():
        engine = shop.db.engine

        def another_writer_sneaks_in(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            # Runs as the handler is about to write, after it read the version.
            verb = statement.split()[0]
            if verb in ("INSERT", "UPDATE") and not statements:
                with sqlite3.connect(shop_app.config["SHOP_DATABASE"]) as other:
                    other.execute(
                        "UPDATE products SET stock = stock - 1, version = version + 1 "
                        "WHERE id = 'demo-sneakers'"
                    )
                other.close()
            if verb in ("INSERT", "UPDATE"):
                statements.append(verb + (" products" if "products" in statement else ""))

        event.listen(engine, "before_cursor_execute", another_writer_sneaks_in)
        try:
            shop.persist_order(order(1))
        finally:
            event.remove(engine, "before_cursor_execute", another_writer_sneaks_in)
    # The first UPDATE matched no row (stale version), was rolled back and retried.
    assert statements.count("UPDATE products") == 2, statements
    assert product_row(shop_app) == (48, version + 2)  # both writes counted, none lost


def test_concurrent_handlers_lose_no_update(shop_app: Flask) -> None:
    _, version = product_row(shop_app)
    barrier = threading.Barrier(4)

    def handle(worker: int) -> None:
        with shop_app.app_context():
            barrier.wait()
            for n in range(worker, 40, 4):
                for _ in range(10):  # as the worker would: a hook that raised runs again
                    try:
                        shop.persist_order(order(n))
                        break
                    except RuntimeError:
                        continue

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(handle, range(4)))
    assert product_row(shop_app) == (10, version + 40)


def test_shop_reconcile_source_lists_the_live_orders(shop_app: Flask) -> None:
    with shop_app.app_context():
        shop.persist_order(order(1, quantity=2))
        shop.persist_order(order(2))
        assert shop.confirmed_units("demo-sneakers") == {"user1": 2, "user2": 1}
        assert sorted(shop.shop_orders("demo-sneakers")) == [
            (order(1).id, "user1", 2),
            (order(2).id, "user2", 1),
        ]


# -- restarts in memory:// mode ------------------------------------------------------------


@pytest.fixture
def memory_shop(tmp_path: Path) -> Iterator[Any]:
    apps: list[Flask] = []

    def start() -> Flask:
        app = shop.create_app(
            {
                "TESTING": True,
                "SHOP_DATABASE": str(tmp_path / "shop.sqlite3"),
                "FLASHSALE_REDIS_URL": "memory://",
                "FLASHSALE_INLINE_WORKER": False,
                "SHOP_DEMO_STARTS_IN": 0,
            }
        )
        apps.append(app)
        return app

    yield start
    for app in apps:
        FlashSale.state(app).cache.stop(timeout=0)


def test_a_restarted_memory_shop_keeps_what_was_sold(memory_shop: Any) -> None:
    first = memory_shop()
    with first.app_context():
        for buyer in ("alice", "bob", "carol"):
            assert shop.flashsale.place_order("demo-sneakers", buyer).status == "queued"
        shop.flashsale.run_worker(burst=True)
    second = memory_shop()  # a new process: the memory:// store starts empty
    with second.app_context():
        sale = shop.flashsale.get_sale("demo-sneakers")
        assert sale is not None and sale.remaining == 7
        assert shop.db.session.get(shop.Product, "demo-sneakers").stock == 7
        assert shop.flashsale.place_order("demo-sneakers", "alice").status == "limit_reached"
        assert all(r.ok for r in shop.flashsale.reconcile())


def test_a_restart_releases_holds_the_lost_store_had_awaiting_payment(memory_shop: Any) -> None:
    first = memory_shop()
    with first.app_context():
        assert shop.flashsale.place_order("demo-hoodie", "alice").status == "queued"
        shop.flashsale.run_worker(burst=True)
        assert shop.db.session.get(shop.Product, "demo-hoodie").stock == 9
    second = memory_shop()
    with second.app_context():
        (row,) = shop.db.session.query(shop.ShopOrder).all()
        assert row.status == "expired"
        assert shop.db.session.get(shop.Product, "demo-hoodie").stock == 10
        assert shop.flashsale.get_sale("demo-hoodie").remaining == 10  # type: ignore[union-attr]
        assert shop.flashsale.place_order("demo-hoodie", "alice").status == "queued"
