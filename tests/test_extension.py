"""The extension's shape: init_app, config, several apps, errors."""

from __future__ import annotations

import pytest
from flask import Flask

from flask_flashsale import (
    ConfigurationError,
    FlashSale,
    FlashSaleError,
    NotInitializedError,
)
from flask_flashsale.config import DEFAULTS


def test_init_app_later_stores_state_in_app_extensions(redis_url: str) -> None:
    ext = FlashSale()
    app = Flask("late")
    app.config.update(SECRET_KEY="test-secret", FLASHSALE_REDIS_URL=redis_url)
    ext.init_app(app)
    assert app.extensions["flashsale"].ext is ext
    assert "flashsale" in app.blueprints


def test_init_app_sets_every_default(redis_url: str) -> None:
    app = Flask("defaults")
    app.config.update(SECRET_KEY="test-secret", FLASHSALE_REDIS_URL=redis_url)
    FlashSale(app)
    for key, value in DEFAULTS.items():
        if key != "FLASHSALE_REDIS_URL":
            assert app.config[key] == value


def test_one_extension_serves_several_apps_with_their_own_redis_namespaces(
    redis_url: str,
) -> None:
    ext = FlashSale()
    apps = []
    for prefix in ("shop-a", "shop-b"):
        app = Flask(prefix)
        app.config.update(
            SECRET_KEY="test-secret", FLASHSALE_REDIS_URL=redis_url, FLASHSALE_KEY_PREFIX=prefix
        )
        ext.init_app(app)
        apps.append(app)
    with apps[0].app_context():
        ext.create_sale("tee", stock=1)
        assert ext.place_order("tee", "alice").status == "queued"
    with apps[1].app_context():
        assert ext.get_sale("tee") is None
        ext.create_sale("tee", stock=1)
        assert ext.place_order("tee", "alice").status == "queued"


def test_using_the_extension_without_init_app_names_the_fix() -> None:
    ext = FlashSale()
    app = Flask("bare")
    with app.app_context(), pytest.raises(NotInitializedError, match="init_app"):
        ext.get_sale("tee")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("FLASHSALE_REDIS_URL", "mysql://localhost"),
        ("FLASHSALE_INVENTORY_STRATEGY", "yolo"),
        ("FLASHSALE_CACHE_TTL", "soon"),
        ("FLASHSALE_MAX_ATTEMPTS", 0),
        ("FLASHSALE_KEY_PREFIX", "a{b}"),
        ("FLASHSALE_URL_PREFIX", "no-slash"),
        ("FLASHSALE_ORDER_RATE_PER_USER", "fast"),
        ("FLASHSALE_ORDER_RATE_PER_SALE", "10/fortnight"),
    ],
)
def test_bad_configuration_fails_at_start_up_naming_the_key(key: str, value: object) -> None:
    app = Flask("bad")
    app.config[key] = value
    with pytest.raises(ConfigurationError) as info:
        FlashSale(app)
    assert isinstance(info.value, FlashSaleError)
    assert key in str(info.value.description) or "rate" in str(info.value.description)


def test_errors_are_http_exceptions_a_host_can_handle(redis_url: str) -> None:
    app = Flask("handles")
    app.config.update(SECRET_KEY="test-secret", FLASHSALE_REDIS_URL=redis_url)
    ext = FlashSale(app)

    @app.route("/buy/<sale_id>")
    def buy(sale_id: str) -> str:
        admission = ext.place_order(sale_id, "alice", quantity=0)
        return admission.status

    response = app.test_client().get("/buy/tee")
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert response.get_json(force=True)["code"] == "invalid_request"
