"""The worker on a real Redis: every admitted order reaches the host once, settled once."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal

import pytest
import redis as redis_lib
from flask import Flask

from flask_flashsale import ConfigurationError, FlashSale, Order, order_confirmed, order_failed
from flask_flashsale.orders import GROUP
from flask_flashsale.worker import Worker

from .helpers import MakeApp
from .worker_host import FAST, wait_until, worker_thread

STREAM = "flashsale:{{{}}}:orders"


def stream_state(client: redis_lib.Redis, sale: str) -> tuple[int, int]:
    """(entries left in the sale's stream, entries pending in the workers group)."""
    key = STREAM.format(sale)
    return client.xlen(key), client.xpending(key, "workers")["pending"]


def admit(ext: FlashSale, sale: str, users: list[str], quantity: int = 1) -> list[str]:
    tickets = []
    for user in users:
        admission = ext.place_order(sale, user, quantity)
        assert admission.status == "queued"
        assert admission.ticket_id is not None
        tickets.append(admission.ticket_id)
    return tickets


def test_every_admitted_order_reaches_the_hook_once_and_is_confirmed(
    make_app: MakeApp, redis_client: redis_lib.Redis
) -> None:
    app, ext = make_app(**FAST)
    seen: list[Order] = []
    confirmed: list[str] = []
    ext.order_handler(seen.append)

    def on_confirmed(sender: Flask, order: Order) -> None:
        confirmed.append(order.id)

    with app.app_context(), order_confirmed.connected_to(on_confirmed, app):
        ext.create_sale("drop", stock=100, price="19.90", per_user_limit=2)
        tickets = admit(ext, "drop", [f"user{i}" for i in range(60)], quantity=1)
        tickets += admit(ext, "drop", [f"pair{i}" for i in range(20)], quantity=2)
        settled = ext.run_worker(burst=True)

        assert settled == 80
        assert Counter(o.id for o in seen) == Counter(tickets)  # once per order id
        assert sorted(confirmed) == sorted(tickets)
        assert {ext.get_ticket(t).status for t in tickets} == {"confirmed"}  # type: ignore[union-attr]
        assert stream_state(redis_client, "drop") == (0, 0)  # nothing pending, stream trimmed
        assert ext.get_sale("drop").remaining == 0  # type: ignore[union-attr]


def test_the_hook_gets_the_order_as_admitted(make_app: MakeApp) -> None:
    app, ext = make_app(**FAST)
    seen: list[Order] = []
    ext.order_handler(seen.append)
    with app.app_context():
        ext.create_sale("tee", stock=5, price="9.99", per_user_limit=3)
        (ticket,) = admit(ext, "tee", ["alice"], quantity=3)
        ext.run_worker(burst=True)
    (order,) = seen
    assert order.id == order.ticket_id == ticket
    assert (order.sale_id, order.user_id, order.quantity) == ("tee", "alice", 3)
    assert order.price == Decimal("9.99")
    assert isinstance(order.admitted_at, datetime)
    assert order.admitted_at.tzinfo is not None
    assert order.attempt == 1


def test_the_hook_runs_inside_an_app_context(make_app: MakeApp) -> None:
    app, ext = make_app(**FAST)
    apps: list[str] = []

    @ext.order_handler
    def persist(order: Order) -> None:
        from flask import current_app

        apps.append(current_app.name)

    with app.app_context():
        ext.create_sale("tee", stock=1)
        admit(ext, "tee", ["alice"])
    with app.app_context():
        ext.run_worker(burst=True)
    assert apps == [app.name]


def test_a_failing_hook_is_retried_with_the_delivery_count_from_redis(
    make_app: MakeApp, redis_client: redis_lib.Redis
) -> None:
    app, ext = make_app(**FAST, FLASHSALE_MAX_ATTEMPTS=5)
    attempts: list[int] = []

    @ext.order_handler
    def flaky(order: Order) -> None:
        attempts.append(order.attempt)
        if order.attempt < 3:
            raise ConnectionError("database is restarting")

    with app.app_context():
        ext.create_sale("tee", stock=1)
        (ticket,) = admit(ext, "tee", ["alice"])
        ext.run_worker(burst=True)
        assert attempts == [1, 2, 3]
        assert ext.get_ticket(ticket).status == "confirmed"  # type: ignore[union-attr]
        assert ext.get_sale("tee").remaining == 0  # type: ignore[union-attr]
    assert redis_client.xlen("flashsale:{tee}:dead") == 0
    assert stream_state(redis_client, "tee") == (0, 0)


def test_a_hook_that_always_fails_is_compensated_exactly_once(
    make_app: MakeApp, redis_client: redis_lib.Redis
) -> None:
    app, ext = make_app(**FAST, FLASHSALE_MAX_ATTEMPTS=3)
    attempts: list[int] = []
    failures: list[tuple[str, str]] = []

    @ext.order_handler
    def broken(order: Order) -> None:
        attempts.append(order.attempt)
        raise RuntimeError("no such table: orders")

    def on_failed(sender: Flask, order: Order, reason: str) -> None:
        failures.append((order.id, reason))

    with app.app_context(), order_failed.connected_to(on_failed, app):
        ext.create_sale("tee", stock=1, per_user_limit=1)
        (ticket,) = admit(ext, "tee", ["alice"])
        assert ext.place_order("tee", "bob").status == "sold_out"
        ext.run_worker(burst=True)

        failed = ext.get_ticket(ticket)
        assert failed is not None
        assert failed.status == "failed"
        assert failed.reason == "processing_failed"  # the exception text is not for buyers
        assert attempts == [1, 2, 3]
        assert failures == [(ticket, "RuntimeError: no such table: orders")]
        assert ext.get_sale("tee").remaining == 1  # type: ignore[union-attr]
        # The buyer's count came back: alice may buy again. The stock came back
        # once: after her, the sale is sold out again.
        assert ext.place_order("tee", "alice").status == "queued"
        assert ext.place_order("tee", "bob").status == "sold_out"

    (letter,) = redis_client.xrange("flashsale:{tee}:dead")
    fields = letter[1]
    assert (fields["t"], fields["u"], fields["q"], fields["n"]) == (ticket, "alice", "1", "3")
    assert fields["r"] == "RuntimeError: no such table: orders"
    assert stream_state(redis_client, "tee") == (1, 0)  # only alice's new order waits


def test_an_order_whose_worker_died_in_its_hook_too_often_is_given_up_without_the_hook(
    make_app: MakeApp, redis_client: redis_lib.Redis
) -> None:
    app, ext = make_app(**FAST, FLASHSALE_MAX_ATTEMPTS=3)
    calls: list[Order] = []
    ext.order_handler(calls.append)
    key = STREAM.format("tee")
    with app.app_context():
        ext.create_sale("tee", stock=1)
        (ticket,) = admit(ext, "tee", ["alice"])
        # Three workers claimed it, started its hook and died inside it.
        queue = ext.state().orders
        redis_client.xgroup_create(key, GROUP, id="0")
        redis_client.xreadgroup(GROUP, "ghost0", {key: ">"})
        for i in range(3):
            time.sleep(0.6)  # idle past FLASHSALE_CLAIM_IDLE: the ghost is dead
            (delivery,), _ = queue.claim(f"ghost{i + 1}", "tee", idle_ms=500, count=10)
            assert queue.start(f"ghost{i + 1}", delivery) == (i + 1, "queued")
        time.sleep(0.6)
        ext.run_worker(burst=True)
        assert calls == []
        gave_up = ext.get_ticket(ticket)
        assert gave_up is not None
        assert gave_up.status == "failed"
        assert gave_up.reason == "processing_failed"
        assert ext.get_sale("tee").remaining == 1  # type: ignore[union-attr]
    ((_, letter),) = redis_client.xrange("flashsale:{tee}:dead")
    assert letter["r"] == "its worker died 3 times while handling it"


def test_a_buyer_never_sees_the_hooks_exception_text(make_app: MakeApp) -> None:
    app, ext = make_app(**FAST, FLASHSALE_MAX_ATTEMPTS=1)

    @ext.order_handler
    def broken(order: Order) -> None:
        raise NameError("name 'db' is not defined")

    with app.app_context():
        ext.create_sale("tee", stock=1)
    client = app.test_client()
    placed = client.post("/api/flash-sales/tee/order", headers={"X-User": "alice"})
    with app.app_context():
        ext.run_worker(burst=True)
    answer = client.get(placed.headers["Location"], headers={"X-User": "alice"})
    assert answer.json == {
        "ticket_id": placed.json["ticket_id"],  # type: ignore[index]
        "sale_id": "tee",
        "quantity": 1,
        "status": "failed",
        "reason": "processing_failed",
        "pay_by": None,
    }
    assert b"NameError" not in answer.data


def test_deliveries_alone_never_give_an_order_up(
    make_app: MakeApp, redis_client: redis_lib.Redis
) -> None:
    app, ext = make_app(**FAST, FLASHSALE_MAX_ATTEMPTS=3)
    calls: list[Order] = []
    ext.order_handler(calls.append)
    key = STREAM.format("tee")
    with app.app_context():
        ext.create_sale("tee", stock=1)
        (ticket,) = admit(ext, "tee", ["alice"])
        # Taken by several workers that died before starting it (delivery count 4).
        redis_client.xgroup_create(key, GROUP, id="0")
        ((_, [(entry_id, _)]),) = redis_client.xreadgroup(GROUP, "ghost", {key: ">"})
        for _ in range(3):
            redis_client.xclaim(key, GROUP, "ghost", 0, [entry_id])
        time.sleep(0.6)
        ext.run_worker(burst=True)
        assert [order.attempt for order in calls] == [5]
        assert ext.get_ticket(ticket).status == "confirmed"  # type: ignore[union-attr]
    assert redis_client.xlen("flashsale:{tee}:dead") == 0


def test_run_worker_without_an_order_handler_refuses_to_start(make_app: MakeApp) -> None:
    app, ext = make_app()
    with app.app_context(), pytest.raises(ConfigurationError, match="order_handler"):
        ext.run_worker(burst=True)


def test_a_new_sale_is_picked_up_without_a_restart(make_app: MakeApp) -> None:
    app, ext = make_app(**FAST)
    seen: list[str] = []
    ext.order_handler(lambda order: seen.append(order.id))
    with worker_thread(app, name="long-lived"), app.app_context():
        wait_until(lambda: ext.state().client.exists("flashsale:worker:long-lived"))
        ext.create_sale("late", stock=1)
        (ticket,) = admit(ext, "late", ["alice"])
        wait_until(lambda: ext.get_ticket(ticket).status == "confirmed")  # type: ignore[union-attr]
    assert seen == [ticket]


def test_two_workers_on_one_sale_never_both_process_an_order(
    make_app: MakeApp, redis_client: redis_lib.Redis
) -> None:
    calls: list[tuple[str, str, int]] = []
    in_progress: set[str] = set()
    overlaps: list[str] = []
    lock = threading.Lock()

    def hook_for(worker_name: str) -> Callable[[Order], None]:
        def persist(order: Order) -> None:
            with lock:
                if order.id in in_progress:
                    overlaps.append(order.id)
                in_progress.add(order.id)
            time.sleep(random.uniform(0, 0.003))
            with lock:
                in_progress.discard(order.id)
                calls.append((order.id, worker_name, order.attempt))

        return persist

    app_a, ext_a = make_app(**FAST)
    app_b, ext_b = make_app(**FAST)
    ext_a.order_handler(hook_for("a"))
    ext_b.order_handler(hook_for("b"))
    with app_a.app_context():
        ext_a.create_sale("hot", stock=200)
        tickets = admit(ext_a, "hot", [f"user{i}" for i in range(200)])
    runs: dict[str, int] = {}

    def run(app: Flask, name: str) -> None:
        runs[name] = Worker(app, name=name, burst=True).run()

    threads = [
        threading.Thread(target=run, args=(app_a, "a")),
        threading.Thread(target=run, args=(app_b, "b")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    per_worker = Counter(name for _, name, _ in calls)
    print(f"\ntwo workers, 200 orders: {dict(per_worker)}, settled {runs}")
    assert Counter(order_id for order_id, _, _ in calls) == Counter(tickets)
    assert overlaps == []
    assert {attempt for _, _, attempt in calls} == {1}
    assert per_worker["a"] > 0
    assert per_worker["b"] > 0
    assert runs["a"] + runs["b"] == 200
    assert stream_state(redis_client, "hot") == (0, 0)


def test_concurrent_consumers_in_one_worker_process_each_order_once(
    make_app: MakeApp, redis_client: redis_lib.Redis
) -> None:
    app, ext = make_app(**FAST)
    threads_used: set[str] = set()
    calls: Counter[str] = Counter()
    lock = threading.Lock()

    @ext.order_handler
    def persist(order: Order) -> None:
        time.sleep(0.002)
        with lock:
            calls[order.id] += 1
            threads_used.add(threading.current_thread().name)

    with app.app_context():
        ext.create_sale("a", stock=60)
        ext.create_sale("b", stock=60)
        tickets = admit(ext, "a", [f"u{i}" for i in range(60)])
        tickets += admit(ext, "b", [f"u{i}" for i in range(60)])
        assert ext.run_worker(burst=True, concurrency=4, name="pool") == 120
        statuses = {ext.get_ticket(t).status for t in tickets}  # type: ignore[union-attr]
    assert calls == Counter(tickets)
    assert statuses == {"confirmed"}
    assert len(threads_used) > 1
    assert stream_state(redis_client, "a") == (0, 0)
    assert stream_state(redis_client, "b") == (0, 0)


def test_a_live_worker_keeps_an_order_whose_hook_outlasts_the_claim_idle_time(
    make_app: MakeApp,
) -> None:
    slow_app, slow_ext = make_app(**FAST)
    other_app, other_ext = make_app(**FAST)
    calls: list[tuple[str, str]] = []
    started = threading.Event()

    @slow_ext.order_handler
    def slow(order: Order) -> None:
        calls.append(("slow", order.id))
        started.set()
        time.sleep(1.6)  # more than three times FLASHSALE_CLAIM_IDLE

    @other_ext.order_handler
    def fast(order: Order) -> None:
        calls.append(("other", order.id))

    with slow_app.app_context():
        slow_ext.create_sale("tee", stock=1)
        (ticket,) = admit(slow_ext, "tee", ["alice"])
    with worker_thread(slow_app, name="slow"):
        assert started.wait(10)
        # Another worker drains the queue meanwhile: it must wait for the slow
        # worker's order instead of claiming it, since the slow one is alive.
        assert Worker(other_app, name="other", burst=True).run() == 0
        with slow_app.app_context():
            assert slow_ext.get_ticket(ticket).status == "confirmed"  # type: ignore[union-attr]
    assert calls == [("slow", ticket)]


def test_a_stopped_worker_leaves_the_registry_and_the_group(
    make_app: MakeApp, redis_client: redis_lib.Redis
) -> None:
    app, ext = make_app(**FAST)
    ext.order_handler(lambda order: None)
    key = STREAM.format("tee")
    with app.app_context():
        ext.create_sale("tee", stock=1)
        (ticket,) = admit(ext, "tee", ["alice"])
    with worker_thread(app, name="w1"), app.app_context():
        wait_until(lambda: ext.get_ticket(ticket).status == "confirmed")  # type: ignore[union-attr]
        assert redis_client.sismember("flashsale:workers", "w1")
        assert redis_client.hget("flashsale:worker:w1", "state") in ("idle", "busy")
        assert [c["name"] for c in redis_client.xinfo_consumers(key, GROUP)] == ["w1"]
    assert not redis_client.sismember("flashsale:workers", "w1")
    assert not redis_client.exists("flashsale:worker:w1")
    # A clean exit also leaves the group: no stale consumer is left behind.
    assert redis_client.xinfo_consumers(key, GROUP) == []


def test_deleting_a_sale_while_a_worker_runs_does_not_stop_it(make_app: MakeApp) -> None:
    app, ext = make_app(**FAST)
    seen: list[str] = []
    ext.order_handler(lambda order: seen.append(order.sale_id))
    with worker_thread(app, name="w"), app.app_context():
        ext.create_sale("gone", stock=1)
        ext.create_sale("kept", stock=5)
        wait_until(lambda: ext.state().client.exists("flashsale:{gone}:orders"))
        ext.delete_sale("gone")
        ext.create_sale("gone", stock=1)  # same id again: a new stream, no group yet
        (ticket,) = admit(ext, "gone", ["alice"])
        (other,) = admit(ext, "kept", ["bob"])
        wait_until(lambda: ext.get_ticket(ticket).status == "confirmed")  # type: ignore[union-attr]
        wait_until(lambda: ext.get_ticket(other).status == "confirmed")  # type: ignore[union-attr]
    assert sorted(seen) == ["gone", "kept"]


def test_worker_names_are_validated(make_app: MakeApp) -> None:
    app, _ = make_app()
    with pytest.raises(ValueError, match="worker names"):
        Worker(app, name="no spaces please")
    with pytest.raises(ValueError, match="concurrency"):
        Worker(app, concurrency=0)


def test_a_long_list_of_live_orders_cannot_hide_a_dead_workers_order(
    make_app: MakeApp, redis_client: redis_lib.Redis
) -> None:
    app, ext = make_app(**FAST)
    key = STREAM.format("hot")
    with app.app_context():
        ext.create_sale("hot", stock=151)
        tickets = admit(ext, "hot", [f"user{i}" for i in range(151)])
        queue = ext.state().orders
        assert queue.ensure_group("hot")
    redis_client.xreadgroup("workers", "ghost", {key: ">"})
    time.sleep(0.6)  # every entry is now idle past FLASHSALE_CLAIM_IDLE...
    live = [entry_id for entry_id, _ in redis_client.xrange(key)][:150]
    redis_client.xclaim(key, "workers", "live", 0, live, justid=True)  # ...but these 150 are held
    # XAUTOCLAIM looks at COUNT * 10 pending entries per call: the first scan
    # stops inside the live ones, the next one resumes there and finds the dead one.
    first, cursor = queue.claim("rescuer", "hot", idle_ms=500, count=10)
    assert first == []
    assert cursor != "0-0"
    second, cursor = queue.claim("rescuer", "hot", idle_ms=500, count=10, cursor=cursor)
    assert [d.ticket_id for d in second] == [tickets[150]]
    assert second[0].attempt == 2
    assert cursor == "0-0"


def test_a_busy_worker_logs_one_progress_line_with_rate_totals_and_lag(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    app, ext = make_app(**FAST, FLASHSALE_WORKER_BATCH=2)
    ext.order_handler(lambda order: None)
    with app.app_context():
        ext.create_sale("tee", stock=5, per_user_limit=5)
        admit(ext, "tee", ["alice"] * 5)
        worker = Worker(app, name="chatty", burst=True)
        worker.step()  # two of five settled, three wait
        with caplog.at_level("INFO", logger="flask_flashsale.worker"):
            line = worker.log_progress()
    assert line is not None
    assert "confirmed 2, retried 0, failed 0; lag 3, pending 0" in line
    assert line.startswith("worker chatty: ") and " orders/s, " in line
    assert [r.getMessage() for r in caplog.records] == [line]


def test_an_idle_worker_logs_no_progress_line(make_app: MakeApp) -> None:
    app, ext = make_app(**FAST)
    ext.order_handler(lambda order: None)
    with app.app_context():
        ext.create_sale("tee", stock=5)
        worker = Worker(app, name="quiet", burst=True)
        worker.step()
        assert worker.log_progress() is None
