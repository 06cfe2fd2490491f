"""Routing details of the blueprint: ``Allow`` on 405, sale ids that are routes."""

from __future__ import annotations

from typing import Any

import pytest

from flask_flashsale import FlashSale, SaleNotFound
from flask_flashsale.cli import flashsale_cli

from .helpers import ALICE, PREFIX, MakeApp, problem


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/tee", {"GET", "HEAD", "OPTIONS"}),
        ("GET", "/tee/order", {"POST", "OPTIONS"}),
        ("PUT", "/openapi.json", {"GET", "HEAD", "OPTIONS"}),
        ("POST", "/tee/orders", {"GET", "HEAD", "OPTIONS"}),
    ],
)
def test_405_under_the_prefix_keeps_the_allow_header(
    client: Any, method: str, path: str, allowed: set[str]
) -> None:
    r = client.open(f"{PREFIX}{path}", method=method, headers=ALICE)
    problem(r, 405, "method_not_allowed")
    assert {m.strip() for m in r.headers["Allow"].split(",")} == allowed


@pytest.mark.parametrize("sale_id", ["openapi.json", "orders"])
def test_a_sale_id_that_names_a_route_is_refused_at_create_time(
    flashsale: FlashSale, sale_id: str
) -> None:
    with pytest.raises(SaleNotFound, match="reserved"):
        flashsale.create_sale(sale_id, stock=1)
    assert flashsale.get_sale(sale_id) is None
    assert flashsale.list_sales() == []


@pytest.mark.parametrize("sale_id", ["order", "openapi", "orders2", "Orders"])
def test_ids_close_to_a_route_are_fine(flashsale: FlashSale, sale_id: str) -> None:
    assert flashsale.create_sale(sale_id, stock=1).id == sale_id


def test_cli_create_of_a_reserved_id_is_a_one_line_error(make_app: MakeApp) -> None:
    app, _ = make_app()
    result = app.test_cli_runner().invoke(flashsale_cli, ["create", "orders", "--stock", "1"])
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error:") and "reserved" in lines[0]
