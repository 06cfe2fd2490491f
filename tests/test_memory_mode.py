"""The embedded ``memory://`` mode: fakeredis in process, no server at all."""

from __future__ import annotations

from flask import Flask, request

from flask_flashsale import FlashSale


def make_memory_app() -> tuple[Flask, FlashSale]:
    app = Flask("memory-shop")
    app.config.update(FLASHSALE_REDIS_URL="memory://", FLASHSALE_INLINE_WORKER=False)
    ext = FlashSale(app)

    @ext.identity_loader
    def buyer() -> str | None:
        return request.headers.get("X-User")

    return app, ext


def test_memory_mode_admits_and_refuses_like_redis() -> None:
    app, ext = make_memory_app()
    with app.app_context():
        ext.create_sale("tee", stock=1)
    client = app.test_client()
    first = client.post("/api/flash-sales/tee/order", headers={"X-User": "alice"})
    assert first.status_code == 202
    ticket = client.get(first.headers["Location"], headers={"X-User": "alice"})
    assert ticket.get_json()["status"] == "queued"
    sold_out = client.post("/api/flash-sales/tee/order", headers={"X-User": "bob"})
    assert sold_out.status_code == 409
    assert sold_out.get_json()["code"] == "sold_out"


def test_each_memory_app_has_its_own_store() -> None:
    app_a, ext_a = make_memory_app()
    app_b, ext_b = make_memory_app()
    with app_a.app_context():
        ext_a.create_sale("tee", stock=1)
    with app_b.app_context():
        assert ext_b.get_sale("tee") is None
