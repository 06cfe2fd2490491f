"""One bucket, a crowd released at once: exactly ``burst`` requests pass.

The refill is slow (one token an hour), so nothing comes back during the test:
any count other than ``BURST`` would mean a lost update (two requests taking
the same token) or a lost token.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis as redis_lib
from flask import Flask

from flask_flashsale import FlashSale

from .helpers import build_app

BURST = 10
RATE = f"1/hour;burst={BURST}"
THREADS = 64


def limited_app(redis_url: str) -> tuple[Flask, FlashSale]:
    app, flashsale = build_app(redis_url, FLASHSALE_REDIS_POOL_SIZE=THREADS)

    @app.get("/drop")
    @flashsale.limit(RATE, key="global", scope="drop")
    def drop() -> str:
        return "got one"

    return app, flashsale


def hammer(redis_url: str, threads: int) -> list[int]:
    """``threads`` threads each send one request at the same moment; return the statuses.

    Top-level so that a spawned process can run it.
    """
    app, _ = limited_app(redis_url)
    barrier = threading.Barrier(threads)

    def one(_: int) -> int:
        client = app.test_client()
        barrier.wait()
        return client.get("/drop").status_code

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, range(threads)))


def check(statuses: list[int], client: redis_lib.Redis, label: str) -> None:
    counts = Counter(statuses)
    print(f"\n{label}: {len(statuses)} requests, burst {BURST}: {dict(sorted(counts.items()))}")
    assert counts == {200: BURST, 429: len(statuses) - BURST}
    # The bucket is empty: its TAT is BURST intervals (hours) ahead.
    assert 0 < client.pttl("flashsale:rl:drop:global") <= BURST * 3_600_000


@pytest.mark.slow
def test_64_threads_on_one_bucket_pass_exactly_burst(
    redis_url: str, redis_client: redis_lib.Redis
) -> None:
    check(hammer(redis_url, THREADS), redis_client, "64 threads")


@pytest.mark.slow
def test_4_processes_of_16_threads_on_one_bucket_pass_exactly_burst(
    redis_url: str, redis_client: redis_lib.Redis
) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        parts = pool.starmap(hammer, [(redis_url, THREADS // 4)] * 4)
    check([s for part in parts for s in part], redis_client, "4 processes x 16 threads")
