"""The example shop and the operator dashboard, clicked through in Chromium (in file order).

Debian's chromium driven by Playwright (no browser download). Skipped when
chromium or playwright is missing, except under ``CI=true``, where that is a
failure. One shop (``memory://``, the inline worker, SQLite, one sneaker in
stock) serves every test, in file order: the second buyer finds the unit the
first one bought gone.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from examples.shop import app as shop
from flask_flashsale import FlashSale

from .browser import chromium, missing, serve, sign_in

why = missing()
if why is not None:
    if os.environ.get("CI") == "true":
        raise RuntimeError(f"browser tests cannot run under CI: {why}")
    pytest.skip(why, allow_module_level=True)

from playwright.sync_api import expect  # noqa: E402

STARTS_IN = 6.0
SNEAKERS = "/products/demo-sneakers"


@pytest.fixture(scope="module")
def shop_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    folder: Path = tmp_path_factory.mktemp("shop")
    app = shop.create_app(
        {
            "SHOP_DATABASE": str(folder / "shop.sqlite3"),
            "FLASHSALE_REDIS_URL": "memory://",
            "SHOP_DEMO_STOCK": 1,
            "SHOP_DEMO_STARTS_IN": STARTS_IN,
        }
    )
    yield app
    inline = FlashSale.state(app).inline_worker
    if inline is not None:
        inline.stop()


@pytest.fixture(scope="module")
def base(shop_app: Flask) -> Iterator[str]:
    with serve(shop_app) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    context.set_default_timeout(10_000)
    yield context.new_page()
    context.close()


def test_a_buyer_waits_for_the_countdown_buys_and_sees_the_order_confirmed(
    page: Any, base: str
) -> None:
    sign_in(page, base, "alice", SNEAKERS)
    buy = page.locator("#buy")
    expect(page.locator("#countdown")).to_contain_text("Starts in 00:0")
    expect(buy).to_be_disabled()
    expect(buy).to_contain_text("Starts in")
    expect(page.locator("#stock")).to_have_text("1")
    expect(buy).to_be_enabled(timeout=STARTS_IN * 1000 + 5000)
    expect(buy).to_have_text("Buy now")
    buy.click()
    expect(page.locator("#message")).to_have_text("Confirmed: it's yours!")
    expect(page.locator("#tickets li .status.confirmed")).to_have_count(1)
    expect(page.locator("#stock")).to_have_text("0")
    expect(buy).to_be_disabled()
    expect(buy).to_have_text(re.compile("Sold out|Limit reached"))
    page.goto(base + "/")
    expect(page.locator("#shop-orders")).to_contain_text("demo-sneakers")


def test_a_second_buyer_sees_sold_out_and_a_disabled_button(page: Any, base: str) -> None:
    sign_in(page, base, "bob", SNEAKERS)
    expect(page.locator("#stock")).to_have_text("0")
    expect(page.locator("#buy")).to_have_text("Sold out")
    expect(page.locator("#buy")).to_be_disabled()


def test_signed_out_visitors_cannot_press_buy(page: Any, base: str) -> None:
    page.goto(base + SNEAKERS)
    expect(page.locator("#buy")).to_have_text("Sign in to buy")
    expect(page.locator("#buy")).to_be_disabled()


def test_the_dashboard_shows_the_sale_and_its_numbers_move_during_a_burst(
    page: Any, base: str, shop_app: Flask
) -> None:
    with shop_app.app_context():
        shop.flashsale.create_sale("burst-tee", stock=400, info={"name": "Burst tee"})
    sign_in(page, base, "admin")
    page.click("#dashboard-link")
    card = page.locator('.sale[data-sale="burst-tee"]')
    expect(card.locator(".left")).to_have_text("400 / 400 left")
    expect(page.locator('.sale[data-sale="demo-sneakers"] .left')).to_have_text("0 / 1 left")

    stop = threading.Event()

    def burst() -> None:
        n = 0
        with shop_app.app_context():
            while not stop.is_set() and n < 390:
                shop.flashsale.place_order("burst-tee", f"buyer{n}")
                n += 1
                time.sleep(0.01)

    runner = threading.Thread(target=burst)
    runner.start()
    try:
        seen = set()
        deadline = time.monotonic() + 10
        while len(seen) < 3 and time.monotonic() < deadline:
            seen.add(card.locator(".left").inner_text())
            time.sleep(0.3)
        expect(card.locator(".legend")).to_contain_text(re.compile(r"units admitted [1-9]"))
        expect(card.locator('polyline[data-series="units admitted"]')).to_have_count(1)
    finally:
        stop.set()
        runner.join()
    assert len(seen - {"400 / 400 left"}) >= 2, seen  # the stock fell, poll after poll


def test_a_non_operator_gets_403_from_the_dashboard(page: Any, base: str) -> None:
    sign_in(page, base, "mallory")
    expect(page.locator("#dashboard-link")).to_have_count(0)
    response = page.goto(base + "/admin/flashsale")
    assert response.status == 403
    assert response.json()["code"] == "dashboard_forbidden"
