"""An admin who cuts a sale's stock below what is already sold never causes an oversell.

The books: ``remaining`` in the sale's hash is always ``stock - live units``
(units of ``queued`` and ``confirmed`` tickets), and may go below zero when an
admin re-creates a sale with less stock or restocks negatively; units already
admitted are not taken from their buyers. Everything that shows ``remaining``
shows ``max(0, stock - live)``, and no order is admitted until enough units
came back (cancelled, failed) to bring ``stock - live`` up to its quantity.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest
import redis as redis_lib
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_flashsale import FlashSale, Order
from flask_flashsale.cli import flashsale_cli
from flask_flashsale.metrics import available as metrics_available

from .helpers import PREFIX, STRATEGIES, MakeApp, buy, ticket
from .worker_host import FAST


def live_units(client: redis_lib.Redis, sale_id: str) -> int:
    """Units of the sale's tickets that are queued or confirmed (admitted, not given back)."""
    total = 0
    for key in client.scan_iter(match=f"flashsale:{{{sale_id}}}:t:*"):
        status, quantity = client.hmget(key, "s", "q")
        if status in ("queued", "confirmed"):
            total += int(quantity)  # type: ignore[arg-type]
    return total


def raw_remaining(client: redis_lib.Redis, sale_id: str) -> int:
    return int(client.hget(f"flashsale:{{{sale_id}}}:sale", "remaining"))  # type: ignore[arg-type]


def shown_remaining(ext: FlashSale, sale_id: str) -> int:
    """``remaining`` as the Python API shows it, read from Redis (not the cache)."""
    sale = FlashSale.state().sales.get(sale_id)
    assert sale is not None
    return sale.remaining


def buyers() -> Iterator[str]:
    """``buyer0``, ``buyer1``...: a new buyer for each order."""
    return (f"buyer{i}" for i in itertools.count())


def eight_of_ten_sold(ext: FlashSale, users: Iterator[str]) -> list[str]:
    """Sale "tee" created with 10 units, 8 of them sold, one each to the next 8 ``users``
    (app context pushed); their tickets, oldest first."""
    ext.create_sale("tee", stock=10)
    return [buy(ext, next(users)) for _ in range(8)]


def next_buyer_status(ext: FlashSale, users: Iterator[str]) -> str:
    """What an order of one unit by the next of ``users`` gets: its admission status."""
    return ext.place_order("tee", next(users)).status


@pytest.fixture(params=STRATEGIES)
def shop(request: pytest.FixtureRequest, make_app: MakeApp) -> Iterator[tuple[Flask, FlashSale]]:
    app, ext = make_app(FLASHSALE_INVENTORY_STRATEGY=request.param, **FAST)
    ext.order_handler(lambda order: None)
    with app.app_context():
        yield app, ext


class Sold(NamedTuple):
    """A shop whose sale "tee" has 10 units, 8 of them sold (buyer0..buyer7)."""

    app: Flask
    ext: FlashSale
    tickets: list[str]  # the 8 tickets, oldest first
    users: Iterator[str]  # buyers who have not ordered yet


@pytest.fixture
def eight_sold(shop: tuple[Flask, FlashSale]) -> Sold:
    """For each strategy (the shop fixture): 8 of sale "tee"'s 10 units sold."""
    app, ext = shop
    users = buyers()
    return Sold(app, ext, eight_of_ten_sold(ext, users), users)


@pytest.fixture
def declining(make_app: MakeApp) -> tuple[Flask, FlashSale, set[str]]:
    """An app whose hook declines every order of the buyers in the set (``buyer0`` at
    first), one attempt an order: a declined order fails and gives its units back."""
    app, ext = make_app(**FAST, FLASHSALE_MAX_ATTEMPTS=1)
    failing = {"buyer0"}

    @ext.order_handler
    def persist(order: Order) -> None:
        if order.user_id in failing:
            raise RuntimeError("card declined")

    return app, ext, failing


def test_a_cancel_after_a_cut_below_what_was_sold_admits_nobody(
    eight_sold: Sold, redis_client: redis_lib.Redis
) -> None:
    app, ext, tickets, users = eight_sold

    result = app.test_cli_runner().invoke(flashsale_cli, ["create", "tee", "--stock", "5"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["remaining"] == 0

    assert ext.cancel(tickets[0]) is True
    assert shown_remaining(ext, "tee") == 0
    assert next_buyer_status(ext, users) == "sold_out"
    assert live_units(redis_client, "tee") == 7

    for ticket_id in tickets[1:3]:
        assert ext.cancel(ticket_id) is True
    assert live_units(redis_client, "tee") == 5
    assert next_buyer_status(ext, users) == "sold_out"

    assert ext.cancel(tickets[3]) is True  # 4 live for a stock of 5: one unit free again
    assert shown_remaining(ext, "tee") == 1
    assert buy(ext, next(users))
    assert next_buyer_status(ext, users) == "sold_out"
    assert live_units(redis_client, "tee") == 5


def test_a_negative_restock_may_withdraw_more_than_remains(
    eight_sold: Sold, redis_client: redis_lib.Redis
) -> None:
    _, ext, tickets, users = eight_sold

    assert ext.restock("tee", -5) == 0
    sale = ext.get_sale("tee")
    assert sale is not None
    assert (sale.stock, sale.remaining, sale.status) == (5, 0, "sold_out")
    assert raw_remaining(redis_client, "tee") == -3

    assert ext.cancel(tickets[0]) is True
    assert next_buyer_status(ext, users) == "sold_out"
    assert live_units(redis_client, "tee") == 7


def test_a_negative_restock_below_zero_stock_is_refused(
    eight_sold: Sold, redis_client: redis_lib.Redis
) -> None:
    with pytest.raises(ValueError, match="stock"):
        eight_sold.ext.restock("tee", -11)
    assert redis_client.hmget("flashsale:{tee}:sale", "stock", "remaining") == ["10", "2"]


def test_a_restock_after_a_cut_frees_only_what_exceeds_the_live_units(eight_sold: Sold) -> None:
    _, ext, _, users = eight_sold
    ext.create_sale("tee", stock=5)  # 8 live, stock 5
    assert ext.restock("tee", 2) == 0  # stock 7: still one unit over
    assert next_buyer_status(ext, users) == "sold_out"
    assert ext.restock("tee", 2) == 1  # stock 9
    buy(ext, next(users))
    assert next_buyer_status(ext, users) == "sold_out"


def test_an_order_that_fails_after_a_cut_does_not_reopen_the_sale(
    declining: tuple[Flask, FlashSale, set[str]], redis_client: redis_lib.Redis
) -> None:
    app, ext, _ = declining
    users = buyers()
    with app.app_context():
        first, *_ = eight_of_ten_sold(ext, users)  # buyer0's order is declined
        ext.create_sale("tee", stock=5)
        ext.run_worker(burst=True)
        assert ticket(ext, first).status == "failed"  # stock given back
        assert shown_remaining(ext, "tee") == 0
        assert raw_remaining(redis_client, "tee") == -2
        assert next_buyer_status(ext, users) == "sold_out"
    assert live_units(redis_client, "tee") == 7


def test_a_dead_letter_cannot_be_requeued_while_units_are_over_the_stock(
    declining: tuple[Flask, FlashSale, set[str]], redis_client: redis_lib.Redis
) -> None:
    app, ext, failing = declining
    with app.app_context():
        ext.create_sale("tee", stock=3)
        for i in range(3):
            buy(ext, f"buyer{i}")
        ext.run_worker(burst=True)  # buyer0's order is dead-lettered, one unit back
        ext.create_sale("tee", stock=1)  # 2 live for a stock of 1
        failing.clear()
        runner = app.test_cli_runner()
        listed = runner.invoke(flashsale_cli, ["dead-letters", "tee", "--json"])
        entry_id = json.loads(listed.output.splitlines()[0])["entry_id"]
        result = runner.invoke(flashsale_cli, ["dead-letters", "tee", "--requeue", entry_id])
        assert result.exit_code != 0
        assert "sold_out" in result.output
    assert live_units(redis_client, "tee") == 2
    assert raw_remaining(redis_client, "tee") == -1


def test_remaining_shows_zero_everywhere_while_units_are_over_the_stock(
    make_app: MakeApp,
) -> None:
    config: dict[str, Any] = {"FLASHSALE_METRICS": True} if metrics_available() else {}
    app, ext = make_app(**config)
    users = buyers()
    with app.app_context():
        eight_of_ten_sold(ext, users)
        created = ext.create_sale("tee", stock=5)
        assert created.remaining == 0
        refused = ext.place_order("tee", next(users))
        assert (refused.status, refused.remaining) == ("sold_out", 0)
        replay = ext.place_order("tee", "buyer0", idempotency_key="k")  # limit reached
        assert replay.remaining == 0
        [listed] = ext.list_sales()
        assert listed.remaining == 0

    client = app.test_client()
    detail = client.get(f"{PREFIX}/tee").get_json()
    assert (detail["remaining"], detail["status"]) == (0, "sold_out")
    assert client.get(PREFIX).get_json()["sales"][0]["remaining"] == 0
    answer = client.post(f"{PREFIX}/tee/order", headers={"X-User": "late"})
    assert (answer.status_code, answer.get_json(force=True)["remaining"]) == (409, 0)

    runner = app.test_cli_runner()
    status = runner.invoke(flashsale_cli, ["status", "--json"])
    assert json.loads(status.output)["sales"][0]["remaining"] == 0
    table = runner.invoke(flashsale_cli, ["status"])
    assert "0/5" in table.output
    restock = runner.invoke(flashsale_cli, ["restock", "tee", "1"])
    assert restock.output.startswith("tee: 0 remaining")
    if metrics_available():
        with app.app_context():
            text = ext.metrics_response().get_data(as_text=True)
        assert 'flashsale_stock_remaining{sale="tee"} 0.0' in text


def test_reconcile_fix_keeps_the_units_over_the_stock_counted(
    make_app: MakeApp, redis_client: redis_lib.Redis
) -> None:
    app, ext = make_app()
    host: dict[str, int] = {}
    ext.reconcile_source(lambda sale_id: host)
    users = buyers()
    with app.app_context():
        tickets = eight_of_ten_sold(ext, users)
        host.update({f"buyer{i}": 1 for i in range(8)})
        host["ghost"] = 1  # an order the host has and Redis never counted
        ext.create_sale("tee", stock=5)
        [report] = ext.reconcile("tee", fix=True)
        assert report.fixed
        assert raw_remaining(redis_client, "tee") == 5 - 9
        assert ext.cancel(tickets[0]) is True
        del host["buyer0"]  # the host cancels its order too
        assert next_buyer_status(ext, users) == "sold_out"
        assert ext.reconcile("tee")[0].ok


# -- any sequence of admin changes, orders, cancels and worker runs ----------

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("create"), st.integers(0, 12)),
        st.tuples(st.just("restock"), st.integers(-12, 12)),
        st.tuples(st.just("order"), st.integers(1, 3)),
        st.tuples(st.just("order"), st.integers(1, 3)),
        st.tuples(st.just("cancel"), st.integers(0, 99)),
        st.tuples(st.just("work"), st.just(0)),
    ),
    min_size=1,
    max_size=25,
)
_sales = itertools.count()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(first_stock=st.integers(0, 12), ops=OPS)
def test_no_sequence_of_admin_changes_and_cancels_lets_live_units_grow_past_the_stock(
    shop: tuple[Flask, FlashSale],
    redis_client: redis_lib.Redis,
    first_stock: int,
    ops: list[tuple[str, int]],
) -> None:
    _, ext = shop
    sale_id = f"s{next(_sales)}"
    users = (f"u{i}" for i in itertools.count())
    stock = first_stock
    tickets: dict[str, int] = {}  # ticket id -> quantity, every ticket ever admitted
    live: set[str] = set()
    # One app per strategy (the shop fixture), a new sale per example.
    ext.create_sale(sale_id, stock=stock, per_user_limit=100)
    for op, n in ops:
        before = sum(tickets[t] for t in live)
        if op == "create":
            stock = n
            sale = ext.create_sale(sale_id, stock=n, per_user_limit=100)
            assert sale.remaining == max(0, stock - before)
        elif op == "restock":
            if stock + n < 0:
                with pytest.raises(ValueError):
                    ext.restock(sale_id, n)
            else:
                stock += n
                assert ext.restock(sale_id, n) == max(0, stock - before)
        elif op == "order":
            admission = ext.place_order(sale_id, next(users), n)
            if stock - before >= n:
                assert admission.status == "queued", (stock, before, n)
                assert admission.ticket_id is not None
                tickets[admission.ticket_id] = n
                live.add(admission.ticket_id)
            else:
                assert admission.status == "sold_out", (stock, before, n)
            assert admission.remaining == max(0, stock - sum(tickets[t] for t in live))
        elif op == "cancel" and tickets:
            ticket_id = sorted(tickets)[n % len(tickets)]
            assert ext.cancel(ticket_id) is (ticket_id in live)
            live.discard(ticket_id)
        elif op == "work":
            ext.run_worker(burst=True)

        held = sum(tickets[t] for t in live)
        assert live_units(redis_client, sale_id) == held
        assert raw_remaining(redis_client, sale_id) == stock - held
        assert shown_remaining(ext, sale_id) == max(0, stock - held)
        # Units over the stock only ever come from an admin cut, never from an admission.
        assert held <= max(stock, before)
