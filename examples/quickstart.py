"""Flask-FlashSale quick start: one sale, a sign-in for curl, orders in your database."""

import os

from flask import Flask, request, session
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Mapped, mapped_column

from flask_flashsale import FlashSale, Order

app = Flask(__name__)
app.config.update(
    SECRET_KEY=os.environ.get("SECRET_KEY", "dev-only-change-me"),  # signs the session
    SQLALCHEMY_DATABASE_URI=os.environ.get("DATABASE_URL", "sqlite:///quickstart.db"),
    FLASHSALE_REDIS_URL=os.environ.get("FLASHSALE_REDIS_URL", "memory://"),
)
db = SQLAlchemy(app)
flashsale = FlashSale(app)


class MyOrder(db.Model):
    id: Mapped[str] = mapped_column(primary_key=True)  # order.id: redeliveries overwrite
    user_id: Mapped[str]
    sale_id: Mapped[str]
    quantity: Mapped[int]


@app.post("/login")
def login() -> dict[str, str]:
    session["user_id"] = request.form["user"]  # a real shop checks a password here
    return {"signed_in": session["user_id"]}


@app.get("/my-orders")
def my_orders() -> dict[str, list[str]]:
    rows = db.session.scalars(db.select(MyOrder).filter_by(user_id=session.get("user_id")))
    return {"orders": [row.id for row in rows]}


@flashsale.identity_loader
def current_buyer() -> str | None:
    return session.get("user_id")  # None -> 401 identity_required


@flashsale.order_handler
def persist(order: Order) -> None:  # runs in the worker, inside an app context
    db.session.merge(
        MyOrder(id=order.id, user_id=order.user_id, sale_id=order.sale_id, quantity=order.quantity)
    )
    db.session.commit()  # raising = try again later


with app.app_context():
    db.create_all()
    if flashsale.get_sale("tee") is None:
        flashsale.create_sale("tee", stock=100, price="9.99", per_user_limit=1)
