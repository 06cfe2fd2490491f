"""What the package shows its users: the registered hooks, and the names it exports."""

from __future__ import annotations

import dataclasses

import pytest
from flask import Flask

from flask_flashsale import FlashSale, Order, Ticket


def test_hooks_show_each_registered_function_and_none_for_the_rest() -> None:
    ext = FlashSale()

    def persist(order: Order) -> None:
        return None

    def cancel_row(ticket: Ticket) -> None:
        return None

    ext.order_handler(persist)
    ext.expiry_handler(cancel_row)
    hooks = ext.hooks
    assert hooks.order_handler is persist
    assert hooks.expiry_handler is cancel_row
    assert hooks.identity_loader is None
    assert hooks.limit_exempt_when is None
    assert hooks.reconcile_source is None
    assert hooks.dashboard_access is None


def test_hooks_are_read_only() -> None:
    ext = FlashSale()
    with pytest.raises(dataclasses.FrozenInstanceError):
        ext.hooks.order_handler = print  # type: ignore[misc]
    with pytest.raises(AttributeError):
        ext.hooks = None  # type: ignore[misc]


def test_a_hook_registered_later_shows_in_hooks(redis_url: str) -> None:
    app = Flask("later")
    app.config.update(SECRET_KEY="test", FLASHSALE_REDIS_URL=redis_url)
    ext = FlashSale(app)
    assert ext.hooks.order_handler is None
    ext.order_handler(print)
    assert ext.hooks.order_handler is print
