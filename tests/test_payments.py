"""Reservations: a buyer pays within ``payment_timeout``, or the hold expires and its stock
goes back on sale, exactly once (real Redis; the worker in this process)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis as redis_lib
from flask import Flask

from flask_flashsale import (
    FlashSale,
    Order,
    PaymentRefused,
    PaymentTooLate,
    Ticket,
    TicketNotFound,
    order_confirmed,
    order_expired,
    order_failed,
)
from flask_flashsale.payments import EXPIRY_BATCH
from flask_flashsale.worker import Worker

from .helpers import (
    CommandCounter,
    MakeApp,
    buy,
    pay_by_ms,
    redis_ms,
    ticket,
    wait_for,
    wait_past_pay_by,
)
from .worker_host import FAST, worker_thread

HOLDS = "flashsale:{tee}:holds"


class Host:
    """The host's side: the order hook's rows and the expiry hook's calls."""

    def __init__(self, ext: FlashSale) -> None:
        self.orders: dict[str, Order] = {}
        self.expired: list[Ticket] = []
        self.expiry_failures = 0  # the expiry hook raises this many times first
        self.lock = threading.Lock()

        @ext.order_handler
        def persist(order: Order) -> None:
            with self.lock:
                self.orders[order.id] = order

        @ext.expiry_handler
        def cancel_row(ticket: Ticket) -> None:
            with self.lock:
                if self.expiry_failures:
                    self.expiry_failures -= 1
                    raise ConnectionError("the host database is restarting")
                self.expired.append(ticket)


@pytest.fixture
def shop(make_app: MakeApp) -> Iterator[tuple[Flask, FlashSale, Host]]:
    """A sale of 2 units with a 1 s payment timeout; app context pushed."""
    app, ext = make_app(**FAST)
    host = Host(ext)
    with app.app_context():
        ext.create_sale("tee", stock=2, payment_timeout=1)
        yield app, ext, host


def buy_and_run_hook(ext: FlashSale, user: str) -> str:
    """Buy one unit of ``tee``, then run the order hook (a burst worker): the ticket now
    awaits payment."""
    ticket_id = buy(ext, user)
    ext.run_worker(burst=True)
    return ticket_id


def remaining(ext: FlashSale, sale: str = "tee") -> int:
    found = FlashSale.state().sales.get(sale)  # straight from Redis, not the cache
    assert found is not None
    return found.remaining


def live_units(client: redis_lib.Redis, sale: str = "tee") -> int:
    """Units of the sale's live tickets, read from every ticket hash (a test-side scan)."""
    units = 0
    for key in client.scan_iter(match=f"flashsale:{{{sale}}}:t:*"):
        fields = client.hmget(key, "s", "q")
        if fields[0] in ("queued", "confirmed", "awaiting_payment", "paid"):
            units += int(fields[1] or 0)
    return units


# -- the flow ------------------------------------------------------------------


def test_after_the_hook_a_ticket_awaits_payment_until_admission_plus_the_timeout(
    shop: tuple[Flask, FlashSale, Host],
) -> None:
    _, ext, host = shop
    placed = buy(ext, "alice")
    assert ticket(ext, placed).status == "queued"
    assert ticket(ext, placed).pay_by is None
    ext.run_worker(burst=True)
    held = ticket(ext, placed)
    assert held.status == "awaiting_payment"
    assert held.pay_by == host.orders[placed].admitted_at + timedelta(seconds=1)


def test_an_unpaid_hold_expires_and_its_stock_is_bought_by_the_next_buyer(
    make_app: MakeApp, redis_client: redis_lib.Redis
) -> None:
    app, ext = make_app(**FAST)
    host = Host(ext)
    heard: list[Ticket] = []
    order_expired.connect(lambda sender, ticket: heard.append(ticket), app, weak=False)
    with app.app_context():
        ext.create_sale("tee", stock=1, payment_timeout=1)
        placed = buy(ext, "alice")
        with worker_thread(app, name="w1"):
            wait_for(lambda: ticket(ext, placed).status == "awaiting_payment")
            assert ext.place_order("tee", "bob").status == "sold_out"
            assert redis_ms(redis_client) < pay_by_ms(ticket(ext, placed))
            wait_for(lambda: ticket(ext, placed).status == "expired", timeout=5)
            wait_for(lambda: len(host.expired) == 1)
        expired = ticket(ext, placed)
        assert redis_ms(redis_client) >= pay_by_ms(expired)
        assert host.expired == [expired]
        assert heard == [expired]
        assert remaining(ext) == 1
        assert redis_client.hget("flashsale:{tee}:users", "alice") is None
        assert buy(ext, "bob")  # the unit is on sale again
        with pytest.raises(PaymentTooLate) as too_late:
            ext.mark_paid(placed)
        assert too_late.value.ticket_status == "expired"
        assert ticket(ext, placed).status == "expired"


def test_a_paid_hold_never_expires(
    shop: tuple[Flask, FlashSale, Host], redis_client: redis_lib.Redis
) -> None:
    _, ext, host = shop
    placed = buy_and_run_hook(ext, "alice")
    paid = ext.mark_paid(placed)
    assert paid.status == "paid"
    assert paid == ticket(ext, placed)
    wait_for(lambda: redis_ms(redis_client) > pay_by_ms(paid) + 50)
    ext.run_worker(burst=True)
    assert ticket(ext, placed).status == "paid"
    assert host.expired == []
    assert remaining(ext) == 1
    assert redis_client.zcard(HOLDS) == 0


def test_mark_paid_again_returns_the_paid_ticket(shop: tuple[Flask, FlashSale, Host]) -> None:
    _, ext, _ = shop
    placed = buy_and_run_hook(ext, "alice")
    first = ext.mark_paid(placed)
    assert ext.mark_paid(placed) == first
    assert FlashSale.state().payments.stats(["tee"])[0].paid == 1


def test_mark_paid_after_pay_by_fails_before_any_worker_expired_the_hold(
    shop: tuple[Flask, FlashSale, Host], redis_client: redis_lib.Redis
) -> None:
    _, ext, host = shop
    placed = buy_and_run_hook(ext, "alice")
    pay_by = pay_by_ms(ticket(ext, placed))
    wait_for(lambda: redis_ms(redis_client) >= pay_by)
    with pytest.raises(PaymentTooLate) as too_late:
        ext.mark_paid(placed)
    assert too_late.value.ticket_status == "awaiting_payment"  # no worker ran yet
    assert remaining(ext) == 1  # still held: the worker gives it back
    ext.run_worker(burst=True)
    assert ticket(ext, placed).status == "expired"
    assert remaining(ext) == 2
    assert [t.id for t in host.expired] == [placed]


def test_a_payment_that_beats_the_worker_stays_paid_after_the_hook(
    shop: tuple[Flask, FlashSale, Host], redis_client: redis_lib.Redis
) -> None:
    app, ext, host = shop
    confirmed: list[Order] = []
    order_confirmed.connect(lambda sender, order: confirmed.append(order), app, weak=False)
    placed = buy(ext, "alice")
    paid = ext.mark_paid(placed)
    assert paid.status == "paid"
    assert paid.pay_by == ticket(ext, placed).pay_by  # the deadline it beat
    assert placed not in host.orders
    ext.run_worker(burst=True)
    assert placed in host.orders  # the hook still runs
    assert [o.id for o in confirmed] == [placed]
    assert ticket(ext, placed).status == "paid"
    assert redis_client.zcard(HOLDS) == 0  # never indexed: nothing to expire


def test_a_queued_ticket_past_its_deadline_cannot_be_paid(
    shop: tuple[Flask, FlashSale, Host], redis_client: redis_lib.Redis
) -> None:
    _, ext, host = shop
    FlashSale.state().sales.create("tee", stock=2, payment_timeout=0.05)
    placed = buy(ext, "alice")
    admitted = int(redis_client.hget("flashsale:{tee}:t:" + placed.split("~")[1], "a") or 0)
    wait_for(lambda: redis_ms(redis_client) >= admitted + 50)
    with pytest.raises(PaymentTooLate):
        ext.mark_paid(placed)
    assert ticket(ext, placed).status == "queued"
    ext.run_worker(burst=True)  # the hook runs, then the hold expires at once
    assert ticket(ext, placed).status == "expired"
    assert [t.id for t in host.expired] == [placed]
    assert remaining(ext) == 2


def test_cancelled_and_failed_tickets_cannot_be_paid(
    make_app: MakeApp,
) -> None:
    app, ext = make_app(**FAST, FLASHSALE_MAX_ATTEMPTS=1)

    @ext.order_handler
    def broken(order: Order) -> None:
        if order.user_id == "bob":
            raise RuntimeError("poison")

    with app.app_context():
        ext.create_sale("tee", stock=2, payment_timeout=60)
        cancelled, failed = buy(ext, "alice"), buy(ext, "bob")
        assert ext.cancel(cancelled) is True
        ext.run_worker(burst=True)
        assert ticket(ext, failed).status == "failed"
        for ticket_id, status in ((cancelled, "cancelled"), (failed, "failed")):
            with pytest.raises(PaymentRefused) as refused:
                ext.mark_paid(ticket_id)
            assert not isinstance(refused.value, PaymentTooLate)
            assert refused.value.ticket_status == status
            assert refused.value.problem()["code"] == "payment_refused"
        with pytest.raises(TicketNotFound):
            ext.mark_paid("tee~" + "x" * 22)
        with pytest.raises(TicketNotFound):
            ext.mark_paid("not a ticket")
        assert remaining(ext) == 2


def test_a_refund_of_a_paid_ticket_gives_the_stock_back_once(
    shop: tuple[Flask, FlashSale, Host], redis_client: redis_lib.Redis
) -> None:
    _, ext, _ = shop
    placed = buy_and_run_hook(ext, "alice")
    ext.mark_paid(placed)
    assert remaining(ext) == 1
    assert ext.cancel(placed, reason="refund") is True
    assert ext.cancel(placed, reason="refund") is False
    assert ticket(ext, placed).status == "cancelled"
    assert remaining(ext) == 2
    assert redis_client.hget("flashsale:{tee}:users", "alice") is None


def test_a_hold_cancelled_while_awaiting_payment_never_expires(
    shop: tuple[Flask, FlashSale, Host], redis_client: redis_lib.Redis
) -> None:
    _, ext, host = shop
    placed = buy_and_run_hook(ext, "alice")
    assert ext.cancel(placed) is True
    assert redis_client.zcard(HOLDS) == 0
    pay_by = pay_by_ms(ticket(ext, placed))
    wait_for(lambda: redis_ms(redis_client) > pay_by)
    ext.run_worker(burst=True)
    assert ticket(ext, placed).status == "cancelled"
    assert host.expired == []
    assert remaining(ext) == 2
    assert ext.cancel(placed) is False


def test_without_a_payment_timeout_the_flow_is_unchanged(
    make_app: MakeApp, redis_client: redis_lib.Redis
) -> None:
    app, ext = make_app(**FAST)
    Host(ext)
    with app.app_context():
        sale = ext.create_sale("tee", stock=2)
        assert sale.payment_timeout is None
        placed = buy_and_run_hook(ext, "alice")
        confirmed = ticket(ext, placed)
        assert (confirmed.status, confirmed.pay_by) == ("confirmed", None)
        assert redis_client.exists(HOLDS) == 0
        # A host may still record payments: there is no deadline to miss.
        assert ext.mark_paid(placed).status == "paid"


def test_the_order_path_stays_one_round_trip_with_a_payment_timeout(
    shop: tuple[Flask, FlashSale, Host], command_counter: CommandCounter
) -> None:
    _, ext, _ = shop
    sent = command_counter.count(lambda: ext.place_order("tee", "alice"))
    assert [c.split()[0] for c in sent] == ["EVALSHA"]


# -- the expiry hook -----------------------------------------------------------


def test_an_expiry_hook_that_raises_is_retried_and_the_stock_comes_back_once(
    shop: tuple[Flask, FlashSale, Host], redis_client: redis_lib.Redis
) -> None:
    _, ext, host = shop
    host.expiry_failures = 2
    placed = buy_and_run_hook(ext, "alice")
    wait_past_pay_by(ext, redis_client, placed)
    ext.run_worker(burst=True)
    assert [t.id for t in host.expired] == [placed]
    assert host.expiry_failures == 0  # called three times in all
    assert remaining(ext) == 2
    assert FlashSale.state().payments.stats(["tee"])[0].expired == 1
    assert redis_client.xlen("flashsale:{tee}:orders") == 0
    assert redis_client.xlen("flashsale:{tee}:dead") == 0


def test_an_expiry_hook_failing_for_good_is_dead_lettered_without_giving_stock_twice(
    make_app: MakeApp, redis_client: redis_lib.Redis
) -> None:
    app, ext = make_app(**FAST, FLASHSALE_MAX_ATTEMPTS=2)
    host = Host(ext)
    host.expiry_failures = 100
    with app.app_context():
        ext.create_sale("tee", stock=2, payment_timeout=0.2)
        placed = buy_and_run_hook(ext, "alice")
        wait_past_pay_by(ext, redis_client, placed)
        ext.run_worker(burst=True)
        [letter] = FlashSale.state().orders.dead_letters("tee")
        assert letter.ticket_id == placed
        assert letter.reason.startswith("expiry hook: ConnectionError")
        assert ticket(ext, placed).status == "expired"
        assert remaining(ext) == 2
        assert FlashSale.state().orders.requeue("tee", letter.entry_id) == "conflict"
        assert remaining(ext) == 2


def test_without_an_expiry_hook_nothing_is_queued_for_it(
    make_app: MakeApp, redis_client: redis_lib.Redis
) -> None:
    app, ext = make_app(**FAST)
    ext.order_handler(lambda order: None)
    with app.app_context():
        ext.create_sale("tee", stock=1, payment_timeout=0.1)
        placed = buy_and_run_hook(ext, "alice")
        wait_past_pay_by(ext, redis_client, placed)
        ext.run_worker(burst=True)
        assert ticket(ext, placed).status == "expired"
        assert redis_client.xlen("flashsale:{tee}:orders") == 0
        assert remaining(ext) == 1


# -- the worker's batches ------------------------------------------------------


def test_one_turn_of_the_worker_expires_at_most_one_batch_per_sale(
    make_app: MakeApp, redis_client: redis_lib.Redis
) -> None:
    count = EXPIRY_BATCH + 30
    app, ext = make_app(**FAST)
    ext.order_handler(lambda order: None)
    with app.app_context():
        ext.create_sale("tee", stock=count, payment_timeout=0.1)
        tickets = [buy(ext, f"user{i}") for i in range(count)]
        ext.run_worker(burst=True)
        last = max(pay_by_ms(ticket(ext, t)) for t in tickets)
        wait_for(lambda: redis_ms(redis_client) >= last)
        worker = Worker(app, name="stepper")
        assert worker.step() == EXPIRY_BATCH
        assert redis_client.zcard(HOLDS) == 30
        assert worker.step() == 30  # a full batch: the next turn goes on at once
        assert worker.counts["expired"] == count
        assert remaining(ext) == count


def test_the_books_balance_at_every_step(
    shop: tuple[Flask, FlashSale, Host], redis_client: redis_lib.Redis
) -> None:
    """remaining + units of live tickets (queued, confirmed, awaiting, paid) == stock."""
    _, ext, _ = shop
    FlashSale.state().sales.create("tee", stock=5, per_user_limit=2, payment_timeout=0.3)

    def balanced() -> None:
        assert remaining(ext) + live_units(redis_client) == 5

    a, b, c = buy(ext, "alice", 2), buy(ext, "bob"), buy(ext, "carol")
    balanced()
    ext.mark_paid(b)
    balanced()
    ext.run_worker(burst=True)
    balanced()
    ext.cancel(c)
    balanced()
    wait_past_pay_by(ext, redis_client, a)
    ext.run_worker(burst=True)
    balanced()
    assert [ticket(ext, t).status for t in (a, b, c)] == ["expired", "paid", "cancelled"]
    assert remaining(ext) == 4


def test_the_embedded_worker_expires_holds() -> None:
    app = Flask("memory-shop")
    app.config.update(FLASHSALE_REDIS_URL="memory://", SECRET_KEY="test")
    ext = FlashSale(app)
    host = Host(ext)
    try:
        with app.app_context():
            ext.create_sale("tee", stock=1, payment_timeout=0.2)
            placed = buy(ext, "alice")
            wait_for(lambda: ticket(ext, placed).status == "awaiting_payment")
            wait_for(lambda: ticket(ext, placed).status == "expired")
            wait_for(lambda: [t.id for t in host.expired] == [placed])
            assert ext.place_order("tee", "bob").status == "queued"
    finally:
        inline = FlashSale.state(app).inline_worker
        assert inline is not None
        assert inline.stop()


# -- racing --------------------------------------------------------------------


def test_cancel_racing_mark_paid_and_the_expiry_gives_the_stock_back_once(
    make_app: MakeApp, redis_client: redis_lib.Redis
) -> None:
    holds = 40
    app, ext = make_app(**FAST)
    host = Host(ext)
    with app.app_context():
        ext.create_sale("tee", stock=holds, payment_timeout=0.5)
        tickets = [buy(ext, f"user{i}") for i in range(holds)]
        ext.run_worker(burst=True)
        pay_by = min(pay_by_ms(ticket(ext, t)) for t in tickets)
    cancelled: dict[str, bool] = {}
    paid: dict[str, bool] = {}
    start = threading.Barrier(3)

    def payer() -> None:
        with app.app_context():
            start.wait()
            for t in tickets:
                try:
                    ext.mark_paid(t)
                    paid[t] = True
                except PaymentRefused:
                    paid[t] = False
                time.sleep(0.002)

    def canceller() -> None:
        with app.app_context():
            start.wait()
            for t in reversed(tickets):
                cancelled[t] = ext.cancel(t, reason="changed my mind")
                time.sleep(0.002)

    wait_for(lambda: redis_ms(redis_client) >= pay_by - 40)
    with worker_thread(app, name="expirer"):
        threads = [threading.Thread(target=f) for f in (payer, canceller)]
        for th in threads:
            th.start()
        start.wait()
        for th in threads:
            th.join(30)
        wait_for(lambda: redis_client.zcard(HOLDS) == 0, timeout=10)
        wait_for(lambda: redis_client.xlen("flashsale:{tee}:orders") == 0)
    with app.app_context():
        final = {t: ticket(ext, t).status for t in tickets}
        expired = {t for t, s in final.items() if s == "expired"}
        print(
            f"\n{holds} holds: paid {sum(paid.values())}, cancelled "
            f"{sum(cancelled.values())}, expired {len(expired)}, final {sorted(final.values())}"
        )
        assert set(final.values()) <= {"cancelled", "expired"}  # every one was cancelled or expired
        for t in tickets:
            assert cancelled[t] != (t in expired)  # the stock came back by exactly one of them
            if paid[t]:
                assert t not in expired  # a paid hold never expires (refunded by the cancel)
        assert remaining(ext) == holds
        assert redis_client.hgetall("flashsale:{tee}:users") == {}
        assert sorted(t.id for t in host.expired) == sorted(expired)


# -- what the API shows ----------------------------------------------------------


def test_the_ticket_json_and_the_buyers_list_show_pay_by(
    shop: tuple[Flask, FlashSale, Host],
) -> None:
    app, ext, _ = shop
    client = app.test_client()
    alice = {"X-User": "alice"}
    placed = client.post("/api/flash-sales/tee/order", headers=alice)
    location = placed.headers["Location"]
    assert client.get(location, headers=alice).json["pay_by"] is None  # type: ignore[index]
    ext.run_worker(burst=True)
    shown = client.get(location, headers=alice).json
    assert shown is not None
    held = ticket(ext, placed.json["ticket_id"])  # type: ignore[index]
    assert held.pay_by is not None
    assert shown["status"] == "awaiting_payment"
    assert shown["pay_by"] == held.pay_by.isoformat()
    listed = client.get("/api/flash-sales/tee/orders", headers=alice).json
    assert listed == {"tickets": [shown]}
    sale = client.get("/api/flash-sales/tee").json
    assert sale is not None and sale["payment_timeout"] == 1


def test_the_openapi_document_describes_the_new_statuses_and_pay_by(make_app: MakeApp) -> None:
    app, _ = make_app()
    doc: Any = app.test_client().get("/api/flash-sales/openapi.json").json
    schema = doc["components"]["schemas"]["Ticket"]
    assert {"awaiting_payment", "paid", "expired"} <= set(schema["properties"]["status"]["enum"])
    assert schema["properties"]["pay_by"] == {"type": ["string", "null"], "format": "date-time"}
    assert "payment_timeout" in doc["components"]["schemas"]["Sale"]["properties"]


@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan"), 10**9])
def test_a_payment_timeout_must_be_positive_seconds(
    app_and_ext: tuple[Flask, FlashSale], bad: float
) -> None:
    _, ext = app_and_ext
    with pytest.raises(ValueError, match="payment_timeout"):
        ext.create_sale("tee", stock=1, payment_timeout=bad)


@pytest.mark.parametrize("bad", [True, "60", timedelta(seconds=60)])
def test_a_payment_timeout_is_a_number_of_seconds(
    app_and_ext: tuple[Flask, FlashSale], bad: Any
) -> None:
    _, ext = app_and_ext
    with pytest.raises(TypeError, match="payment_timeout"):
        ext.create_sale("tee", stock=1, payment_timeout=bad)


def test_replacing_a_sale_keeps_or_drops_its_payment_timeout_as_told(
    app_and_ext: tuple[Flask, FlashSale],
) -> None:
    _, ext = app_and_ext
    assert ext.create_sale("tee", stock=1, payment_timeout=1.5).payment_timeout == 1.5
    assert ext.create_sale("tee", stock=1).payment_timeout is None


def test_paying_after_the_sale_was_deleted_leaves_no_key_behind(
    shop: tuple[Flask, FlashSale, Host], redis_client: redis_lib.Redis
) -> None:
    _, ext, _ = shop
    placed = buy_and_run_hook(ext, "alice")
    ext.delete_sale("tee")
    assert ext.mark_paid(placed).status == "paid"  # the buyer's ticket lives on
    assert redis_client.keys("flashsale:{tee}:*") == ["flashsale:{tee}:t:" + placed[4:]]


def test_a_paid_order_whose_hook_fails_for_good_stays_paid_and_is_dead_lettered(
    make_app: MakeApp,
) -> None:
    app, ext = make_app(**FAST, FLASHSALE_MAX_ATTEMPTS=1)
    failed: list[str] = []

    @ext.order_handler
    def broken(order: Order) -> None:
        raise RuntimeError("poison")

    order_failed.connect(lambda sender, order, reason: failed.append(order.id), app, weak=False)
    with app.app_context():
        ext.create_sale("tee", stock=2, payment_timeout=60)
        placed = buy(ext, "alice")
        ext.mark_paid(placed)
        ext.run_worker(burst=True)
        assert ticket(ext, placed).status == "paid"  # the buyer paid: nothing given back
        assert remaining(ext) == 1
        assert failed == [placed]
        [letter] = FlashSale.state().orders.dead_letters("tee")
        assert letter.ticket_id == placed
        assert ext.cancel(placed, reason="refund") is True  # the refund gives the unit back
        assert remaining(ext) == 2


def test_holds_keep_their_pay_by_when_the_sale_is_replaced_without_a_timeout(
    shop: tuple[Flask, FlashSale, Host], redis_client: redis_lib.Redis
) -> None:
    _, ext, host = shop
    placed = buy_and_run_hook(ext, "alice")
    pay_by = ticket(ext, placed).pay_by
    ext.create_sale("tee", stock=2)
    later = buy_and_run_hook(ext, "bob")
    assert ticket(ext, later).status == "confirmed"
    assert ticket(ext, placed).pay_by == pay_by
    wait_past_pay_by(ext, redis_client, placed)
    ext.run_worker(burst=True)
    assert ticket(ext, placed).status == "expired"
    assert [t.id for t in host.expired] == [placed]
    assert remaining(ext) == 1
