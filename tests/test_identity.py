"""Who is buying: the identity loader, else Flask-Login's current_user, else nobody."""

from __future__ import annotations

import sys

import pytest
from flask import Flask
from flask_login import LoginManager, UserMixin, login_user

from flask_flashsale import FlashSale

from .helpers import PREFIX


class User(UserMixin):
    def __init__(self, user_id: str) -> None:
        self.id = user_id


def login_app(redis_url: str) -> tuple[Flask, FlashSale]:
    """A host app with Flask-Login and no identity loader of ours."""
    app = Flask("login-host")
    app.config.update(SECRET_KEY="s", FLASHSALE_REDIS_URL=redis_url, FLASHSALE_INLINE_WORKER=False)
    manager = LoginManager(app)

    @manager.user_loader
    def load(user_id: str) -> User:
        return User(user_id)

    @app.post("/login/<name>")
    def login(name: str) -> str:
        login_user(User(name))
        return "ok"

    ext = FlashSale(app)
    with app.app_context():
        ext.create_sale("tee", stock=5)
    return app, ext


def test_without_a_loader_flask_login_current_user_is_the_buyer(redis_url: str) -> None:
    app, _ = login_app(redis_url)
    client = app.test_client()
    client.post("/login/alice")
    r = client.post(f"{PREFIX}/tee/order")
    assert r.status_code == 202
    ticket = client.get(r.headers["Location"]).get_json()
    assert ticket["status"] == "queued"
    with app.app_context():
        found = FlashSale.state(app).ext.get_ticket(ticket["ticket_id"])
        assert found is not None and found.user_id == "alice"


def test_anonymous_flask_login_user_gets_401(redis_url: str) -> None:
    app, _ = login_app(redis_url)
    r = app.test_client().post(f"{PREFIX}/tee/order")
    assert r.status_code == 401
    assert r.get_json(force=True)["code"] == "identity_required"


def test_an_identity_loader_wins_over_flask_login(redis_url: str) -> None:
    app, ext = login_app(redis_url)

    @ext.identity_loader
    def from_header() -> str | None:
        return "from-loader"

    client = app.test_client()
    client.post("/login/alice")
    r = client.post(f"{PREFIX}/tee/order")
    with app.app_context():
        ticket = ext.get_ticket(r.get_json()["ticket_id"])
        assert ticket is not None and ticket.user_id == "from-loader"


def test_without_loader_or_flask_login_every_order_is_401(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "flask_login", None)  # as if not installed
    app = Flask("no-identity")
    app.config.update(
        SECRET_KEY="test-secret", FLASHSALE_REDIS_URL=redis_url, FLASHSALE_INLINE_WORKER=False
    )
    ext = FlashSale(app)
    with app.app_context():
        ext.create_sale("tee", stock=5)
    r = app.test_client().post(f"{PREFIX}/tee/order")
    assert r.status_code == 401
    assert r.get_json(force=True)["code"] == "identity_required"
