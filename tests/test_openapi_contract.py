"""The OpenAPI document says what the API accepts and answers, following the config."""

from __future__ import annotations

import inspect
import re
from typing import Any

import pytest

from flask_flashsale import errors
from flask_flashsale.keys import SALE_ID, check_idempotency_key
from flask_flashsale.views import RESERVED_SALE_IDS

from .helpers import PREFIX, MakeApp


def document(make_app: MakeApp, **config: Any) -> dict[str, Any]:
    app, _ = make_app(**config)
    r = app.test_client().get(f"{PREFIX}/openapi.json")
    assert r.status_code == 200
    doc: dict[str, Any] = r.get_json()
    return doc


def order_operation(doc: dict[str, Any]) -> dict[str, Any]:
    op: dict[str, Any] = doc["paths"][f"{PREFIX}/{{sale_id}}/order"]["post"]
    return op


@pytest.mark.parametrize("max_quantity", [1, 7, 100])
def test_quantity_schema_follows_flashsale_max_quantity(
    make_app: MakeApp, max_quantity: int
) -> None:
    doc = document(make_app, FLASHSALE_MAX_QUANTITY=max_quantity)
    body = order_operation(doc)["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["quantity"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": max_quantity,
        "default": 1,
    }
    assert body["type"] == "object"


@pytest.mark.parametrize(
    "key", ["k", "abc-123", "!" * 255, "~", "x" * 256, "", "has space", "tab\there", "é"]
)
def test_idempotency_key_schema_accepts_exactly_what_the_api_accepts(
    make_app: MakeApp, key: str
) -> None:
    doc = document(make_app)
    [header] = [p for p in order_operation(doc)["parameters"] if p["in"] == "header"]
    assert header["name"] == "Idempotency-Key"
    schema = header["schema"]
    documented = (
        schema["minLength"] <= len(key) <= schema["maxLength"]
        and re.search(schema["pattern"], key) is not None
    )
    try:
        check_idempotency_key(key)
        accepted = True
    except errors.InvalidRequest:
        accepted = False
    assert documented == accepted


def test_sale_id_schema_is_the_validated_pattern(make_app: MakeApp) -> None:
    doc = document(make_app)
    [param] = [p for p in order_operation(doc)["parameters"] if p["in"] == "path"]
    assert param["schema"]["pattern"] == f"^{SALE_ID.pattern}$"


def test_order_answers_include_the_cross_site_and_idempotency_refusals(
    make_app: MakeApp,
) -> None:
    responses = order_operation(document(make_app))["responses"]
    assert {"202", "401", "403", "404", "409", "410", "413", "415", "422", "429", "503"} <= set(
        responses
    )
    content = order_operation(document(make_app))["requestBody"]["content"]
    assert list(content) == ["application/json"]


def test_the_buyers_orders_list_is_described(make_app: MakeApp) -> None:
    doc = document(make_app)
    op = doc["paths"][f"{PREFIX}/{{sale_id}}/orders"]["get"]
    assert {"200", "401", "404", "503"} <= set(op["responses"])
    schema = op["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema["properties"]["tickets"] == {
        "type": "array",
        "items": {"$ref": "#/components/schemas/Ticket"},
    }


def test_every_path_of_the_blueprint_is_described_and_nothing_else(make_app: MakeApp) -> None:
    app, _ = make_app()
    doc = app.test_client().get(f"{PREFIX}/openapi.json").get_json()
    routed = {
        re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("flashsale.")
    }
    assert set(doc["paths"]) == routed


def test_problem_codes_list_every_code_the_api_sends(make_app: MakeApp) -> None:
    doc = document(make_app)
    enum = set(doc["components"]["schemas"]["Problem"]["properties"]["code"]["enum"])
    sent = {
        cls.error_code
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.FlashSaleError) and 400 <= cls.code < 500
    }
    sent.discard("lock_lost")  # raised by flashsale.lock() only, never by the blueprint
    sent.discard("invalid_sale_id")  # Python and CLI only: the blueprint says sale_not_found
    sent -= {"payment_refused", "payment_too_late"}  # flashsale.mark_paid() only, likewise
    sent |= set(errors.HTTP_ERROR_CODES.values())  # werkzeug's own 4xx, rendered as problems
    assert sent | {"cross_origin", "unsupported_media_type", "idempotency_mismatch"} <= enum


def test_reserved_sale_ids_are_the_first_segments_of_the_blueprints_fixed_routes(
    make_app: MakeApp,
) -> None:
    app, _ = make_app()
    segments = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("flashsale.") and rule.rule.startswith(PREFIX + "/"):
            first = rule.rule[len(PREFIX) + 1 :].split("/")[0]
            if "<" not in first:
                segments.add(first)
    assert segments == set(RESERVED_SALE_IDS)
