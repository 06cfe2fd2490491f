"""Sale definitions: create, read, list, restock, delete."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
import redis as redis_lib

from flask_flashsale import FlashSale, SaleNotFound


def test_create_sale_returns_the_stored_sale(flashsale: FlashSale) -> None:
    start = datetime(2030, 1, 1, tzinfo=timezone.utc)
    sale = flashsale.create_sale(
        "tee",
        stock=10,
        price="19.90",
        starts_at=start,
        ends_at=start + timedelta(hours=1),
        per_user_limit=2,
        info={"name": "Tee", "image": "/t.png"},
    )
    assert sale == flashsale.get_sale("tee")
    assert (sale.stock, sale.remaining, sale.price) == (10, 10, Decimal("19.90"))
    assert (sale.starts_at, sale.ends_at) == (start, start + timedelta(hours=1))
    assert sale.per_user_limit == 2
    assert sale.info == {"name": "Tee", "image": "/t.png"}
    assert sale.status == "upcoming"


def test_sale_status_reflects_window_and_stock(flashsale: FlashSale) -> None:
    assert flashsale.create_sale("a", stock=1).status == "active"
    assert flashsale.create_sale("b", stock=0).status == "sold_out"
    assert flashsale.create_sale("c", stock=1, starts_at=1, ends_at=2).status == "ended"


def test_get_unknown_sale_is_none(flashsale: FlashSale) -> None:
    assert flashsale.get_sale("nope") is None


def test_list_sales_returns_every_sale_by_id(flashsale: FlashSale) -> None:
    for sale_id in ("b", "a", "c"):
        flashsale.create_sale(sale_id, stock=1)
    assert [s.id for s in flashsale.list_sales()] == ["a", "b", "c"]


def test_replacing_a_sale_keeps_what_was_sold(flashsale: FlashSale) -> None:
    flashsale.create_sale("tee", stock=10, per_user_limit=3)
    flashsale.place_order("tee", "alice", quantity=3)
    replaced = flashsale.create_sale("tee", stock=20, price=5)
    assert (replaced.stock, replaced.remaining, replaced.price) == (20, 17, Decimal(5))


def test_restock_adds_units(flashsale: FlashSale) -> None:
    flashsale.create_sale("tee", stock=1)
    flashsale.place_order("tee", "alice")
    assert flashsale.restock("tee", 5) == 5
    sale = flashsale.get_sale("tee")
    assert (sale.stock, sale.remaining) == (6, 5)  # type: ignore[union-attr]


def test_restock_cannot_withdraw_more_than_remains(flashsale: FlashSale) -> None:
    flashsale.create_sale("tee", stock=2)
    with pytest.raises(ValueError):
        flashsale.restock("tee", -3)
    assert flashsale.restock("tee", -2) == 0


def test_restock_unknown_sale_raises(flashsale: FlashSale) -> None:
    with pytest.raises(SaleNotFound):
        flashsale.restock("nope", 1)


def test_delete_sale_removes_its_keys(flashsale: FlashSale, redis_client: redis_lib.Redis) -> None:
    flashsale.create_sale("tee", stock=2)
    flashsale.place_order("tee", "alice")
    assert flashsale.delete_sale("tee") is True
    assert flashsale.get_sale("tee") is None
    assert flashsale.list_sales() == []
    assert redis_client.keys("flashsale:{tee}:sale") == []
    assert redis_client.keys("flashsale:{tee}:orders") == []
    assert flashsale.delete_sale("tee") is False


def test_every_key_of_a_sale_shares_its_hash_tag(
    flashsale: FlashSale, redis_client: redis_lib.Redis
) -> None:
    flashsale.create_sale("tee", stock=2)
    flashsale.place_order("tee", "alice", idempotency_key="k")
    keys = [k for k in redis_client.keys("*") if k != "flashsale:sales" and k != "flashsale:secret"]
    assert keys and all(k.startswith("flashsale:{tee}:") for k in keys)


@pytest.mark.parametrize("sale_id", ["", "a" * 65, "has space", "br{ace}", "sl/ash", "ü"])
def test_invalid_sale_ids_never_reach_redis(flashsale: FlashSale, sale_id: str) -> None:
    with pytest.raises(SaleNotFound):
        flashsale.create_sale(sale_id, stock=1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"stock": -1},
        {"stock": 1.5},
        {"stock": 1, "per_user_limit": 0},
        {"stock": 1, "price": 9.99},
        {"stock": 1, "price": "-1"},
        {"stock": 1, "starts_at": datetime(2030, 1, 1)},
        {"stock": 1, "starts_at": 10, "ends_at": 5},
    ],
)
def test_invalid_sale_definitions_are_rejected(flashsale: FlashSale, kwargs: dict) -> None:
    with pytest.raises((ValueError, TypeError)):
        flashsale.create_sale("tee", **kwargs)
    assert flashsale.get_sale("tee") is None
