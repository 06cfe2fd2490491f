"""Sentinel: the master found through real local sentinels, and followed across a failover.

One master, one replica and three sentinels (tests/cluster.py).

What a forced ``SENTINEL FAILOVER`` loses, measured with
``python -m tests.sentinel_probe`` (a timeline of sentinel events, node roles
and acknowledged orders, and the old master's stream read while it still is
one): the replica is promoted ~0.2 s after the command; the sentinels
announce the new master ~0.9 s later (they learn of the promotion from INFO,
sent every second); the old master stays a master, taking writes, for ~11 s
more (a sentinel waits 8 s before it reconfigures a master that came back as
one), then resyncs from the new master and forgets them. Of the acknowledged
orders missing afterwards, all but ~3 were on the old master's stream and
acknowledged after the promotion (the ~3: still on the replication link).

Two causes, one ours: redis-py's pool asked the sentinels again only for a
new connection, so pooled connections stayed on the old master until it was
demoted (~11 s of lost orders, ~3,000 at ~300 orders/s); the pool now asks
every ``SENTINEL_RECHECK`` seconds. The other is asynchronous replication:
what the old master acknowledges between the promotion and the client's
switch (~1.4 s, ~300-480 orders here) is lost unless the master runs
``min-replicas-to-write`` (then 0 lost, and writes are refused until every
node follows the new master). ``reconcile`` finds what was lost (the host's
orders that Redis no longer has); docs/scaling.rst says all this.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from flask_flashsale import FlashSale
from flask_flashsale.breaker import GuardedRedis
from flask_flashsale.connection import SENTINEL_RECHECK, SentinelBackend

from .cluster import LocalSentinel, _start
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


def _failover_under_load(
    group: LocalSentinel, url: str, *, after_switch: float
) -> dict[str, Any]:
    """Orders from 4 threads, ``SENTINEL FAILOVER``, and ``after_switch`` seconds
    after the sentinels name the new master, 20 more acknowledged orders.

    Returns the status codes, the acknowledged tickets (those acknowledged
    once the 20 began are in ``late``), and the new master.
    """
    app, flashsale = build_app(
        url, FLASHSALE_REDIS_SOCKET_TIMEOUT=0.5, FLASHSALE_BREAKER_RESET_TIMEOUT=0.5
    )
    with app.app_context():
        flashsale.create_sale("hot", stock=100_000, per_user_limit=1)
    old = group.current_master()
    codes: Counter[int] = Counter()
    acknowledged: list[str] = []
    late: list[str] = []
    counting = threading.Event()
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
                if r.status_code == 202:
                    acknowledged.append(r.json["ticket_id"])  # type: ignore[index]
                    if counting.is_set():
                        late.append(r.json["ticket_id"])  # type: ignore[index]
            time.sleep(0.01)

    threads = [threading.Thread(target=buyer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    started = time.monotonic()
    group.sentinels[0].client().execute_command("SENTINEL", "FAILOVER", group.service)
    deadline = started + 20
    while time.monotonic() < deadline and group.current_master() == old:
        time.sleep(0.02)
    switched = time.monotonic() - started
    time.sleep(after_switch)
    counting.set()
    # Service is back by itself soon after the switch, not when the old
    # master is finally demoted (~10 s later).
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        with lock:
            if len(late) >= 20:
                break
        time.sleep(0.02)
    stop.set()
    for t in threads:
        t.join(10)
    new = group.current_master()
    master = group.node_on(new).client()
    stream = {f["t"] for _, f in master.xrange("flashsale:{hot}:orders")}
    lost = [t for t in acknowledged if t not in stream]
    print(
        f"\nsentinel failover {old} -> {new}: {dict(codes)}; switch announced after "
        f"{switched:.2f} s; acknowledged {len(acknowledged)}, lost {len(lost)}; "
        f"old master now {group.node_on(old).client().execute_command('ROLE')[0]}, "
        f"{time.monotonic() - started:.2f} s"
    )
    remaining = int(master.hget("flashsale:{hot}:sale", "remaining"))
    held = master.hgetall("flashsale:{hot}:users")
    return {
        "old": old, "new": new, "codes": codes, "acknowledged": acknowledged,
        "late": late, "lost": lost, "stream": stream,
        "books": (len(stream), 100_000 - remaining, sum(int(v) for v in held.values())),
    }


@pytest.mark.slow
def test_a_sentinel_failover_is_followed_once_the_sentinels_name_the_new_master(
    sentinel_url: str, redis_sentinel: LocalSentinel
) -> None:
    # The old master takes writes for ~10 s after the promotion (a sentinel
    # waits 8 s before it reconfigures a master that came back as one); the
    # client must not wait for that: it asks the sentinels again every
    # SENTINEL_RECHECK seconds.
    run = _failover_under_load(
        redis_sentinel, sentinel_url, after_switch=SENTINEL_RECHECK + 0.2
    )
    assert run["new"] != run["old"]
    assert set(run["codes"]) <= {202, 503}
    assert len(run["late"]) >= 20, "no order was taken after the switch"
    assert set(run["late"]) <= run["stream"], "orders still went to the old master"
    # What survives is consistent: nothing oversold.
    stream_size, sold, held = run["books"]
    assert stream_size == sold == held
    # Asynchronous replication: what the old master acknowledged between the
    # replica's promotion and the client's switch is lost (the module
    # docstring); never an order acknowledged after the switch.
    assert not set(run["lost"]) & set(run["late"])


@pytest.fixture(scope="module")
def safe_sentinel() -> Iterator[LocalSentinel]:
    """A Sentinel group whose master and replica run ``min-replicas-to-write 1``."""
    group = _start(lambda: LocalSentinel(min_replicas=1).start())
    assert isinstance(group, LocalSentinel)
    yield group
    group.cleanup()


@pytest.mark.slow
def test_with_min_replicas_to_write_a_failover_loses_no_acknowledged_order(
    safe_sentinel: LocalSentinel,
) -> None:
    run = _failover_under_load(
        safe_sentinel, safe_sentinel.url, after_switch=SENTINEL_RECHECK + 0.2
    )
    assert run["new"] != run["old"]
    # From the instant its only replica is promoted and leaves it, the old
    # master refuses writes (NOREPLICAS, a 503); so does the new master until
    # the old one follows it and becomes its replica (~10 s after a forced
    # failover: docs/scaling.rst). Availability is what this setting costs.
    assert set(run["codes"]) <= {202, 503}
    stream_size, sold, held = run["books"]
    assert stream_size == sold == held
    # Only an order still on the replication link at the instant of the
    # promotion could be lost: at most one per buyer (each has one request in
    # flight). Measured: 0 in every run; without the setting, ~300 (above).
    assert len(run["lost"]) <= 4, run["lost"]
