"""Admission throttles: per-buyer and per-sale token buckets inside ``admission.lua``.

A throttled attempt writes nothing (no stock, no per-buyer count, no ticket, no
stream entry), and an attempt refused for another reason takes no token.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis as redis_lib
from flask import Flask

from flask_flashsale import FlashSale, request_rate_limited

AppFactory = Callable[..., tuple[Flask, FlashSale]]


@pytest.fixture
def throttled(make_app: AppFactory) -> Callable[..., FlashSale]:
    """``throttled(user=..., sale=...)`` -> the extension, with an app context pushed."""
    contexts: list[Any] = []

    def factory(user: str | None = None, sale: str | None = None) -> FlashSale:
        app, flashsale = make_app(
            FLASHSALE_ORDER_RATE_PER_USER=user, FLASHSALE_ORDER_RATE_PER_SALE=sale
        )
        ctx = app.app_context()
        ctx.push()
        contexts.append(ctx)
        return flashsale

    yield factory  # type: ignore[misc]
    for ctx in reversed(contexts):
        ctx.pop()


def books(client: redis_lib.Redis, sale: str = "tee") -> dict[str, Any]:
    """What admission wrote for a sale: remaining, units per buyer, tickets, stream length."""
    return {
        "remaining": int(client.hget(f"flashsale:{{{sale}}}:sale", "remaining")),  # type: ignore[arg-type]
        "users": client.hgetall(f"flashsale:{{{sale}}}:users"),
        "tickets": len(client.keys(f"flashsale:{{{sale}}}:t:*")),
        "stream": client.xlen(f"flashsale:{{{sale}}}:orders"),
    }


def test_a_throttled_attempt_takes_no_stock_no_count_no_ticket(
    throttled: Callable[..., FlashSale], redis_client: redis_lib.Redis
) -> None:
    flashsale = throttled(user="1/minute")
    flashsale.create_sale("tee", stock=10, per_user_limit=5)
    assert flashsale.place_order("tee", "alice").status == "queued"
    before = books(redis_client)
    for _ in range(5):
        refused = flashsale.place_order("tee", "alice", quantity=2)
        assert (refused.status, refused.ticket_id) == ("rate_limited", None)
    assert (
        books(redis_client)
        == before
        == {
            "remaining": 9,
            "users": {"alice": "1"},
            "tickets": 1,
            "stream": 1,
        }
    )


def test_a_throttled_attempt_carries_retry_after_and_remaining(
    throttled: Callable[..., FlashSale],
) -> None:
    flashsale = throttled(user="1/minute")
    flashsale.create_sale("tee", stock=10, per_user_limit=5)
    flashsale.place_order("tee", "alice")
    refused = flashsale.place_order("tee", "alice")
    assert refused.status == "rate_limited"
    assert refused.retry_after is not None and 55 < refused.retry_after <= 60
    assert refused.remaining == 9
    assert not refused.ok


def test_per_user_bucket_lets_its_burst_through(throttled: Callable[..., FlashSale]) -> None:
    flashsale = throttled(user="1/minute;burst=3")
    flashsale.create_sale("tee", stock=10, per_user_limit=10)
    statuses = [flashsale.place_order("tee", "alice").status for _ in range(4)]
    assert statuses == ["queued"] * 3 + ["rate_limited"]


def test_per_user_buckets_are_per_buyer_and_per_sale(throttled: Callable[..., FlashSale]) -> None:
    flashsale = throttled(user="1/minute")
    flashsale.create_sale("tee", stock=10, per_user_limit=5)
    flashsale.create_sale("cap", stock=10, per_user_limit=5)
    assert flashsale.place_order("tee", "alice").status == "queued"
    assert flashsale.place_order("cap", "alice").status == "queued"
    assert flashsale.place_order("tee", "bob").status == "queued"
    assert flashsale.place_order("tee", "alice").status == "rate_limited"


def test_a_throttled_attempt_names_the_bucket_that_refused(
    throttled: Callable[..., FlashSale],
) -> None:
    flashsale = throttled(user="1/minute;burst=1", sale="1/minute;burst=2")
    flashsale.create_sale("tee", stock=10, per_user_limit=10)
    assert flashsale.place_order("tee", "alice").status == "queued"
    by_user = flashsale.place_order("tee", "alice")
    assert (by_user.status, by_user.throttled_by, by_user.ticket_id) == (
        "rate_limited",
        "user",
        None,
    )
    assert flashsale.place_order("tee", "bob").status == "queued"
    by_sale = flashsale.place_order("tee", "carol")
    assert (by_sale.status, by_sale.throttled_by) == ("rate_limited", "sale")


def test_per_sale_bucket_throttles_every_buyer_together(
    throttled: Callable[..., FlashSale],
) -> None:
    flashsale = throttled(sale="1/minute;burst=3")
    flashsale.create_sale("tee", stock=10)
    statuses = [flashsale.place_order("tee", f"user{i}").status for i in range(5)]
    assert statuses == ["queued"] * 3 + ["rate_limited"] * 2
    assert flashsale.get_sale("tee").remaining == 7  # type: ignore[union-attr]


def test_a_limit_reached_refusal_takes_no_token(
    throttled: Callable[..., FlashSale], redis_client: redis_lib.Redis
) -> None:
    flashsale = throttled(user="1/minute;burst=2")
    flashsale.create_sale("tee", stock=10, per_user_limit=1)
    assert flashsale.place_order("tee", "alice").status == "queued"
    bucket = "flashsale:{tee}:rl:u:alice"
    tat = redis_client.get(bucket)
    assert [flashsale.place_order("tee", "alice").status for _ in range(5)] == ["limit_reached"] * 5
    assert redis_client.get(bucket) == tat
    # The second token is still there once the buyer may buy again.
    flashsale.create_sale("tee", stock=10, per_user_limit=2)
    assert flashsale.place_order("tee", "alice").status == "queued"


def test_a_sold_out_refusal_takes_no_token(
    throttled: Callable[..., FlashSale], redis_client: redis_lib.Redis
) -> None:
    flashsale = throttled(sale="1/minute;burst=2")
    flashsale.create_sale("tee", stock=1)
    assert flashsale.place_order("tee", "alice").status == "queued"
    tat = redis_client.get("flashsale:{tee}:rl:sale")
    assert {flashsale.place_order("tee", f"u{i}").status for i in range(5)} == {"sold_out"}
    assert redis_client.get("flashsale:{tee}:rl:sale") == tat
    flashsale.restock("tee", 5)
    assert flashsale.place_order("tee", "carol").status == "queued"
    assert flashsale.place_order("tee", "dave").status == "rate_limited"


def test_sold_out_is_answered_before_rate_limited(throttled: Callable[..., FlashSale]) -> None:
    # A sold-out answer tells the client to stop; a throttled one to retry.
    flashsale = throttled(user="1/minute")
    flashsale.create_sale("tee", stock=1, per_user_limit=5)
    assert flashsale.place_order("tee", "alice").status == "queued"
    assert flashsale.place_order("tee", "alice").status == "sold_out"


def test_a_per_sale_refusal_takes_no_per_user_token(
    throttled: Callable[..., FlashSale], redis_client: redis_lib.Redis
) -> None:
    flashsale = throttled(user="1/minute", sale="1/minute")
    flashsale.create_sale("tee", stock=10)
    assert flashsale.place_order("tee", "alice").status == "queued"
    assert flashsale.place_order("tee", "bob").status == "rate_limited"
    assert not redis_client.exists("flashsale:{tee}:rl:u:bob")
    assert redis_client.exists("flashsale:{tee}:rl:u:alice")


@pytest.mark.parametrize("outcome", ["not_started", "ended", "not_found", "duplicate"])
def test_other_refusals_and_replays_take_no_token(
    throttled: Callable[..., FlashSale], redis_client: redis_lib.Redis, outcome: str
) -> None:
    flashsale = throttled(user="1/minute", sale="1/minute")
    now = float(redis_client.time()[0])
    key = None
    if outcome == "not_started":
        flashsale.create_sale("tee", stock=5, starts_at=now + 300)
    elif outcome == "ended":
        flashsale.create_sale("tee", stock=5, starts_at=now - 300, ends_at=now - 100)
    elif outcome == "duplicate":
        flashsale.create_sale("tee", stock=5)
        key = "retry-1"
        assert flashsale.place_order("tee", "alice", idempotency_key=key).status == "queued"
    before = sorted(redis_client.keys("flashsale:*:rl:*"))
    before_values = [redis_client.get(k) for k in before]
    for _ in range(3):
        assert flashsale.place_order("tee", "alice", idempotency_key=key).status == outcome
    assert sorted(redis_client.keys("flashsale:*:rl:*")) == before
    assert [redis_client.get(k) for k in before] == before_values


def test_buckets_expire_once_full(
    throttled: Callable[..., FlashSale], redis_client: redis_lib.Redis
) -> None:
    flashsale = throttled(user="1/minute;burst=5", sale="10/minute;burst=20")
    flashsale.create_sale("tee", stock=10, per_user_limit=5)
    flashsale.place_order("tee", "alice")
    assert 0 < redis_client.pttl("flashsale:{tee}:rl:u:alice") <= 60_000
    assert 0 < redis_client.pttl("flashsale:{tee}:rl:sale") <= 6_000


def test_a_throttled_attempt_sends_request_rate_limited(
    throttled: Callable[..., FlashSale],
) -> None:
    flashsale = throttled(user="1/minute")
    flashsale.create_sale("tee", stock=10, per_user_limit=5)
    heard: list[dict[str, Any]] = []

    def receiver(sender: Flask, **kwargs: Any) -> None:
        heard.append(kwargs)

    with request_rate_limited.connected_to(receiver):
        flashsale.place_order("tee", "alice")
        flashsale.place_order("tee", "alice")
    assert len(heard) == 1
    assert heard[0]["key"] == "order:tee:alice"
    assert 55 < heard[0]["retry_after"] <= 60


@pytest.mark.parametrize("second", ["queued", "rate_limited"])
def test_an_order_attempt_with_throttles_is_still_one_round_trip(
    throttled: Callable[..., FlashSale], command_counter: Any, second: str
) -> None:
    flashsale = throttled(user="1/minute;burst=2", sale="100/minute")
    flashsale.create_sale("tee", stock=10, per_user_limit=5)
    flashsale.place_order("tee", "alice")  # warm up: script loaded, connection open
    if second == "rate_limited":
        flashsale.place_order("tee", "alice")
    outcome: list[str] = []
    sent = command_counter.count(
        lambda: outcome.append(flashsale.place_order("tee", "alice").status)
    )
    assert outcome == [second]
    assert len(sent) == 1 and sent[0].startswith("EVALSHA"), sent


def test_throttled_order_over_http_is_429_and_leaves_the_books(
    make_app: AppFactory, redis_client: redis_lib.Redis
) -> None:
    app, flashsale = make_app(FLASHSALE_ORDER_RATE_PER_USER="1/minute")
    with app.app_context():
        flashsale.create_sale("tee", stock=10, per_user_limit=5)
    client = app.test_client()
    alice = {"X-User": "alice"}
    assert client.post("/api/flash-sales/tee/order", headers=alice).status_code == 202
    r = client.post("/api/flash-sales/tee/order", headers=alice, json={"quantity": 3})
    assert r.status_code == 429 and r.mimetype == "application/problem+json"
    assert r.get_json()["code"] == "rate_limited"
    assert 55 <= int(r.headers["Retry-After"]) <= 60
    assert books(redis_client)["users"] == {"alice": "1"}
    assert books(redis_client)["remaining"] == 9


@pytest.mark.slow
def test_64_threads_through_a_per_sale_bucket_admit_exactly_its_burst(
    make_app: AppFactory, redis_client: redis_lib.Redis
) -> None:
    app, flashsale = make_app(
        FLASHSALE_ORDER_RATE_PER_SALE="1/hour;burst=10", FLASHSALE_REDIS_POOL_SIZE=64
    )
    with app.app_context():
        flashsale.create_sale("tee", stock=100)
    barrier = threading.Barrier(64)

    def attempt(i: int) -> str:
        with app.app_context():
            barrier.wait()
            return flashsale.place_order("tee", f"user{i}").status

    with ThreadPoolExecutor(64) as pool:
        statuses = Counter(pool.map(attempt, range(64)))
    print(f"\nadmission, 64 threads, per-sale burst 10: {dict(statuses)}")
    assert statuses == {"queued": 10, "rate_limited": 54}
    state = books(redis_client)
    assert (state["remaining"], state["tickets"], state["stream"]) == (90, 10, 10)
    assert len(state["users"]) == 10
