"""Payments in the books: reconcile, ``flask flashsale status`` and the metrics know
``awaiting_payment``, ``paid`` and ``expired``."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis as redis_lib
from flask import Flask

from flask_flashsale import FlashSale
from flask_flashsale.cli import flashsale_cli

from .helpers import MakeApp, buy, ticket, wait_past_pay_by
from .worker_host import FAST

Rows = list[tuple[str, str, int]]


@pytest.fixture
def shop(make_app: MakeApp) -> Iterator[tuple[Flask, FlashSale, Rows]]:
    """A sale with a 0.2 s payment timeout; the host's orders are ``rows``."""
    app, ext = make_app(**FAST, FLASHSALE_METRICS=True)
    rows: Rows = []  # the host's orders: (order id, buyer, units)
    ext.order_handler(lambda order: rows.append((order.id, order.user_id, order.quantity)))
    ext.reconcile_source(lambda sale_id: list(rows))
    with app.app_context():
        ext.create_sale("tee", stock=10, payment_timeout=0.2)
        yield app, ext, rows


def expire(ext: FlashSale, client: redis_lib.Redis, ticket_id: str) -> None:
    """Let the hold's pay_by pass (Redis time), then run a burst worker."""
    wait_past_pay_by(ext, client, ticket_id)
    ext.run_worker(burst=True)
    assert ticket(ext, ticket_id).status == "expired"


def test_awaiting_and_paid_tickets_the_host_has_agree(
    shop: tuple[Flask, FlashSale, Rows],
) -> None:
    _, ext, _ = shop
    buy(ext, "alice")
    paid = buy(ext, "bob")
    ext.run_worker(burst=True)
    ext.mark_paid(paid)
    [report] = ext.reconcile("tee")
    assert report.ok, report.describe()


@pytest.mark.parametrize("pay", [False, True], ids=["awaiting_payment", "paid"])
def test_a_live_ticket_the_host_lacks_is_marked_failed(
    shop: tuple[Flask, FlashSale, Rows], pay: bool
) -> None:
    _, ext, rows = shop
    lost = buy(ext, "alice")
    ext.run_worker(burst=True)
    if pay:
        ext.mark_paid(lost)
    rows.clear()  # the host's write was lost
    [report] = ext.reconcile("tee", fix=True)
    (drift,) = report.users
    assert (drift.delta, drift.confirmed, drift.stale_tickets) == (-1, 1, (lost,))
    assert ticket(ext, lost).status == "failed"
    assert ext.get_sale("tee").remaining == 10  # type: ignore[union-attr]
    assert ext.reconcile("tee")[0].ok


def test_a_host_order_of_an_expired_hold_is_not_taken_again(
    shop: tuple[Flask, FlashSale, Rows], redis_client: redis_lib.Redis
) -> None:
    _, ext, rows = shop
    held = buy(ext, "alice")
    ext.run_worker(burst=True)
    expire(ext, redis_client, held)  # no expiry hook: the host still has its row
    assert rows == [(held, "alice", 1)]
    [report] = ext.reconcile("tee", fix=True)
    assert report.ok
    assert report.expired_orders == (held,)
    assert any("expired" in line and held in line for line in report.describe())
    assert ext.get_sale("tee").remaining == 10  # type: ignore[union-attr]
    assert redis_client.hget("flashsale:{tee}:users", "alice") is None


def test_status_counts_awaiting_paid_and_expired(
    shop: tuple[Flask, FlashSale, Rows], redis_client: redis_lib.Redis
) -> None:
    app, ext, _ = shop
    ext.create_sale("mug", stock=3)
    awaiting, paid, lapsed = buy(ext, "alice"), buy(ext, "bob"), buy(ext, "carol")
    ext.run_worker(burst=True)
    ext.mark_paid(paid)
    expire(ext, redis_client, lapsed)
    assert ticket(ext, awaiting).status == "expired"  # its hold lapsed at the same time
    ext.create_sale("tee", stock=10, payment_timeout=60)
    buy(ext, "dave")
    ext.run_worker(burst=True)

    runner = app.test_cli_runner()
    doc = json.loads(runner.invoke(flashsale_cli, ["status", "--json"]).output)
    by_sale = {s["sale_id"]: s for s in doc["sales"]}
    assert {k: by_sale["tee"][k] for k in ("awaiting_payment", "paid", "expired")} == {
        "awaiting_payment": 1,
        "paid": 1,
        "expired": 2,
    }
    assert by_sale["mug"]["payment_timeout"] is None
    assert by_sale["tee"]["payment_timeout"] == 60
    text = runner.invoke(flashsale_cli, ["status"]).output
    header, *rows = text.split("\nPAYMENTS", 1)[1].split("\n\n")[0].splitlines()
    assert header.split() == ["TIMEOUT", "AWAITING", "PAID", "EXPIRED"]
    assert [r.split() for r in rows] == [["tee", "60s", "1", "1", "2"]]  # not mug: no timeout


def test_metrics_count_awaiting_paid_and_expired(
    shop: tuple[Flask, FlashSale, Rows], redis_client: redis_lib.Redis
) -> None:
    app, ext, _ = shop
    awaiting, paid = buy(ext, "alice"), buy(ext, "bob")
    ext.run_worker(burst=True)
    ext.mark_paid(paid)
    expire(ext, redis_client, awaiting)
    ext.create_sale("tee", stock=10, payment_timeout=60)
    buy(ext, "carol")
    ext.run_worker(burst=True)
    metrics = FlashSale.state(app).metrics
    assert metrics is not None

    def sample(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, {"sale": "tee", **labels})  # type: ignore[union-attr]

    assert sample("flashsale_tickets_awaiting_payment") == 1
    assert sample("flashsale_tickets_paid_total") == 1
    assert sample("flashsale_tickets_expired_total") == 1
    assert sample("flashsale_orders_settled_total", outcome="expired") == 1


def test_create_takes_a_payment_timeout(make_app: MakeApp) -> None:
    app, ext = make_app()
    runner = app.test_cli_runner()
    result = runner.invoke(
        flashsale_cli, ["create", "tee", "--stock", "5", "--payment-timeout", "900"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["payment_timeout"] == 900
    with app.app_context():
        assert ext.get_sale("tee").payment_timeout == 900  # type: ignore[union-attr]
    refused = runner.invoke(
        flashsale_cli, ["create", "tee", "--stock", "5", "--payment-timeout", "0"]
    )
    assert refused.exit_code == 2
    assert "payment_timeout" in refused.output
    assert "Traceback" not in refused.output
