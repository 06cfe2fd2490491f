"""``flask flashsale reconcile``: Redis against the host's orders, and ``--fix``.

The host here keeps its orders in SQLite, as the example shop does; "the worker
confirmed an order" is simulated by writing the host row and setting the
ticket's status to ``confirmed``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_lib
from flask import Flask

from flask_flashsale import FlashSale, reconcile
from flask_flashsale.cli import flashsale_cli

from .helpers import MakeApp


class Shop:
    """A host app with its own order table and a reconcile source."""

    def __init__(self, app: Flask, flashsale: FlashSale, client: redis_lib.Redis) -> None:
        self.app = app
        self.flashsale = flashsale
        self.redis = client
        self.db = sqlite3.connect(":memory:", check_same_thread=False)
        self.db.execute(
            "CREATE TABLE orders (id TEXT PRIMARY KEY, user_id TEXT, sale_id TEXT, quantity INT)"
        )

        @flashsale.reconcile_source
        def confirmed_units(sale_id: str) -> dict[str, int]:
            rows = self.db.execute(
                "SELECT user_id, SUM(quantity) FROM orders WHERE sale_id = ? GROUP BY user_id",
                (sale_id,),
            )
            return dict(rows.fetchall())

    def buy(self, sale_id: str, user: str, quantity: int = 1) -> str:
        with self.app.app_context():
            admission = self.flashsale.place_order(sale_id, user, quantity)
        assert admission.status == "queued"
        assert admission.ticket_id is not None
        return admission.ticket_id

    def host_writes(self, ticket_id: str, user: str, quantity: int = 1) -> None:
        sale_id = ticket_id.split("~")[0]
        self.db.execute(
            "INSERT INTO orders VALUES (?, ?, ?, ?)", (ticket_id, user, sale_id, quantity)
        )
        self.db.commit()

    def mark_confirmed(self, ticket_id: str) -> None:
        sale_id, token = ticket_id.split("~")
        self.redis.hset(f"flashsale:{{{sale_id}}}:t:{token}", "s", "confirmed")

    def confirm(self, ticket_id: str, user: str, quantity: int = 1) -> None:
        """What the worker does: the host's write, then the ticket."""
        self.host_writes(ticket_id, user, quantity)
        self.mark_confirmed(ticket_id)

    def reconcile(self, *args: str) -> Any:
        return self.app.test_cli_runner().invoke(flashsale_cli, ["reconcile", *args])

    def remaining(self, sale_id: str = "tee") -> int:
        return int(self.redis.hget(f"flashsale:{{{sale_id}}}:sale", "remaining"))  # type: ignore[arg-type]

    def held(self, sale_id: str = "tee") -> dict[str, str]:
        return self.redis.hgetall(f"flashsale:{{{sale_id}}}:users")


@pytest.fixture
def shop(make_app: MakeApp, redis_client: redis_lib.Redis) -> Iterator[Shop]:
    app, flashsale = make_app()
    with app.app_context():
        flashsale.create_sale("tee", stock=10)
    shop = Shop(app, flashsale, redis_client)
    yield shop
    shop.db.close()


def test_books_in_agreement_report_no_difference(shop: Shop) -> None:
    for user in ("alice", "bob"):
        shop.confirm(shop.buy("tee", user), user)
    shop.buy("tee", "carol")  # admitted, still queued for the worker
    result = shop.reconcile("tee")
    assert result.exit_code == 0, result.output
    assert "in agreement" in result.output
    with shop.app.app_context():
        [report] = shop.flashsale.reconcile("tee")
    assert report.ok and report.users == ()


def test_order_the_host_wrote_before_the_worker_marked_it_is_not_a_difference(
    shop: Shop,
) -> None:
    ticket = shop.buy("tee", "alice")
    shop.host_writes(ticket, "alice")  # the worker died before marking the ticket
    with shop.app.app_context():
        [report] = shop.flashsale.reconcile("tee")
    assert report.ok


def test_host_order_whose_stock_was_never_taken_is_found(shop: Shop) -> None:
    shop.confirm(shop.buy("tee", "alice"), "alice")
    shop.host_writes("tee~" + "c" * 22, "carol")  # confirmed in the DB, not in Redis
    result = shop.reconcile("tee")
    assert result.exit_code == 1
    assert "carol: Redis holds 0 (pending 0, confirmed 0), host has 1 -> take 1" in result.output
    assert "remaining 9 -> 8" in result.output
    assert shop.remaining() == 9  # a report changes nothing


def test_fix_takes_the_stock_of_a_host_order_redis_missed(shop: Shop) -> None:
    shop.confirm(shop.buy("tee", "alice"), "alice")
    shop.host_writes("tee~" + "c" * 22, "carol")
    result = shop.reconcile("tee", "--fix")
    assert result.exit_code == 0, result.output
    assert "repaired: remaining is now 8" in result.output
    assert shop.remaining() == 8
    assert shop.held() == {"alice": "1", "carol": "1"}
    again = shop.reconcile("tee")
    assert (again.exit_code, "in agreement" in again.output) == (0, True)


def test_stock_taken_without_a_host_order_is_found(shop: Shop) -> None:
    ticket = shop.buy("tee", "dave")
    shop.mark_confirmed(ticket)  # Redis says confirmed; the host has no such order
    result = shop.reconcile("tee")
    assert result.exit_code == 1
    expected = "dave: Redis holds 1 (pending 0, confirmed 1), host has 0 -> give back 1"
    assert expected in result.output
    assert f"ticket {ticket} confirmed in Redis, not in the host" in result.output


def test_fix_gives_back_stock_no_host_order_accounts_for(shop: Shop) -> None:
    shop.confirm(shop.buy("tee", "alice"), "alice")
    ticket = shop.buy("tee", "dave")
    shop.mark_confirmed(ticket)
    result = shop.reconcile("tee", "--fix")
    assert result.exit_code == 0, result.output
    assert shop.remaining() == 9
    assert shop.held() == {"alice": "1"}
    with shop.app.app_context():
        stale = shop.flashsale.get_ticket(ticket)
    assert stale is not None
    assert (stale.status, stale.reason) == ("failed", "reconciled")
    assert shop.reconcile("tee").exit_code == 0


def test_units_lost_from_the_sale_alone_are_given_back(shop: Shop) -> None:
    shop.confirm(shop.buy("tee", "alice"), "alice")
    shop.redis.hincrby("flashsale:{tee}:sale", "remaining", -2)  # taken by nobody
    with shop.app.app_context():
        [found] = shop.flashsale.reconcile("tee")
        assert (found.users, found.remaining_delta) == ((), 2)
        [fixed] = shop.flashsale.reconcile("tee", fix=True)
    assert fixed.fixed and fixed.remaining_after == 9
    assert shop.remaining() == 9


def test_host_holding_more_than_was_offered_is_reported_as_oversold(
    make_app: MakeApp, redis_client: redis_lib.Redis
) -> None:
    app, flashsale = make_app()
    with app.app_context():
        flashsale.create_sale("one", stock=1)
    shop = Shop(app, flashsale, redis_client)
    shop.confirm(shop.buy("one", "alice"), "alice")
    shop.host_writes("one~" + "b" * 22, "bob")
    result = shop.reconcile("one", "--fix")
    assert "OVERSOLD: buyers hold 1 units more than the stock" in result.output
    assert "repaired: remaining is now 0 (1 over the stock)" in result.output
    assert shop.remaining("one") == -1  # the books: stock 1 - 2 units held
    assert shop.held("one") == {"alice": "1", "bob": "1"}


def test_buyer_whose_order_moves_during_the_check_is_left_alone(shop: Shop) -> None:
    shop.confirm(shop.buy("tee", "alice"), "alice")
    source = shop.flashsale._reconcile_source
    assert source is not None

    def racing_source(sale_id: str) -> Any:
        # While the host is read, erin is admitted and the worker writes her order.
        shop.host_writes(shop.buy("tee", "erin"), "erin")
        return source(sale_id)

    shop.flashsale.reconcile_source(racing_source)
    with shop.app.app_context():
        [report] = shop.flashsale.reconcile("tee", fix=True)
    assert report.in_flight == ("erin",)
    assert report.ok and not report.fixed
    assert shop.remaining() == 8
    assert shop.held() == {"alice": "1", "erin": "1"}


def test_without_a_sale_id_every_sale_is_reconciled(shop: Shop) -> None:
    with shop.app.app_context():
        shop.flashsale.create_sale("cap", stock=5)
    shop.host_writes("cap~" + "z" * 22, "zoe")
    result = shop.reconcile()
    assert result.exit_code == 1
    assert "cap: stock 5, remaining 5, sold 0" in result.output
    assert "tee: stock 10, remaining 10, sold 0" in result.output
    assert "zoe" in result.output


def test_fix_waits_for_the_sale_lock_and_gives_up(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    shop.host_writes("tee~" + "c" * 22, "carol")
    monkeypatch.setattr(reconcile, "REPAIR_WAIT", 0.1)
    with shop.app.app_context():
        other = shop.flashsale.state().strategy
        assert other.name == "lua"
        # Someone else (a lock-strategy admission, another reconcile) holds the sale lock.
        shop.redis.set("flashsale:{tee}:lock", "someone-else", px=30_000)
    result = shop.reconcile("tee", "--fix")
    assert result.exit_code == 1
    assert "lock_timeout" in result.output
    assert shop.remaining() == 10


def test_unknown_sale_is_an_error(shop: Shop) -> None:
    result = shop.reconcile("ghost")
    assert result.exit_code == 1
    assert "sale_not_found" in result.output


def test_reconcile_needs_a_source(make_app: MakeApp) -> None:
    app, _ = make_app()
    result = app.test_cli_runner().invoke(flashsale_cli, ["reconcile"])
    assert result.exit_code == 2
    assert "reconcile_source" in result.output
