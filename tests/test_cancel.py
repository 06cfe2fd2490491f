"""Cancelling an order gives its stock back exactly once, whatever else is going on."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import redis as redis_lib
from flask import Flask

from flask_flashsale import FlashSale, Order, TicketNotFound, order_cancelled, order_confirmed

from .helpers import MakeApp, buy
from .worker_host import FAST


@pytest.fixture
def shop(make_app: MakeApp) -> Iterator[tuple[Flask, FlashSale]]:
    """A sale of 10 units, up to 2 per buyer; app context pushed."""
    app, ext = make_app(**FAST, FLASHSALE_MAX_ATTEMPTS=2)
    with app.app_context():
        ext.create_sale("tee", stock=10, per_user_limit=2)
        yield app, ext


def remaining(ext: FlashSale) -> int:
    sale = ext.get_sale("tee")
    assert sale is not None
    return sale.remaining


def status(ext: FlashSale, ticket_id: str) -> str:
    ticket = ext.get_ticket(ticket_id)
    assert ticket is not None
    return ticket.status


def test_concurrent_cancels_give_the_stock_back_once(
    shop: tuple[Flask, FlashSale], redis_client: redis_lib.Redis
) -> None:
    app, ext = shop
    ticket = buy(ext, "alice", 2)
    assert remaining(ext) == 8
    threads = 32
    barrier = threading.Barrier(threads)
    results: list[bool] = []
    lock = threading.Lock()

    def cancel() -> None:
        with app.app_context():
            barrier.wait()
            outcome = ext.cancel(ticket, reason="payment timeout")
            with lock:
                results.append(outcome)

    pool = [threading.Thread(target=cancel) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(30)
    print(f"\n{threads} concurrent cancels: {results.count(True)} gave stock back")
    assert len(results) == threads
    assert results.count(True) == 1
    assert remaining(ext) == 10
    assert redis_client.hget("flashsale:{tee}:users", "alice") is None
    cancelled = ext.get_ticket(ticket)
    assert cancelled is not None
    assert (cancelled.status, cancelled.reason) == ("cancelled", "payment timeout")


def test_cancel_frees_the_buyers_limit(shop: tuple[Flask, FlashSale]) -> None:
    _, ext = shop
    ticket = buy(ext, "alice", 2)
    assert ext.place_order("tee", "alice").status == "limit_reached"
    assert ext.cancel(ticket) is True
    assert ext.place_order("tee", "alice", 2).status == "queued"


def test_a_confirmed_order_can_be_cancelled_once(shop: tuple[Flask, FlashSale]) -> None:
    _, ext = shop
    ext.order_handler(lambda order: None)
    ticket = buy(ext, "alice")
    ext.run_worker(burst=True)
    assert status(ext, ticket) == "confirmed"
    assert ext.cancel(ticket, reason="refund") is True
    assert ext.cancel(ticket, reason="refund") is False
    assert status(ext, ticket) == "cancelled"
    assert remaining(ext) == 10


def test_an_order_cancelled_while_queued_never_reaches_the_hook(
    shop: tuple[Flask, FlashSale], redis_client: redis_lib.Redis
) -> None:
    _, ext = shop
    seen: list[str] = []
    ext.order_handler(lambda order: seen.append(order.id))
    ticket = buy(ext, "alice")
    kept = buy(ext, "bob")
    assert ext.cancel(ticket) is True
    ext.run_worker(burst=True)
    assert seen == [kept]
    assert status(ext, ticket) == "cancelled"
    assert remaining(ext) == 9
    assert redis_client.xlen("flashsale:{tee}:orders") == 0


def test_a_late_hook_result_does_not_resurrect_a_cancelled_order(
    shop: tuple[Flask, FlashSale],
) -> None:
    app, ext = shop
    confirmed: list[str] = []

    @ext.order_handler
    def persist(order: Order) -> None:
        # The buyer's payment times out while the host is still writing the order.
        assert ext.cancel(order.id, reason="payment timeout") is True

    def on_confirmed(sender: Flask, order: Order) -> None:
        confirmed.append(order.id)

    ticket = buy(ext, "alice")
    with order_confirmed.connected_to(on_confirmed, app):
        assert ext.run_worker(burst=True) == 1
    assert status(ext, ticket) == "cancelled"
    assert confirmed == []
    assert remaining(ext) == 10


def test_cancelling_a_failed_order_gives_nothing_back_twice(
    shop: tuple[Flask, FlashSale],
) -> None:
    _, ext = shop

    @ext.order_handler
    def broken(order: Order) -> None:
        raise RuntimeError("boom")

    ticket = buy(ext, "alice")
    ext.run_worker(burst=True)
    assert status(ext, ticket) == "failed"
    assert remaining(ext) == 10
    assert ext.cancel(ticket) is False
    assert status(ext, ticket) == "failed"
    assert remaining(ext) == 10


def test_a_hook_failing_on_a_cancelled_order_is_not_compensated_again(
    shop: tuple[Flask, FlashSale], redis_client: redis_lib.Redis
) -> None:
    _, ext = shop

    @ext.order_handler
    def cancel_then_fail(order: Order) -> None:
        ext.cancel(order.id)
        raise RuntimeError("boom")

    ticket = buy(ext, "alice")
    ext.run_worker(burst=True)
    assert status(ext, ticket) == "cancelled"
    assert remaining(ext) == 10
    assert redis_client.xlen("flashsale:{tee}:dead") == 0
    assert redis_client.xlen("flashsale:{tee}:orders") == 0


def test_cancel_of_an_unknown_ticket_raises(shop: tuple[Flask, FlashSale]) -> None:
    _, ext = shop
    with pytest.raises(TicketNotFound):
        ext.cancel("tee~AAAAAAAAAAAAAAAAAAAAAA")
    with pytest.raises(TicketNotFound):
        ext.cancel("not a ticket")


def test_cancel_sends_order_cancelled(shop: tuple[Flask, FlashSale]) -> None:
    app, ext = shop
    heard: list[tuple[str, str]] = []

    def on_cancelled(sender: Flask, ticket_id: str, reason: str) -> None:
        heard.append((ticket_id, reason))

    ticket = buy(ext, "alice")
    with order_cancelled.connected_to(on_cancelled, app):
        ext.cancel(ticket, reason="refund")
        ext.cancel(ticket, reason="refund")
    assert heard == [(ticket, "refund")]


@pytest.mark.parametrize("how", ["cancel", "compensation"])
def test_giving_stock_back_announces_the_change_to_caches(
    shop: tuple[Flask, FlashSale], redis_client: redis_lib.Redis, how: str
) -> None:
    _, ext = shop
    pubsub = redis_client.pubsub()
    pubsub.subscribe("flashsale:events")
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]
    ticket = buy(ext, "alice")
    if how == "cancel":
        ext.cancel(ticket)
    else:

        @ext.order_handler
        def broken(order: Order) -> None:
            raise RuntimeError("boom")

        ext.run_worker(burst=True)
    message = pubsub.get_message(timeout=5)
    pubsub.close()
    assert message is not None
    assert message["data"] == "changed tee"


def test_cancel_is_visible_at_once_in_the_cancelling_process(make_app: MakeApp) -> None:
    # A long cache TTL and no subscriber: only the local invalidation can
    # make the stock that came back visible to this process's next read.
    app, ext = make_app(FLASHSALE_CACHE_TTL=300)
    with app.app_context():
        ext.create_sale("tee", stock=1)
        ticket = buy(ext, "alice")
        assert ext.place_order("tee", "bob").status == "sold_out"
        assert remaining(ext) == 0
        ext.state().cache.stop()
        assert ext.cancel(ticket)
        assert remaining(ext) == 1
        assert ext.place_order("tee", "bob").status == "queued"
