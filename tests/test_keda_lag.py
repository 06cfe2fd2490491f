"""The lag KEDA's ``redis-streams`` scaler reads (``XINFO GROUPS``) stays exact.

The worker deletes each entry once it is settled (``XDEL`` after ``XACK``);
Redis can report a group's ``lag`` only while no deleted entry lies between
the group's last delivered id and the end of the stream. These tests walk the
numbers docs/worker.rst ("On Kubernetes: KEDA") quotes.
"""

from __future__ import annotations

import redis as redis_lib

from flask_flashsale.worker import Worker

from .helpers import MakeApp

STREAM = "flashsale:{drop}:orders"


def lag(client: redis_lib.Redis) -> object:
    (group,) = client.xinfo_groups(STREAM)
    return group["lag"]


def test_the_lag_keda_reads_counts_undelivered_orders_through_confirm_and_delete(
    make_app: MakeApp, redis_client: redis_lib.Redis
) -> None:
    app, ext = make_app(FLASHSALE_WORKER_BATCH=10)
    ext.order_handler(lambda order: None)
    with app.app_context():
        ext.create_sale("drop", stock=100)
        for i in range(30):
            ext.place_order("drop", f"a{i}")
        worker = Worker(app, name="keda", burst=True)
        worker.step()  # one batch: read, confirmed, deleted
        assert (lag(redis_client), redis_client.xlen(STREAM)) == (20, 20)
        for i in range(5):
            ext.place_order("drop", f"b{i}")
        assert lag(redis_client) == 25
        worker.run()  # drains the queue
        assert (lag(redis_client), redis_client.xlen(STREAM)) == (0, 0)
        for i in range(3):
            ext.place_order("drop", f"c{i}")
        assert lag(redis_client) == 3


def test_orders_handed_back_or_failed_keep_the_lag_defined(
    make_app: MakeApp, redis_client: redis_lib.Redis
) -> None:
    app, ext = make_app(FLASHSALE_WORKER_BATCH=10, FLASHSALE_MAX_ATTEMPTS=1)

    def fail_one(order: object) -> None:
        if getattr(order, "user_id", "") == "a3":
            raise RuntimeError("hook down")

    ext.order_handler(fail_one)
    with app.app_context():
        ext.create_sale("drop", stock=100)
        for i in range(12):
            ext.place_order("drop", f"a{i}")
        Worker(app, name="keda", burst=True).run()  # a3 compensated, deleted
        assert (lag(redis_client), redis_client.xlen(STREAM)) == (0, 0)
        ext.place_order("drop", "late")
        assert lag(redis_client) == 1
