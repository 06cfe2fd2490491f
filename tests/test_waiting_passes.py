"""Passes: only a valid, unexpired pass of this buyer for this sale lets an order in,
verified in the web process, and the order stays one round trip."""

from __future__ import annotations

import time
from typing import Any

import pytest
from flask import Flask
from itsdangerous import URLSafeSerializer

from flask_flashsale import FlashSale

from .helpers import PREFIX, CommandCounter, MakeApp, problem


def ready_pass(flashsale: FlashSale, sale_id: str, user: str) -> str:
    status = flashsale.join_queue(sale_id, user)
    assert status.status == "ready" and status.pass_token
    return status.pass_token


@pytest.fixture
def queued(flashsale: FlashSale) -> FlashSale:
    """Sale "tee" with a FIFO queue that lets 100 buyers through at once."""
    flashsale.create_sale("tee", stock=10, fairness="fifo", admit_rate=100)
    return flashsale


def order(client: Any, user: str, pass_token: str | None, **headers: str) -> Any:
    sent = {"X-User": user, **headers}
    if pass_token is not None:
        sent["FlashSale-Pass"] = pass_token
    return client.post(f"{PREFIX}/tee/order", headers=sent)


def test_an_order_without_a_pass_is_refused_with_pass_required(
    queued: FlashSale, client: Any
) -> None:
    doc = problem(order(client, "ann", None), 403, "pass_required")
    assert "queue" in doc["detail"].lower()
    assert queued.place_order("tee", "ann").status == "pass_required"


def test_a_valid_pass_lets_the_order_in(queued: FlashSale, client: Any) -> None:
    r = order(client, "ann", ready_pass(queued, "tee", "ann"))
    assert r.status_code == 202
    assert r.get_json()["status"] == "queued"


def test_a_forged_pass_is_refused(queued: FlashSale, client: Any) -> None:
    good = ready_pass(queued, "tee", "ann")
    payload, _, signature = good.rpartition(".")
    tampered = payload + "." + ("A" if signature[0] != "A" else "B") + signature[1:]
    forged_with_other_key = URLSafeSerializer("not-the-secret", salt="flashsale.pass\x00ann").dumps(
        ["tee", 1, 2**42, "whatever"]
    )
    for bad in (tampered, forged_with_other_key, "", "x", "a.b.c", good + "x"):
        problem(order(client, "ann", bad), 403, "pass_invalid")
    assert queued.get_sale("tee").remaining == 10  # type: ignore[union-attr]


def test_another_buyers_pass_is_refused(queued: FlashSale, client: Any) -> None:
    anns = ready_pass(queued, "tee", "ann")
    ready_pass(queued, "tee", "bob")
    problem(order(client, "bob", anns), 403, "pass_invalid")


def test_a_pass_for_another_sale_is_refused(queued: FlashSale, client: Any) -> None:
    queued.create_sale("cap", stock=10, fairness="fifo", admit_rate=100)
    caps = ready_pass(queued, "cap", "ann")
    ready_pass(queued, "tee", "ann")
    problem(order(client, "ann", caps), 403, "pass_invalid")


def test_an_expired_pass_is_refused(make_app: MakeApp) -> None:
    app, flashsale = make_app(FLASHSALE_PASS_TTL=0.3)
    with app.app_context():
        flashsale.create_sale("tee", stock=10, fairness="fifo", admit_rate=100)
        token = ready_pass(flashsale, "tee", "ann")
        time.sleep(0.35)
        assert flashsale.place_order("tee", "ann", queue_pass=token).status == "pass_invalid"
    problem(order(app.test_client(), "ann", token), 403, "pass_invalid")


@pytest.mark.parametrize("strategy", ["lua", "optimistic", "lock"])
def test_redis_refuses_an_expired_pass_even_when_the_web_clock_is_behind(
    make_app: MakeApp, strategy: str
) -> None:
    app, flashsale = make_app(FLASHSALE_PASS_TTL=0.3, FLASHSALE_INVENTORY_STRATEGY=strategy)
    with app.app_context():
        flashsale.create_sale("tee", stock=10, fairness="fifo", admit_rate=100)
        token = ready_pass(flashsale, "tee", "ann")
        time.sleep(0.35)
        FlashSale.state(app).waiting.offset_ms -= 60_000  # this host thinks it is a minute ago
        assert flashsale.place_order("tee", "ann", queue_pass=token).status == "pass_invalid"
        assert flashsale.get_sale("tee").remaining == 10  # type: ignore[union-attr]


def test_a_pass_of_a_queue_started_over_is_refused(queued: FlashSale, client: Any) -> None:
    token = ready_pass(queued, "tee", "ann")
    queued.delete_sale("tee")
    queued.create_sale("tee", stock=10, fairness="fifo", admit_rate=100)
    problem(order(client, "ann", token), 403, "pass_invalid")
    assert order(client, "ann", ready_pass(queued, "tee", "ann")).status_code == 202


@pytest.mark.parametrize("strategy", ["lua", "optimistic", "lock"])
def test_every_inventory_strategy_checks_the_pass(make_app: MakeApp, strategy: str) -> None:
    app, flashsale = make_app(FLASHSALE_INVENTORY_STRATEGY=strategy)
    with app.app_context():
        flashsale.create_sale("tee", stock=10, fairness="fifo", admit_rate=100)
        token = ready_pass(flashsale, "tee", "ann")
        assert flashsale.place_order("tee", "ann").status == "pass_required"
        assert flashsale.place_order("tee", "bob", queue_pass=token).status == "pass_invalid"
        assert flashsale.place_order("tee", "ann", queue_pass=token).status == "queued"


@pytest.mark.parametrize("limit", [1, 2])
def test_a_valid_pass_orders_up_to_the_per_user_limit(
    flashsale: FlashSale, client: Any, limit: int
) -> None:
    flashsale.create_sale("tee", stock=10, per_user_limit=limit, fairness="fifo", admit_rate=100)
    token = ready_pass(flashsale, "tee", "ann")
    for _ in range(limit):
        assert order(client, "ann", token).status_code == 202
    problem(order(client, "ann", token), 409, "limit_reached")
    assert flashsale.get_sale("tee").remaining == 10 - limit  # type: ignore[union-attr]


def test_a_retry_with_the_same_idempotency_key_replays_without_a_new_pass(
    make_app: MakeApp,
) -> None:
    app, flashsale = make_app(FLASHSALE_PASS_TTL=0.3)
    with app.app_context():
        flashsale.create_sale("tee", stock=10, fairness="fifo", admit_rate=100)
        token = ready_pass(flashsale, "tee", "ann")
    client = app.test_client()
    first = order(client, "ann", token, **{"Idempotency-Key": "k1"})
    time.sleep(0.35)
    again = order(client, "ann", None, **{"Idempotency-Key": "k1"})
    assert again.status_code == 202
    assert again.get_json()["ticket_id"] == first.get_json()["ticket_id"]
    assert again.get_json()["status"] == "duplicate"


def test_a_pass_header_on_a_sale_without_a_queue_is_ignored(
    flashsale: FlashSale, client: Any
) -> None:
    flashsale.create_sale("tee", stock=10)
    assert order(client, "ann", "not-a-pass").status_code == 202


def test_an_order_with_a_pass_is_still_one_round_trip(
    queued: FlashSale, client: Any, command_counter: CommandCounter
) -> None:
    token = ready_pass(queued, "tee", "ann")
    responses: list[Any] = []
    sent = command_counter.count(lambda: responses.append(order(client, "ann", token)))
    assert responses[0].status_code == 202
    assert [c.split(" ", 1)[0].upper() for c in sent] == ["EVALSHA"]


def test_refusing_a_pass_is_one_round_trip_too(
    queued: FlashSale, client: Any, command_counter: CommandCounter
) -> None:
    responses: list[Any] = []
    sent = command_counter.count(
        lambda: responses.extend([order(client, "ann", None), order(client, "ann", "forged")])
    )
    assert [r.status_code for r in responses] == [403, 403]
    assert [c.split(" ", 1)[0].upper() for c in sent] == ["EVALSHA", "EVALSHA"]


def test_a_sold_out_queued_sale_refuses_orders_without_redis(
    make_app: MakeApp, command_counter: CommandCounter
) -> None:
    app, flashsale = make_app(FLASHSALE_CACHE_TTL=60)
    with app.app_context():
        flashsale.create_sale("tee", stock=1, fairness="fifo", admit_rate=1000)
        flashsale.get_sale("tee")  # starts the events subscriber
        subscriber = FlashSale.state(app).cache.subscriber
        assert subscriber is not None and subscriber.subscribed.wait(5)
        tokens = [ready_pass(flashsale, "tee", f"u{i}") for i in range(50)]
        assert flashsale.place_order("tee", "u0", queue_pass=tokens[0]).status == "queued"
    client = app.test_client()
    responses: list[Any] = []

    def crowd() -> None:
        for i, token in enumerate(tokens[1:], 1):
            responses.append(order(client, f"u{i}", token))
        for i in range(50):
            responses.append(order(client, f"late{i}", None))

    assert command_counter.count(crowd) == []
    assert {r.get_json()["code"] for r in responses} == {"sold_out"}


def test_the_pass_names_no_buyer_in_clear(queued: FlashSale) -> None:
    queued.create_sale("tee", stock=10, fairness="fifo", admit_rate=100)
    token = ready_pass(queued, "tee", "ann@example.com")
    import base64

    payload = token.split(".")[0]
    decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    assert b"ann@example.com" not in decoded


def test_the_python_api_takes_the_pass_as_queue_pass(app: Flask, queued: FlashSale) -> None:
    token = ready_pass(queued, "tee", "ann")
    assert queued.place_order("tee", "ann", queue_pass=token).status == "queued"
    assert queued.place_order("tee", "bob", queue_pass=token).status == "pass_invalid"
