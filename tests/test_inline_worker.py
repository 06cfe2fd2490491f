"""The in-process worker thread of ``memory://`` mode (fakeredis, no server at all)."""

from __future__ import annotations

import gc
import logging
import threading
import weakref
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, request

from flask_flashsale import FlashSale, Order
from flask_flashsale.worker import Worker

from .worker_host import wait_until


def inline_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("flashsale-inline-")]


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Every test here stops the inline workers it started."""
    before = set(inline_threads())
    yield
    leaked = [t for t in inline_threads() if t not in before]
    assert leaked == [], f"inline worker threads left running: {leaked}"


def memory_app(**config: Any) -> tuple[Flask, FlashSale]:
    app = Flask("memory-shop")
    app.config.update(FLASHSALE_REDIS_URL="memory://", SECRET_KEY="test", **config)
    ext = FlashSale(app)

    @ext.identity_loader
    def buyer() -> str | None:
        return request.headers.get("X-User")

    return app, ext


def stop(app: Flask) -> None:
    inline = FlashSale.state(app).inline_worker
    assert inline is not None
    assert inline.stop() is True


def test_the_example_shop_runs_end_to_end_in_one_process(tmp_path: Path) -> None:
    from examples.shop.app import ShopOrder, create_app, db

    database = tmp_path / "shop.sqlite3"
    app = create_app(
        {
            "TESTING": True,
            "SHOP_DATABASE": str(database),
            "FLASHSALE_REDIS_URL": "memory://",
            "SHOP_DEMO_STARTS_IN": 0,
        }
    )
    try:
        client = app.test_client()
        client.post("/login", data={"name": "alice"})
        response = client.post(
            "/api/flash-sales/demo-sneakers/order",
            json={"quantity": 1},
            headers={"Idempotency-Key": "first-click"},
        )
        assert response.status_code == 202
        ticket_id = response.get_json()["ticket_id"]

        def ticket_status() -> str:
            return str(client.get(response.headers["Location"]).get_json()["status"])

        wait_until(lambda: ticket_status() != "queued", timeout=15)
        assert ticket_status() == "confirmed"
        with app.app_context():
            rows = [
                (o.id, o.user_id, o.product_id, o.quantity, o.price, o.status)
                for o in db.session.query(ShopOrder)
            ]
        assert rows == [
            (ticket_id, "alice", "demo-sneakers", 1, Decimal("49.00"), "confirmed")
        ]
        assert ticket_id in client.get("/").get_data(as_text=True)
    finally:
        stop(app)


def test_memory_mode_starts_a_daemon_worker_thread_that_stops_cleanly() -> None:
    app, _ = memory_app()
    inline = FlashSale.state(app).inline_worker
    assert inline is not None
    assert inline.thread.daemon
    assert inline.thread.is_alive()
    assert inline.stop() is True
    assert not inline.thread.is_alive()


def test_an_order_is_confirmed_by_the_inline_worker() -> None:
    app, ext = memory_app()
    seen: list[Order] = []
    ext.order_handler(seen.append)
    try:
        with app.app_context():
            ext.create_sale("tee", stock=2)
            ticket = ext.place_order("tee", "alice").ticket_id
            assert ticket is not None
            wait_until(lambda: ext.get_ticket(ticket).status == "confirmed")  # type: ignore[union-attr]
            assert [o.id for o in seen] == [ticket]
    finally:
        stop(app)


def test_inline_retries_and_compensation_work_in_memory_mode() -> None:
    app, ext = memory_app(FLASHSALE_MAX_ATTEMPTS=2, FLASHSALE_RETRY_BACKOFF=0.01)
    attempts: list[int] = []

    @ext.order_handler
    def broken(order: Order) -> None:
        attempts.append(order.attempt)
        raise RuntimeError("boom")

    try:
        with app.app_context():
            ext.create_sale("tee", stock=1)
            ticket = ext.place_order("tee", "alice").ticket_id
            assert ticket is not None
            wait_until(lambda: ext.get_ticket(ticket).status == "failed")  # type: ignore[union-attr]
            assert attempts == [1, 2]
            assert ext.get_sale("tee").remaining == 1  # type: ignore[union-attr]
            assert len(ext.state().orders.dead_letters("tee")) == 1
    finally:
        stop(app)


def test_each_memory_app_runs_its_own_worker() -> None:
    apps = [memory_app(), memory_app()]
    seen: dict[str, list[str]] = {"0": [], "1": []}
    for i, (_, ext) in enumerate(apps):
        ext.order_handler(lambda order, i=i: seen[str(i)].append(order.user_id))
    try:
        for i, (app, ext) in enumerate(apps):
            with app.app_context():
                ext.create_sale("tee", stock=1)
                ext.place_order("tee", f"buyer{i}")
        wait_until(lambda: all(seen.values()))
        assert seen == {"0": ["buyer0"], "1": ["buyer1"]}
    finally:
        for app, _ in apps:
            stop(app)


def test_a_handler_registered_after_init_app_is_used(caplog: pytest.LogCaptureFixture) -> None:
    app, ext = memory_app()
    seen: list[str] = []
    try:
        with app.app_context(), caplog.at_level(logging.WARNING, "flask_flashsale"):
            ext.create_sale("tee", stock=1)
            ticket = ext.place_order("tee", "alice").ticket_id
            wait_until(lambda: "no @order_handler" in caplog.text)
            assert ext.get_ticket(ticket).status == "queued"  # type: ignore[arg-type,union-attr]
            ext.order_handler(lambda order: seen.append(order.id))
            wait_until(lambda: ext.get_ticket(ticket).status == "confirmed")  # type: ignore[arg-type,union-attr]
        assert seen == [ticket]
    finally:
        stop(app)


def test_the_inline_thread_ends_once_its_app_is_garbage_collected() -> None:
    app, ext = memory_app()
    inline = FlashSale.state(app).inline_worker
    assert inline is not None
    thread = inline.thread
    app_ref = weakref.ref(app)
    del app, ext, inline

    def collected() -> bool:
        # The thread holds its worker (and so the app) while it takes a turn:
        # collect again until a collection lands between two turns.
        gc.collect()
        return app_ref() is None

    wait_until(collected, timeout=10, interval=0.05)
    thread.join(10)
    assert not thread.is_alive()


def test_the_inline_worker_can_be_turned_off() -> None:
    app, _ = memory_app(FLASHSALE_INLINE_WORKER=False)
    assert FlashSale.state(app).inline_worker is None


def test_there_is_no_inline_worker_by_default_with_a_real_redis(redis_url: str) -> None:
    app = Flask("real")
    app.config.update(SECRET_KEY="test-secret", FLASHSALE_REDIS_URL=redis_url)
    FlashSale(app)
    assert FlashSale.state(app).inline_worker is None


def test_the_inline_worker_can_run_against_a_real_redis(redis_url: str) -> None:
    app = Flask("real-inline")
    app.config.update(
        SECRET_KEY="test-secret",
        FLASHSALE_REDIS_URL=redis_url,
        FLASHSALE_INLINE_WORKER=True,
        FLASHSALE_CLAIM_IDLE=0.5,
    )
    ext = FlashSale(app)
    seen: list[str] = []
    ext.order_handler(lambda order: seen.append(order.id))
    inline = FlashSale.state(app).inline_worker
    assert inline is not None
    assert not inline.worker.polling  # blocking reads on its own connection pool
    try:
        with app.app_context():
            ext.create_sale("tee", stock=1)
            ticket = ext.place_order("tee", "alice").ticket_id
            assert ticket is not None
            wait_until(lambda: ext.get_ticket(ticket).status == "confirmed")  # type: ignore[union-attr]
        assert seen == [ticket]
    finally:
        stop(app)


def test_a_batch_stopped_midway_is_handed_back_in_memory_mode() -> None:
    # No inline thread: a Worker of our own reads the whole batch, stops after
    # the second order and hands the rest back (the release script on fakeredis).
    app, ext = memory_app(FLASHSALE_INLINE_WORKER=False)
    worker = Worker(app, name="first", handle_signals=False)
    seen: list[tuple[str, int]] = []

    @ext.order_handler
    def stop_on_second(order: Order) -> None:
        seen.append((order.id, order.attempt))
        if len(seen) == 2:
            worker.stop()

    with app.app_context():
        ext.create_sale("tee", stock=5)
        tickets = [ext.place_order("tee", f"user{i}").ticket_id for i in range(5)]
    assert worker.run() == 2
    assert Worker(app, name="next", burst=True).run() == 3
    assert seen == [(t, 1) for t in tickets]  # each once, none counted as redelivered
    with app.app_context():
        assert {ext.get_ticket(t).status for t in tickets} == {"confirmed"}  # type: ignore[arg-type, union-attr]


def test_an_inline_worker_leaves_the_registry_once_its_app_is_garbage_collected(
    redis_url: str,
) -> None:
    config = {"SECRET_KEY": "test-secret", "FLASHSALE_REDIS_URL": redis_url}
    app = Flask("collected")
    app.config.update(config, FLASHSALE_INLINE_WORKER=True)
    FlashSale(app).order_handler(lambda order: None)
    inline = FlashSale.state(app).inline_worker
    assert inline is not None
    thread = inline.thread
    watcher = Flask("watcher")
    watcher.config.update(config)
    ext = FlashSale(watcher)

    def workers() -> list[str]:
        with watcher.app_context():
            return [w.name for w in ext.status().workers]

    name = inline.worker.name
    wait_until(lambda: workers() == [name])
    app_ref = weakref.ref(app)
    del app, inline

    def collected() -> bool:
        gc.collect()
        return app_ref() is None

    wait_until(collected, timeout=10, interval=0.05)
    thread.join(10)
    assert not thread.is_alive()
    assert workers() == []
