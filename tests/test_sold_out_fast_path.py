"""Once a sale is sold out, order attempts are refused from memory, without Redis."""

from __future__ import annotations

import time
from typing import Any

import redis as redis_lib
from flask import Flask

from flask_flashsale import FlashSale
from flask_flashsale.cache import SaleCache

from .helpers import PREFIX, CommandCounter, MakeApp, app_with_sale, wait_for, watched_sale


def sold_out_app(make_app: MakeApp, stock: int = 1, **config: Any) -> tuple[Flask, FlashSale]:
    """An app whose sale "tee" has just been sold out by one of its own buyers."""
    app, flashsale = make_app(**config)
    watched_sale(app, flashsale, stock)
    with app.app_context():
        for i in range(stock):
            assert flashsale.place_order("tee", f"early-{i}").status == "queued"
    return app, flashsale


def test_thousand_order_requests_after_sell_out_cost_no_redis_command(
    make_app: MakeApp, command_counter: CommandCounter
) -> None:
    app, _ = sold_out_app(make_app, FLASHSALE_CACHE_TTL=60)
    client = app.test_client()
    responses: list[Any] = []

    def crowd() -> None:
        for i in range(1000):
            responses.append(client.post(f"{PREFIX}/tee/order", headers={"X-User": f"u{i}"}))

    sent = command_counter.count(crowd)
    print(f"\n1,000 order requests after sell-out sent {len(sent)} Redis commands")
    assert sent == []
    assert {r.status_code for r in responses} == {409}
    assert {r.get_json(force=True)["code"] for r in responses} == {"sold_out"}
    assert {r.get_json(force=True)["remaining"] for r in responses} == {0}


def test_python_api_shares_the_fast_path(
    make_app: MakeApp, command_counter: CommandCounter
) -> None:
    app, flashsale = sold_out_app(make_app, FLASHSALE_CACHE_TTL=60)
    results: list[Any] = []
    with app.app_context():
        sent = command_counter.count(
            lambda: results.extend(flashsale.place_order("tee", f"u{i}") for i in range(1000))
        )
    assert sent == []
    assert {(a.status, a.remaining, a.ticket_id) for a in results} == {("sold_out", 0, None)}


def test_restock_lets_the_next_buyer_in(make_app: MakeApp) -> None:
    app, flashsale = sold_out_app(make_app, FLASHSALE_CACHE_TTL=60)
    with app.app_context():
        assert flashsale.place_order("tee", "bob").status == "sold_out"
        flashsale.restock("tee", 1)
        assert flashsale.place_order("tee", "bob").status == "queued"
        assert flashsale.place_order("tee", "carol").status == "sold_out"


def test_restock_in_another_app_lets_the_next_buyer_in(make_app: MakeApp) -> None:
    app, flashsale = sold_out_app(make_app, FLASHSALE_CACHE_TTL=60)
    admin, admin_ext = make_app()
    with app.app_context():
        assert flashsale.place_order("tee", "bob").status == "sold_out"
    with admin.app_context():
        admin_ext.restock("tee", 1)
    with app.app_context():
        wait_for(lambda: not FlashSale.state(app).cache.sold_out("tee"))
        assert flashsale.place_order("tee", "bob").status == "queued"


def test_stock_given_back_elsewhere_lets_the_next_buyer_in(
    make_app: MakeApp, redis_client: redis_lib.Redis
) -> None:
    """A cancel or compensation script gives stock back and publishes ``changed``."""
    app, flashsale = sold_out_app(make_app, FLASHSALE_CACHE_TTL=60)
    redis_client.hincrby("flashsale:{tee}:sale", "remaining", 1)
    redis_client.publish("flashsale:events", "changed tee")
    with app.app_context():
        wait_for(lambda: not FlashSale.state(app).cache.sold_out("tee"))
        assert flashsale.place_order("tee", "bob").status == "queued"


def test_sell_out_in_another_app_is_learned_from_the_event(
    make_app: MakeApp, command_counter: CommandCounter
) -> None:
    watcher, watcher_ext = make_app(FLASHSALE_CACHE_TTL=60)
    watched_sale(watcher, watcher_ext, stock=1)
    seller, seller_ext = make_app()
    with seller.app_context():
        assert seller_ext.place_order("tee", "alice").status == "queued"  # takes the last unit
    wait_for(lambda: FlashSale.state(watcher).cache.sold_out("tee"))
    with watcher.app_context():
        assert command_counter.count(lambda: watcher_ext.place_order("tee", "bob")) == []


def test_a_restock_nobody_announced_is_seen_after_the_ttl(
    make_app: MakeApp, redis_client: redis_lib.Redis
) -> None:
    """The bound: a lost ``changed`` message refuses buyers for at most the TTL."""
    app, flashsale = sold_out_app(make_app, FLASHSALE_CACHE_TTL=0.3)
    with app.app_context():
        assert flashsale.place_order("tee", "bob").status == "sold_out"
        redis_client.hincrby("flashsale:{tee}:sale", "remaining", 1)  # no event published
        restocked = time.monotonic()
        while flashsale.place_order("tee", "bob").status == "sold_out":
            assert time.monotonic() - restocked < 2, "refused long after the TTL"
            time.sleep(0.01)
    refused_for = time.monotonic() - restocked
    print(f"\nunannounced restock refused for {refused_for * 1000:.0f} ms (TTL 300 ms)")


def test_idempotent_retry_bypasses_the_fast_path_and_gets_its_ticket(
    make_app: MakeApp, command_counter: CommandCounter
) -> None:
    app, flashsale = make_app(FLASHSALE_CACHE_TTL=60)
    watched_sale(app, flashsale, stock=1)
    with app.app_context():
        first = flashsale.place_order("tee", "alice", idempotency_key="click-1")
        assert first.status == "queued"
        assert flashsale.place_order("tee", "bob").status == "sold_out"
        assert FlashSale.state(app).cache.sold_out("tee")
        replies: list[Any] = []
        sent = command_counter.count(
            lambda: replies.append(flashsale.place_order("tee", "alice", idempotency_key="click-1"))
        )
    assert [c.split()[0] for c in sent] == ["EVALSHA"]
    assert (replies[0].status, replies[0].ticket_id) == ("duplicate", first.ticket_id)


def test_idempotent_retry_over_http_gets_its_ticket_after_sell_out(make_app: MakeApp) -> None:
    app, flashsale = make_app(FLASHSALE_CACHE_TTL=60)
    client = app.test_client()
    with app.app_context():
        flashsale.create_sale("tee", stock=1)
    headers = {"X-User": "alice", "Idempotency-Key": "k"}
    first = client.post(f"{PREFIX}/tee/order", headers=headers)
    assert client.post(f"{PREFIX}/tee/order", headers={"X-User": "bob"}).status_code == 409
    again = client.post(f"{PREFIX}/tee/order", headers=headers)
    assert again.status_code == 202
    assert again.get_json()["ticket_id"] == first.get_json()["ticket_id"]


def test_too_big_an_order_does_not_mark_the_sale_sold_out(
    make_app: MakeApp, command_counter: CommandCounter
) -> None:
    app, flashsale = make_app(FLASHSALE_CACHE_TTL=60)
    watched_sale(app, flashsale, stock=1, per_user_limit=5)
    with app.app_context():
        refused = flashsale.place_order("tee", "alice", quantity=2)
        assert (refused.status, refused.remaining) == ("sold_out", 1)
        assert not FlashSale.state(app).cache.sold_out("tee")
        assert flashsale.place_order("tee", "bob").status == "queued"


def test_ttl_zero_turns_the_fast_path_off(
    make_app: MakeApp, command_counter: CommandCounter
) -> None:
    app, flashsale = app_with_sale(make_app, stock=1, FLASHSALE_CACHE_TTL=0)
    with app.app_context():
        flashsale.place_order("tee", "alice")
        assert flashsale.place_order("tee", "bob").status == "sold_out"
        sent = command_counter.count(lambda: flashsale.place_order("tee", "carol"))
    assert [c.split()[0] for c in sent] == ["EVALSHA"]


def test_a_sold_out_answer_that_raced_a_restock_event_is_not_remembered() -> None:
    cache = SaleCache(60)
    epoch = cache.epoch  # read before admission runs...
    cache.apply("changed tee")  # ...a restock is announced meanwhile...
    cache.note_sold_out("tee", epoch)  # ...and the answer was from before it
    assert not cache.sold_out("tee")
    cache.note_sold_out("tee", cache.epoch)
    assert cache.sold_out("tee")
