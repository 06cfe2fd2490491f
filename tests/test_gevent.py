"""The extension under gevent, as users run it: gunicorn's gevent worker over HTTP.

A real ``gunicorn -k gevent`` serves ``tests/gevent_host.py`` on the test
Redis; the test talks to it over HTTP from its own threads and changes sales
from its own process through the public API. The lighter tests at the end run
the Flask test client under ``gevent.monkey.patch_all()`` in a fresh
interpreter (``tests/gevent_probe.py``): monkey patching is for good, so it
never happens in the pytest process.

No timings: every wait is a bounded poll, and "does not block the others" is
shown by order of events (others answered while a request waits on a lock that
this test holds).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib

from .helpers import PREFIX, ROOT, MakeApp, build_app, gunicorn_server, http, wait_for
from .redis_server import RedisServer

gevent = pytest.importorskip("gevent", reason="gevent is not installed (pip install -e '.[dev]')")

pytestmark = pytest.mark.slow

HOST = "tests.gevent_host:create_app()"
EVENTS = "flashsale:events"


def serve(tmp_path: Path, redis_url: str, *, workers: int = 1, preload: bool = False,
          **config: Any) -> Any:
    """gunicorn ``-k gevent`` serving the test host on ``redis_url`` (a context manager)."""
    args = ["--worker-connections", "200"] + (["--preload"] if preload else [])
    return gunicorn_server(
        HOST, tmp_path / "gunicorn.log", worker_class="gevent", workers=workers, args=args,
        env={"TEST_REDIS_URL": redis_url, "TEST_FLASHSALE_CONFIG": json.dumps(config)},
    )


def subscribers(redis_url: str) -> int:
    """Clients subscribed to the events channel (the cache subscribers of the server)."""
    client = redis_lib.Redis.from_url(redis_url)
    try:
        return int(dict(client.pubsub_numsub(EVENTS))[EVENTS.encode()])
    finally:
        client.close()


def order(base: str, sale: str, user: str, timeout: float = 30) -> tuple[int, str]:
    """POST one order; ``(status, problem code or "")``."""
    status, doc = http("POST", f"{base}{PREFIX}/{sale}/order", user=user, timeout=timeout)
    return status, str(doc.get("code", ""))


# -- gunicorn -k gevent over HTTP -------------------------------------------------


@pytest.mark.parametrize("preload", [False, True], ids=["fork-then-load", "preload"])
@pytest.mark.parametrize("strategy", ["lua", "optimistic", "lock"])
def test_gevent_workers_admit_exactly_the_stock_to_a_concurrent_crowd(
    tmp_path: Path, redis_url: str, redis_client: redis_lib.Redis, make_app: MakeApp,
    strategy: str, preload: bool,
) -> None:
    app, ext = make_app(FLASHSALE_CACHE_TTL=0)
    with app.app_context():
        ext.create_sale("tee", stock=50)
    # A pool of 4 connections for 200 greenlets per worker: most requests wait
    # for a connection (the pool's queue under gevent). Generous timeouts: the
    # crowd must be answered, not turned away as busy.
    with serve(tmp_path, redis_url, workers=2, preload=preload,
               FLASHSALE_INVENTORY_STRATEGY=strategy, FLASHSALE_REDIS_POOL_SIZE=4,
               FLASHSALE_REDIS_SOCKET_TIMEOUT=10, FLASHSALE_REDIS_POOL_TIMEOUT=10,
               FLASHSALE_LOCK_WAIT=30, FLASHSALE_OPTIMISTIC_RETRIES=1000) as base:
        status, patched = http("GET", f"{base}/patched")
        assert status == 200 and patched["threading"] and patched["socket"]
        with ThreadPoolExecutor(100) as pool:
            answers = Counter(pool.map(lambda n: order(base, "tee", f"buyer{n}"), range(200)))
    assert answers == {(202, ""): 50, (409, "sold_out"): 150}
    assert redis_client.hget("flashsale:{tee}:sale", "remaining") == "0"
    assert redis_client.xlen("flashsale:{tee}:orders") == 50


def test_a_gevent_worker_sees_a_restock_made_by_another_process(
    tmp_path: Path, private_redis: RedisServer
) -> None:
    # A Redis of its own: the server's subscriber is the only one there.
    redis_url = private_redis.url
    admin_app, admin = build_app(redis_url, FLASHSALE_CACHE_TTL=0)  # no subscriber of its own
    with admin_app.app_context():
        admin.create_sale("tee", stock=1)
    # A minute of cache: only the subscriber can make the server forget its
    # sold-out flag within the poll below.
    with serve(tmp_path, redis_url, FLASHSALE_CACHE_TTL=60) as base:
        assert order(base, "tee", "first") == (202, "")
        assert order(base, "tee", "second") == (409, "sold_out")  # flagged sold out
        wait_for(lambda: subscribers(redis_url) == 1, timeout=10)
        with admin_app.app_context():
            admin.restock("tee", 5)
        wait_for(lambda: order(base, "tee", "third") == (202, ""), timeout=10)


def test_a_gevent_worker_sees_a_sale_sold_out_in_another_process(
    tmp_path: Path, private_redis: RedisServer
) -> None:
    redis_url = private_redis.url
    admin_app, admin = build_app(redis_url, FLASHSALE_CACHE_TTL=0)
    with admin_app.app_context():
        admin.create_sale("tee", stock=1)
    with serve(tmp_path, redis_url, FLASHSALE_CACHE_TTL=60) as base:
        status, shown = http("GET", f"{base}{PREFIX}/tee")
        assert (status, shown["status"]) == (200, "active")  # cached for a minute
        wait_for(lambda: subscribers(redis_url) == 1, timeout=10)
        with admin_app.app_context():
            assert admin.place_order("tee", "elsewhere").status == "queued"  # the last unit
        wait_for(lambda: http("GET", f"{base}{PREFIX}/tee")[1]["status"] == "sold_out",
                 timeout=10)


def test_a_gevent_worker_answers_503_while_redis_is_down_and_recovers(
    tmp_path: Path, private_redis: RedisServer
) -> None:
    admin_app, admin = build_app(private_redis.url, FLASHSALE_CACHE_TTL=0)
    with admin_app.app_context():
        admin.create_sale("tee", stock=1000)
    seen: Counter[tuple[int, str]] = Counter()
    with serve(tmp_path, private_redis.url, FLASHSALE_BREAKER_RESET_TIMEOUT=0.5) as base:
        assert order(base, "tee", "before") == (202, "")
        private_redis.kill()
        users = iter(range(10**6))

        def answer(expected: tuple[int, str]) -> bool:
            got = order(base, "tee", f"u{next(users)}", timeout=10)
            seen[got] += 1
            return got == expected

        wait_for(lambda: answer((503, "backend_unavailable")), timeout=15)
        private_redis.start()
        wait_for(lambda: answer((202, "")), timeout=20)
    assert set(seen) <= {(202, ""), (503, "backend_unavailable")}, seen


def test_a_gevent_worker_answers_503_while_redis_is_frozen_and_recovers(
    tmp_path: Path, private_redis: RedisServer
) -> None:
    admin_app, admin = build_app(private_redis.url, FLASHSALE_CACHE_TTL=0)
    with admin_app.app_context():
        admin.create_sale("tee", stock=1000)
    assert private_redis.process is not None
    seen: Counter[tuple[int, str]] = Counter()
    with serve(tmp_path, private_redis.url, FLASHSALE_BREAKER_RESET_TIMEOUT=0.5) as base:
        assert order(base, "tee", "before") == (202, "")
        users = iter(range(10**6))

        def answer(expected: tuple[int, str]) -> bool:
            # A worker stuck on the frozen socket would not answer within
            # urllib's timeout (the socket timeout is 0.5 s): an error here.
            got = order(base, "tee", f"u{next(users)}", timeout=10)
            seen[got] += 1
            return got == expected

        private_redis.process.send_signal(signal.SIGSTOP)
        try:
            with ThreadPoolExecutor(20) as pool:  # a crowd of greenlets on a frozen Redis
                crowd = list(pool.map(lambda _: answer((503, "backend_unavailable")), range(40)))
            assert all(crowd)
        finally:
            private_redis.process.send_signal(signal.SIGCONT)
        wait_for(lambda: answer((202, "")), timeout=20)
    assert set(seen) <= {(202, ""), (503, "backend_unavailable")}, seen


def test_a_request_waiting_for_a_lock_does_not_block_the_other_greenlets(
    tmp_path: Path, redis_url: str, redis_client: redis_lib.Redis, make_app: MakeApp
) -> None:
    app, ext = make_app(FLASHSALE_CACHE_TTL=0)
    with app.app_context():
        ext.create_sale("tee", stock=100)
    with serve(tmp_path, redis_url) as base, ThreadPoolExecutor(1) as background:  # 1 worker
        with app.app_context():
            held = ext.lock("held", timeout=60)
            held.acquire()
            try:
                waiting = background.submit(http, "POST", f"{base}/hold/held", timeout=60)
                # The server's request is in its wait: it polls Redis for the
                # lock (one EVALSHA of lock_acquire.lua per attempt).
                calls = commandstats_evalsha(redis_client)
                wait_for(lambda: commandstats_evalsha(redis_client) >= calls + 3, timeout=10)
                answers = [order(base, "tee", f"u{n}", timeout=10) for n in range(10)]
                assert not waiting.done()
            finally:
                held.release()
        assert answers == [(202, "")] * 10
        status, doc = waiting.result(timeout=30)
        assert status == 200 and doc["token"] == 2


def commandstats_evalsha(client: redis_lib.Redis) -> int:
    """``EVALSHA`` calls Redis has run so far."""
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


# -- the test client under monkey patching, in a fresh interpreter ----------------


def probe(scenario: str, redis_url: str, **env: str) -> dict[str, Any]:
    """Run ``tests/gevent_probe.py SCENARIO`` in a new interpreter; its result."""
    proc = subprocess.run(
        [sys.executable, "-m", "tests.gevent_probe", scenario, redis_url],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]), **env},
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert proc.returncode == 0 and line is not None, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(line[len("RESULT "):])
    assert result.pop("patched") is True
    return result


@pytest.mark.parametrize("strategy", ["lua", "optimistic", "lock"])
def test_greenlets_queueing_for_two_connections_admit_exactly_the_stock(
    redis_url: str, strategy: str
) -> None:
    result = probe("crowd", redis_url, PROBE_STRATEGY=strategy)
    assert result == {"statuses": {"202": 20, "409 sold_out": 180}, "remaining": "0"}


def test_the_cache_subscriber_greenlet_applies_a_restock_from_another_app(redis_url: str) -> None:
    result = probe("subscriber", redis_url)
    assert result == {"first": 202, "second": 409, "subscribed": True, "restock_seen": True}


def test_a_greenlet_waiting_for_a_lock_lets_the_others_place_orders(redis_url: str) -> None:
    result = probe("lock", redis_url)
    assert result == {"orders": [202] * 10, "waiter_still_waiting": True, "token": 2}


def test_greenlets_get_503_and_open_the_breaker_when_redis_is_unreachable(
    redis_url: str,
) -> None:
    result = probe("breaker", redis_url)
    assert result == {"statuses": {"503 backend_unavailable": 40}, "breaker": "open"}


def test_the_inline_worker_greenlet_confirms_orders_of_the_embedded_store(
    redis_url: str,
) -> None:
    result = probe("memory", redis_url)
    assert result == {"confirmed": 10, "all_confirmed": True, "handled": 10}


def test_a_rate_limit_stays_exact_under_concurrent_greenlets(redis_url: str) -> None:
    assert probe("ratelimit", redis_url) == {"statuses": {"200": 5, "429": 15}}


def test_greenlets_joining_a_waiting_room_at_once_get_distinct_places(redis_url: str) -> None:
    assert probe("waiting", redis_url) == {"positions": list(range(1, 51))}


def test_metrics_count_the_admissions_of_concurrent_greenlets(redis_url: str) -> None:
    assert probe("metrics", redis_url) == {"status": 200, "admitted": 30.0}
