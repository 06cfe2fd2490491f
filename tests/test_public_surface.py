"""What the package shows its users: the registered hooks, and the names it exports."""

from __future__ import annotations

import dataclasses
import sys
import typing

import pytest
from flask import Flask

import flask_flashsale
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


def returned_classes(owner: type) -> set[type]:
    """The classes the public methods and properties of ``owner`` return (inside unions, lists)."""
    found: set[type] = set()

    def collect(hint: object) -> None:
        if isinstance(hint, type) and hint.__module__.startswith("flask_flashsale"):
            found.add(hint)
        for arg in typing.get_args(hint):
            collect(arg)

    for name, member in vars(owner).items():
        if name.startswith("_") or name == "state":  # state(): the internals, on purpose
            continue
        if isinstance(member, staticmethod):
            member = member.__func__
        if isinstance(member, property):
            member = member.fget
        hint = getattr(member, "__annotations__", {}).get("return")
        if isinstance(hint, str):  # postponed annotations: evaluate the return type alone
            hint = eval(hint, vars(sys.modules[member.__module__]))
        collect(hint)
    return found


def test_every_class_a_public_method_returns_is_exported() -> None:
    classes = returned_classes(FlashSale)
    for cls in list(classes):
        classes |= returned_classes(cls)  # one level down: Limit.hit, FencedLock...
    exported = {getattr(flask_flashsale, name) for name in flask_flashsale.__all__}
    missing = sorted(c.__name__ for c in classes if c not in exported)
    assert missing == []


def test_the_per_app_state_is_not_exported_but_stays_importable_from_its_module() -> None:
    assert "FlashSaleState" not in flask_flashsale.__all__
    from flask_flashsale.extension import FlashSaleState

    assert isinstance(FlashSaleState, type)


def test_every_exported_name_exists() -> None:
    for name in flask_flashsale.__all__:
        assert getattr(flask_flashsale, name) is not None, name
