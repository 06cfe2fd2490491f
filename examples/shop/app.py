"""Example shop: a host app with its own order table that runs a flash sale.

Run it (embedded ``memory://`` store, no Redis server needed)::

    pip install -e '.[memory]' && flask --app examples/shop/app.py run

Open http://127.0.0.1:5000, pick a name, press Buy. In ``memory://`` mode the
extension runs its worker as a thread inside the web process
(``FLASHSALE_INLINE_WORKER``), so the order goes from the ticket to a row in
the shop's own SQLite table with nothing else to start.

With a real Redis, run the worker as its own process (as many as you like)::

    export FLASHSALE_REDIS_URL=redis://localhost:6379/0
    flask --app examples/shop/app.py run
    flask --app examples/shop/app.py flashsale worker

Flask finds the ``create_app`` factory by itself; a WSGI server takes
``'examples.shop.app:create_app()'``.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from flask import Flask, g, redirect, render_template_string, request, session, url_for
from werkzeug.wrappers import Response

from flask_flashsale import FlashSale, Order

flashsale = FlashSale()

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    id          TEXT PRIMARY KEY,   -- order.id: stable across redeliveries
    user_id     TEXT NOT NULL,
    product_id  TEXT NOT NULL,
    quantity    INTEGER NOT NULL,
    price       TEXT,
    created_at  TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE IF NOT EXISTS products (
    id          TEXT PRIMARY KEY,   -- the id of the product's flash sale
    stock       INTEGER NOT NULL,   -- the shop's own count, kept by persist_order
    version     INTEGER NOT NULL DEFAULT 0  -- optimistic locking: +1 on every update
);
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Flash sale shop</title>
<style>body{font-family:sans-serif;max-width:40em;margin:2em auto}
.sale{border:1px solid #ccc;padding:1em;margin:1em 0}#log{white-space:pre-wrap}</style>
</head><body>
<h1>Flash sale shop</h1>
{% if user %}
  <p>Signed in as <b>{{ user }}</b>. <a href="{{ url_for('logout') }}">sign out</a></p>
{% else %}
  <form method="post" action="{{ url_for('login') }}">
    <input name="name" placeholder="your name" required> <button>Sign in</button>
  </form>
{% endif %}
<div id="sales"></div>
<h2>Your orders (from the shop's own database)</h2>
<ul>{% for o in orders %}<li>{{ o['product_id'] }} x{{ o['quantity'] }} ({{ o['id'] }})</li>
{% else %}<li>none yet</li>{% endfor %}</ul>
<div id="log"></div>
<script>
const api = "{{ api }}";
const log = (m) => document.getElementById("log").textContent += m + "\\n";
async function load() {
  const r = await fetch(api); const {sales} = await r.json();
  document.getElementById("sales").innerHTML = sales.map(s => `<div class="sale">
    <b>${s.info.name || s.id}</b> ${s.price ?? ""} &mdash; ${s.status}, ${s.remaining} left
    <button onclick="buy('${s.id}')">Buy</button></div>`).join("");
}
async function buy(id) {
  const r = await fetch(`${api}/${id}/order`, {method: "POST",
    headers: {"Content-Type": "application/json", "Idempotency-Key": crypto.randomUUID()},
    body: JSON.stringify({quantity: 1})});
  const body = await r.json();
  if (r.status !== 202) { log(`${id}: ${body.code} (${body.detail})`); return load(); }
  log(`${id}: admitted, ticket ${body.ticket_id}`);
  for (let i = 0; i < 20; i++) {
    const t = await (await fetch(r.headers.get("Location"))).json();
    if (t.status !== "queued") { log(`${id}: ${t.status}`); break; }
    await new Promise(ok => setTimeout(ok, 250));
  }
  load();
}
load();
</script></body></html>"""


def get_db() -> sqlite3.Connection:
    """The request's (or worker's) connection to the shop database."""
    if "db" not in g:
        from flask import current_app

        g.db = sqlite3.connect(current_app.config["SHOP_DATABASE"], timeout=10)
        g.db.row_factory = sqlite3.Row
    db: sqlite3.Connection = g.db
    return db


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the shop. ``config`` overrides the defaults (tests use this)."""
    app = Flask(__name__, instance_relative_config=True)
    app.config.update(
        SECRET_KEY=os.environ.get("SHOP_SECRET_KEY", "dev-only-secret"),
        SESSION_COOKIE_SAMESITE="Lax",
        SHOP_DATABASE=str(Path(app.instance_path) / "shop.sqlite3"),
        FLASHSALE_REDIS_URL=os.environ.get("FLASHSALE_REDIS_URL", "memory://"),
        SHOP_DEMO_STOCK=10,
    )
    app.config.update(config or {})
    Path(app.config["SHOP_DATABASE"]).parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(app.config["SHOP_DATABASE"]) as db:
        db.executescript(SCHEMA)

    @app.teardown_appcontext
    def close_db(_: BaseException | None) -> None:
        db = g.pop("db", None)
        if db is not None:
            db.close()

    flashsale.init_app(app)

    @app.get("/")
    def index() -> str:
        user = session.get("user_id")
        orders = get_db().execute(
            "SELECT * FROM orders WHERE user_id = ? ORDER BY created_at", (user,)
        ).fetchall()
        api = app.config["FLASHSALE_URL_PREFIX"]
        return render_template_string(PAGE, user=user, orders=orders, api=api)

    @app.post("/login")
    @flashsale.limit("5/minute", key="ip")  # token bucket per client address
    def login() -> Response:
        session["user_id"] = request.form.get("name", "").strip()[:64] or None
        return redirect(url_for("index"))

    @app.get("/logout")
    def logout() -> Response:
        session.pop("user_id", None)
        return redirect(url_for("index"))

    with app.app_context():
        if flashsale.get_sale("demo-sneakers") is None:
            flashsale.create_sale(
                "demo-sneakers",
                stock=app.config["SHOP_DEMO_STOCK"],
                price="49.00",
                per_user_limit=1,
                info={"name": "Demo sneakers (limited)"},
            )
    with sqlite3.connect(app.config["SHOP_DATABASE"]) as db:
        db.execute(
            "INSERT OR IGNORE INTO products (id, stock) VALUES (?, ?)",
            ("demo-sneakers", app.config["SHOP_DEMO_STOCK"]),
        )
    return app


@flashsale.identity_loader
def current_buyer() -> str | None:
    """The shop's signed-in user."""
    user: str | None = session.get("user_id")
    return user


@flashsale.order_handler
def persist_order(order: Order) -> None:
    """Write the order and take the shop's own stock, in one transaction.

    The primary key makes redelivery harmless. The product row is updated with
    optimistic locking: read its version, then update only if it is unchanged
    (``WHERE version = ?``); if another writer got there first, start over.
    """
    db = get_db()
    for _ in range(5):
        product = db.execute(
            "SELECT version FROM products WHERE id = ?", (order.sale_id,)
        ).fetchone()
        inserted = db.execute(
            "INSERT OR IGNORE INTO orders (id, user_id, product_id, quantity, price) "
            "VALUES (?, ?, ?, ?, ?)",
            (order.id, order.user_id, order.sale_id, order.quantity,
             None if order.price is None else str(order.price)),
        ).rowcount
        if inserted and product is not None:
            updated = db.execute(
                "UPDATE products SET stock = stock - ?, version = version + 1 "
                "WHERE id = ? AND version = ?",
                (order.quantity, order.sale_id, product["version"]),
            ).rowcount
            if not updated:  # the row changed since we read it: roll back, retry
                db.rollback()
                continue
        db.commit()
        return
    raise RuntimeError(f"product {order.sale_id} kept changing; the order will be retried")



@flashsale.reconcile_source
def confirmed_units(sale_id: str) -> dict[str, int]:
    """Units per buyer in the shop's orders, for ``flask flashsale reconcile``."""
    rows = get_db().execute(
        "SELECT user_id, SUM(quantity) FROM orders WHERE product_id = ? GROUP BY user_id",
        (sale_id,),
    )
    return {user: int(units) for user, units in rows.fetchall()}

