"""The operator dashboard (FLASHSALE_DASHBOARD_PATH): operators only, the status's figures.

The browser half (the page polling this JSON, the chart moving) is in
tests/test_browser.py; these tests hold the HTTP contract.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask, request

from flask_flashsale import FlashSale, Order
from flask_flashsale.cli import flashsale_cli
from flask_flashsale.errors import ConfigurationError

from .helpers import MakeApp, problem
from .worker_host import FAST

PATH = "/ops/flashsale"
OPERATOR = {"X-User": "olga"}
BUYER = {"X-User": "bob"}


def dashboard_app(
    make_app: MakeApp, *, access: bool = True, **config: Any
) -> tuple[Flask, FlashSale]:
    app, ext = make_app(FLASHSALE_DASHBOARD_PATH=PATH, **config)
    if access:

        @ext.dashboard_access
        def operators() -> bool:
            return request.headers.get("X-User") == "olga"

    return app, ext


def test_the_dashboard_is_off_by_default(make_app: MakeApp) -> None:
    app, _ = make_app()
    assert FlashSale.state(app).settings.dashboard_path is None
    assert not any(r.endpoint.startswith("flashsale_dashboard") for r in app.url_map.iter_rules())


def test_a_dashboard_path_must_be_a_path(make_app: MakeApp) -> None:
    with pytest.raises(ConfigurationError, match="FLASHSALE_DASHBOARD_PATH"):
        make_app(FLASHSALE_DASHBOARD_PATH="ops")


def test_without_an_access_function_every_request_gets_403(make_app: MakeApp) -> None:
    app, _ = dashboard_app(make_app, access=False)
    client = app.test_client()
    for url in (PATH, f"{PATH}/status.json", f"{PATH}/static/dashboard.js"):
        problem(client.get(url, headers=OPERATOR), 403, "dashboard_forbidden")


def test_a_non_operator_gets_403_on_every_dashboard_url(make_app: MakeApp) -> None:
    app, _ = dashboard_app(make_app)
    client = app.test_client()
    for url in (PATH, f"{PATH}/status.json", f"{PATH}/static/dashboard.js"):
        problem(client.get(url, headers=BUYER), 403, "dashboard_forbidden")
        problem(client.get(url), 403, "dashboard_forbidden")
    requeue = f"{PATH}/sales/tee/dead-letters/1-0/requeue"
    problem(client.post(requeue, headers=BUYER), 403, "dashboard_forbidden")


def test_a_truthy_value_that_is_not_true_does_not_open_the_dashboard(make_app: MakeApp) -> None:
    app, ext = dashboard_app(make_app, access=False)
    ext.dashboard_access(lambda: "olga")  # e.g. a user object returned by mistake
    problem(app.test_client().get(PATH, headers=OPERATOR), 403, "dashboard_forbidden")


def test_an_operator_gets_the_page_with_our_own_script_and_no_third_party_code(
    make_app: MakeApp,
) -> None:
    app, _ = dashboard_app(make_app)
    client = app.test_client()
    page = client.get(PATH, headers=OPERATOR)
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert f'src="{PATH}/static/dashboard.js"' in html
    assert f'data-status-url="{PATH}/status.json"' in html
    assert "http://" not in html.replace('"http://www.w3.org', "") and "https://" not in html
    with client.get(f"{PATH}/static/dashboard.js", headers=OPERATOR) as script:
        assert script.status_code == 200
        assert 'cache: "no-store"' in script.get_data(as_text=True)


def test_status_json_shows_the_same_figures_as_flask_flashsale_status(make_app: MakeApp) -> None:
    app, ext = dashboard_app(make_app, **FAST, FLASHSALE_MAX_ATTEMPTS=1)

    @ext.order_handler
    def broken(order: Order) -> None:
        if order.user_id == "b0":
            raise RuntimeError("database down")

    with app.app_context():
        ext.create_sale("tee", stock=5, info={"name": "Tee"}, payment_timeout=60)
        for i in range(3):
            assert ext.place_order("tee", f"b{i}").status == "queued"
        ext.run_worker(burst=True)
        assert ext.place_order("tee", "b9").status == "queued"  # still in the queue
    doc = app.test_client().get(f"{PATH}/status.json", headers=OPERATOR).get_json()
    runner = app.test_cli_runner()
    status = json.loads(runner.invoke(flashsale_cli, ["status", "--json"]).output)
    (sale,) = doc["sales"]
    (expected,) = status["sales"]
    assert {k: sale[k] for k in expected} == expected
    assert sale["remaining"] == 2 and sale["dead_letters"] == 1 and sale["length"] == 1
    assert sale["awaiting_payment"] == 2
    assert sale["name"] == "Tee" and sale["units_admitted"] == 3  # b0's unit came back
    assert [d["user_id"] for d in sale["dead_letter_entries"]] == ["b0"]
    assert sale["waiting_room"] is None  # no queue on this sale
    assert doc["workers"] == status["workers"] and doc["supervisors"] == status["supervisors"]


def test_answers_by_result_are_this_process_counters_labelled_as_such(make_app: MakeApp) -> None:
    app, ext = dashboard_app(make_app, FLASHSALE_METRICS=True)
    with app.app_context():
        ext.create_sale("tee", stock=1)
        ext.place_order("tee", "a")
        ext.place_order("tee", "b")
        ext.place_order("tee", "a", idempotency_key="k")
    doc = app.test_client().get(f"{PATH}/status.json", headers=OPERATOR).get_json()
    assert doc["answers_source"] == "this web process"
    assert doc["sales"][0]["answers"] == {"queued": 1.0, "sold_out": 1.0, "limit_reached": 1.0}


def test_with_metrics_off_there_are_no_answers_by_result(make_app: MakeApp) -> None:
    app, ext = dashboard_app(make_app, FLASHSALE_METRICS=False)
    with app.app_context():
        ext.create_sale("tee", stock=1)
    doc = app.test_client().get(f"{PATH}/status.json", headers=OPERATOR).get_json()
    assert doc["answers_source"] is None and doc["sales"][0]["answers"] is None


def test_status_json_is_never_cached(make_app: MakeApp) -> None:
    app, _ = dashboard_app(make_app)
    response = app.test_client().get(f"{PATH}/status.json", headers=OPERATOR)
    assert response.headers["Cache-Control"] == "no-store"


@pytest.fixture
def one_dead_letter(make_app: MakeApp) -> tuple[Flask, FlashSale, str]:
    app, ext = dashboard_app(make_app, **FAST, FLASHSALE_MAX_ATTEMPTS=1)
    fail = {"on": True}

    @ext.order_handler
    def flaky(order: Order) -> None:
        if fail["on"]:
            raise RuntimeError("database down")

    with app.app_context():
        ext.create_sale("tee", stock=3)
        assert ext.place_order("tee", "alice").status == "queued"
        ext.run_worker(burst=True)
        (letter,) = ext.state().orders.dead_letters("tee")
    fail["on"] = False
    return app, ext, letter.entry_id


def test_the_requeue_button_puts_a_dead_letter_back_on_the_queue(
    one_dead_letter: tuple[Flask, FlashSale, str],
) -> None:
    app, ext, entry = one_dead_letter
    client = app.test_client()
    response = client.post(
        f"{PATH}/sales/tee/dead-letters/{entry}/requeue",
        headers={**OPERATOR, "Origin": "http://localhost"},
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json() == {"sale_id": "tee", "entry_id": entry, "outcome": "queued"}
    with app.app_context():
        ext.run_worker(burst=True)
    doc = client.get(f"{PATH}/status.json", headers=OPERATOR).get_json()
    assert doc["sales"][0]["dead_letters"] == 0 and doc["sales"][0]["remaining"] == 2


def test_requeue_twice_answers_404_the_second_time(
    one_dead_letter: tuple[Flask, FlashSale, str],
) -> None:
    app, _, entry = one_dead_letter
    client = app.test_client()
    url = f"{PATH}/sales/tee/dead-letters/{entry}/requeue"
    assert client.post(url, headers=OPERATOR).status_code == 200
    problem(client.post(url, headers=OPERATOR), 404, "not_found")


def test_a_requeue_the_stock_cannot_cover_is_refused_with_its_reason(
    one_dead_letter: tuple[Flask, FlashSale, str],
) -> None:
    app, ext, entry = one_dead_letter
    with app.app_context():
        ext.restock("tee", -3)
    doc = problem(
        app.test_client().post(f"{PATH}/sales/tee/dead-letters/{entry}/requeue", headers=OPERATOR),
        409,
        "requeue_refused",
    )
    assert doc["outcome"] == "sold_out"


@pytest.mark.parametrize(
    ("headers", "kwargs", "status", "code"),
    [
        ({"Origin": "https://evil.example"}, {}, 403, "cross_origin"),
        ({"Origin": "null"}, {}, 403, "cross_origin"),
        ({}, {"data": "x=1", "content_type": "application/x-www-form-urlencoded"}, 415,
         "unsupported_media_type"),
        ({}, {"data": "", "content_type": "text/plain"}, 415, "unsupported_media_type"),
    ],
)
def test_requeue_follows_the_blueprints_cross_site_rules(
    one_dead_letter: tuple[Flask, FlashSale, str],
    headers: dict[str, str],
    kwargs: dict[str, Any],
    status: int,
    code: str,
) -> None:
    app, ext, entry = one_dead_letter
    url = f"{PATH}/sales/tee/dead-letters/{entry}/requeue"
    problem(app.test_client().post(url, headers={**OPERATOR, **headers}, **kwargs), status, code)
    with app.app_context():
        assert ext.state().orders.stats(["tee"])[0].dead_letters == 1


def test_a_bad_sale_id_in_a_requeue_url_is_a_404_not_a_500(make_app: MakeApp) -> None:
    app, _ = dashboard_app(make_app)
    response = app.test_client().post(
        f"{PATH}/sales/{'x' * 80}/dead-letters/1-0/requeue", headers=OPERATOR
    )
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"


def test_a_sale_with_a_waiting_room_shows_the_status_figures_of_its_queue(
    make_app: MakeApp,
) -> None:
    app, ext = dashboard_app(make_app)
    with app.app_context():
        ext.create_sale("tee", stock=5, fairness="fifo", admit_rate=1)
        ext.create_sale("cap", stock=5)
        for buyer in ("a", "b", "c"):
            ext.join_queue("tee", buyer)
    doc = app.test_client().get(f"{PATH}/status.json", headers=OPERATOR).get_json()
    status = json.loads(app.test_cli_runner().invoke(flashsale_cli, ["status", "--json"]).output)
    cap, tee = doc["sales"]
    assert cap["waiting_room"] is None
    room = tee["waiting_room"]
    assert room["fairness"] == "fifo" and room["joined"] == 3
    assert room["waiting"] + room["let_through"] == 3
    assert tee["queue"] == status["sales"][1]["queue"]
