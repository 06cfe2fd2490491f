"""``flask flashsale dead-letters`` lists every dead letter and counts them right.

It used to show the first 100 of a sale and say "100 dead letter(s)" however
many there were. Now it pages through all of them (``--limit`` and
``--after`` page by hand) and the count is the dead-letter streams' length.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from click.testing import Result
from flask import Flask

from flask_flashsale import FlashSale, Order
from flask_flashsale.cli import flashsale_cli

from .helpers import MakeApp
from .worker_host import FAST

DEAD = {"tee": 130, "cap": 7}


@pytest.fixture
def failed_sales(make_app: MakeApp) -> Iterator[Flask]:
    """Two sales whose every order failed for good: 130 dead letters on tee, 7 on cap."""
    app, ext = make_app(**FAST, FLASHSALE_MAX_ATTEMPTS=1)

    @ext.order_handler
    def broken(order: Order) -> None:
        raise RuntimeError("database down")

    with app.app_context():
        for sale_id, count in DEAD.items():
            ext.create_sale(sale_id, stock=count)
            for i in range(count):
                assert ext.place_order(sale_id, f"buyer{i}").status == "queued"
        ext.run_worker(burst=True)
        for sale_id, count in DEAD.items():
            assert FlashSale.state().orders.stats([sale_id])[0].dead_letters == count
    yield app


def dead_letters(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(flashsale_cli, ["dead-letters", *args])


def entry_ids(result: Result) -> list[str]:
    return [line.split()[1] for line in result.stdout.splitlines()]


def test_every_dead_letter_of_a_sale_is_listed_and_counted(failed_sales: Flask) -> None:
    result = dead_letters(failed_sales, "tee")
    assert result.exit_code == 0, result.output
    ids = entry_ids(result)
    assert len(ids) == len(set(ids)) == 130
    assert result.stderr.strip() == "130 dead letter(s)"


def test_every_sale_is_listed_and_the_count_is_their_total(failed_sales: Flask) -> None:
    result = dead_letters(failed_sales)
    assert result.exit_code == 0, result.output
    sales = [line.split()[0] for line in result.stdout.splitlines()]
    assert (sales.count("tee"), sales.count("cap")) == (130, 7)
    assert result.stderr.strip() == "137 dead letter(s)"


def test_json_lines_cover_every_dead_letter(failed_sales: Flask) -> None:
    result = dead_letters(failed_sales, "tee", "--json")
    assert result.exit_code == 0, result.output
    letters = [json.loads(line) for line in result.stdout.splitlines()]
    assert len({d["entry_id"] for d in letters}) == 130


def test_limit_and_after_page_through_all_of_them(failed_sales: Flask) -> None:
    seen: list[str] = []
    args = ["tee", "--limit", "50"]
    for _ in range(4):
        result = dead_letters(failed_sales, *args)
        assert result.exit_code == 0, result.output
        page = entry_ids(result)
        seen += page
        if len(seen) == 130:
            assert result.stderr.strip() == f"{len(page)} of 130 dead letter(s) shown"
            break
        assert result.stderr.strip() == (
            f"50 of 130 dead letter(s) shown; next page: --after {page[-1]}"
        )
        args = ["tee", "--limit", "50", "--after", page[-1]]
    assert len(seen) == len(set(seen)) == 130
    assert seen == sorted(seen, key=lambda i: tuple(int(p) for p in i.split("-")))


def test_a_limit_over_every_sale_says_where_to_go_on(failed_sales: Flask) -> None:
    result = dead_letters(failed_sales, "--limit", "10")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 10
    sale_id, last = lines[-1].split()[:2]
    assert result.stderr.strip() == (
        f"10 of 137 dead letter(s) shown; next page: {sale_id} --after {last}"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--after", "1-0"], "SALE_ID"),
        (["tee", "--after", "yesterday"], "entry id"),
        (["tee", "--limit", "0"], "limit"),
    ],
)
def test_paging_mistakes_are_one_line_errors(
    failed_sales: Flask, args: list[str], message: str
) -> None:
    result = dead_letters(failed_sales, *args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
