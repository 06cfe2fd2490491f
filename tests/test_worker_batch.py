"""Batches (``FLASHSALE_WORKER_BATCH``): fewer round trips, the same guarantees per order."""

from __future__ import annotations

import hashlib
import threading
import time

import pytest
import redis as redis_lib
from flask import Flask

from flask_flashsale import ConfigurationError, Order, order_confirmed
from flask_flashsale.scripts import source
from flask_flashsale.worker import CONFIRM_AFTER, Worker

from .helpers import CommandCounter, MakeApp, admit
from .worker_host import FAST

STREAM = "flashsale:{drop}:orders"
CONFIRM_SHA = hashlib.sha1(source("order_confirm").encode()).hexdigest()


def commands(sent: list[str], name: str) -> list[str]:
    return [c for c in sent if c.split(" ", 1)[0].upper() == name]


@pytest.mark.parametrize(("batch", "reads", "confirms"), [(1, 40, 40), (32, 2, 2)])
def test_a_batch_is_read_and_confirmed_with_one_command_each(
    make_app: MakeApp, command_counter: CommandCounter, batch: int, reads: int, confirms: int
) -> None:
    app, ext = make_app(**FAST, FLASHSALE_WORKER_BATCH=batch)
    seen: list[str] = []
    ext.order_handler(lambda order: seen.append(order.id))
    with app.app_context():
        ext.create_sale("drop", stock=40)
        tickets = admit(ext, 40)
        sent = command_counter.count(lambda: ext.run_worker(burst=True))
        assert {ext.get_ticket(t).status for t in tickets} == {"confirmed"}  # type: ignore[union-attr]
    assert seen == tickets
    reads_with_orders = [c for c in commands(sent, "XREADGROUP") if f" COUNT {batch} " in c]
    assert len(reads_with_orders) in (reads, reads + 1)  # + the read that finds the queue empty
    # (a set: redis-py sends a script's first EVALSHA again after loading it)
    assert len({c for c in commands(sent, "EVALSHA") if CONFIRM_SHA in c}) == confirms
    assert len(commands(sent, "HGET")) == 40  # one status per order (pipelined per batch)


def test_stopping_mid_batch_hands_back_the_unstarted_orders_undelivered(
    make_app: MakeApp, redis_client: redis_lib.Redis
) -> None:
    app, ext = make_app(**FAST)
    worker = Worker(app, name="first", handle_signals=False)
    first: list[str] = []

    @ext.order_handler
    def stop_on_third(order: Order) -> None:
        first.append(order.id)
        if len(first) == 3:
            worker.stop()

    with app.app_context():
        ext.create_sale("drop", stock=10)
        tickets = admit(ext, 10)
    assert worker.run() == 3
    assert first == tickets[:3]
    # The rest went back to the queue: not pending on anyone, not counted as delivered.
    assert redis_client.xlen(STREAM) == 7
    assert redis_client.xpending(STREAM, "workers")["pending"] == 0
    assert redis_client.xinfo_consumers(STREAM, "workers") == []

    later: list[tuple[str, int]] = []
    ext.order_handler(lambda order: later.append((order.id, order.attempt)))
    assert Worker(app, name="next", burst=True).run() == 7
    assert later == [(t, 1) for t in tickets[3:]]
    with app.app_context():
        assert {ext.get_ticket(t).status for t in tickets} == {"confirmed"}  # type: ignore[union-attr]


def test_handed_back_orders_delivered_before_keep_their_delivery_count(
    make_app: MakeApp, redis_client: redis_lib.Redis
) -> None:
    app, ext = make_app(**FAST)
    with app.app_context():
        ext.create_sale("drop", stock=2)
        tickets = admit(ext, 2)
    Worker(app, name="probe", burst=True).queue.ensure_group("drop")
    redis_client.xreadgroup("workers", "ghost", {STREAM: ">"})  # a worker that dies: delivery 1
    time.sleep(0.6)  # > FLASHSALE_CLAIM_IDLE
    worker = Worker(app, name="claimer", handle_signals=False)
    seen: list[tuple[str, int]] = []

    @ext.order_handler
    def stop_at_once(order: Order) -> None:
        seen.append((order.id, order.attempt))
        worker.stop()

    assert worker.run() == 1
    assert seen == [(tickets[0], 2)]
    # The second order was claimed (delivery 2) but not started: it is a retry due now.
    assert redis_client.xpending(STREAM, "workers")["pending"] == 1
    assert redis_client.zcard("flashsale:{drop}:retry") == 1
    ext.order_handler(lambda order: seen.append((order.id, order.attempt)))
    assert Worker(app, name="next", burst=True).run() == 1
    assert seen[1:] == [(tickets[1], 3)]


def test_an_order_cancelled_while_it_waits_in_a_batch_skips_the_hook(
    make_app: MakeApp, redis_client: redis_lib.Redis
) -> None:
    app, ext = make_app(**FAST)
    with app.app_context():
        ext.create_sale("drop", stock=3)
        tickets = admit(ext, 3)
    seen: list[str] = []

    @ext.order_handler
    def cancel_the_next(order: Order) -> None:
        seen.append(order.id)
        if order.id == tickets[0]:
            assert ext.cancel(tickets[1], reason="payment timeout")
            time.sleep(CONFIRM_AFTER * 2)  # a slow hook: the batch's statuses are read again

    with app.app_context():
        assert ext.run_worker(burst=True) == 3
        assert [ext.get_ticket(t).status for t in tickets] == [  # type: ignore[union-attr]
            "confirmed",
            "cancelled",
            "confirmed",
        ]
        assert ext.get_sale("drop").remaining == 1  # type: ignore[union-attr]
    assert seen == [tickets[0], tickets[2]]
    assert redis_client.xlen(STREAM) == 0


def test_a_failing_order_in_a_batch_is_retried_while_the_others_are_confirmed(
    make_app: MakeApp, redis_client: redis_lib.Redis
) -> None:
    app, ext = make_app(**FAST)
    with app.app_context():
        ext.create_sale("drop", stock=5)
        tickets = admit(ext, 5)
    calls: list[tuple[str, int]] = []
    confirmed: list[str] = []

    @ext.order_handler
    def flaky(order: Order) -> None:
        calls.append((order.id, order.attempt))
        if order.id == tickets[2] and order.attempt == 1:
            raise ConnectionError("database is restarting")

    def on_confirmed(sender: Flask, order: Order) -> None:
        confirmed.append(order.id)

    with app.app_context(), order_confirmed.connected_to(on_confirmed, app):
        assert ext.run_worker(burst=True) == 5
    assert calls == [(t, 1) for t in tickets] + [(tickets[2], 2)]
    assert sorted(confirmed) == sorted(tickets)  # once each
    assert redis_client.xlen(STREAM) == 0


def test_orders_waiting_in_a_batch_keep_their_lease_without_a_heartbeat_thread(
    make_app: MakeApp,
) -> None:
    # step() (the inline worker, embedding) has no heartbeat thread: it renews
    # the batch's leases between orders, so a batch longer than the claim
    # idle time is not taken for a dead worker's.
    app, ext = make_app(**FAST)
    other_app, other_ext = make_app(**FAST)
    calls: list[tuple[str, str]] = []
    started = threading.Event()

    @ext.order_handler
    def slow(order: Order) -> None:
        calls.append(("stepper", order.id))
        started.set()
        time.sleep(0.3)  # four of them: more than FLASHSALE_CLAIM_IDLE (0.5 s)

    @other_ext.order_handler
    def fast(order: Order) -> None:
        calls.append(("other", order.id))

    with app.app_context():
        ext.create_sale("drop", stock=4)
        tickets = admit(ext, 4)
    stepper = Worker(app, name="stepper", handle_signals=False)
    handled: list[int] = []
    thread = threading.Thread(target=lambda: handled.append(stepper.step()), daemon=True)
    thread.start()
    try:
        assert started.wait(10)
        assert Worker(other_app, name="other", burst=True).run() == 0
    finally:
        thread.join(15)
    assert handled == [4]
    assert calls == [("stepper", t) for t in tickets]


def test_the_batch_size_must_be_a_positive_int(make_app: MakeApp) -> None:
    with pytest.raises(ConfigurationError, match="FLASHSALE_WORKER_BATCH"):
        make_app(FLASHSALE_WORKER_BATCH=0)
