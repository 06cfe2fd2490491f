"""examples/locustfile.py runs a buyer against a real server (when locust is installed).

locust is in the ``bench`` extra (it brings gevent, which patches the process
it is imported in), so it runs in a subprocess, and the test is skipped where
it is not installed.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from examples.shop import app as shop
from flask_flashsale import FlashSale

from .browser import serve
from .helpers import ROOT

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("locust") is None, reason="locust is not installed (the bench extra)"
)


@pytest.fixture
def shop_app(tmp_path: Path) -> Iterator[Flask]:
    app = shop.create_app(
        {
            "SHOP_DATABASE": str(tmp_path / "shop.sqlite3"),
            "FLASHSALE_REDIS_URL": "memory://",
            "SHOP_DEMO_STARTS_IN": 0,
            "SHOP_DEMO_STOCK": 1,
        }
    )
    yield app
    inline = FlashSale.state(app).inline_worker
    if inline is not None:
        inline.stop()


def test_one_locust_buyer_signs_in_orders_and_sees_the_ticket_settle(shop_app: Flask) -> None:
    with serve(shop_app) as base:
        run = subprocess.run(
            [sys.executable, "-m", "locust", "-f", str(ROOT / "examples" / "locustfile.py"),
             "--headless", "--users", "1", "--spawn-rate", "1", "--run-time", "4s",
             "--host", base, "--only-summary", "--exit-code-on-error", "1"],
            capture_output=True, text=True, timeout=60, cwd=ROOT,
        )
    report = run.stdout + run.stderr
    assert run.returncode == 0, report
    for name in ("login", "sale", "order", "ticket"):
        assert f" {name} " in report, (name, report)
    with shop_app.app_context():
        (row,) = shop.db.session.query(shop.ShopOrder).all()
        assert row.user_id.startswith("locust-") and row.status == "confirmed"
