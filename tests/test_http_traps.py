"""Small traps of the HTTP API: unknown body fields, one Date header, one 404 wording, log lines.

Also the problem ``type`` URLs: each points at the code's entry on
docs/problems.rst, which must exist for every code the extension can send.
"""

from __future__ import annotations

import http.client
import inspect
import logging
import threading
from collections.abc import Iterator
from typing import Any

import docutils.core
import docutils.nodes
import docutils.utils
import pytest
from flask import Flask
from werkzeug.serving import make_server

import flask_flashsale
from flask_flashsale import FlashSale, InvalidSaleId, SaleNotFound, errors
from flask_flashsale.views import ORDER_FIELDS

from .helpers import ALICE, PREFIX, ROOT, MakeApp, closed_port, problem, wait_for
from .redis_server import RedisServer

JSON = {"Content-Type": "application/json"}


# -- unknown body fields -----------------------------------------------------------


@pytest.mark.parametrize("body", ['{"qty": 1}', '{"quantity": 1, "note": "gift"}'])
def test_an_unknown_body_field_is_refused_naming_it(
    client: Any, flashsale: FlashSale, body: str
) -> None:
    flashsale.create_sale("tee", stock=5)
    response = client.post(f"{PREFIX}/tee/order", data=body, headers={**ALICE, **JSON})
    doc = problem(response, 422, "invalid_request")
    unknown = "qty" if "qty" in body else "note"
    assert doc["field"] == unknown and repr(unknown) in doc["detail"]
    assert flashsale.get_sale("tee").remaining == 5  # type: ignore[union-attr]


def test_the_known_field_alone_is_still_accepted(client: Any, flashsale: FlashSale) -> None:
    flashsale.create_sale("tee", stock=5, per_user_limit=2)
    response = client.post(f"{PREFIX}/tee/order", data='{"quantity": 2}', headers={**ALICE, **JSON})
    assert response.status_code == 202, response.get_data(as_text=True)
    assert response.get_json()["remaining"] == 3


def test_the_openapi_body_schema_refuses_other_members_too(client: Any) -> None:
    doc = client.get(f"{PREFIX}/openapi.json").get_json()
    operation = doc["paths"][f"{PREFIX}/{{sale_id}}/order"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == ORDER_FIELDS


# -- one 404 wording -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/nope"), ("POST", "/nope/order"), ("GET", "/nope/orders")],
)
def test_every_unknown_sale_answer_words_it_the_same(client: Any, method: str, path: str) -> None:
    response = client.open(f"{PREFIX}{path}", method=method, headers=ALICE)
    doc = problem(response, 404, "sale_not_found")
    assert (doc["title"], doc["detail"]) == ("No such sale", "no sale 'nope'")


@pytest.mark.parametrize(("method", "path"), [("GET", "/bad id"), ("POST", "/bad id/order")])
def test_an_invalid_id_in_a_url_is_an_unknown_sale(client: Any, method: str, path: str) -> None:
    doc = problem(
        client.open(f"{PREFIX}{path}", method=method, headers=ALICE), 404, "sale_not_found"
    )
    assert doc["detail"] == "no sale 'bad id'"


def test_an_invalid_sale_id_in_python_has_a_code_of_its_own(flashsale: FlashSale) -> None:
    with pytest.raises(InvalidSaleId) as info:
        flashsale.create_sale("bad/id", stock=1)
    assert info.value.error_code == "invalid_sale_id"
    assert isinstance(info.value, SaleNotFound)  # `except SaleNotFound` still catches it
    assert str(info.value).startswith("'bad/id' is not a valid sale id")


def test_a_reserved_sale_id_is_an_invalid_sale_id(flashsale: FlashSale) -> None:
    with pytest.raises(InvalidSaleId, match="reserved"):
        flashsale.create_sale("orders", stock=1)


# -- errors read as one line -----------------------------------------------------------


def test_str_of_an_error_is_its_message_without_an_http_status() -> None:
    error = errors.ConfigurationError("FLASHSALE_CACHE_TTL must be a number, got 'soon'")
    assert str(error) == "FLASHSALE_CACHE_TTL must be a number, got 'soon'"
    assert str(errors.SoldOut()) == "Sold out"


def test_configuration_errors_are_caught_as_flash_sale_errors(make_app: MakeApp) -> None:
    with pytest.raises(errors.FlashSaleError):
        make_app(FLASHSALE_CACHE_TTL="soon")


# -- exactly one Date header -------------------------------------------------------------


@pytest.fixture
def served(make_app: MakeApp) -> Iterator[int]:
    """The host app behind werkzeug's real HTTP server, on 127.0.0.1; its port."""
    app, ext = make_app()
    with app.app_context():
        ext.create_sale("tee", stock=5)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.port
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", ""),
        ("GET", "/tee"),
        ("HEAD", "/tee"),
        ("GET", "/nope"),
        ("POST", "/tee/order"),
        ("GET", "/tee/orders"),
        ("GET", "/openapi.json"),
    ],
)
def test_every_answer_carries_exactly_one_date_header(served: int, method: str, path: str) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", served, timeout=10)
    try:
        connection.request(method, PREFIX + path, headers=ALICE)
        response = connection.getresponse()
        response.read()
    finally:
        connection.close()
    assert response.status < 500
    assert len(response.msg.get_all("Date") or []) == 1, response.msg.items()


# -- the log names where Redis was looked for --------------------------------------------


def test_a_redis_error_in_the_web_log_names_the_address(caplog: pytest.LogCaptureFixture) -> None:
    port = closed_port()
    app = Flask("closed-web")
    app.config.update(SECRET_KEY="x", FLASHSALE_REDIS_URL=f"redis://127.0.0.1:{port}/0")
    FlashSale(app)
    try:
        with caplog.at_level(logging.WARNING):
            problem(app.test_client().get(f"{PREFIX}/tee"), 503, "backend_unavailable")
    finally:
        app.extensions["flashsale"].cache.stop(timeout=0)
    (line,) = [r.getMessage() for r in caplog.records if "Redis error" in r.getMessage()]
    assert f"127.0.0.1:{port}" in line and "ConnectionError" in line


def test_the_events_subscriber_log_names_the_address(
    private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    app = Flask("events-log")
    app.config.update(SECRET_KEY="x", FLASHSALE_REDIS_URL=private_redis.url)
    FlashSale(app)
    subscriber = app.extensions["flashsale"].cache.subscriber
    try:
        with app.app_context():
            app.extensions["flashsale"].ext.list_sales()  # starts the subscriber
        wait_for(subscriber.subscribed.is_set, 5)
        with caplog.at_level(logging.WARNING, "flask_flashsale"):
            private_redis.kill()
            wait_for(lambda: "subscriber lost Redis" in caplog.text, 5)
    finally:
        subscriber.stop(timeout=0)
    (line,) = [r.getMessage() for r in caplog.records if "subscriber lost Redis" in r.getMessage()]
    assert f"127.0.0.1:{private_redis.port}" in line


# -- problem types point at docs/problems.rst ----------------------------------------------


def every_error_class() -> list[type[errors.FlashSaleError]]:
    """``FlashSaleError`` and every subclass the package defines, in any module."""
    for name in dir(flask_flashsale):
        getattr(flask_flashsale, name)
    found: list[type[errors.FlashSaleError]] = [errors.FlashSaleError]
    for cls in found:
        found.extend(sub for sub in cls.__subclasses__() if sub not in found)
    return [c for c in found if c.__module__.startswith("flask_flashsale")]


def every_code() -> set[str]:
    codes = {cls.error_code for cls in every_error_class()}
    codes |= set(errors.HTTP_ERROR_CODES.values()) | {errors.HTTP_ERROR, errors.INTERNAL_ERROR}
    return codes


def problems_page_ids() -> set[str]:
    """The HTML ids docs/problems.rst gets (the anchors a ``type`` URL can point at)."""
    source = (ROOT / "docs" / "problems.rst").read_text()
    # Sphinx roles are unknown to plain docutils: parse quietly, keep the structure.
    tree = docutils.core.publish_doctree(
        source, settings_overrides={"report_level": 5, "halt_level": 5}
    )
    return {id_ for node in tree.findall(docutils.nodes.Element) for id_ in node["ids"]}


def test_every_code_has_an_entry_on_the_problems_page() -> None:
    ids = problems_page_ids()
    for code in sorted(every_code()):
        error = errors.FlashSaleError()
        error.error_code = code
        page, _, anchor = error.problem()["type"].partition("#")
        assert page.endswith("/problems.html")
        assert anchor in ids, f"docs/problems.rst has no entry for {code!r} (#{anchor})"


def test_the_problems_page_is_in_the_docs_table_of_contents() -> None:
    index = (ROOT / "docs" / "index.rst").read_text()
    assert "\n   problems\n" in index


def test_a_problem_sent_by_the_api_links_to_its_entry(client: Any) -> None:
    doc = problem(client.get(f"{PREFIX}/nope"), 404, "sale_not_found")
    assert doc["type"].endswith("/problems.html#sale-not-found")


def test_every_error_class_is_documented_in_errors_module_or_package() -> None:
    # Guards the collector above: it must see the classes errors.py defines.
    defined = {
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.FlashSaleError)
    }
    assert defined <= set(every_error_class())
