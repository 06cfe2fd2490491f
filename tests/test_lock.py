"""``flashsale.lock``: mutual exclusion, leases, and fencing tokens, on a real Redis."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis as redis_lib
from flask import Flask

from flask_flashsale import FlashSale, FlashSaleError, LockLost, LockNotAcquired

from .helpers import MakeApp, build_app


def racy_increment(client: redis_lib.Redis, key: str) -> None:
    """Read, pause, write: loses updates unless callers are mutually excluded."""
    value = int(client.get(key) or 0)
    time.sleep(0.001)
    client.set(key, value + 1)


def test_tokens_grow_with_each_acquisition(flashsale: FlashSale) -> None:
    tokens = []
    for _ in range(5):
        with flashsale.lock("import", timeout=5) as token:
            tokens.append(token)
    assert tokens == [1, 2, 3, 4, 5]


def test_each_lock_name_has_its_own_token_sequence(flashsale: FlashSale) -> None:
    with flashsale.lock("a", timeout=5) as first_a:
        pass
    with flashsale.lock("b", timeout=5) as first_b:
        pass
    with flashsale.lock("a", timeout=5) as second_a:
        pass
    assert (first_a, first_b, second_a) == (1, 1, 2)


def test_threads_are_mutually_excluded_and_tokens_increase_in_holding_order(
    make_app: MakeApp, redis_client: redis_lib.Redis
) -> None:
    app, flashsale = make_app()
    seen: list[int] = []
    barrier = threading.Barrier(8)

    def work(_: int) -> None:
        with app.app_context():
            barrier.wait()
            for _ in range(15):
                with flashsale.lock("counter", timeout=5) as token:
                    seen.append(token)
                    racy_increment(redis_client, "counter")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(8)))
    assert redis_client.get("counter") == "120"
    assert seen == sorted(seen) and len(set(seen)) == 120


def test_the_counter_race_is_real_without_the_lock(redis_client: redis_lib.Redis) -> None:
    """Control for the test above: the same increments, unlocked, lose updates."""
    barrier = threading.Barrier(8)

    def work(_: int) -> None:
        barrier.wait()
        for _ in range(15):
            racy_increment(redis_client, "counter")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(8)))
    assert int(redis_client.get("counter")) < 120  # type: ignore[arg-type]


def increment_under_lock(redis_url: str, times: int) -> list[int]:
    """One process's share of the cross-process test (top level, for spawn)."""
    app, flashsale = build_app(redis_url)
    client = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    tokens = []
    with app.app_context():
        for _ in range(times):
            with flashsale.lock("counter", timeout=5) as token:
                tokens.append(token)
                racy_increment(client, "counter")
    client.close()
    return tokens


@pytest.mark.slow
def test_processes_are_mutually_excluded(redis_url: str, redis_client: redis_lib.Redis) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(3) as pool:
        parts = pool.starmap(increment_under_lock, [(redis_url, 20)] * 3)
    assert redis_client.get("counter") == "60"
    tokens = [t for part in parts for t in part]
    assert sorted(tokens) == list(range(1, 61))
    assert all(part == sorted(part) for part in parts)


def test_an_expired_lease_cannot_release_the_next_holders_lock(
    flashsale: FlashSale, redis_client: redis_lib.Redis
) -> None:
    stale = flashsale.lock("job", timeout=0.1)
    stale_token = stale.acquire()
    time.sleep(0.25)  # the holder pauses past its lease
    fresh = flashsale.lock("job", timeout=10, blocking_timeout=0)
    fresh_token = fresh.acquire()
    assert fresh_token > stale_token
    with pytest.raises(LockLost):
        stale.release()
    assert fresh.owned()
    assert redis_client.get("flashsale:lock:{job}") == fresh.holder
    fresh.release()
    assert redis_client.exists("flashsale:lock:{job}") == 0


def test_an_expired_lease_cannot_extend_the_next_holders_lock(
    flashsale: FlashSale, redis_client: redis_lib.Redis
) -> None:
    stale = flashsale.lock("job", timeout=0.1)
    stale.acquire()
    time.sleep(0.25)
    fresh = flashsale.lock("job", timeout=2, blocking_timeout=0)
    fresh.acquire()
    with pytest.raises(LockLost):
        stale.extend(60)
    assert 0 < redis_client.pttl("flashsale:lock:{job}") <= 2000
    fresh.release()


def test_exiting_the_block_after_the_lease_expired_raises_lock_lost(flashsale: FlashSale) -> None:
    with pytest.raises(LockLost), flashsale.lock("job", timeout=0.05):
        time.sleep(0.2)


def test_extend_keeps_the_lock_past_its_first_lease(flashsale: FlashSale) -> None:
    lock = flashsale.lock("job", timeout=0.5)
    with lock:
        lock.extend(5)
        time.sleep(0.7)
        assert lock.owned()
        with pytest.raises(LockNotAcquired):
            flashsale.lock("job", timeout=1, blocking_timeout=0).acquire()


def test_blocking_timeout_bounds_the_wait(flashsale: FlashSale) -> None:
    with flashsale.lock("job", timeout=10):
        waiter = flashsale.lock("job", timeout=10, blocking_timeout=0.1)
        with pytest.raises(LockNotAcquired) as caught:
            waiter.acquire()
    assert isinstance(caught.value, FlashSaleError)
    assert caught.value.error_code == "lock_timeout"
    assert waiter.token is None


def test_without_blocking_timeout_a_waiter_waits_until_the_holder_releases(
    make_app: MakeApp,
) -> None:
    app, flashsale = make_app()
    held = threading.Event()

    def holder() -> None:
        with app.app_context(), flashsale.lock("job", timeout=10):
            held.set()
            time.sleep(0.3)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(5)
    with app.app_context(), flashsale.lock("job", timeout=10) as token:
        assert token == 2
    thread.join()


def test_a_stale_holders_write_is_rejected_by_the_fencing_column(
    flashsale: FlashSale, tmp_path: object
) -> None:
    """The documented pattern: the database keeps the largest token it accepted."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE inventory (id TEXT PRIMARY KEY, stock INTEGER, fence INTEGER)")
    db.execute("INSERT INTO inventory VALUES ('sku-1', 10, 0)")
    db.commit()

    def fenced_write(stock: int, token: int) -> bool:
        cursor = db.execute(
            "UPDATE inventory SET stock = ?, fence = ? WHERE id = ? AND fence < ?",
            (stock, token, "sku-1", token),
        )
        db.commit()
        return cursor.rowcount == 1

    stale = flashsale.lock("sku-1", timeout=0.1)
    stale_token = stale.acquire()
    time.sleep(0.25)  # paused past the lease, and does not know it
    with flashsale.lock("sku-1", timeout=10) as fresh_token:
        assert fenced_write(7, fresh_token)
    assert not fenced_write(3, stale_token)  # the stale holder wakes up and writes
    assert db.execute("SELECT stock, fence FROM inventory").fetchone() == (7, fresh_token)


@pytest.mark.parametrize("name", ["", "a{b}", "has space", "x" * 129])
def test_lock_names_are_validated(flashsale: FlashSale, name: str) -> None:
    with pytest.raises(ValueError):
        flashsale.lock(name, timeout=1)


@pytest.mark.parametrize("timeout", [0, -1])
def test_a_lock_needs_a_positive_lease(flashsale: FlashSale, timeout: float) -> None:
    with pytest.raises(ValueError):
        flashsale.lock("job", timeout=timeout)


def test_lock_works_on_the_embedded_store() -> None:
    app = Flask("embedded")
    app.config.update(FLASHSALE_REDIS_URL="memory://", FLASHSALE_INLINE_WORKER=False)
    flashsale = FlashSale(app)
    with app.app_context():
        with flashsale.lock("job", timeout=5) as first, pytest.raises(LockNotAcquired):
            flashsale.lock("job", timeout=5, blocking_timeout=0).acquire()
        with flashsale.lock("job", timeout=5) as second:
            pass
    assert (first, second) == (1, 2)


def test_releasing_a_lock_that_is_not_held_raises_lock_lost(flashsale: FlashSale) -> None:
    with pytest.raises(LockLost):
        flashsale.lock("job", timeout=5).release()


def test_another_thread_cannot_release_a_holders_lock(flashsale: FlashSale) -> None:
    lock = flashsale.lock("job", timeout=5)
    lock.acquire()
    errors: list[BaseException] = []

    def release_elsewhere() -> None:
        try:
            lock.release()
        except LockLost as exc:
            errors.append(exc)

    thread = threading.Thread(target=release_elsewhere)
    thread.start()
    thread.join()
    assert len(errors) == 1
    assert lock.owned()
    lock.release()
