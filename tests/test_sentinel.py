"""Sentinel: the master found through real local sentinels, and followed across a failover.

One master, one replica and three sentinels (tests/cluster.py).

Known and measured, not fixed: a forced ``SENTINEL FAILOVER`` loses the
orders the old master acknowledged between the replica's promotion and its
own demotion (hundreds here, at ~500 orders/s): replication is asynchronous
and the old master keeps accepting writes until a sentinel reconfigures it.
``min-replicas-to-write 1`` with ``min-replicas-max-lag`` on the master
bounds that window; ``reconcile`` finds what was lost (the host's orders
that Redis no longer has).
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from flask_flashsale import FlashSale
from flask_flashsale.breaker import GuardedRedis
from flask_flashsale.connection import SentinelBackend

from .cluster import LocalSentinel
from .helpers import build_app


@pytest.fixture
def sentinel_url(redis_sentinel: LocalSentinel) -> str:
    """The group's URL, its current master emptied first."""
    master = redis_sentinel.node_on(redis_sentinel.current_master())
    master.client().flushall()
    return redis_sentinel.url


def test_the_master_is_found_through_the_sentinels_and_a_worker_runs(
    sentinel_url: str, redis_sentinel: LocalSentinel
) -> None:
    app, flashsale = build_app(sentinel_url)
    state = FlashSale.state(app)
    assert isinstance(state.backend, SentinelBackend)
    assert isinstance(state.client, GuardedRedis)
    handled: list[str] = []
    flashsale.order_handler(lambda order: handled.append(order.id))
    with app.app_context():
        flashsale.create_sale("watched", stock=2)
        ticket = flashsale.place_order("watched", "ann").ticket_id
        assert flashsale.run_worker(burst=True) == 1
        assert flashsale.get_ticket(ticket).status == "confirmed"  # type: ignore[arg-type,union-attr]
    master = redis_sentinel.node_on(redis_sentinel.current_master())
    assert master.client().hget("flashsale:{watched}:sale", "remaining") == "1"
    assert handled == [ticket]


@pytest.mark.slow
def test_a_sentinel_failover_is_followed_without_a_restart(
    sentinel_url: str, redis_sentinel: LocalSentinel
) -> None:
    app, flashsale = build_app(
        sentinel_url,
        FLASHSALE_REDIS_SOCKET_TIMEOUT=0.5,
        FLASHSALE_BREAKER_RESET_TIMEOUT=0.5,
    )
    with app.app_context():
        flashsale.create_sale("hot", stock=100_000, per_user_limit=1)
    old = redis_sentinel.current_master()
    codes: Counter[int] = Counter()
    acknowledged: list[str] = []
    after: Counter[int] = Counter()
    switched = threading.Event()
    stop = threading.Event()
    lock = threading.Lock()

    def buyer(n: int) -> None:
        http = app.test_client()
        i = 0
        while not stop.is_set():
            i += 1
            r = http.post("/api/flash-sales/hot/order", headers={"X-User": f"b{n}-{i}"}, json={})
            with lock:
                codes[r.status_code] += 1
                if switched.is_set():
                    after[r.status_code] += 1
                if r.status_code == 202:
                    acknowledged.append(r.json["ticket_id"])  # type: ignore[index]
            time.sleep(0.01)

    threads = [threading.Thread(target=buyer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    started = time.monotonic()
    redis_sentinel.sentinels[0].client().execute_command("SENTINEL", "FAILOVER", "flashsale")
    deadline = started + 20
    while time.monotonic() < deadline and redis_sentinel.current_master() == old:
        time.sleep(0.05)
    switched.set()
    while time.monotonic() < deadline:
        with lock:
            if after[202] >= 20:
                break
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(10)
    new = redis_sentinel.current_master()
    print(
        f"\nsentinel failover {old} -> {new}: {dict(codes)}; after the switch {dict(after)}; "
        f"{time.monotonic() - started:.2f} s"
    )
    assert new != old
    assert set(codes) <= {202, 503}
    assert after[202] >= 20, "the new master was not followed"
    master = redis_sentinel.node_on(new).client()
    stream = {f["t"] for _, f in master.xrange("flashsale:{hot}:orders")}
    remaining = int(master.hget("flashsale:{hot}:sale", "remaining"))
    held = master.hgetall("flashsale:{hot}:users")
    lost = [t for t in acknowledged if t not in stream]
    # SENTINEL FAILOVER promotes the replica at once, without waiting for it
    # to catch up, and the old master takes writes until it is told to
    # follow: those are lost (asynchronous replication; see the module
    # docstring). What survives is consistent: nothing oversold.
    print(f"acknowledged {len(acknowledged)}, lost by the failover {len(lost)}")
    assert len(stream) == 100_000 - remaining == sum(int(v) for v in held.values())
