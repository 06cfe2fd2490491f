"""The HTTP API as a host app's clients see it."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis as redis_lib
from flask import Flask

from flask_flashsale import FlashSale

from .helpers import ALICE, PREFIX, build_app, problem


@pytest.fixture
def sale(flashsale: FlashSale) -> str:
    flashsale.create_sale("tee", stock=5, price="9.99", per_user_limit=2, info={"name": "Tee"})
    return "tee"


def test_list_sales(client: Any, sale: str) -> None:
    r = client.get(PREFIX)
    assert r.status_code == 200
    [listed] = r.get_json()["sales"]
    assert listed["id"] == "tee"
    assert listed["status"] == "active"
    assert (listed["remaining"], listed["price"], listed["info"]) == (5, "9.99", {"name": "Tee"})
    assert listed["starts_at"] is None and listed["ends_at"] is None


def test_sale_detail_has_etag_and_short_cache_control(client: Any, sale: str) -> None:
    r = client.get(f"{PREFIX}/tee")
    assert r.status_code == 200
    assert r.get_json()["id"] == "tee"
    assert r.headers["ETag"]
    assert "max-age=" in r.headers["Cache-Control"]
    again = client.get(f"{PREFIX}/tee", headers={"If-None-Match": r.headers["ETag"]})
    assert again.status_code == 304


def test_unknown_sale_detail_is_404(client: Any) -> None:
    problem(client.get(f"{PREFIX}/nope"), 404, "sale_not_found")


def test_order_is_accepted_with_ticket_and_location(client: Any, sale: str) -> None:
    r = client.post(f"{PREFIX}/tee/order", headers=ALICE)
    assert r.status_code == 202
    body = r.get_json()
    assert body["status"] == "queued"
    assert body["remaining"] == 4
    assert r.headers["Location"] == f"{PREFIX}/orders/{body['ticket_id']}"
    ticket = client.get(r.headers["Location"], headers=ALICE)
    assert ticket.status_code == 200
    assert ticket.get_json()["status"] == "queued"
    assert ticket.get_json()["quantity"] == 1


def test_order_quantity_from_json_body(client: Any, sale: str) -> None:
    r = client.post(f"{PREFIX}/tee/order", json={"quantity": 2}, headers=ALICE)
    assert r.status_code == 202
    assert r.get_json()["remaining"] == 3


def test_same_idempotency_key_returns_same_ticket(client: Any, sale: str) -> None:
    headers = {**ALICE, "Idempotency-Key": "abc-123"}
    first = client.post(f"{PREFIX}/tee/order", headers=headers)
    again = client.post(f"{PREFIX}/tee/order", headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.get_json()["ticket_id"] == first.get_json()["ticket_id"]
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert client.get(f"{PREFIX}/tee").get_json()["remaining"] == 4


def test_ticket_is_visible_to_its_owner_only(client: Any, sale: str) -> None:
    location = client.post(f"{PREFIX}/tee/order", headers=ALICE).headers["Location"]
    problem(client.get(location, headers={"X-User": "mallory"}), 404, "ticket_not_found")
    problem(client.get(location), 401, "identity_required")


@pytest.mark.parametrize("ticket_id", ["nope", "tee~short", "tee~" + "A" * 22, "x" * 500])
def test_unknown_ticket_is_404(client: Any, sale: str, ticket_id: str) -> None:
    problem(client.get(f"{PREFIX}/orders/{ticket_id}", headers=ALICE), 404, "ticket_not_found")


def test_order_without_identity_is_401(client: Any, sale: str) -> None:
    problem(client.post(f"{PREFIX}/tee/order"), 401, "identity_required")


def test_order_on_unknown_sale_is_404(client: Any) -> None:
    problem(client.post(f"{PREFIX}/nope/order", headers=ALICE), 404, "sale_not_found")


@pytest.mark.parametrize("sale_id", ["a" * 65, "odd%20id", "br%7Bace%7D", "%00", "%C3%BC"])
def test_order_on_invalid_sale_id_is_404(client: Any, sale_id: str) -> None:
    problem(client.post(f"{PREFIX}/{sale_id}/order", headers=ALICE), 404, "sale_not_found")


def test_sold_out_is_409(client: Any, flashsale: FlashSale) -> None:
    flashsale.create_sale("one", stock=1)
    assert client.post(f"{PREFIX}/one/order", headers=ALICE).status_code == 202
    doc = problem(client.post(f"{PREFIX}/one/order", headers={"X-User": "bob"}), 409, "sold_out")
    assert doc["remaining"] == 0


def test_limit_reached_is_409(client: Any, sale: str) -> None:
    client.post(f"{PREFIX}/tee/order", json={"quantity": 2}, headers=ALICE)
    problem(client.post(f"{PREFIX}/tee/order", headers=ALICE), 409, "limit_reached")


def test_not_started_is_409_with_retry_after(
    client: Any, flashsale: FlashSale, redis_client: redis_lib.Redis
) -> None:
    now = float(redis_client.time()[0])
    flashsale.create_sale("later", stock=1, starts_at=now + 120)
    r = client.post(f"{PREFIX}/later/order", headers=ALICE)
    problem(r, 409, "not_started")
    assert 100 <= int(r.headers["Retry-After"]) <= 121


def test_ended_is_410(client: Any, flashsale: FlashSale) -> None:
    flashsale.create_sale("past", stock=1, starts_at=time.time() - 100, ends_at=time.time() - 50)
    problem(client.post(f"{PREFIX}/past/order", headers=ALICE), 410, "ended")


def test_rate_limited_is_429_with_retry_after(make_app: Any) -> None:
    app, flashsale = make_app(FLASHSALE_ORDER_RATE_PER_USER="1/minute")
    with app.app_context():
        flashsale.create_sale("tee", stock=10, per_user_limit=10)
    client = app.test_client()
    assert client.post(f"{PREFIX}/tee/order", headers=ALICE).status_code == 202
    r = client.post(f"{PREFIX}/tee/order", headers=ALICE)
    problem(r, 429, "rate_limited")
    assert 55 <= int(r.headers["Retry-After"]) <= 60


def test_admission_429_carries_ratelimit_headers_of_the_refusing_bucket(make_app: Any) -> None:
    app, flashsale = make_app(
        FLASHSALE_ORDER_RATE_PER_USER="10/minute;burst=5",
        FLASHSALE_ORDER_RATE_PER_SALE="2/minute;burst=2",
    )
    with app.app_context():
        flashsale.create_sale("tee", stock=10, per_user_limit=10)
    client = app.test_client()
    for user in ("alice", "bob"):
        assert client.post(f"{PREFIX}/tee/order", headers={"X-User": user}).status_code == 202
    r = client.post(f"{PREFIX}/tee/order", headers={"X-User": "carol"})
    problem(r, 429, "rate_limited")
    # The per-sale bucket (2 per minute, burst 2) refused: a token every 30 s,
    # and full again one interval after that.
    assert (r.headers["RateLimit-Limit"], r.headers["RateLimit-Remaining"]) == ("2", "0")
    assert 25 <= int(r.headers["Retry-After"]) <= 30
    assert 55 <= int(r.headers["RateLimit-Reset"]) <= 60


def test_backend_unavailable_is_503_with_retry_after() -> None:
    from .redis_server import free_port

    app, _ = build_app(f"redis://127.0.0.1:{free_port()}/0")
    client = app.test_client()
    r = client.post(f"{PREFIX}/tee/order", headers=ALICE)
    problem(r, 503, "backend_unavailable")
    assert r.headers["Retry-After"]
    problem(client.get(PREFIX), 503, "backend_unavailable")


def test_oversized_body_is_413(client: Any, sale: str) -> None:
    body = json.dumps({"quantity": 1, "pad": "x" * 20_000})
    r = client.post(
        f"{PREFIX}/tee/order", data=body, headers=ALICE, content_type="application/json"
    )
    problem(r, 413, "payload_too_large")


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[1, 2]",
        '"quantity"',
        "{",
        '{"quantity": "2"}',
        '{"quantity": 1.5}',
        '{"quantity": true}',
        '{"quantity": null}',
        '{"quantity": 0}',
        '{"quantity": -3}',
        '{"quantity": 100000000000000000000000000}',
        '{"quantity": NaN}',
        "[" * 5000 + "]" * 5000,
        "\xff\xfe",
    ],
)
def test_bad_bodies_are_422_and_leave_stock_alone(client: Any, sale: str, body: str) -> None:
    r = client.post(
        f"{PREFIX}/tee/order", data=body, headers=ALICE, content_type="application/json"
    )
    problem(r, 422, "invalid_request")
    assert client.get(f"{PREFIX}/tee").get_json()["remaining"] == 5


@pytest.mark.parametrize("key", ["", "x" * 256, "has space", "tab\there"])
def test_bad_idempotency_key_is_422(client: Any, sale: str, key: str) -> None:
    r = client.post(f"{PREFIX}/tee/order", headers={**ALICE, "Idempotency-Key": key})
    problem(r, 422, "invalid_request")


def test_unknown_path_under_prefix_is_problem_json(client: Any) -> None:
    problem(client.get(f"{PREFIX}/a/b/c"), 404, "not_found")


def test_wrong_method_under_prefix_is_problem_json(client: Any, sale: str) -> None:
    problem(client.delete(f"{PREFIX}/tee"), 405, "method_not_allowed")
    problem(client.get(f"{PREFIX}/tee/order"), 405, "method_not_allowed")


def test_host_404s_outside_prefix_are_left_alone(app: Flask, client: Any) -> None:
    r = client.get("/somewhere/else")
    assert r.status_code == 404
    assert r.mimetype == "text/html"


def test_host_404_handler_keeps_working_outside_prefix(redis_url: str) -> None:
    app = Flask("host-with-404")
    app.config.update(SECRET_KEY="test-secret", FLASHSALE_REDIS_URL=redis_url)

    @app.errorhandler(404)
    def host_404(exc: Exception) -> tuple[str, int]:
        return "host page", 404

    FlashSale(app)
    client = app.test_client()
    assert client.get("/elsewhere").get_data(as_text=True) == "host page"
    problem(client.get(f"{PREFIX}/x/y/z"), 404, "not_found")


def test_openapi_document_describes_every_endpoint(client: Any) -> None:
    r = client.get(f"{PREFIX}/openapi.json")
    assert r.status_code == 200
    doc = r.get_json()
    assert doc["openapi"].startswith("3.1")
    assert set(doc["paths"]) == {
        PREFIX,
        f"{PREFIX}/{{sale_id}}",
        f"{PREFIX}/{{sale_id}}/order",
        f"{PREFIX}/{{sale_id}}/orders",
        f"{PREFIX}/{{sale_id}}/queue",
        f"{PREFIX}/orders/{{ticket_id}}",
        f"{PREFIX}/openapi.json",
    }
    codes = set(doc["components"]["schemas"]["Problem"]["properties"]["code"]["enum"])
    assert {
        "identity_required",
        "sale_not_found",
        "sold_out",
        "limit_reached",
        "not_started",
        "ended",
        "invalid_request",
        "payload_too_large",
        "rate_limited",
        "backend_unavailable",
    } <= codes


def test_url_prefix_is_configurable(make_app: Any) -> None:
    app, flashsale = make_app(FLASHSALE_URL_PREFIX="/deals")
    with app.app_context():
        flashsale.create_sale("tee", stock=1)
    client = app.test_client()
    r = client.post("/deals/tee/order", headers=ALICE)
    assert r.status_code == 202
    assert r.headers["Location"].startswith("/deals/orders/")
