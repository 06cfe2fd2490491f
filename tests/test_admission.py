"""Admission through the Python API: every outcome, idempotency, windows, round trips."""

from __future__ import annotations

import time

import pytest
import redis as redis_lib

from flask_flashsale import FlashSale, InvalidRequest

from .helpers import MakeApp, redis_now


def test_admitted_order_is_queued_with_a_ticket_and_takes_stock(flashsale: FlashSale) -> None:
    flashsale.create_sale("tee", stock=3)
    admission = flashsale.place_order("tee", "alice")
    assert admission.status == "queued"
    assert admission.ok
    assert admission.ticket_id is not None and admission.ticket_id.startswith("tee~")
    assert admission.remaining == 2
    assert flashsale.get_sale("tee").remaining == 2  # type: ignore[union-attr]


def test_admitted_order_creates_a_queued_ticket_for_its_buyer(flashsale: FlashSale) -> None:
    flashsale.create_sale("tee", stock=3, per_user_limit=2)
    admission = flashsale.place_order("tee", "alice", quantity=2)
    ticket = flashsale.get_ticket(admission.ticket_id)  # type: ignore[arg-type]
    assert ticket is not None
    assert (ticket.sale_id, ticket.user_id, ticket.quantity, ticket.status) == (
        "tee",
        "alice",
        2,
        "queued",
    )


def test_admitted_order_is_appended_to_the_sale_stream(
    flashsale: FlashSale, redis_client: redis_lib.Redis
) -> None:
    flashsale.create_sale("tee", stock=3, price="12.50")
    admission = flashsale.place_order("tee", "alice")
    entries = redis_client.xrange("flashsale:{tee}:orders")
    assert len(entries) == 1
    fields = entries[0][1]
    assert fields["t"] == admission.ticket_id
    assert (fields["u"], fields["q"], fields["p"]) == ("alice", "1", "12.50")


def test_ticket_ids_are_unguessable_and_distinct(flashsale: FlashSale) -> None:
    flashsale.create_sale("tee", stock=50)
    ids = {flashsale.place_order("tee", f"u{i}").ticket_id for i in range(50)}
    assert len(ids) == 50
    assert all(len(t.split("~")[1]) == 22 for t in ids)  # type: ignore[union-attr]


def test_unknown_sale_is_not_found(flashsale: FlashSale) -> None:
    assert flashsale.place_order("nope", "alice").status == "not_found"


def test_sold_out_when_stock_is_gone(flashsale: FlashSale) -> None:
    flashsale.create_sale("tee", stock=1)
    assert flashsale.place_order("tee", "alice").status == "queued"
    refused = flashsale.place_order("tee", "bob")
    assert (refused.status, refused.remaining, refused.ticket_id) == ("sold_out", 0, None)


def test_quantity_above_remaining_is_sold_out_and_takes_nothing(flashsale: FlashSale) -> None:
    flashsale.create_sale("tee", stock=2, per_user_limit=5)
    assert flashsale.place_order("tee", "alice", quantity=3).status == "sold_out"
    assert flashsale.get_sale("tee").remaining == 2  # type: ignore[union-attr]


def test_per_user_limit_counts_units_across_orders(flashsale: FlashSale) -> None:
    flashsale.create_sale("tee", stock=10, per_user_limit=3)
    assert flashsale.place_order("tee", "alice", quantity=2).status == "queued"
    assert flashsale.place_order("tee", "alice", quantity=2).status == "limit_reached"
    assert flashsale.place_order("tee", "alice", quantity=1).status == "queued"
    assert flashsale.place_order("tee", "alice", quantity=1).status == "limit_reached"
    assert flashsale.get_sale("tee").remaining == 7  # type: ignore[union-attr]


def test_same_idempotency_key_returns_same_ticket_and_takes_stock_once(
    flashsale: FlashSale,
) -> None:
    flashsale.create_sale("tee", stock=5, per_user_limit=5)
    first = flashsale.place_order("tee", "alice", idempotency_key="click-1")
    again = flashsale.place_order("tee", "alice", idempotency_key="click-1")
    assert first.status == "queued"
    assert again.status == "duplicate"
    assert again.ticket_id == first.ticket_id
    assert flashsale.get_sale("tee").remaining == 4  # type: ignore[union-attr]


def test_idempotency_key_is_scoped_to_the_buyer(flashsale: FlashSale) -> None:
    flashsale.create_sale("tee", stock=5)
    a = flashsale.place_order("tee", "alice", idempotency_key="k")
    b = flashsale.place_order("tee", "bob", idempotency_key="k")
    assert a.status == b.status == "queued"
    assert a.ticket_id != b.ticket_id


def test_duplicate_is_answered_even_after_sell_out(flashsale: FlashSale) -> None:
    flashsale.create_sale("tee", stock=1)
    first = flashsale.place_order("tee", "alice", idempotency_key="k")
    assert flashsale.place_order("tee", "bob").status == "sold_out"
    again = flashsale.place_order("tee", "alice", idempotency_key="k")
    assert (again.status, again.ticket_id) == ("duplicate", first.ticket_id)


def test_sale_opens_when_redis_time_reaches_start(
    flashsale: FlashSale, redis_client: redis_lib.Redis
) -> None:
    flashsale.create_sale("tee", stock=5, starts_at=redis_now(redis_client) + 0.3)
    assert flashsale.place_order("tee", "alice").status == "not_started"
    time.sleep(0.4)
    assert flashsale.place_order("tee", "alice").status == "queued"


def test_refusals_take_no_stock_and_write_nothing(
    flashsale: FlashSale, redis_client: redis_lib.Redis
) -> None:
    now = redis_now(redis_client)
    flashsale.create_sale("later", stock=5, starts_at=now + 60)
    flashsale.create_sale("over", stock=5, starts_at=now - 60, ends_at=now - 1)
    before = sorted(redis_client.keys("*"))
    assert flashsale.place_order("later", "alice").status == "not_started"
    assert flashsale.place_order("over", "alice").status == "ended"
    assert flashsale.place_order("ghost", "alice").status == "not_found"
    assert sorted(redis_client.keys("*")) == before


@pytest.mark.parametrize("quantity", [0, -1, True, 1.0, "1", 10_000])
def test_invalid_quantity_is_rejected_before_redis(flashsale: FlashSale, quantity: object) -> None:
    flashsale.create_sale("tee", stock=5)
    with pytest.raises(InvalidRequest):
        flashsale.place_order("tee", "alice", quantity=quantity)  # type: ignore[arg-type]
    assert flashsale.get_sale("tee").remaining == 5  # type: ignore[union-attr]


def test_one_order_attempt_is_one_round_trip(flashsale: FlashSale, command_counter) -> None:
    flashsale.create_sale("tee", stock=10, per_user_limit=10)
    flashsale.place_order("tee", "warm-up", idempotency_key="warm")  # loads script and secret
    sent = command_counter.count(lambda: flashsale.place_order("tee", "alice"))
    assert len(sent) == 1, sent
    assert sent[0].startswith("EVALSHA")


def test_one_idempotent_order_attempt_is_one_round_trip(
    flashsale: FlashSale, command_counter
) -> None:
    flashsale.create_sale("tee", stock=10, per_user_limit=10)
    flashsale.place_order("tee", "warm-up", idempotency_key="warm")
    sent = command_counter.count(
        lambda: flashsale.place_order("tee", "alice", idempotency_key="k1")
    )
    assert [c.split()[0] for c in sent] == ["EVALSHA"]


def test_refused_order_attempt_is_one_round_trip(flashsale: FlashSale, command_counter) -> None:
    # One unit left, two asked: refused, but not "no unit left", so the
    # sold-out fast path (test_sold_out_fast_path.py) does not answer it.
    flashsale.create_sale("tee", stock=1, per_user_limit=5)
    flashsale.place_order("tee", "warm-up", quantity=2)
    sent = command_counter.count(lambda: flashsale.place_order("tee", "alice", quantity=2))
    assert [c.split()[0] for c in sent] == ["EVALSHA"]


def test_script_is_reloaded_after_redis_forgets_it(
    flashsale: FlashSale, redis_client: redis_lib.Redis
) -> None:
    flashsale.create_sale("tee", stock=3)
    assert flashsale.place_order("tee", "alice").status == "queued"
    redis_client.script_flush()
    assert flashsale.place_order("tee", "bob").status == "queued"


def script_hgets(redis_client: redis_lib.Redis) -> int:
    """``HGET`` calls Redis ran so far (``INFO commandstats`` counts a script's own commands)."""
    return int(redis_client.info("commandstats").get("cmdstat_hget", {}).get("calls", 0))


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "redis-py"])
def test_an_order_without_an_idempotency_key_looks_up_no_ticket(
    make_app: MakeApp, redis_client: redis_lib.Redis, fast: bool
) -> None:
    """A random ticket token is new: the script reads the buyer's count and list, not a ticket."""
    app, flashsale = make_app(FLASHSALE_FAST_ADMISSION=fast)
    with app.app_context():
        flashsale.create_sale("tee", stock=5, per_user_limit=2)
        redis_client.config_resetstat()
        assert flashsale.place_order("tee", "alice").status == "queued"
        assert script_hgets(redis_client) == 2
        redis_client.config_resetstat()
        assert flashsale.place_order("tee", "alice", idempotency_key="k1").status == "queued"
        assert script_hgets(redis_client) == 3  # the key's ticket may exist: it is looked up
