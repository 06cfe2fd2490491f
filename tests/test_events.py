"""Cache events on the wire: each script that gives stock back announces ``changed <sale>``.

Cancel and compensation are covered in ``test_cancel.py``, the sold-out event
in ``test_strategies.py`` and ``test_sold_out_fast_path.py``; these are the
two other scripts that publish (real Redis, the worker in this process).
"""

from __future__ import annotations

from typing import Any

import redis as redis_lib

from flask_flashsale import Order

from .worker_host import FAST, worker_thread

CHANNEL = "flashsale:events"


def subscribed(client: redis_lib.Redis) -> Any:
    pubsub = client.pubsub()
    pubsub.subscribe(CHANNEL)
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]
    return pubsub


def test_an_expired_hold_announces_the_change(make_app: Any, redis_client: redis_lib.Redis) -> None:
    app, ext = make_app(**FAST)
    ext.order_handler(lambda order: None)
    with app.app_context():
        ext.create_sale("tee", stock=2, payment_timeout=1)
        assert ext.place_order("tee", "alice").status == "queued"
        pubsub = subscribed(redis_client)
        with worker_thread(app, name="w1"):
            message = pubsub.get_message(timeout=5)
        remaining = ext.get_sale("tee").remaining
    pubsub.close()
    assert message is not None and message["data"] == "changed tee"
    assert remaining == 2


def test_requeueing_a_dead_letter_announces_the_change(
    make_app: Any, redis_client: redis_lib.Redis
) -> None:
    app, ext = make_app(**FAST, FLASHSALE_MAX_ATTEMPTS=1)

    @ext.order_handler
    def broken(order: Order) -> None:
        raise RuntimeError("boom")

    with app.app_context():
        ext.create_sale("tee", stock=2)
        assert ext.place_order("tee", "alice").status == "queued"
        ext.run_worker(burst=True)
        (letter,) = ext.state().orders.dead_letters("tee")
        pubsub = subscribed(redis_client)
        assert ext.state().orders.requeue("tee", letter.entry_id) == "queued"
    message = pubsub.get_message(timeout=5)
    pubsub.close()
    assert message is not None and message["data"] == "changed tee"
