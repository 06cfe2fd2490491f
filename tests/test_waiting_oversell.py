"""The oversell suite with the waiting room on: passes in hand, real concurrency, every
inventory strategy; exactly the stock is admitted, and nobody without a valid pass."""

from __future__ import annotations

import multiprocessing
from collections import Counter
from typing import Any

import pytest
import redis as redis_lib

from .helpers import PATIENT, STOCK, STRATEGIES, build_app, check_admitted
from .queue_helpers import order_crowd

USERS = [f"user{i}" for i in range(1000)]


def attempts_with_passes(
    redis_url: str, config: dict[str, Any]
) -> tuple[dict[str, str], list[tuple[str, str | None]]]:
    """Every user joins (all let through at once), then tries twice with their pass; one
    attempt in ten comes without a pass, one in ten with the next buyer's pass."""
    app, flashsale = build_app(redis_url, **config)
    with app.app_context():
        flashsale.create_sale(
            "hot", stock=STOCK, per_user_limit=1, fairness="fifo", admit_rate=100_000
        )
        passes = {u: flashsale.join_queue("hot", u).pass_token for u in USERS}
    attempts: list[tuple[str, str | None]] = []
    for i, user in enumerate(USERS + USERS[1:] + USERS[:1]):
        if i % 10 == 3:
            attempts.append((user, None))
        elif i % 10 == 7:
            attempts.append((user, passes[USERS[(USERS.index(user) + 1) % len(USERS)]]))
        else:
            attempts.append((user, passes[user]))
    return {u: p for u, p in passes.items() if p is not None}, attempts


def check_books_with_passes(
    passes: dict[str, str],
    results: list[tuple[str, str | None, str, str | None]],
    client: redis_lib.Redis,
) -> None:
    statuses = Counter(s for _, _, s, _ in results)
    print(f"\n{dict(statuses)}")
    assert len(passes) == len(USERS)
    assert len(results) == 2 * len(USERS)
    for user, token, status, _ in results:
        if token is None:
            assert status in ("pass_required", "sold_out")
        elif token != passes[user]:
            assert status in ("pass_invalid", "sold_out")
        else:
            assert status in ("queued", "sold_out", "limit_reached")
    assert statuses["pass_required"] and statuses["pass_invalid"]
    check_admitted([(u, t) for u, _, s, t in results if s == "queued"], client, "hot")


@pytest.mark.slow
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_no_oversell_with_passes_and_32_threads(
    redis_url: str, redis_client: redis_lib.Redis, strategy: str
) -> None:
    config: dict[str, Any] = {"FLASHSALE_INVENTORY_STRATEGY": strategy, **PATIENT}
    passes, attempts = attempts_with_passes(redis_url, config)
    results = order_crowd(redis_url, "hot", attempts, 32, config)
    check_books_with_passes(passes, results, redis_client)


@pytest.mark.slow
def test_no_oversell_with_passes_and_4_processes(
    redis_url: str, redis_client: redis_lib.Redis
) -> None:
    passes, attempts = attempts_with_passes(redis_url, {})
    ctx = multiprocessing.get_context("spawn")
    shares = [attempts[i::4] for i in range(4)]
    with ctx.Pool(4) as pool:
        parts = pool.starmap(order_crowd, [(redis_url, "hot", share, 8, {}) for share in shares])
    check_books_with_passes(passes, [r for part in parts for r in part], redis_client)
