"""No oversell, no duplicate, no user over the limit: real concurrency on real Redis.

Stock 100; 1,000 users each try twice (2,000 attempts), from 32 threads in
this process, and again from 4 OS processes of 8 threads each, for each
inventory strategy. The ``optimistic`` and ``lock`` strategies get enough
retries / lock wait here that no attempt may end ``busy``; what they do with
their production defaults is in ``test_strategies.py``. The thread crowds also
run on a sale with a payment timeout; holds that expire and are bought again,
with payments racing, are in ``test_payments_processes.py``.
"""

from __future__ import annotations

import multiprocessing
from collections import Counter
from typing import Any

import pytest
import redis as redis_lib

from .buyers import crowd
from .helpers import ATTEMPTS, PATIENT, STOCK, STRATEGIES, build_app, check_books


@pytest.mark.slow
@pytest.mark.parametrize("payment_timeout", [None, 60], ids=["no-timeout", "payment-timeout"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_no_oversell_with_32_threads(
    redis_url: str, redis_client: redis_lib.Redis, strategy: str, payment_timeout: int | None
) -> None:
    config: dict[str, Any] = {"FLASHSALE_INVENTORY_STRATEGY": strategy, **PATIENT}
    app, flashsale = build_app(redis_url, **config)
    with app.app_context():
        flashsale.create_sale(
            "hot", stock=STOCK, per_user_limit=1, payment_timeout=payment_timeout
        )
    results = crowd(redis_url, "hot", ATTEMPTS, 32, config)
    check_books(results, redis_client, "hot")


@pytest.mark.slow
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_no_oversell_with_4_processes(
    redis_url: str, redis_client: redis_lib.Redis, strategy: str
) -> None:
    config: dict[str, Any] = {"FLASHSALE_INVENTORY_STRATEGY": strategy, **PATIENT}
    app, flashsale = build_app(redis_url, **config)
    with app.app_context():
        flashsale.create_sale("hot", stock=STOCK, per_user_limit=1)
    ctx = multiprocessing.get_context("spawn")
    shares = [ATTEMPTS[i::4] for i in range(4)]
    with ctx.Pool(4) as pool:
        parts = pool.starmap(crowd, [(redis_url, "hot", share, 8, config) for share in shares])
    results = [r for part in parts for r in part]
    check_books(results, redis_client, "hot")


# Per-user limit under contention: stock is plenty (so no attempt is refused
# for stock), 100 buyers each try 10 times at once with a limit of 3 units.
GREEDY = [f"greedy{i}" for i in range(100)]
GREEDY_ATTEMPTS = [u for _ in range(10) for u in GREEDY]  # spread over processes


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 4])
def test_per_user_limit_holds_under_concurrent_attempts(
    redis_url: str, redis_client: redis_lib.Redis, processes: int
) -> None:
    app, flashsale = build_app(redis_url)
    with app.app_context():
        flashsale.create_sale("plenty", stock=10_000, per_user_limit=3)
    if processes == 1:
        results = crowd(redis_url, "plenty", GREEDY_ATTEMPTS, 32, {})
    else:
        ctx = multiprocessing.get_context("spawn")
        shares = [GREEDY_ATTEMPTS[i::processes] for i in range(processes)]
        with ctx.Pool(processes) as pool:
            parts = pool.starmap(crowd, [(redis_url, "plenty", s, 8, {}) for s in shares])
        results = [r for part in parts for r in part]
    statuses = Counter(s for _, s, _ in results)
    print(f"\nper-user limit, {processes} process(es): {dict(statuses)}")
    admitted = Counter(u for u, s, _ in results if s == "queued")
    assert statuses == {"queued": 300, "limit_reached": 700}
    assert set(admitted.values()) == {3}
    held = redis_client.hgetall("flashsale:{plenty}:users")
    assert held == {u: "3" for u in GREEDY}
    assert redis_client.hget("flashsale:{plenty}:sale", "remaining") == str(10_000 - 300)
    assert redis_client.xlen("flashsale:{plenty}:orders") == 300
