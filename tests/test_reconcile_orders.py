"""A reconcile source that returns the host's orders with their ids (not just units).

``(order_id, user_id, units)`` rows let reconciliation name the exact tickets:
the confirmed ticket the host lacks is the one marked ``failed``, and a ticket
Redis forgot together with its buyer's units is restored as ``confirmed``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis as redis_lib
from flask import Flask

from flask_flashsale import FlashSale

from .helpers import MakeApp, buy


@pytest.fixture
def shop(make_app: MakeApp) -> Iterator[tuple[Flask, FlashSale, list[tuple[str, str, int]]]]:
    app, ext = make_app()
    rows: list[tuple[str, str, int]] = []  # the host's orders: (order id, buyer, units)
    ext.reconcile_source(lambda sale_id: [r for r in rows if r[0].startswith(sale_id + "~")])
    with app.app_context():
        ext.create_sale("tee", stock=10, per_user_limit=3)
        yield app, ext, rows


def confirm(client: redis_lib.Redis, ticket_id: str) -> None:
    sale_id, token = ticket_id.split("~")
    client.hset(f"flashsale:{{{sale_id}}}:t:{token}", "s", "confirmed")


def test_the_confirmed_ticket_the_host_lacks_is_the_one_marked_failed(
    shop: tuple[Flask, FlashSale, list[tuple[str, str, int]]], redis_client: redis_lib.Redis
) -> None:
    _, ext, rows = shop
    lost = buy(ext, "alice")  # confirmed in Redis; the host's write was lost
    kept = buy(ext, "alice")  # the newer one, which the host has
    for ticket in (lost, kept):
        confirm(redis_client, ticket)
    rows.append((kept, "alice", 1))

    [report] = ext.reconcile("tee", fix=True)
    (drift,) = report.users
    assert (drift.delta, drift.stale_tickets) == (-1, (lost,))
    assert ext.get_ticket(lost).status == "failed"  # type: ignore[union-attr]
    assert ext.get_ticket(kept).status == "confirmed"  # type: ignore[union-attr]
    assert ext.get_sale("tee").remaining == 9  # type: ignore[union-attr]


def test_a_ticket_forgotten_with_its_units_is_restored(
    shop: tuple[Flask, FlashSale, list[tuple[str, str, int]]], redis_client: redis_lib.Redis
) -> None:
    _, ext, rows = shop
    ticket = buy(ext, "bob")
    rows.append((ticket, "bob", 1))
    # Redis forgets the ticket and bob's unit (it came back from an older state).
    redis_client.delete("flashsale:{tee}:t:" + ticket.split("~")[1])
    redis_client.hdel("flashsale:{tee}:users", "bob")
    redis_client.hincrby("flashsale:{tee}:sale", "remaining", 1)

    [report] = ext.reconcile("tee", fix=True)
    (drift,) = report.users
    assert (drift.delta, drift.missing_tickets, drift.missing_units) == (1, (ticket,), (1,))
    restored = ext.get_ticket(ticket)
    assert restored is not None
    assert (restored.user_id, restored.quantity, restored.status) == ("bob", 1, "confirmed")
    assert redis_client.ttl("flashsale:{tee}:t:" + ticket.split("~")[1]) > 0
    assert ext.get_sale("tee").remaining == 9  # type: ignore[union-attr]
    assert ext.reconcile("tee")[0].ok


def test_an_expired_ticket_whose_units_are_counted_is_not_a_difference(
    shop: tuple[Flask, FlashSale, list[tuple[str, str, int]]], redis_client: redis_lib.Redis
) -> None:
    _, ext, rows = shop
    ticket = buy(ext, "carol")
    rows.append((ticket, "carol", 1))
    redis_client.delete("flashsale:{tee}:t:" + ticket.split("~")[1])  # its TTL ran out
    [report] = ext.reconcile("tee", fix=True)
    assert report.ok
    assert ext.get_ticket(ticket) is None
