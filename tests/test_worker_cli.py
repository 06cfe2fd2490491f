"""``flask flashsale worker | status | dead-letters``, as an operator runs them."""

from __future__ import annotations

import json

import redis as redis_lib

from flask_flashsale import Order

from .helpers import MakeApp, invoke
from .worker_host import FAST, wait_until, worker_thread


def test_worker_burst_processes_the_queue_and_exits(make_app: MakeApp) -> None:
    app, ext = make_app(**FAST)
    seen: list[str] = []
    ext.order_handler(lambda order: seen.append(order.id))
    with app.app_context():
        ext.create_sale("tee", stock=3)
        tickets = [ext.place_order("tee", u).ticket_id for u in ("a", "b", "c")]
    code, output = invoke(app, "worker", "--burst", "--concurrency", "2", "--name", "cli")
    assert code == 0, output
    assert sorted(seen) == sorted(tickets)  # type: ignore[type-var]


def test_worker_without_a_handler_fails_with_a_message(make_app: MakeApp) -> None:
    app, _ = make_app()
    code, output = invoke(app, "worker", "--burst")
    assert code == 1
    assert "order_handler" in output


def test_worker_rejects_a_bad_name(make_app: MakeApp) -> None:
    app, ext = make_app()
    ext.order_handler(lambda order: None)
    code, output = invoke(app, "worker", "--burst", "--name", "two words")
    assert code == 2
    assert "worker names" in output


def test_status_shows_stock_queue_and_live_workers(make_app: MakeApp) -> None:
    app, ext = make_app(**FAST)
    ext.order_handler(lambda order: None)
    with app.app_context():
        ext.create_sale("tee", stock=10)
        for user in ("a", "b", "c"):
            ext.place_order("tee", user)

    code, output = invoke(app, "status", "--json")
    assert code == 0, output
    doc = json.loads(output)
    (sale,) = doc["sales"]
    assert (sale["sale_id"], sale["remaining"], sale["stock"]) == ("tee", 7, 10)
    assert (sale["length"], sale["lag"], sale["pending"], sale["dead_letters"]) == (3, 3, 0, 0)
    assert doc["workers"] == []

    with worker_thread(app, name="status-probe"):
        wait_until(lambda: ext.state(app).client.xlen("flashsale:{tee}:orders") == 0)
        code, output = invoke(app, "status", "--json")
        doc = json.loads(output)
        assert [w["name"] for w in doc["workers"]] == ["status-probe"]
        assert doc["sales"][0]["lag"] == 0

    code, output = invoke(app, "status")
    assert code == 0
    assert "tee" in output
    assert "7/10" in output
    assert "0 live worker(s)" in output


def test_status_shows_pending_orders_of_a_stuck_worker(
    make_app: MakeApp, redis_client: redis_lib.Redis
) -> None:
    app, ext = make_app()
    with app.app_context():
        ext.create_sale("tee", stock=10)
        ext.place_order("tee", "a")
        ext.place_order("tee", "b")
    key = "flashsale:{tee}:orders"
    redis_client.xgroup_create(key, "workers", id="0")
    redis_client.xreadgroup("workers", "stuck", {key: ">"}, count=1)
    code, output = invoke(app, "status", "--json")
    assert code == 0, output
    sale = json.loads(output)["sales"][0]
    assert (sale["length"], sale["pending"], sale["lag"]) == (2, 1, 1)


def test_dead_letters_are_listed_and_one_can_be_requeued(
    make_app: MakeApp, redis_client: redis_lib.Redis
) -> None:
    app, ext = make_app(**FAST, FLASHSALE_MAX_ATTEMPTS=1)
    healthy = False
    seen: list[Order] = []

    @ext.order_handler
    def persist(order: Order) -> None:
        if not healthy:
            raise RuntimeError("database down")
        seen.append(order)

    with app.app_context():
        ext.create_sale("tee", stock=2)
        ticket = ext.place_order("tee", "alice").ticket_id
        assert ticket is not None
        ext.run_worker(burst=True)
        assert ext.get_sale("tee").remaining == 2  # type: ignore[union-attr]

    code, output = invoke(app, "dead-letters", "--json")
    assert code == 0, output
    (letter,) = [json.loads(line) for line in output.splitlines()]
    assert (letter["ticket_id"], letter["user_id"], letter["attempts"]) == (ticket, "alice", 1)
    assert letter["reason"] == "RuntimeError: database down"

    code, output = invoke(app, "dead-letters", "tee", "--requeue", letter["entry_id"])
    assert code == 0, output
    with app.app_context():
        requeued = ext.get_ticket(ticket)
        assert requeued is not None
        assert (requeued.status, requeued.reason) == ("queued", None)
        assert ext.get_sale("tee").remaining == 1  # type: ignore[union-attr]
        assert ext.place_order("tee", "alice").status == "limit_reached"
        healthy = True
        ext.run_worker(burst=True)
        assert ext.get_ticket(ticket).status == "confirmed"  # type: ignore[union-attr]
    assert [o.id for o in seen] == [ticket]  # same order id: the host's unique key holds
    code, output = invoke(app, "dead-letters", "tee")
    assert code == 0
    assert "0 dead letter(s)" in output
    assert redis_client.xlen("flashsale:{tee}:dead") == 0


def test_requeue_refuses_when_the_stock_is_gone(make_app: MakeApp) -> None:
    app, ext = make_app(**FAST, FLASHSALE_MAX_ATTEMPTS=1)

    @ext.order_handler
    def broken(order: Order) -> None:
        raise RuntimeError("database down")

    with app.app_context():
        ext.create_sale("tee", stock=1)
        ext.place_order("tee", "alice")
        ext.run_worker(burst=True)
        assert ext.place_order("tee", "bob").status == "queued"  # took the unit back
        (letter,) = ext.state().orders.dead_letters("tee")
    code, output = invoke(app, "dead-letters", "tee", "--requeue", letter.entry_id)
    assert code == 1
    assert "sold_out" in output
    code, output = invoke(app, "dead-letters", "tee", "--requeue", "not-an-id")
    assert code == 1
    assert "not_found" in output
    code, output = invoke(app, "dead-letters", "--requeue", letter.entry_id)
    assert code == 2
