"""A master failover mid-sale on a real local Redis Cluster.

Orders flow from threads through the HTTP API; the master that owns the hot
sale's slot is killed with SIGKILL. The cluster promotes its replica after
``cluster-node-timeout`` (2 s here). Afterwards: nothing oversold, every order
a client saw acknowledged (``202``) is in the stream, clients saw only
``202``/``409``/``503``, and service came back by itself.

Replication is asynchronous: an order acknowledged by the master in the last
moment before it died may not have reached the replica (docs/scaling.rst). On
one machine the replica lags by far less than a round trip, and this test
asserts none was lost; ``reconcile`` is how a shop finds one that was.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from .cluster import LocalCluster
from .helpers import build_app, cluster_client

STOCK = 400
THREADS = 8


@pytest.mark.slow
def test_a_master_killed_mid_sale_loses_no_acknowledged_order_and_oversells_nothing(
    cluster_url: str, redis_cluster: LocalCluster
) -> None:
    app, flashsale = build_app(
        cluster_url,
        FLASHSALE_REDIS_SOCKET_TIMEOUT=0.5,
        FLASHSALE_REDIS_CONNECT_TIMEOUT=0.5,
        FLASHSALE_BREAKER_RESET_TIMEOUT=0.5,
    )
    with app.app_context():
        flashsale.create_sale("hot", stock=STOCK, per_user_limit=1)
    victim = redis_cluster.master_of("flashsale:{hot}:sale")
    assert redis_cluster.replicas_of(victim)
    # The replica must have the sale before its master dies.
    time.sleep(0.2)

    codes: Counter[int] = Counter()
    acknowledged: list[str] = []
    after_kill: Counter[int] = Counter()
    killed = threading.Event()
    stop = threading.Event()
    lock = threading.Lock()

    def buyer(n: int) -> None:
        http = app.test_client()
        i = 0
        while not stop.is_set():
            i += 1
            response = http.post(
                "/api/flash-sales/hot/order", headers={"X-User": f"b{n}-{i}"}, json={}
            )
            with lock:
                codes[response.status_code] += 1
                if killed.is_set():
                    after_kill[response.status_code] += 1
                if response.status_code == 202:
                    acknowledged.append(response.json["ticket_id"])  # type: ignore[index]
            if response.status_code == 409:
                return  # sold out
            time.sleep(0.01)

    threads = [threading.Thread(target=buyer, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    before = len(acknowledged)
    started = time.monotonic()
    victim.kill()
    killed.set()
    # Service comes back by itself: orders are acknowledged again.
    deadline = started + 20
    while time.monotonic() < deadline:
        with lock:
            if after_kill[202] >= 20 or codes[409]:
                break
        time.sleep(0.05)
    recovered = time.monotonic() - started
    stop.set()
    for t in threads:
        t.join(10)

    try:
        print(
            f"\nfailover: {dict(codes)}; acknowledged {len(acknowledged)} "
            f"({before} before the kill); after the kill {dict(after_kill)}; "
            f"orders acknowledged again {recovered:.2f} s after the kill"
        )
        assert set(codes) <= {202, 409, 503}
        assert after_kill[202] >= 20 or codes[409], "service did not come back by itself"
        client = cluster_client(cluster_url)
        stream = {f["t"] for _, f in client.xrange("flashsale:{hot}:orders")}
        remaining = int(client.hget("flashsale:{hot}:sale", "remaining"))
        held = client.hgetall("flashsale:{hot}:users")
        lost = [t for t in acknowledged if t not in stream]
        print(f"stream {len(stream)}, remaining {remaining}, lost acknowledged {len(lost)}")
        assert remaining >= 0
        assert len(stream) == STOCK - remaining == sum(int(v) for v in held.values())
        assert len(set(acknowledged)) == len(acknowledged)
        assert not lost
    finally:
        # The old master comes back as a replica of the new one.
        victim.start()
        redis_cluster.wait_ok()
