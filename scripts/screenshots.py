"""Take the docs' screenshots of the example shop and the dashboard (docs/_static/*.png).

    python scripts/screenshots.py

Runs the example shop (``memory://``, a throwaway SQLite file) on a free local
port, clicks through it in Debian's chromium with Playwright (as
tests/test_browser.py does) and writes:

* ``docs/_static/shop-index.png``: the products, signed in;
* ``docs/_static/shop-product.png``: a product with a payment timeout, bought
  and awaiting payment (the Pay button);
* ``docs/_static/dashboard.png``: the operator dashboard during a burst of orders.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from examples.shop import app as shop  # noqa: E402
from flask_flashsale import FlashSale  # noqa: E402
from tests.browser import chromium, missing, serve, sign_in  # noqa: E402

OUT = ROOT / "docs" / "_static"
VIEWPORT = {"width": 1100, "height": 720}


def main() -> int:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no request log
    why = missing()
    if why is not None:
        print(why, file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as folder:
        app = shop.create_app(
            {
                "SHOP_DATABASE": str(Path(folder) / "shop.sqlite3"),
                "FLASHSALE_REDIS_URL": "memory://",
                "SHOP_DEMO_STARTS_IN": 2,
            }
        )
        with app.app_context():
            shop.flashsale.create_sale(
                "launch-tee", stock=5000, price="19.00", info={"name": "Launch tee"}
            )
            for n in range(3):
                shop.flashsale.place_order("demo-sneakers", f"early{n}")  # not started: refused
        time.sleep(2.5)
        with app.app_context():
            for n in range(4):
                shop.flashsale.place_order("demo-sneakers", f"early{n}")
        try:
            with serve(app) as base, chromium() as browser:
                context = browser.new_context(viewport=VIEWPORT)
                page = context.new_page()
                sign_in(page, base, "alice")
                page.screenshot(path=str(OUT / "shop-index.png"))
                print("wrote docs/_static/shop-index.png")

                page.goto(base + "/products/demo-hoodie")
                page.wait_for_selector("#buy:enabled")
                page.click("#buy")
                page.wait_for_selector("#tickets .pay")
                page.screenshot(path=str(OUT / "shop-product.png"))
                print("wrote docs/_static/shop-product.png")

                admin = browser.new_context(viewport={"width": 1100, "height": 1000}).new_page()
                sign_in(admin, base, "admin")
                admin.goto(base + "/admin/flashsale")
                admin.wait_for_selector('.sale[data-sale="launch-tee"]')
                stop = threading.Event()

                def burst() -> None:
                    with app.app_context():
                        n = 0
                        while not stop.is_set():
                            shop.flashsale.place_order("launch-tee", f"buyer{n}")
                            n += 1
                            time.sleep(0.004 if n % 300 < 150 else 0.012)

                runner = threading.Thread(target=burst)
                runner.start()
                time.sleep(8)
                admin.screenshot(path=str(OUT / "dashboard.png"), full_page=True)
                stop.set()
                runner.join()
                print("wrote docs/_static/dashboard.png")
        finally:
            inline = FlashSale.state(app).inline_worker
            if inline is not None:
                inline.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
