"""The secret behind idempotent ticket ids: configured, never made up on a real Redis.

A ticket id for an ``Idempotency-Key`` is an HMAC under the deployment's
secret. If that secret lived in Redis, Redis losing its data would change it,
and the same key from the same buyer would make a second order. So outside
``memory://`` the app refuses to start without ``FLASHSALE_SECRET`` or
``SECRET_KEY``, and the ticket id is a pure function of the configured secret,
the sale, the buyer and the key.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis as redis_lib
from flask import Flask

from flask_flashsale import ConfigurationError, FlashSale
from flask_flashsale.admission import idempotent_ticket_token


def bare_app(url: str, **config: Any) -> Flask:
    app = Flask("no-secret")
    app.config.update(FLASHSALE_REDIS_URL=url, FLASHSALE_INLINE_WORKER=False, **config)
    return app


def test_starting_on_redis_without_a_secret_is_refused_naming_both_keys(redis_url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        FlashSale(bare_app(redis_url))
    message = str(info.value.description)
    assert "FLASHSALE_SECRET" in message and "SECRET_KEY" in message
    assert "\n" not in message


def test_init_app_without_a_secret_is_refused_and_leaves_no_state(redis_url: str) -> None:
    app = bare_app(redis_url)
    with pytest.raises(ConfigurationError, match="FLASHSALE_SECRET"):
        FlashSale().init_app(app)
    assert "flashsale" not in app.extensions


@pytest.mark.parametrize("empty", ["", None, b""])
def test_an_empty_secret_counts_as_none(redis_url: str, empty: object) -> None:
    with pytest.raises(ConfigurationError, match="SECRET_KEY"):
        FlashSale(bare_app(redis_url, SECRET_KEY=empty, FLASHSALE_SECRET=empty))


@pytest.mark.parametrize("key", ["SECRET_KEY", "FLASHSALE_SECRET"])
def test_either_key_is_enough_to_start(redis_url: str, key: str) -> None:
    app = bare_app(redis_url, **{key: "s3cret"})
    FlashSale(app)
    assert app.extensions["flashsale"].secret == b"s3cret"


def test_flashsale_secret_wins_over_secret_key(redis_url: str) -> None:
    app = bare_app(redis_url, SECRET_KEY="session-key", FLASHSALE_SECRET="ticket-key")
    FlashSale(app)
    assert app.extensions["flashsale"].secret == b"ticket-key"


def test_the_embedded_store_starts_without_a_secret_and_replays_a_key() -> None:
    app = bare_app("memory://")
    ext = FlashSale(app)
    with app.app_context():
        ext.create_sale("tee", stock=5)
        first = ext.place_order("tee", "alice", idempotency_key="k1")
        again = ext.place_order("tee", "alice", idempotency_key="k1")
    assert first.status == "queued"
    assert (again.status, again.ticket_id) == ("duplicate", first.ticket_id)


def test_the_ticket_id_is_a_function_of_secret_sale_buyer_and_key(redis_url: str) -> None:
    app = bare_app(redis_url, SECRET_KEY="s3cret")
    ext = FlashSale(app)
    with app.app_context():
        ext.create_sale("tee", stock=5)
        admission = ext.place_order("tee", "alice", idempotency_key="order-1")
    token = idempotent_ticket_token(b"s3cret", "tee", "alice", "order-1")
    assert admission.ticket_id == f"tee~{token}"


def test_the_same_key_after_redis_lost_its_data_names_the_same_ticket(
    redis_url: str, redis_client: redis_lib.Redis
) -> None:
    before_app = bare_app(redis_url, SECRET_KEY="s3cret")
    before = FlashSale(before_app)
    with before_app.app_context():
        before.create_sale("tee", stock=5)
        first = before.place_order("tee", "alice", idempotency_key="order-1")
    assert first.status == "queued"

    redis_client.flushall()  # Redis lost everything; a new process starts
    after_app = bare_app(redis_url, SECRET_KEY="s3cret")
    after = FlashSale(after_app)
    with after_app.app_context():
        after.create_sale("tee", stock=5)
        retry = after.place_order("tee", "alice", idempotency_key="order-1")
    # Same id: the host's unique key on order.id stops a second order, and a
    # reconcile that restores the ticket makes the retry a duplicate.
    assert retry.ticket_id == first.ticket_id
