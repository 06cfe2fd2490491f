"""Every feature on a real local Redis Cluster (3 masters, 3 replicas; tests/cluster.py).

A cluster refuses a script whose keys span two slots (``CROSSSLOT``) and a
script that touches a key it was not given on another node, so running each
script here proves its keys stay in one slot. Sales are picked so that they
live on every master.
"""

from __future__ import annotations

import multiprocessing
import time
from collections import Counter
from typing import Any

import pytest
import redis

from flask_flashsale import FlashSale
from flask_flashsale.breaker import CircuitOpen, GuardedCluster
from flask_flashsale.connection import ClusterBackend

from .buyers import crowd
from .cluster import LocalCluster
from .helpers import ATTEMPTS, PATIENT, build_app, check_books, cluster_client, wait_for


def spread_sales(cluster: LocalCluster, count: int = 3) -> list[str]:
    """``count`` sale ids whose slots are served by different masters (round robin)."""
    by_master: dict[int, list[str]] = {}
    i = 0
    while sum(len(v) for v in by_master.values()) < count or len(by_master) < 3:
        sale = f"s{i}"
        port = cluster.master_of(f"flashsale:{{{sale}}}:sale").port
        if len(by_master.get(port, [])) < -(-count // 3):
            by_master.setdefault(port, []).append(sale)
        i += 1
    return [s for group in zip(*by_master.values(), strict=False) for s in group][:count]


def test_the_app_talks_to_the_cluster_through_a_guarded_cluster_client(
    cluster_url: str,
) -> None:
    app, _ = build_app(cluster_url)
    state = FlashSale.state(app)
    assert isinstance(state.backend, ClusterBackend)
    assert isinstance(state.client, GuardedCluster)
    assert state.client.breaker is state.breaker
    assert len(state.client.get_primaries()) == 3


def test_orders_on_every_master_are_admitted_handled_and_confirmed(
    cluster_url: str, redis_cluster: LocalCluster
) -> None:
    sales = spread_sales(redis_cluster, 3)
    masters = {redis_cluster.master_of(f"flashsale:{{{s}}}:sale").port for s in sales}
    assert len(masters) == 3
    app, flashsale = build_app(cluster_url)
    handled: list[str] = []
    flashsale.order_handler(lambda order: handled.append(order.id))
    with app.app_context():
        tickets = []
        for sale in sales:
            flashsale.create_sale(sale, stock=2)
            tickets += [flashsale.place_order(sale, u).ticket_id for u in ("ann", "bob", "cy")]
        assert sum(t is not None for t in tickets) == 6  # 2 per sale, the third sold out
        assert flashsale.run_worker(burst=True) == 6
        assert sorted(handled) == sorted(t for t in tickets if t)
        assert {flashsale.get_ticket(t).status for t in tickets if t} == {"confirmed"}  # type: ignore[union-attr]
        assert [s.remaining for s in flashsale.list_sales()] == [0, 0, 0]


def test_cancel_restock_delete_and_user_tickets_on_the_cluster(
    cluster_url: str, redis_cluster: LocalCluster
) -> None:
    sale = spread_sales(redis_cluster, 1)[0]
    app, flashsale = build_app(cluster_url)
    with app.app_context():
        flashsale.create_sale(sale, stock=1)
        ticket = flashsale.place_order(sale, "ann").ticket_id
        assert ticket is not None
        assert flashsale.place_order(sale, "bob").status == "sold_out"
        assert [t.id for t in flashsale.user_tickets(sale, "ann")] == [ticket]
        assert flashsale.cancel(ticket) is True
        assert flashsale.cancel(ticket) is False
        assert flashsale.place_order(sale, "bob").status == "queued"
        assert flashsale.restock(sale, 2) == 2
        assert flashsale.delete_sale(sale) is True
        assert flashsale.get_sale(sale) is None


def test_idempotency_and_per_user_limits_on_the_cluster(cluster_url: str) -> None:
    app, flashsale = build_app(cluster_url)
    with app.app_context():
        flashsale.create_sale("limits", stock=10, per_user_limit=2)
        first = flashsale.place_order("limits", "ann", idempotency_key="k1")
        again = flashsale.place_order("limits", "ann", idempotency_key="k1")
        assert (first.status, again.status) == ("queued", "duplicate")
        assert again.ticket_id == first.ticket_id
        assert flashsale.place_order("limits", "ann").status == "queued"
        assert flashsale.place_order("limits", "ann").status == "limit_reached"


def test_admission_throttles_and_view_rate_limits_on_the_cluster(cluster_url: str) -> None:
    app, flashsale = build_app(cluster_url, FLASHSALE_ORDER_RATE_PER_USER="2/minute")

    @app.route("/limited")
    @flashsale.limit("2/minute", key="ip")
    def limited() -> str:
        return "ok"

    with app.app_context():
        flashsale.create_sale("throttled", stock=100, per_user_limit=50)
        statuses = [flashsale.place_order("throttled", "ann").status for _ in range(3)]
    assert statuses == ["queued", "queued", "rate_limited"]
    http = app.test_client()
    codes = [http.get("/limited").status_code for _ in range(3)]
    assert codes == [200, 200, 429]


def test_fenced_locks_on_the_cluster(cluster_url: str) -> None:
    app, flashsale = build_app(cluster_url)
    with app.app_context():
        with flashsale.lock("import", timeout=5) as first:
            pass
        with flashsale.lock("import", timeout=5) as second:
            pass
    assert second > first


def test_payments_paid_and_expired_on_the_cluster(cluster_url: str) -> None:
    app, flashsale = build_app(cluster_url)
    flashsale.order_handler(lambda order: None)
    with app.app_context():
        flashsale.create_sale("pay", stock=2, payment_timeout=0.2)
        paid = flashsale.place_order("pay", "ann").ticket_id
        unpaid = flashsale.place_order("pay", "bob").ticket_id
        assert paid and unpaid
        flashsale.run_worker(burst=True)
        assert flashsale.mark_paid(paid).status == "paid"
        time.sleep(0.3)
        flashsale.run_worker(burst=True)
        assert flashsale.get_ticket(unpaid).status == "expired"  # type: ignore[union-attr]
        assert flashsale.get_sale("pay").remaining == 1  # type: ignore[union-attr]


def test_reconcile_finds_and_fixes_drift_on_the_cluster(cluster_url: str) -> None:
    app, flashsale = build_app(cluster_url)
    flashsale.order_handler(lambda order: None)
    with app.app_context():
        flashsale.create_sale("books", stock=3)
        ticket = flashsale.place_order("books", "ann").ticket_id
        flashsale.run_worker(burst=True)
        # The host has no order: ann's unit is drift, given back by the fix.
        flashsale.reconcile_source(lambda sale_id: {})
        (report,) = flashsale.reconcile("books", fix=True)
        assert [u.user_id for u in report.users] == ["ann"]
        assert report.remaining_after == 3
        assert ticket is not None


def test_a_worker_claims_the_orders_of_a_dead_worker_on_the_cluster(cluster_url: str) -> None:
    app, flashsale = build_app(cluster_url, FLASHSALE_CLAIM_IDLE=0.2)
    handled: list[str] = []
    flashsale.order_handler(lambda order: handled.append(order.id))
    with app.app_context():
        flashsale.create_sale("crash", stock=5)
        ticket = flashsale.place_order("crash", "ann").ticket_id
        state = FlashSale.state(app)
        state.orders.ensure_group("crash")
        # A worker read the order and died before settling it.
        assert len(state.orders.read("dead", ["crash"], block_ms=None, split=True)) == 1
        time.sleep(0.3)
        assert flashsale.run_worker(burst=True) == 1
    assert handled == [ticket]


def flush_scripts(cluster: LocalCluster) -> None:
    for node in cluster.nodes:
        if node.alive:
            node.client().script_flush()


def test_scripts_are_loaded_again_after_the_cluster_forgot_them(
    cluster_url: str, redis_cluster: LocalCluster
) -> None:
    # What a failover to a replica that never saw SCRIPT LOAD, or a restart, looks like.
    app, flashsale = build_app(cluster_url)
    flashsale.order_handler(lambda order: None)
    with app.app_context():
        flashsale.create_sale("noscript", stock=5)
        assert flashsale.place_order("noscript", "ann").status == "queued"
        flush_scripts(redis_cluster)
        assert flashsale.place_order("noscript", "bob").status == "queued"
        flush_scripts(redis_cluster)
        assert flashsale.run_worker(burst=True) == 2


def test_cache_events_reach_every_app_on_the_cluster(cluster_url: str) -> None:
    reader_app, reader = build_app(cluster_url, FLASHSALE_CACHE_TTL=60)
    writer_app, writer = build_app(cluster_url, FLASHSALE_CACHE_TTL=60)
    with writer_app.app_context():
        writer.create_sale("cached", stock=1)
    with reader_app.app_context():
        assert reader.get_sale("cached").remaining == 1  # type: ignore[union-attr]
        cache = FlashSale.state(reader_app).cache
        assert cache.subscriber is not None
        assert cache.subscriber.subscribed.wait(5)
    with writer_app.app_context():
        writer.restock("cached", 4)
    with reader_app.app_context():
        wait_for(lambda: reader.get_sale("cached").remaining == 5)  # type: ignore[union-attr]
    with writer_app.app_context():
        assert writer.place_order("cached", "ann").status == "queued"
        for user in range(4):
            writer.place_order("cached", f"u{user}")
    # The admission script's sold_out event: the reader refuses from memory.
    wait_for(lambda: cache.sold_out("cached"))


def test_an_open_breaker_refuses_cluster_calls_without_a_round_trip(cluster_url: str) -> None:
    app, flashsale = build_app(cluster_url, FLASHSALE_BREAKER_FAIL_MAX=1)
    state = FlashSale.state(app)
    with app.app_context():
        flashsale.create_sale("guarded", stock=5)
        assert state.breaker is not None
        state.breaker.on_error(redis.ConnectionError("a node went away"))
        with pytest.raises(CircuitOpen):
            flashsale.place_order("guarded", "ann")
        response = app.test_client().post(
            "/api/flash-sales/guarded/order", headers={"X-User": "ann"}, json={}
        )
    assert response.status_code == 503
    assert response.json["code"] == "backend_unavailable"  # type: ignore[index]
    assert state.breaker.rejected >= 2


def test_a_moved_slot_is_followed(cluster_url: str, redis_cluster: LocalCluster) -> None:
    app, flashsale = build_app(cluster_url)
    with app.app_context():
        flashsale.create_sale("moving", stock=10)
        assert flashsale.place_order("moving", "ann").status == "queued"
        move_slot(redis_cluster, "flashsale:{moving}:sale")
        assert flashsale.place_order("moving", "bob").status == "queued"
        assert flashsale.get_sale("moving").remaining == 8  # type: ignore[union-attr]


def move_slot(cluster: LocalCluster, key: str) -> None:
    """Move ``key``'s slot (and its keys) to another master, as a reshard does."""
    source = cluster.master_of(key)
    src = source.client()
    slot = src.cluster("keyslot", key)
    masters = [
        n for n in cluster.nodes
        if n.alive and n.client().info("replication")["role"] == "master"
    ]
    target = next(n for n in masters if n is not source)
    dst = target.client()
    src_id, dst_id = src.cluster("myid"), dst.cluster("myid")
    dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
    src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
    while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
        src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
    for node in masters:
        node.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
    assert cluster.master_of(key) is target


@pytest.mark.slow
def test_no_oversell_with_32_threads_on_the_cluster(cluster_url: str) -> None:
    app, flashsale = build_app(cluster_url, **PATIENT)
    with app.app_context():
        flashsale.create_sale("hot", stock=100, per_user_limit=1)
    results = crowd(cluster_url, "hot", ATTEMPTS, 32, PATIENT)
    check_books(results, cluster_client(cluster_url), "hot")


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["optimistic", "lock"])
def test_no_oversell_with_other_strategies_on_the_cluster(cluster_url: str, strategy: str) -> None:
    config: dict[str, Any] = {"FLASHSALE_INVENTORY_STRATEGY": strategy, **PATIENT}
    app, flashsale = build_app(cluster_url, **config)
    with app.app_context():
        flashsale.create_sale("hot", stock=100, per_user_limit=1)
    results = crowd(cluster_url, "hot", ATTEMPTS, 16, config)
    check_books(results, cluster_client(cluster_url), "hot")


@pytest.mark.slow
def test_no_oversell_with_4_processes_on_the_cluster(cluster_url: str) -> None:
    app, flashsale = build_app(cluster_url)
    with app.app_context():
        flashsale.create_sale("hot", stock=100, per_user_limit=1)
    ctx = multiprocessing.get_context("spawn")
    shares = [ATTEMPTS[i::4] for i in range(4)]
    with ctx.Pool(4) as pool:
        parts = pool.starmap(crowd, [(cluster_url, "hot", share, 8, {}) for share in shares])
    results = [r for part in parts for r in part]
    print(Counter(s for _, s, _ in results))
    check_books(results, cluster_client(cluster_url), "hot")
