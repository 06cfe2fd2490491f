"""Example shop: a small Flask shop with its own database that runs flash sales.

Run it (embedded ``memory://`` store, SQLite, no server needed)::

    pip install -e '.[shop]' && flask --app examples/shop/app.py run

Open http://127.0.0.1:5000, sign in with any name, open a product, wait for
the countdown and press Buy. Sign in as ``admin`` to see the operator
dashboard (``/admin/flashsale``). In ``memory://`` mode the extension runs its
worker as a thread inside the web process (``FLASHSALE_INLINE_WORKER``), so an
order goes from the ticket to a row in the shop's own table with nothing else
to start.

With a real Redis and PostgreSQL, run the worker as its own process (as many
as you like)::

    export FLASHSALE_REDIS_URL=redis://localhost:6379/0
    export DATABASE_URL=postgresql+psycopg://shop@localhost/shop
    flask --app examples/shop/app.py run
    flask --app examples/shop/app.py flashsale worker

Flask finds the ``create_app`` factory by itself; a WSGI server takes
``'examples.shop.app:create_app()'``.

The shop's data and the flash sales are created together: a sale the store
does not know (first start, or a restarted ``memory://`` store) is created
from the shop's own products and orders (stock, and who bought what through
:meth:`FlashSale.reconcile`), so a restart never sells a unit twice.
"""

from __future__ import annotations

import os
import random
import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from flask import (
    Flask,
    abort,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Integer, Numeric, String, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.orm.exc import StaleDataError
from werkzeug.wrappers import Response

from flask_flashsale import FlashSale, FlashSaleError, Order, Ticket

db = SQLAlchemy()
flashsale = FlashSale()

#: The shop's flash-sale products: created with their sale (see :func:`setup_sales`).
DEMO_PRODUCTS = [
    {
        "id": "demo-sneakers",
        "name": "Demo sneakers (limited)",
        "description": "A limited run of sneakers: one pair per buyer.",
        "price": "49.00",
        "payment_timeout": None,
    },
    {
        "id": "demo-hoodie",
        "name": "Demo hoodie (pay within 2 minutes)",
        "description": "Reserved when you buy; pay within two minutes or it goes back on sale.",
        "price": "35.00",
        "payment_timeout": 120.0,
    },
]

#: How many times the order hook retries a product row changed under it.
STALE_RETRIES = 8


class Product(db.Model):  # type: ignore[name-defined,misc]
    """A product on flash sale; ``id`` is the id of its sale."""

    __tablename__ = "products"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(String(1000), default="")
    price: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    #: The stock the sale was created with.
    initial_stock: Mapped[int] = mapped_column(Integer)
    #: The shop's own count, kept by the order hook.
    stock: Mapped[int] = mapped_column(Integer)
    payment_timeout: Mapped[float | None] = mapped_column(default=None)
    #: Optimistic locking: every UPDATE checks and bumps it (SQLAlchemy's version counter).
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    __mapper_args__ = {"version_id_col": version}


class ShopOrder(db.Model):  # type: ignore[name-defined,misc]
    """An order in the shop's own books; ``id`` is ``order.id`` (stable across redeliveries)."""

    __tablename__ = "orders"
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64), index=True)
    product_id: Mapped[str] = mapped_column(String(64), index=True)
    quantity: Mapped[int] = mapped_column(Integer)
    price: Mapped[Decimal | None] = mapped_column(Numeric(10, 2), default=None)
    #: ``confirmed``, ``awaiting_payment``, ``paid`` or ``expired``.
    status: Mapped[str] = mapped_column(String(32), default="confirmed")
    created_at: Mapped[datetime] = mapped_column(default=lambda: datetime.now(timezone.utc))


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the shop. ``config`` overrides the defaults (tests use this)."""
    app = Flask(__name__, instance_relative_config=True)
    app.config.update(
        SECRET_KEY=os.environ.get("SHOP_SECRET_KEY", "dev-only-secret"),
        SESSION_COOKIE_SAMESITE="Lax",
        SHOP_DATABASE=str(Path(app.instance_path) / "shop.sqlite3"),
        FLASHSALE_REDIS_URL=os.environ.get("FLASHSALE_REDIS_URL", "memory://"),
        FLASHSALE_DASHBOARD_PATH="/admin/flashsale",
        SHOP_DEMO_STOCK=10,
        #: Seconds from start-up to the opening of a sale the shop creates.
        SHOP_DEMO_STARTS_IN=float(os.environ.get("SHOP_DEMO_STARTS_IN", "15")),
        #: Who may see the operator dashboard (a demo: sign in as one of these names).
        SHOP_ADMINS=("admin",),
        #: Sign-ins per client address (a load test from one machine raises it).
        SHOP_LOGIN_RATE=os.environ.get("SHOP_LOGIN_RATE", "10/minute"),
    )
    app.config.update(config or {})
    app.config.setdefault(
        "SQLALCHEMY_DATABASE_URI",
        os.environ.get("DATABASE_URL") or f"sqlite:///{app.config['SHOP_DATABASE']}",
    )
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite:"):
        Path(app.config["SHOP_DATABASE"]).parent.mkdir(parents=True, exist_ok=True)
        app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {"connect_args": {"timeout": 15}})
    db.init_app(app)
    flashsale.init_app(app)
    register_views(app)
    with app.app_context():
        db.create_all()
        setup_sales()
    return app


def register_views(app: Flask) -> None:
    """The shop's pages and its one JSON route (pay)."""

    @app.context_processor
    def shop_globals() -> dict[str, Any]:
        return {"user": session.get("user_id"), "is_admin": is_admin()}

    @app.get("/")
    def index() -> str:
        products = db.session.scalars(select(Product).order_by(Product.id)).all()
        return render_template(
            "shop/index.html", products=products, sales=sale_map(), orders=my_orders()
        )

    @app.get("/products/<product_id>")
    def product(product_id: str) -> str:
        item = db.session.get(Product, product_id)
        if item is None:
            abort(404)
        return render_template(
            "shop/product.html",
            product=item,
            sale=flashsale.get_sale(product_id),
            api=app.config["FLASHSALE_URL_PREFIX"],
            orders=my_orders(product_id),
        )

    @app.post("/login")
    @flashsale.limit(app.config["SHOP_LOGIN_RATE"], key="ip")  # token bucket per address
    def login() -> Response:
        session["user_id"] = request.form.get("name", "").strip()[:64] or None
        return redirect(request.form.get("next") or url_for("index"))

    @app.get("/logout")
    def logout() -> Response:
        session.pop("user_id", None)
        return redirect(url_for("index"))

    @app.post("/orders/<ticket_id>/pay")
    def pay(ticket_id: str) -> Any:
        """The fake payment step: a real shop calls ``mark_paid`` from its provider's webhook."""
        refused = cross_site()
        if refused:
            return refused
        user = session.get("user_id")
        ticket = flashsale.get_ticket(ticket_id)
        if user is None or ticket is None or ticket.user_id != user:
            return jsonify(code="ticket_not_found", detail="no such order of yours"), 404
        try:
            ticket = flashsale.mark_paid(ticket_id)
        except FlashSaleError as exc:  # payment_too_late, payment_refused
            return current_app.response_class(exc.get_body(), exc.code, exc.get_headers())
        record_payment(ticket)
        return jsonify(ticket.to_dict())


def is_admin() -> bool:
    """True if the signed-in user is one of ``SHOP_ADMINS``."""
    return session.get("user_id") in current_app.config["SHOP_ADMINS"]


@flashsale.dashboard_access
def operators_only() -> bool:
    """The operator dashboard is for the shop's admins."""
    return is_admin()


def cross_site() -> Any:
    """Refuse a cross-site POST: a body that is not JSON, or another Origin."""
    origin = request.headers.get("Origin")
    if origin is not None and origin.rstrip("/") != request.host_url.rstrip("/"):
        return jsonify(code="cross_origin", detail="cross-site request refused"), 403
    if request.content_length and not request.is_json:
        return jsonify(code="unsupported_media_type", detail="send JSON"), 415
    return None


def sale_map() -> dict[str, Any]:
    """Every sale by id (served from the extension's cache)."""
    return {s.id: s for s in flashsale.list_sales()}


def my_orders(product_id: str | None = None) -> list[ShopOrder]:
    """The signed-in buyer's orders in the shop's own database."""
    user = session.get("user_id")
    if user is None:
        return []
    query = select(ShopOrder).where(ShopOrder.user_id == user)
    if product_id is not None:
        query = query.where(ShopOrder.product_id == product_id)
    return list(db.session.scalars(query.order_by(ShopOrder.created_at)).all())


def setup_sales() -> None:
    """Create the shop's products and their sales together, consistent across restarts.

    A product is created once, with its stock. Its sale is created whenever the
    store does not have it (the first start, or any start on a ``memory://``
    store, which lives only as long as the process): with the product's
    initial stock, then reconciled with the shop's orders so the units already
    sold stay sold and each buyer's per-user count comes back. Holds that were
    awaiting payment are released first (the store that held them is gone).
    """
    config = current_app.config
    for spec in DEMO_PRODUCTS:
        item = db.session.get(Product, spec["id"])
        if item is None:
            item = Product(
                id=spec["id"],
                name=spec["name"],
                description=spec["description"],
                price=Decimal(spec["price"]),
                initial_stock=config["SHOP_DEMO_STOCK"],
                stock=config["SHOP_DEMO_STOCK"],
                payment_timeout=spec["payment_timeout"],
            )
            db.session.add(item)
            db.session.commit()
        if flashsale.get_sale(item.id) is not None:
            continue
        for held in db.session.scalars(
            select(ShopOrder).where(
                ShopOrder.product_id == item.id, ShopOrder.status == "awaiting_payment"
            )
        ).all():
            held.status = "expired"
            item.stock += held.quantity
        db.session.commit()
        flashsale.create_sale(
            item.id,
            stock=item.initial_stock,
            price=item.price,
            starts_at=time.time() + config["SHOP_DEMO_STARTS_IN"],
            per_user_limit=1,
            info={"name": item.name},
            payment_timeout=item.payment_timeout,
        )
        if item.stock != item.initial_stock:
            flashsale.reconcile(item.id, fix=True)


@flashsale.identity_loader
def current_buyer() -> str | None:
    """The shop's signed-in user."""
    user: str | None = session.get("user_id")
    return user


@flashsale.order_handler
def persist_order(order: Order) -> None:
    """Write the order and take the shop's own stock, in one transaction.

    The primary key makes redelivery harmless. The product row carries a
    version counter (SQLAlchemy's ``version_id_col``): the UPDATE applies only
    to the version read, so if another writer changed the row in between,
    SQLAlchemy raises ``StaleDataError``; roll back and start over.
    """
    for attempt in range(STALE_RETRIES):
        if attempt:
            time.sleep(random.uniform(0, 0.002 * 2**attempt))  # let the other writer finish
        try:
            if db.session.get(ShopOrder, order.id) is not None:
                return  # a redelivery: written already
            item = db.session.get(Product, order.sale_id)
            status = "confirmed"
            if item is not None and item.payment_timeout is not None:
                ticket = flashsale.get_ticket(order.id)  # the buyer may have paid already
                status = "paid" if ticket is not None and ticket.status == "paid" else (
                    "awaiting_payment"
                )
            db.session.add(
                ShopOrder(
                    id=order.id,
                    user_id=order.user_id,
                    product_id=order.sale_id,
                    quantity=order.quantity,
                    price=order.price,
                    status=status,
                )
            )
            if item is not None:
                item.stock -= order.quantity
            db.session.commit()
            return
        except StaleDataError:  # the product row changed since we read it
            db.session.rollback()
        except IntegrityError:  # another worker wrote this very order meanwhile
            db.session.rollback()
            return
    raise RuntimeError(f"product {order.sale_id} kept changing; the order will be retried")


@flashsale.expiry_handler
def release_hold(ticket: Ticket) -> None:
    """An unpaid hold expired: the extension put the unit back on sale; so does the shop."""
    for _ in range(STALE_RETRIES):
        try:
            row = db.session.get(ShopOrder, ticket.id)
            if row is None or row.status != "awaiting_payment":
                return
            row.status = "expired"
            item = db.session.get(Product, row.product_id)
            if item is not None:
                item.stock += row.quantity
            db.session.commit()
            return
        except StaleDataError:
            db.session.rollback()
    raise RuntimeError(f"product of {ticket.id} kept changing; the expiry will be retried")


def record_payment(ticket: Ticket) -> None:
    """Mark the shop's order paid (if the worker has written it yet)."""
    row = db.session.get(ShopOrder, ticket.id)
    if row is not None and row.status != "paid":
        row.status = "paid"
        db.session.commit()


@flashsale.reconcile_source
def shop_orders(sale_id: str) -> list[tuple[str, str, int]]:
    """The shop's live orders of a sale as ``(order_id, user_id, units)``, for reconcile."""
    rows = db.session.execute(
        select(ShopOrder.id, ShopOrder.user_id, ShopOrder.quantity).where(
            ShopOrder.product_id == sale_id, ShopOrder.status != "expired"
        )
    )
    return [(order_id, user, int(units)) for order_id, user, units in rows]


def confirmed_units(sale_id: str) -> dict[str, int]:
    """Units per buyer in the shop's live orders of a sale."""
    units: dict[str, int] = {}
    for _, user, n in shop_orders(sale_id):
        units[user] = units.get(user, 0) + n
    return units
