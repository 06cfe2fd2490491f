"""One blocking connection pool per app, shared by its threads, with timeouts."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis as redis_lib

from flask_flashsale import FlashSale

from .helpers import PREFIX, MakeApp


def test_pool_settings_reach_the_blocking_pool(make_app: MakeApp) -> None:
    app, _ = make_app(
        FLASHSALE_REDIS_POOL_SIZE=7,
        FLASHSALE_REDIS_POOL_TIMEOUT=0.25,
        FLASHSALE_REDIS_SOCKET_TIMEOUT=0.3,
        FLASHSALE_REDIS_CONNECT_TIMEOUT=0.2,
        FLASHSALE_REDIS_HEALTH_CHECK_INTERVAL=11,
    )
    pool = FlashSale.state(app).client.connection_pool
    assert isinstance(pool, redis_lib.BlockingConnectionPool)
    assert (pool.max_connections, pool.timeout) == (7, 0.25)
    kwargs = pool.connection_kwargs
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (0.3, 0.2)
    assert kwargs["health_check_interval"] == 11


def test_the_connect_timeout_is_at_most_the_socket_timeout(make_app: MakeApp) -> None:
    """A connect is part of a call, and no call may outlast the socket timeout."""
    app, _ = make_app(FLASHSALE_REDIS_SOCKET_TIMEOUT=0.3, FLASHSALE_REDIS_CONNECT_TIMEOUT=2.0)
    kwargs = FlashSale.state(app).client.connection_pool.connection_kwargs
    assert kwargs["socket_connect_timeout"] == 0.3


def test_threads_share_one_pool_and_wait_for_a_free_connection(
    make_app: MakeApp, redis_client: redis_lib.Redis
) -> None:
    """Eight threads each hold a connection for a while; the pool of three queues them."""
    app, _ = make_app(FLASHSALE_REDIS_POOL_SIZE=3, FLASHSALE_REDIS_POOL_TIMEOUT=10)
    client = FlashSale.state(app).client
    most_blocked = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal most_blocked
        while not done.is_set():
            most_blocked = max(most_blocked, redis_client.info("clients")["blocked_clients"])
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: client.blpop(["nothing"], timeout=0.1), range(8)))
    finally:
        done.set()
        watcher.join(5)
    assert results == [None] * 8  # every call completed, none failed for want of a socket
    assert most_blocked == 3


def test_an_exhausted_pool_is_a_503_and_does_not_trip_the_breaker(make_app: MakeApp) -> None:
    app, flashsale = make_app(
        FLASHSALE_REDIS_POOL_SIZE=1, FLASHSALE_REDIS_POOL_TIMEOUT=0.02, FLASHSALE_BREAKER_FAIL_MAX=2
    )
    state = FlashSale.state(app)
    # BLPOP waits 0.4 s in Redis, under the 0.5 s socket timeout.
    holder = threading.Thread(target=lambda: state.client.blpop(["nothing"], timeout=0.4))
    holder.start()
    try:
        time.sleep(0.1)  # the only connection is now waiting in BLPOP
        responses: list[Any] = [
            app.test_client().get(f"{PREFIX}/orders/tee~" + "A" * 22, headers={"X-User": "a"})
            for _ in range(5)
        ]
    finally:
        holder.join(5)
    assert {r.status_code for r in responses} == {503}
    assert {r.get_json(force=True)["code"] for r in responses} == {"backend_unavailable"}
    assert state.breaker is not None and state.breaker.opened == 0
    with app.app_context():
        assert flashsale.get_ticket("tee~" + "A" * 22) is None  # works again at once


def test_the_events_subscriber_does_not_take_a_pooled_connection(
    make_app: MakeApp, redis_client: redis_lib.Redis
) -> None:
    app, flashsale = make_app(FLASHSALE_REDIS_POOL_SIZE=1, FLASHSALE_CACHE_TTL=60)
    with app.app_context():
        flashsale.create_sale("tee", stock=5)
        flashsale.get_sale("tee")
    subscriber = FlashSale.state(app).cache.subscriber
    assert subscriber is not None and subscriber.subscribed.wait(5)
    with app.app_context():
        assert flashsale.place_order("tee", "alice").status == "queued"
        assert flashsale.get_ticket("tee~" + "A" * 22) is None


def test_a_call_waits_for_a_pooled_connection_no_longer_than_the_socket_timeout(
    make_app: MakeApp,
) -> None:
    """FLASHSALE_REDIS_POOL_TIMEOUT is 5 s, but a call's wait for a connection and
    its round trip share one socket timeout (0.2 s)."""
    app, _ = make_app(
        FLASHSALE_REDIS_POOL_SIZE=1,
        FLASHSALE_REDIS_POOL_TIMEOUT=5,
        FLASHSALE_REDIS_SOCKET_TIMEOUT=0.2,
    )
    state = FlashSale.state(app)
    pool = state.client.connection_pool
    held = pool.get_connection()  # the only connection, busy for as long as the test lasts
    try:
        started = time.monotonic()
        r = app.test_client().get(f"{PREFIX}/orders/tee~" + "A" * 22, headers={"X-User": "a"})
        took = time.monotonic() - started
    finally:
        pool.release(held)
    assert r.status_code == 503
    assert r.get_json(force=True)["code"] == "backend_unavailable"
    assert 0.2 <= took < 1.0
    assert state.breaker is not None and state.breaker.failures == 0  # our load, not Redis


def test_a_call_that_waited_for_its_connection_has_only_the_rest_of_the_socket_timeout(
    make_app: MakeApp,
) -> None:
    """Waiting 0.3 s for the connection leaves 0.2 s of the 0.5 s socket timeout: a
    0.4 s BLPOP then times out, 0.5 s after the call began rather than 0.7 s."""
    app, _ = make_app(FLASHSALE_REDIS_POOL_SIZE=1, FLASHSALE_REDIS_SOCKET_TIMEOUT=0.5)
    client = FlashSale.state(app).client
    holder = threading.Thread(target=lambda: client.blpop(["nothing"], timeout=0.3))
    holder.start()
    try:
        time.sleep(0.05)  # the holder's BLPOP now has the only connection
        started = time.monotonic()
        with pytest.raises(redis_lib.TimeoutError):
            client.blpop(["nothing"], timeout=0.4)
        took = time.monotonic() - started
    finally:
        holder.join(5)
    assert took < 0.5 + 0.15


def test_a_call_that_did_not_wait_keeps_the_whole_socket_timeout(make_app: MakeApp) -> None:
    app, _ = make_app(FLASHSALE_REDIS_POOL_SIZE=1, FLASHSALE_REDIS_SOCKET_TIMEOUT=0.5)
    client = FlashSale.state(app).client
    assert client.blpop(["nothing"], timeout=0.4) is None


def test_a_connection_given_back_after_a_wait_has_its_whole_socket_timeout_again(
    make_app: MakeApp,
) -> None:
    # Margins for a loaded machine: the waiter's budget is left at ~0.3 s, and
    # the last call needs 0.6 s of its 1 s socket timeout.
    app, _ = make_app(FLASHSALE_REDIS_POOL_SIZE=1, FLASHSALE_REDIS_SOCKET_TIMEOUT=1.0)
    client = FlashSale.state(app).client
    holder = threading.Thread(target=lambda: client.blpop(["nothing"], timeout=0.7))
    holder.start()
    try:
        time.sleep(0.05)
        assert client.ping()  # waits for the connection, then answers at once
    finally:
        holder.join(5)
    assert client.blpop(["nothing"], timeout=0.6) is None  # the same connection, not cut short
