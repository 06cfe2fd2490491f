"""Cross-site request forgery: the order endpoint takes JSON from its own origin only.

A browser sends a cross-site ``<form>`` POST (or a "simple" ``fetch``) with the
buyer's cookies, but only with a form or ``text/plain`` content type, and with
an ``Origin`` header naming the other site. The order endpoint answers such
requests 415 or 403 before anything reaches Redis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from werkzeug.middleware.proxy_fix import ProxyFix

from flask_flashsale import ConfigurationError, FlashSale

from .helpers import ALICE, PREFIX, CommandCounter, MakeApp, problem

ORDER = f"{PREFIX}/tee/order"


@pytest.fixture
def sale(flashsale: FlashSale) -> str:
    flashsale.create_sale("tee", stock=5, per_user_limit=5)
    return "tee"


def remaining(redis_client: redis_lib.Redis) -> int:
    return int(redis_client.hget("flashsale:{tee}:sale", "remaining"))  # type: ignore[arg-type]


# -- Content-Type ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", '{"quantity": 1}'),
        ("text/plain;charset=UTF-8", '{"quantity": 1}'),
        ("application/x-www-form-urlencoded", "quantity=1"),
        ("multipart/form-data; boundary=xyz", "--xyz--\r\n"),
        ("application/merge-patch+json", '{"quantity": 1}'),
        ("application/jsonp", '{"quantity": 1}'),
    ],
)
def test_order_with_a_non_json_body_is_415_and_takes_no_stock(
    client: Any, sale: str, redis_client: redis_lib.Redis, content_type: str, body: str
) -> None:
    r = client.post(ORDER, data=body, content_type=content_type, headers=ALICE)
    problem(r, 415, "unsupported_media_type")
    assert remaining(redis_client) == 5


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_order_with_a_non_json_content_type_is_415_even_with_an_empty_body(
    client: Any, sale: str, redis_client: redis_lib.Redis, content_type: str
) -> None:
    r = client.post(ORDER, data=b"", content_type=content_type, headers=ALICE)
    problem(r, 415, "unsupported_media_type")
    assert remaining(redis_client) == 5


def test_order_with_a_body_but_no_content_type_is_415(
    client: Any, sale: str, redis_client: redis_lib.Redis
) -> None:
    # fetch(url, {method: "POST", body: new Blob([...])}) sends no Content-Type.
    r = client.post(ORDER, data=b'{"quantity": 1}', headers=ALICE)
    assert "CONTENT_TYPE" not in r.request.environ
    problem(r, 415, "unsupported_media_type")
    assert remaining(redis_client) == 5


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON;charset=UTF-8"],
)
def test_order_with_a_json_body_is_accepted(
    client: Any, sale: str, redis_client: redis_lib.Redis, content_type: str
) -> None:
    r = client.post(ORDER, data='{"quantity": 2}', content_type=content_type, headers=ALICE)
    assert r.status_code == 202, r.get_data(as_text=True)
    assert remaining(redis_client) == 3


def test_order_without_content_type_and_without_body_is_accepted(client: Any, sale: str) -> None:
    r = client.post(ORDER, headers=ALICE)
    assert r.status_code == 202, r.get_data(as_text=True)


# -- Origin ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "null",
        "http://localhost:5000",  # same host, another port
        "https://localhost",  # same host, another scheme
        "http://localhost.evil.example",
        "http://evil.example/http://localhost",
        "not an origin",
    ],
)
def test_order_from_another_origin_is_403_and_takes_no_stock(
    client: Any, sale: str, redis_client: redis_lib.Redis, origin: str
) -> None:
    r = client.post(ORDER, json={"quantity": 1}, headers={**ALICE, "Origin": origin})
    problem(r, 403, "cross_origin")
    assert remaining(redis_client) == 5


def test_cross_origin_is_refused_before_identity_is_asked(client: Any, sale: str) -> None:
    problem(client.post(ORDER, headers={"Origin": "https://evil.example"}), 403, "cross_origin")


@pytest.mark.parametrize("origin", ["http://localhost", "HTTP://LOCALHOST", "http://localhost:80"])
def test_order_from_the_apps_own_origin_is_accepted(client: Any, sale: str, origin: str) -> None:
    r = client.post(ORDER, json={"quantity": 1}, headers={**ALICE, "Origin": origin})
    assert r.status_code == 202, r.get_data(as_text=True)


def test_own_origin_follows_the_request_host_and_port(client: Any, sale: str) -> None:
    r = client.post(
        ORDER,
        base_url="https://shop.example:8443",
        headers={**ALICE, "Origin": "https://shop.example:8443"},
    )
    assert r.status_code == 202, r.get_data(as_text=True)
    r = client.post(
        ORDER,
        base_url="https://shop.example:8443",
        headers={**ALICE, "Origin": "https://shop.example"},
    )
    problem(r, 403, "cross_origin")


def test_own_origin_behind_a_proxy_comes_from_proxyfix(make_app: MakeApp) -> None:
    app, flashsale = make_app()
    with app.app_context():
        flashsale.create_sale("tee", stock=5, per_user_limit=5)
    app.wsgi_app = ProxyFix(app.wsgi_app, x_proto=1, x_host=1)  # type: ignore[method-assign]
    client = app.test_client()
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "shop.example"}
    r = client.post(ORDER, headers={**ALICE, **forwarded, "Origin": "https://shop.example"})
    assert r.status_code == 202, r.get_data(as_text=True)
    r = client.post(ORDER, headers={**ALICE, **forwarded, "Origin": "http://localhost"})
    problem(r, 403, "cross_origin")


@pytest.mark.parametrize(
    "setting",
    [
        ["https://shop.example", "https://m.shop.example:8443"],
        ("https://shop.example", "https://m.shop.example:8443"),
        "https://shop.example, https://m.shop.example:8443",
        "https://SHOP.example/,https://m.shop.example:8443",
    ],
)
def test_origins_in_the_allow_list_are_accepted(make_app: MakeApp, setting: Any) -> None:
    app, flashsale = make_app(FLASHSALE_ALLOWED_ORIGINS=setting)
    with app.app_context():
        flashsale.create_sale("tee", stock=5, per_user_limit=5)
    client = app.test_client()
    for origin in ("https://shop.example", "https://m.shop.example:8443", "http://localhost"):
        r = client.post(ORDER, headers={**ALICE, "Origin": origin})
        assert r.status_code == 202, (origin, r.get_data(as_text=True))
    problem(
        client.post(ORDER, headers={**ALICE, "Origin": "https://evil.example"}), 403, "cross_origin"
    )
    problem(client.post(ORDER, headers={**ALICE, "Origin": "null"}), 403, "cross_origin")


@pytest.mark.parametrize(
    "setting",
    [
        "null",
        ["null"],
        "*",
        "shop.example",
        "https://shop.example/path",
        "https://shop.example?x=1",
        "https://user@shop.example",
        "https://",
        ["https://shop.example", 42],
        42,
    ],
)
def test_bad_allowed_origins_fail_at_start_up(make_app: MakeApp, setting: Any) -> None:
    with pytest.raises(ConfigurationError, match="FLASHSALE_ALLOWED_ORIGINS"):
        make_app(FLASHSALE_ALLOWED_ORIGINS=setting)


def test_requests_without_origin_are_accepted(client: Any, sale: str) -> None:
    # Non-browser clients (curl, mobile apps, server-to-server) send no Origin.
    r = client.post(ORDER, json={"quantity": 1}, headers=ALICE)
    assert r.status_code == 202


def test_safe_methods_from_another_origin_are_served(client: Any, sale: str) -> None:
    r = client.get(f"{PREFIX}/tee", headers={"Origin": "https://evil.example"})
    assert r.status_code == 200


# -- cost --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_kwargs",
    [
        {"data": "quantity=1", "content_type": "application/x-www-form-urlencoded"},
        {"data": "", "content_type": "text/plain"},
        {"json": {"quantity": 1}, "headers": {"Origin": "https://evil.example"}},
        {"headers": {"Origin": "null"}},
    ],
)
def test_cross_site_refusals_cost_no_redis_call(
    client: Any, sale: str, command_counter: CommandCounter, request_kwargs: dict[str, Any]
) -> None:
    headers = {**ALICE, **request_kwargs.pop("headers", {})}
    client.post(ORDER, headers=ALICE)  # warm-up: scripts and cache are loaded
    responses: list[Any] = []
    sent = command_counter.count(
        lambda: responses.append(client.post(ORDER, headers=headers, **request_kwargs))
    )
    assert responses[0].status_code in (403, 415)
    assert sent == []


def test_cross_site_refusals_come_before_the_site_wide_rate_limit(
    make_app: MakeApp, command_counter: CommandCounter
) -> None:
    app, flashsale = make_app(FLASHSALE_API_RATE_LIMIT="100/second")
    with app.app_context():
        flashsale.create_sale("tee", stock=5, per_user_limit=5)
    client = app.test_client()
    client.post(ORDER, headers=ALICE)  # warm-up
    responses: list[Any] = []
    sent = command_counter.count(
        lambda: responses.append(
            client.post(ORDER, headers={**ALICE, "Origin": "https://evil.example"})
        )
    )
    problem(responses[0], 403, "cross_origin")
    assert sent == []


# -- the example shop --------------------------------------------------------------


def test_example_shop_session_cookie_is_samesite_lax(tmp_path: Path) -> None:
    from examples.shop.app import create_app

    app = create_app(
        {
            "TESTING": True,
            "SHOP_DATABASE": str(tmp_path / "shop.sqlite3"),
            "FLASHSALE_REDIS_URL": "memory://",
            "FLASHSALE_INLINE_WORKER": False,
        }
    )
    try:
        response = app.test_client().post("/login", data={"name": "alice"})
        cookie = response.headers["Set-Cookie"]
        assert "session=" in cookie
        assert "SameSite=Lax" in cookie
    finally:
        FlashSale.state(app).cache.stop(timeout=0)
