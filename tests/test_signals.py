"""Signals a host can connect to around admission."""

from __future__ import annotations

from typing import Any

from flask import Flask

from flask_flashsale import FlashSale, order_admitted, sale_sold_out


def test_order_admitted_and_sale_sold_out_are_sent_with_the_app_as_sender(
    app: Flask, flashsale: FlashSale
) -> None:
    admitted: list[dict[str, Any]] = []
    sold_out: list[dict[str, Any]] = []

    def on_admitted(sender: Flask, **kw: Any) -> None:
        assert sender is app
        admitted.append(kw)

    def on_sold_out(sender: Flask, **kw: Any) -> None:
        assert sender is app
        sold_out.append(kw)

    flashsale.create_sale("tee", stock=2, per_user_limit=2)
    with order_admitted.connected_to(on_admitted), sale_sold_out.connected_to(on_sold_out):
        first = flashsale.place_order("tee", "alice")
        assert sold_out == []
        flashsale.place_order("tee", "bob")
        flashsale.place_order("tee", "carol")  # refused: no signal
    assert [a["user_id"] for a in admitted] == ["alice", "bob"]
    assert admitted[0] == {
        "sale_id": "tee",
        "user_id": "alice",
        "ticket_id": first.ticket_id,
        "quantity": 1,
        "remaining": 1,
    }
    assert sold_out == [{"sale_id": "tee"}]

