"""A buyer's own tickets for a sale: ``GET <prefix>/<sale_id>/orders`` and
``flashsale.user_tickets``, so an order whose answer was lost can be found."""

from __future__ import annotations

from typing import Any

import pytest
import redis as redis_lib

from flask_flashsale import FlashSale, SaleNotFound, Ticket
from flask_flashsale.admission import BUYER_INDEX_SLACK

from .helpers import ALICE, PREFIX, STRATEGIES, CommandCounter, MakeApp, problem, wait_for

INDEX = "flashsale:{tee}:buyers"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_an_order_whose_answer_was_lost_is_listed(make_app: MakeApp, strategy: str) -> None:
    app, flashsale = make_app(FLASHSALE_INVENTORY_STRATEGY=strategy)
    with app.app_context():
        flashsale.create_sale("tee", stock=5)
        # Admitted, but the client never saw the answer (timeout, 503...).
        admission = flashsale.place_order("tee", "alice")
    assert admission.status == "queued"
    client: Any = app.test_client()
    r = client.get(f"{PREFIX}/tee/orders", headers=ALICE)
    assert r.status_code == 200
    assert r.headers["Cache-Control"] == "no-store"
    shown = client.get(f"{PREFIX}/orders/{admission.ticket_id}", headers=ALICE).get_json()
    assert r.get_json() == {"tickets": [shown]}
    assert shown["ticket_id"] == admission.ticket_id
    assert shown["status"] == "queued"


def test_the_list_holds_only_the_buyers_own_tickets_of_that_sale(make_app: MakeApp) -> None:
    app, flashsale = make_app()
    with app.app_context():
        flashsale.create_sale("tee", stock=5, per_user_limit=3)
        flashsale.create_sale("mug", stock=5)
        mine = [flashsale.place_order("tee", "alice", q).ticket_id for q in (1, 2)]
        flashsale.place_order("tee", "bob")
        flashsale.place_order("mug", "alice")
    client: Any = app.test_client()
    tickets = client.get(f"{PREFIX}/tee/orders", headers=ALICE).get_json()["tickets"]
    assert [(t["ticket_id"], t["quantity"]) for t in tickets] == [(mine[0], 1), (mine[1], 2)]
    assert client.get(f"{PREFIX}/tee/orders", headers={"X-User": "carol"}).get_json() == {
        "tickets": []
    }


def test_the_list_shows_the_current_status_of_each_ticket(flashsale: FlashSale) -> None:
    flashsale.create_sale("tee", stock=5, per_user_limit=2)
    cancelled = flashsale.place_order("tee", "alice").ticket_id
    kept = flashsale.place_order("tee", "alice").ticket_id
    assert cancelled is not None and kept is not None
    flashsale.cancel(cancelled, reason="payment timeout")
    tickets = flashsale.user_tickets("tee", "alice")
    assert tickets == [
        Ticket(cancelled, "tee", "alice", 1, "cancelled", "payment timeout"),
        Ticket(kept, "tee", "alice", 1, "queued"),
    ]


def test_orders_list_without_a_buyer_is_401(client: Any, flashsale: FlashSale) -> None:
    flashsale.create_sale("tee", stock=5)
    problem(client.get(f"{PREFIX}/tee/orders"), 401, "identity_required")


@pytest.mark.parametrize("sale_id", ["nope", "a" * 65, "odd%20id"])
def test_orders_list_of_an_unknown_sale_is_404(client: Any, sale_id: str) -> None:
    problem(client.get(f"{PREFIX}/{sale_id}/orders", headers=ALICE), 404, "sale_not_found")


def test_user_tickets_rejects_an_invalid_sale_id(flashsale: FlashSale) -> None:
    with pytest.raises(SaleNotFound):
        flashsale.user_tickets("bad id", "alice")


def test_expired_tickets_are_skipped(flashsale: FlashSale, redis_client: redis_lib.Redis) -> None:
    flashsale.create_sale("tee", stock=5, per_user_limit=2)
    old = flashsale.place_order("tee", "alice").ticket_id
    new = flashsale.place_order("tee", "alice").ticket_id
    assert old is not None and new is not None
    ticket_key = "flashsale:{tee}:t:" + old.split("~")[1]
    redis_client.pexpire(ticket_key, 1)
    wait_for(lambda: not redis_client.exists(ticket_key))
    assert [t.id for t in flashsale.user_tickets("tee", "alice")] == [new]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_index_is_one_hash_per_sale_with_a_field_per_buyer(
    make_app: MakeApp, redis_client: redis_lib.Redis, strategy: str
) -> None:
    app, flashsale = make_app(FLASHSALE_INVENTORY_STRATEGY=strategy)
    with app.app_context():
        flashsale.create_sale("tee", stock=5, per_user_limit=2)
        first = flashsale.place_order("tee", "alice").ticket_id
        second = flashsale.place_order("tee", "alice").ticket_id
        flashsale.place_order("tee", "bob")
    assert first is not None and second is not None
    assert redis_client.hlen(INDEX) == 2
    assert redis_client.hget(INDEX, "alice") == f"{first.split('~')[1]} {second.split('~')[1]}"
    assert redis_client.keys("flashsale:{tee}:b*") == [INDEX]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_index_is_bounded_and_keeps_live_tickets_among_recent_give_backs(
    make_app: MakeApp, redis_client: redis_lib.Redis, strategy: str
) -> None:
    app, flashsale = make_app(FLASHSALE_INVENTORY_STRATEGY=strategy)
    with app.app_context():
        flashsale.create_sale("tee", stock=5, per_user_limit=2)
        held = flashsale.place_order("tee", "alice").ticket_id

        def buy_and_give_back() -> str:
            ticket = flashsale.place_order("tee", "alice").ticket_id
            assert ticket is not None
            flashsale.cancel(ticket)
            return ticket

        given_back = [buy_and_give_back() for _ in range(BUYER_INDEX_SLACK)]
        # The live ticket is still listed after BUYER_INDEX_SLACK give-backs...
        assert [t.id for t in flashsale.user_tickets("tee", "alice")] == [held, *given_back]
        given_back += [buy_and_give_back() for _ in range(10)]
        listed = [t.id for t in flashsale.user_tickets("tee", "alice")]
    # ...and the index never holds more than per_user_limit + BUYER_INDEX_SLACK
    # entries: the oldest go first (here, after that many give-backs, the live one).
    assert len(redis_client.hget(INDEX, "alice").split()) == 2 + BUYER_INDEX_SLACK
    assert listed == given_back[-(2 + BUYER_INDEX_SLACK) :]


def test_an_order_is_still_one_round_trip(
    flashsale: FlashSale, command_counter: CommandCounter, redis_client: redis_lib.Redis
) -> None:
    flashsale.create_sale("tee", stock=5)
    flashsale.place_order("tee", "warm-up", idempotency_key="warm")
    sent = command_counter.count(lambda: flashsale.place_order("tee", "alice"))
    assert [c.split()[0] for c in sent] == ["EVALSHA"]
    assert redis_client.hget(INDEX, "alice") is not None


def test_refused_attempts_write_no_index(
    flashsale: FlashSale, redis_client: redis_lib.Redis
) -> None:
    flashsale.create_sale("tee", stock=1)
    flashsale.place_order("tee", "bob")
    assert flashsale.place_order("tee", "alice").status == "sold_out"
    assert redis_client.hget(INDEX, "alice") is None


def test_delete_sale_removes_every_buyers_index(
    flashsale: FlashSale, redis_client: redis_lib.Redis
) -> None:
    flashsale.create_sale("tee", stock=5)
    for user in ("alice", "bob", "{odd}*user"):
        flashsale.place_order("tee", user)
    assert redis_client.hlen(INDEX) == 3
    flashsale.delete_sale("tee")
    assert not redis_client.exists(INDEX)
