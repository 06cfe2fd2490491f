"""Strict idempotency: a reused ``Idempotency-Key`` must carry the same parameters.

The same key with the same quantity replays the ticket (``duplicate``); with
another quantity it is refused (``idempotency_mismatch``, HTTP 422), in the
same single admission round trip, identically for every inventory strategy.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis as redis_lib

from flask_flashsale import Admission

from .helpers import ALICE, PREFIX, STRATEGIES, CommandCounter, MakeApp, problem


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_reused_key_with_another_quantity_is_an_idempotency_mismatch(
    make_app: MakeApp, redis_client: redis_lib.Redis, strategy: str
) -> None:
    app, flashsale = make_app(FLASHSALE_INVENTORY_STRATEGY=strategy)
    with app.app_context():
        flashsale.create_sale("tee", stock=10, per_user_limit=5)
        first = flashsale.place_order("tee", "alice", 1, idempotency_key="k")
        again = flashsale.place_order("tee", "alice", 3, idempotency_key="k")
    assert first.status == "queued"
    assert again.status == "idempotency_mismatch"
    assert not again.ok
    assert again.ticket_id is None
    assert redis_client.hget("flashsale:{tee}:sale", "remaining") == "9"
    assert redis_client.hgetall("flashsale:{tee}:users") == {"alice": "1"}
    assert redis_client.xlen("flashsale:{tee}:orders") == 1


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_reused_key_with_the_same_quantity_replays_the_ticket(
    make_app: MakeApp, redis_client: redis_lib.Redis, strategy: str
) -> None:
    app, flashsale = make_app(FLASHSALE_INVENTORY_STRATEGY=strategy)
    with app.app_context():
        flashsale.create_sale("tee", stock=10, per_user_limit=5)
        first = flashsale.place_order("tee", "alice", 2, idempotency_key="k")
        again = flashsale.place_order("tee", "alice", 2, idempotency_key="k")
    assert (first.status, again.status) == ("queued", "duplicate")
    assert again.ticket_id == first.ticket_id
    assert redis_client.hget("flashsale:{tee}:sale", "remaining") == "8"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_mismatch_is_answered_even_when_the_sale_is_sold_out(
    make_app: MakeApp, strategy: str
) -> None:
    app, flashsale = make_app(FLASHSALE_INVENTORY_STRATEGY=strategy)
    with app.app_context():
        flashsale.create_sale("tee", stock=1, per_user_limit=5)
        assert flashsale.place_order("tee", "alice", 1, idempotency_key="k").status == "queued"
        assert flashsale.place_order("tee", "alice", 2, idempotency_key="k").status == (
            "idempotency_mismatch"
        )
        assert flashsale.place_order("tee", "alice", 1, idempotency_key="k").status == "duplicate"


def test_the_same_key_of_another_buyer_is_not_a_mismatch(make_app: MakeApp) -> None:
    app, flashsale = make_app()
    with app.app_context():
        flashsale.create_sale("tee", stock=10, per_user_limit=5)
        assert flashsale.place_order("tee", "alice", 1, idempotency_key="k").status == "queued"
        assert flashsale.place_order("tee", "bob", 3, idempotency_key="k").status == "queued"


def test_mismatch_is_one_round_trip(make_app: MakeApp, command_counter: CommandCounter) -> None:
    app, flashsale = make_app()
    with app.app_context():
        flashsale.create_sale("tee", stock=10, per_user_limit=5)
        flashsale.place_order("tee", "alice", 1, idempotency_key="k")
        answers: list[Admission] = []
        sent = command_counter.count(
            lambda: answers.append(flashsale.place_order("tee", "alice", 3, idempotency_key="k"))
        )
    assert answers[0].status == "idempotency_mismatch"
    assert [c.split()[0] for c in sent] == ["EVALSHA"]


def test_http_reused_key_with_another_quantity_is_422_idempotency_mismatch(
    make_app: MakeApp,
) -> None:
    app, flashsale = make_app()
    with app.app_context():
        flashsale.create_sale("tee", stock=10, per_user_limit=5)
    client: Any = app.test_client()
    headers = {**ALICE, "Idempotency-Key": "abc-123"}
    first = client.post(f"{PREFIX}/tee/order", json={"quantity": 1}, headers=headers)
    assert first.status_code == 202
    r = client.post(f"{PREFIX}/tee/order", json={"quantity": 3}, headers=headers)
    doc = problem(r, 422, "idempotency_mismatch")
    assert "Idempotency-Key" in doc["detail"]
    # Without a body the quantity is 1: the same parameters, so a replay.
    replay = client.post(f"{PREFIX}/tee/order", headers=headers)
    assert replay.status_code == 202
    assert replay.get_json()["ticket_id"] == first.get_json()["ticket_id"]
    assert client.get(f"{PREFIX}/tee").get_json()["remaining"] == 9
