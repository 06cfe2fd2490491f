"""The order's ``Location``: the URI werkzeug would send, built without werkzeug's
per-response conversion (``flask_flashsale.responses``)."""

from __future__ import annotations

from typing import Any

import pytest
import werkzeug.wrappers.response
from flask import Flask, Response
from werkzeug.urls import iri_to_uri

from flask_flashsale import FlashSale

from .helpers import ALICE, PREFIX


@pytest.fixture
def sale(flashsale: FlashSale) -> str:
    flashsale.create_sale("tee.2_b-c", stock=50, per_user_limit=50)
    return "tee.2_b-c"


@pytest.mark.parametrize(
    "script_root", ["", "/shop", "/my shop", "/magasin-\u00e9t\u00e9", "/50%25"]
)
def test_location_is_what_werkzeug_would_send(
    client: Any, sale: str, script_root: str
) -> None:
    # WSGI carries the path's UTF-8 bytes as latin-1 characters (PEP 3333).
    wsgi_script_name = script_root.encode().decode("latin-1")
    r = client.post(
        f"{PREFIX}/{sale}/order", headers=ALICE, environ_overrides={"SCRIPT_NAME": wsgi_script_name}
    )
    assert r.status_code == 202
    ticket_id = r.get_json()["ticket_id"]
    assert r.headers["Location"] == iri_to_uri(f"{script_root}{PREFIX}/orders/{ticket_id}")


def test_an_accepted_order_skips_werkzeugs_location_conversion(
    client: Any, sale: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    converted: list[str] = []
    original = werkzeug.wrappers.response.iri_to_uri

    def counting(iri: str) -> str:
        converted.append(iri)
        return original(iri)

    client.post(f"{PREFIX}/{sale}/order", headers=ALICE)  # the prefix is converted once
    monkeypatch.setattr(werkzeug.wrappers.response, "iri_to_uri", counting)
    for _ in range(3):
        assert client.post(f"{PREFIX}/{sale}/order", headers=ALICE).status_code == 202
    assert converted == []


def test_after_request_hooks_see_the_location_and_may_change_it(
    app: Flask, client: Any, sale: str
) -> None:
    seen: list[str] = []

    @app.after_request
    def relocate(response: Response) -> Response:
        if response.status_code == 202:
            seen.append(response.headers["Location"])
            response.headers["Location"] = response.headers["Location"] + "?f\u00fcr=1"
        return response

    r = client.post(f"{PREFIX}/{sale}/order", headers=ALICE)
    ticket_id = r.get_json()["ticket_id"]
    assert seen == [f"{PREFIX}/orders/{ticket_id}"]
    # A changed Location is werkzeug's to convert again, as in any response.
    assert r.headers["Location"] == f"{PREFIX}/orders/{ticket_id}?f%C3%BCr=1"


def test_a_host_response_class_gets_the_plain_location(make_app: Any) -> None:
    class HostResponse(Response):
        pass

    app, flashsale = make_app()
    app.response_class = HostResponse
    with app.app_context():
        flashsale.create_sale("tee", stock=5, per_user_limit=5)
    seen: list[type] = []

    @app.after_request
    def record(response: Response) -> Response:
        seen.append(type(response))
        return response

    r = app.test_client().post(f"{PREFIX}/tee/order", headers=ALICE)
    assert r.headers["Location"] == f"{PREFIX}/orders/{r.get_json()['ticket_id']}"
    assert seen == [HostResponse]


def test_a_duplicate_keeps_its_replay_header_and_location(client: Any, sale: str) -> None:
    headers = {**ALICE, "Idempotency-Key": "k-1"}
    first = client.post(f"{PREFIX}/{sale}/order", headers=headers)
    again = client.post(f"{PREFIX}/{sale}/order", headers=headers)
    assert again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["Content-Type"] == "application/json"
