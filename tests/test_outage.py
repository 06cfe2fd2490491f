"""Redis goes away mid-sale: fast, honest 503s, then recovery with nothing lost.

Each test runs its own redis-server (append-only file synced on every write,
as production would), kills or freezes it while buyers are buying, and brings
it back on the same port. Buyers behave as the docs tell them to: they send an
``Idempotency-Key`` and retry on 503, so an order Redis took just before the
crash is given back to them as ``duplicate`` rather than taken twice.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
import redis as redis_lib
from flask import Flask

from flask_flashsale import FlashSale

from .helpers import PREFIX, build_app
from .redis_server import RedisServer

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Hit:
    """One request as a client saw it."""

    kind: str
    started: float
    latency: float
    status: int
    retry_after: str | None


class Recorder:
    """Sends requests through a Flask test client and records every answer."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.hits: list[Hit] = []
        #: Buyers whose order was taken although they were only told 503 (a reply
        #: lost in the crash), and who got it back by retrying with their key.
        self.replayed: set[str] = set()
        self._lock = threading.Lock()

    def send(self, kind: str, method: str, path: str, headers: dict[str, str]) -> Any:
        client = self.app.test_client()
        started = time.monotonic()
        response = client.open(path, method=method, headers=headers)
        latency = time.monotonic() - started
        hit = Hit(kind, started, latency, response.status_code, response.headers.get("Retry-After"))
        with self._lock:
            self.hits.append(hit)
        return response


def buy_until_answered(
    recorder: Recorder, user: str, deadline: float, pause: float = 0.01
) -> tuple[int, str | None]:
    """Order once with an idempotency key, retrying on 503 until a definite answer."""
    headers = {"X-User": user, "Idempotency-Key": f"buy-{user}"}
    while True:
        r = recorder.send("order", "POST", f"{PREFIX}/tee/order", headers)
        if r.status_code == 202:
            if r.get_json()["status"] == "duplicate":
                recorder.replayed.add(user)
            return 202, r.get_json()["ticket_id"]
        if r.status_code == 409:
            assert r.get_json(force=True)["code"] == "sold_out"
            return 409, None
        assert r.status_code == 503, r.get_data(as_text=True)
        assert r.mimetype == "application/problem+json"
        assert time.monotonic() < deadline, "the service did not come back"
        time.sleep(pause)


def check_books(
    redis_url: str, results: dict[str, tuple[int, str | None]], stock: int
) -> list[str]:
    """Stock, per-buyer counts, the order stream and the buyers' tickets all agree."""
    r = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    try:
        admitted = {u: t for u, (status, t) in results.items() if status == 202}
        sale = r.hgetall("flashsale:{tee}:sale")
        users = {u: int(n) for u, n in r.hgetall("flashsale:{tee}:users").items()}
        stream = [fields["t"] for _, fields in r.xrange("flashsale:{tee}:orders")]
        assert int(sale["stock"]) == stock
        assert int(sale["remaining"]) == stock - len(admitted)
        assert users == dict.fromkeys(admitted, 1)
        assert sorted(stream) == sorted(admitted.values())  # each order exactly once
        for ticket in admitted.values():
            assert r.hget("flashsale:{tee}:t:" + ticket.split("~")[1], "s") == "queued"
        return list(admitted)
    finally:
        r.close()


@pytest.fixture
def outage_app(private_redis: RedisServer) -> Iterator[tuple[Flask, FlashSale]]:
    app, flashsale = build_app(
        private_redis.url, FLASHSALE_CACHE_TTL=0.2, FLASHSALE_BREAKER_RESET_TIMEOUT=0.5
    )
    yield app, flashsale


def test_redis_crash_is_answered_with_fast_503s_and_nothing_is_lost(
    private_redis: RedisServer, outage_app: tuple[Flask, FlashSale]
) -> None:
    app, flashsale = outage_app
    stock, threads, per_thread = 60, 4, 30
    with app.app_context():
        flashsale.create_sale("tee", stock=stock)
    recorder = Recorder(app)
    results: dict[str, tuple[int, str | None]] = {}
    deadline = time.monotonic() + 60
    stop_reading = threading.Event()

    def buyers(n: int) -> None:
        for i in range(per_thread):
            user = f"t{n}-u{i}"
            results[user] = buy_until_answered(recorder, user, deadline)
            time.sleep(0.01)

    def reader() -> None:
        headers = {"X-User": "reader"}
        while not stop_reading.is_set():
            recorder.send("list", "GET", PREFIX, headers)
            recorder.send("detail", "GET", f"{PREFIX}/tee", headers)
            recorder.send("ticket", "GET", f"{PREFIX}/orders/tee~" + "A" * 22, headers)
            time.sleep(0.005)

    with ThreadPoolExecutor(threads + 1) as pool:
        read = pool.submit(reader)
        buying = [pool.submit(buyers, n) for n in range(threads)]
        while sum(1 for s, _ in list(results.values()) if s == 202) < 10:
            assert time.monotonic() < deadline
            time.sleep(0.002)
        admitted_before = sum(1 for s, _ in list(results.values()) if s == 202)
        private_redis.kill()
        down = time.monotonic()
        time.sleep(1.0)
        restarting = time.monotonic()
        private_redis.start()
        up = time.monotonic()
        for f in buying:
            f.result(timeout=60)
        stop_reading.set()
        read.result(timeout=10)

    during = [h for h in recorder.hits if down <= h.started and h.started + h.latency <= restarting]
    assert len(during) > 50, "the outage window saw too few requests to judge"
    assert not [h for h in recorder.hits if h.status >= 500 and h.status != 503]
    for hit in during:
        cached_read = hit.kind in ("list", "detail") and hit.status == 200
        assert hit.status == 503 or cached_read, hit
        if hit.status == 503:
            assert hit.retry_after is not None and int(hit.retry_after) >= 1
        assert hit.latency < 0.2, hit
    after = [h for h in recorder.hits if h.started >= restarting and h.status != 503]
    recovered = min(h.started + h.latency for h in after) - restarting
    admitted = check_books(private_redis.url, results, stock)
    breaker = FlashSale.state(app).breaker
    assert breaker is not None and breaker.opened >= 1

    print(
        f"\nRedis killed for {restarting - down:.2f} s: {len(during)} requests answered "
        f"meanwhile, {sum(h.status == 503 for h in during)} with 503, max latency "
        f"{max(h.latency for h in during) * 1000:.1f} ms; service back {recovered * 1000:.0f} ms "
        f"after the restart began (redis-server took {(up - restarting) * 1000:.0f} ms to boot; "
        f"breaker opened {breaker.opened}x, refused {breaker.rejected} calls); "
        f"{len(admitted)}/{stock} units sold ({admitted_before} before the crash), "
        f"{len(results) - len(admitted)} buyers told sold_out, "
        f"{len(recorder.replayed)} replayed as duplicate"
    )
    assert len(admitted) == stock
    assert admitted_before < stock, "the crash should happen mid-sale"


def test_frozen_redis_costs_one_socket_timeout_until_the_breaker_opens(
    private_redis: RedisServer,
) -> None:
    """SIGSTOP: sockets accept but nothing answers. Timeouts trip the breaker, and
    orders Redis runs when it wakes up are not lost: the retry gets ``duplicate``."""
    app, flashsale = build_app(
        private_redis.url,
        FLASHSALE_REDIS_SOCKET_TIMEOUT=0.1,
        FLASHSALE_BREAKER_FAIL_MAX=3,
        FLASHSALE_BREAKER_RESET_TIMEOUT=0.3,
        FLASHSALE_CACHE_TTL=0,
    )
    stock = 10
    with app.app_context():
        flashsale.create_sale("tee", stock=stock)
    recorder = Recorder(app)
    results: dict[str, tuple[int, str | None]] = {}
    for user in ("early-1", "early-2"):
        results[user] = buy_until_answered(recorder, user, time.monotonic() + 10)
    breaker = FlashSale.state(app).breaker
    assert breaker is not None
    pid = private_redis.process.pid if private_redis.process else 0

    frozen: list[Any] = []
    os.kill(pid, signal.SIGSTOP)
    try:
        for i in range(20):
            headers = {"X-User": f"b{i}", "Idempotency-Key": f"buy-b{i}"}
            frozen.append(recorder.send("order", "POST", f"{PREFIX}/tee/order", headers))
    finally:
        os.kill(pid, signal.SIGCONT)
    frozen_hits = recorder.hits[-20:]
    assert {r.status_code for r in frozen} == {503}
    assert all(r.headers.get("Retry-After") for r in frozen)
    assert breaker.opened == 1
    assert breaker.rejected >= 15, "after the breaker opened, Redis was not even tried"
    slow = [h for h in frozen_hits if h.latency >= 0.09]
    assert len(slow) <= 4, "only the calls before the breaker opened (and a probe) wait"

    deadline = time.monotonic() + 30
    for i in range(20):
        results[f"b{i}"] = buy_until_answered(recorder, f"b{i}", deadline, pause=0.05)
    admitted = check_books(private_redis.url, results, stock)
    print(
        f"\nfrozen Redis: {len(slow)} requests waited for the socket timeout "
        f"(max {max(h.latency for h in frozen_hits) * 1000:.0f} ms), "
        f"{breaker.rejected} were refused at once "
        f"(max {max(h.latency for h in frozen_hits if h.latency < 0.09) * 1000:.1f} ms); "
        f"{len(admitted)}/{stock} sold after it woke up, {len(recorder.replayed)} of them "
        "taken while frozen and given back to the buyer's retry as duplicate"
    )
    assert len(admitted) == stock
