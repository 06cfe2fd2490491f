"""The batch hook (``@flashsale.order_batch_handler``): the orders of one read in one call.

The same guarantees per order as the per-order hook: at least once, a
failure counted only on the order that failed alone, compensation after
``FLASHSALE_MAX_ATTEMPTS`` of its own failures or deaths, signals per order.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib
from flask import Flask

from flask_flashsale import (
    ConfigurationError,
    FlashSale,
    Order,
    Ticket,
    order_confirmed,
    order_failed,
)

from .helpers import MakeApp, admit, redis_ms, ticket, wait_for
from .worker_host import (
    FAST,
    check_poison_given_up_alone,
    host_with_orders,
    rows,
    supervise,
    wait_until,
    worker_thread,
)

STREAM = "flashsale:{drop}:orders"


def statuses(ext: FlashSale, tickets: list[str]) -> list[str]:
    return [ticket(ext, t).status for t in tickets]


def test_the_batch_hook_gets_the_orders_of_one_read_in_one_call(make_app: MakeApp) -> None:
    app, ext = make_app(**FAST, FLASHSALE_WORKER_BATCH=32)
    calls: list[list[str]] = []

    @ext.order_batch_handler
    def persist_many(orders: list[Order]) -> None:
        calls.append([o.id for o in orders])

    with app.app_context():
        ext.create_sale("drop", stock=40)
        tickets = admit(ext, 40)
        assert ext.run_worker(burst=True) == 40
    assert calls == [tickets[:32], tickets[32:]]


def test_the_orders_of_a_batch_are_confirmed_once_the_hook_returned(make_app: MakeApp) -> None:
    app, ext = make_app(**FAST)
    seen_inside: list[str] = []

    @ext.order_batch_handler
    def persist_many(orders: list[Order]) -> None:
        seen_inside.extend(ext.get_ticket(o.id).status for o in orders)  # type: ignore[union-attr]

    with app.app_context():
        ext.create_sale("drop", stock=5)
        tickets = admit(ext, 5)
        ext.run_worker(burst=True)
        assert statuses(ext, tickets) == ["confirmed"] * 5
    assert seen_inside == ["queued"] * 5


def test_registering_both_hooks_is_refused() -> None:
    def one(order: Order) -> None:
        return None

    def many(orders: list[Order]) -> None:
        return None

    ext = FlashSale()
    ext.order_handler(one)
    with pytest.raises(ConfigurationError, match="not both"):
        ext.order_batch_handler(many)
    other = FlashSale()
    other.order_batch_handler(many)
    with pytest.raises(ConfigurationError, match="not both"):
        other.order_handler(one)
    assert (ext.hooks.order_handler, ext.hooks.order_batch_handler) == (one, None)
    assert (other.hooks.order_handler, other.hooks.order_batch_handler) == (None, many)


def test_a_failing_batch_is_retried_order_by_order_and_only_the_bad_order_fails(
    make_app: MakeApp, redis_client: redis_lib.Redis
) -> None:
    app, ext = make_app(**FAST, FLASHSALE_MAX_ATTEMPTS=3)
    calls: list[list[str]] = []
    confirmed: list[str] = []
    failed: list[tuple[str, str]] = []
    with app.app_context():
        ext.create_sale("drop", stock=5)
        tickets = admit(ext, 5)
    bad = tickets[2]

    @ext.order_batch_handler
    def persist_many(orders: list[Order]) -> None:
        calls.append([o.id for o in orders])
        if any(o.id == bad for o in orders):
            raise ValueError("row 3 violates a constraint")

    def on_confirmed(sender: Flask, order: Order) -> None:
        confirmed.append(order.id)

    def on_failed(sender: Flask, order: Order, reason: str) -> None:
        failed.append((order.id, reason))

    with (
        app.app_context(),
        order_confirmed.connected_to(on_confirmed, app),
        order_failed.connected_to(on_failed, app),
    ):
        assert ext.run_worker(burst=True) == 5
        assert statuses(ext, tickets) == ["confirmed"] * 2 + ["failed"] + ["confirmed"] * 2
        assert ext.get_sale("drop").remaining == 1  # type: ignore[union-attr]
    # The batch once, then each of its orders alone; then the bad order's
    # retries, alone: three failures of its own in all.
    assert calls == [tickets, *([t] for t in tickets), [bad], [bad]]
    assert sorted(confirmed) == sorted(t for t in tickets if t != bad)  # once each
    assert failed == [(bad, "ValueError: row 3 violates a constraint")]
    [letter] = FlashSale.state(app).orders.dead_letters("drop")
    assert letter.ticket_id == bad
    assert redis_client.xlen(STREAM) == 0


def test_a_batch_that_fails_once_is_confirmed_without_counting_a_failure(
    make_app: MakeApp,
) -> None:
    app, ext = make_app(**FAST, FLASHSALE_MAX_ATTEMPTS=1)
    calls: list[int] = []

    @ext.order_batch_handler
    def flaky(orders: list[Order]) -> None:
        calls.append(len(orders))
        if len(calls) == 1:
            raise ConnectionError("database is restarting")

    with app.app_context():
        ext.create_sale("drop", stock=3)
        tickets = admit(ext, 3)
        assert ext.run_worker(burst=True) == 3
        # One failure would have been the last one (FLASHSALE_MAX_ATTEMPTS=1):
        # the failed batch counted none.
        assert statuses(ext, tickets) == ["confirmed"] * 3
    assert calls == [3, 1, 1, 1]


def test_cancelled_tickets_are_not_handed_to_the_batch_hook(make_app: MakeApp) -> None:
    app, ext = make_app(**FAST)
    calls: list[list[str]] = []
    ext.order_batch_handler(lambda orders: calls.append([o.id for o in orders]))
    with app.app_context():
        ext.create_sale("drop", stock=4)
        tickets = admit(ext, 4)
        assert ext.cancel(tickets[1], reason="changed my mind")
        assert ext.run_worker(burst=True) == 4
        assert statuses(ext, tickets) == ["confirmed", "cancelled", "confirmed", "confirmed"]
        assert ext.get_sale("drop").remaining == 1  # type: ignore[union-attr]
    assert calls == [[tickets[0], tickets[2], tickets[3]]]


def test_expiry_hook_calls_go_to_the_expiry_hook_not_the_batch_hook(
    make_app: MakeApp, redis_client: redis_lib.Redis
) -> None:
    app, ext = make_app(**FAST)
    batches: list[list[str]] = []
    expired: list[Ticket] = []
    ext.order_batch_handler(lambda orders: batches.append([o.id for o in orders]))
    ext.expiry_handler(expired.append)
    with app.app_context():
        ext.create_sale("tee", stock=2, payment_timeout=0.2)
        placed = [ext.place_order("tee", f"user{i}").ticket_id for i in range(2)]
        ext.run_worker(burst=True)
        assert statuses(ext, placed) == ["awaiting_payment"] * 2  # type: ignore[arg-type]
        pay_by = ticket(ext, placed[1]).pay_by  # type: ignore[arg-type]
        assert pay_by is not None
        wait_for(lambda: redis_ms(redis_client) >= pay_by.timestamp() * 1000)
        ext.run_worker(burst=True)
        assert statuses(ext, placed) == ["expired"] * 2  # type: ignore[arg-type]
    assert batches == [placed]
    assert sorted(t.id for t in expired) == sorted(placed)  # type: ignore[type-var]


def test_claimed_orders_are_handed_to_the_batch_hook_one_at_a_time(
    make_app: MakeApp, redis_client: redis_lib.Redis
) -> None:
    app, ext = make_app(**FAST)
    calls: list[list[str]] = []
    ext.order_batch_handler(lambda orders: calls.append([o.id for o in orders]))
    with app.app_context():
        ext.create_sale("drop", stock=4)
        tickets = admit(ext, 4)
    # A worker that read the whole queue and died before handling anything.
    redis_client.xgroup_create(STREAM, "workers", id="0")
    redis_client.xreadgroup("workers", "ghost", {STREAM: ">"}, count=10)
    time.sleep(0.6)  # past FLASHSALE_CLAIM_IDLE (0.5 s)
    with app.app_context():
        assert ext.run_worker(burst=True) == 4
        assert statuses(ext, tickets) == ["confirmed"] * 4
    assert calls == [[t] for t in tickets]


def test_the_inline_worker_of_memory_mode_uses_the_batch_hook() -> None:
    app = Flask("memory-batch")
    app.config.update(FLASHSALE_REDIS_URL="memory://", SECRET_KEY="test")
    ext = FlashSale(app)
    calls: list[list[str]] = []
    ext.order_batch_handler(lambda orders: calls.append([o.id for o in orders]))
    try:
        with app.app_context():
            ext.create_sale("drop", stock=3)
            tickets = admit(ext, 3)
            wait_until(lambda: statuses(ext, tickets) == ["confirmed"] * 3)
    finally:
        inline = FlashSale.state(app).inline_worker
        assert inline is not None
        assert inline.stop() is True
    assert sorted(order_id for batch in calls for order_id in batch) == sorted(tickets)


# -- concurrency: nothing lost, nothing duplicated -------------------------------


@pytest.fixture
def rows_db(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "host.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE orders (id TEXT PRIMARY KEY, user_id TEXT NOT NULL)")
    yield path


def test_concurrent_buyers_and_workers_bring_each_order_to_the_host_exactly_once(
    make_app: MakeApp, rows_db: Path
) -> None:
    stock = 150
    app, ext = make_app(**FAST, FLASHSALE_WORKER_BATCH=16)
    calls: Counter[str] = Counter()
    lock = threading.Lock()

    @ext.order_batch_handler
    def persist_many(orders: list[Order]) -> None:
        with lock:
            calls.update(o.id for o in orders)
        with sqlite3.connect(rows_db, timeout=10) as db:  # one transaction
            # A plain INSERT: a second delivery of an order would raise here.
            db.executemany("INSERT INTO orders VALUES (?, ?)", [(o.id, o.user_id) for o in orders])

    with app.app_context():
        ext.create_sale("drop", stock=stock)
    admitted: list[str] = []

    def buyers(first: int) -> None:
        with app.app_context():
            for i in range(first, 300, 4):
                a = ext.place_order("drop", f"buyer{i}")
                if a.ticket_id is not None and a.status == "queued":
                    with lock:
                        admitted.append(a.ticket_id)

    with worker_thread(app, name="w1", concurrency=2), worker_thread(app, name="w2"):
        crowd = [threading.Thread(target=buyers, args=(i,)) for i in range(4)]
        for t in crowd:
            t.start()
        for t in crowd:
            t.join(30)
        wait_until(lambda: sum(calls.values()) >= stock, timeout=30)
        with app.app_context():
            wait_until(lambda: set(statuses(ext, admitted)) == {"confirmed"}, timeout=30)
    assert len(admitted) == stock
    assert set(calls) == set(admitted)
    assert set(calls.values()) == {1}
    assert len(rows(rows_db, "SELECT id FROM orders")) == stock


# -- a poison order under a supervisor, real worker processes ------------------

POISON = 10
MAX_ATTEMPTS = 3
STOCK = 60


@pytest.mark.slow
@pytest.mark.parametrize(
    ("raises_in_batch", "deaths"),
    [(False, MAX_ATTEMPTS + 1), (True, MAX_ATTEMPTS)],
    ids=["dies-in-the-batch", "fails-the-batch-dies-alone"],
)
def test_a_poison_order_in_a_batch_is_given_up_alone_and_its_batch_mates_confirmed(
    tmp_path: Path,
    redis_url: str,
    redis_client: redis_lib.Redis,
    monkeypatch: pytest.MonkeyPatch,
    raises_in_batch: bool,
    deaths: int,
) -> None:
    monkeypatch.setenv("MAX_ATTEMPTS", str(MAX_ATTEMPTS))
    monkeypatch.setenv("BATCH_HOOK", "1")
    app, ext, tickets = host_with_orders(tmp_path, redis_url, monkeypatch, STOCK)
    db = tmp_path / "host.sqlite3"
    poison = tickets[POISON]
    env = {
        "BATCH_HOOK": "1",
        "POISON_USER": f"user{POISON}",
        "MAX_ATTEMPTS": str(MAX_ATTEMPTS),
        "WORKER_BATCH": "32",
        "POISON_RAISES_IN_BATCH": "1" if raises_in_batch else "0",
    }

    exits = supervise(tmp_path, redis_url, redis_client, env)

    # The first worker handed its whole first read (32 orders) to one call;
    # when that call raised, it ran them one at a time up to the poison order.
    pids = [pid for (pid,) in rows(db, "SELECT pid FROM calls ORDER BY rowid")]
    assert pids.count(pids[0]) == 32 + (POISON + 1 if raises_in_batch else 0)
    # A death inside a batch call is pinned on no order: the batch's orders
    # are then claimed and handed over one at a time, marked. A batch that
    # raised is run order by order, marked: the poison order's first death
    # there is pinned on it. Either way it kills its worker until it has
    # MAX_ATTEMPTS marked deaths, and is given up without another call.
    assert exits == [17] * deaths + [0]
    check_poison_given_up_alone(
        app, ext, tickets, poison, redis_client, db, stock=STOCK, hook_calls=MAX_ATTEMPTS + 1
    )
